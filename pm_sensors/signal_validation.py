"""signal_validation: when prices (or signals) land, materialize the signal outcomes and backtests
whose observation windows they complete, then the portfolio book of each completed date.

It replaces the old nightly backfill `.bat`. What a new materialization makes due:

- `prices` of (d, ticker): `signal_outcomes` of the signals whose window of h sessions closes at d,
  for each h in pm_domain.outcomes.OUTCOME_HORIZONS (signal date d-1-h sessions: entry at t+1,
  return to t+1+h), and
  `backtests` of (d, ticker), whose trailing window ends at d;
- `llm_signals` of (t, ticker): `signal_outcomes` and `backtests` of (t, ticker);
- `backtests` of (d, ticker): `portfolio_backtests` of d once every ticker of the universe has it.

A partition is requested only when its inputs are materialized (an outcome needs its signal; a
backtest its signal and that day's prices): a partition whose last input arrives later is made
due again by that later event, so nothing waits forever. The cursor is the last event storage id
read per watched asset, so a tick never requests the same event's work twice and, after the
daemon was down, the next tick picks up every event since. Requests are grouped into rectangles
(dates x adjacent tickers) with the same assets, so a night of N tickers is a few runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from pm_assets.dagster_compat import materialized_partitions
from pm_assets.partitions import TICKERS_PARTITIONS_NAME, range_tags, rectangles
from pm_domain import calendar
from pm_domain.outcomes import signal_dates_observed_on
from pm_jobs.jobs import portfolio_job, signal_evaluation_job

WATCHED = ("prices", "llm_signals", "backtests")
# Events read per watched asset per tick; the rest wait for the next tick (the cursor says where).
MAX_EVENTS_PER_TICK = 10_000  # the most one fetch may return in Dagster 1.13
TRIGGER_TAG = "pm/trigger"

Key = tuple[dt.date, str]


def parse_key(partition_key: str) -> Key:
    day, ticker = partition_key.split("|", 1)
    return dt.date.fromisoformat(day), ticker


def new_dates_of(context: SensorEvaluationContext, watched: str) -> tuple[set[dt.date], str] | SensorResult:
    """The dates of `watched`'s partitions materialized since the cursor and the cursor after them;
    on the first tick a skip that starts from now (history is backfilled from the UI, not replayed),
    and with nothing new a skip that keeps the cursor. For sensors that watch one asset."""
    instance = context.instance
    if context.cursor is None:
        start = _latest_storage_id(instance, watched)
        return SensorResult(skip_reason=SkipReason(f"started; watching {watched} events after storage id {start}"),
                            cursor=json.dumps({watched: start}))
    after = json.loads(context.cursor)[watched]
    result = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(watched), after_storage_id=after),
                                             limit=MAX_EVENTS_PER_TICK, ascending=True)
    cursor = json.dumps({watched: result.records[-1].storage_id if result.records else after})
    dates = {parse_key(r.partition_key)[0] for r in result.records if r.partition_key}
    if not dates:
        return SensorResult(skip_reason=SkipReason(f"no new {watched}"), cursor=cursor)
    return dates, cursor


def due_partitions(
    new: Mapping[str, set[Key]],
    materialized: Callable[[str], set[Key]],
    universe: Iterable[str],
) -> dict[str, set]:
    """What the new materializations make due, as {asset: partitions}.

    `new` holds the (date, ticker) keys newly materialized per watched asset; `materialized(asset)`
    returns every materialized key of an asset (called only when needed)."""
    new_prices, new_signals, new_backtests = (new.get(a, set()) for a in WATCHED)
    outcomes: set[Key] = set(new_signals)
    for day, ticker in new_prices:
        outcomes.update((signal_day, ticker) for signal_day in signal_dates_observed_on(day))
    backtests: set[Key] = new_prices | new_signals
    if outcomes or backtests:
        signals_done = materialized("llm_signals")
        outcomes &= signals_done
        backtests &= signals_done
        if backtests - new_prices:
            backtests &= materialized("prices") | new_prices
    portfolio: set[dt.date] = set()
    if new_backtests:
        universe = list(universe)
        done = materialized("backtests")
        portfolio = {day for day, _ in new_backtests if all((day, t) in done for t in universe)}
    return {"signal_outcomes": outcomes, "backtests": backtests, "portfolio_backtests": portfolio}


def date_ranges(dates: Iterable[dt.date]) -> list[tuple[dt.date, dt.date]]:
    """Consecutive trading days merged into (first, last) ranges."""
    ranges: list[list[dt.date]] = []
    for day in sorted(dates):
        if ranges and calendar.shift_trading_days(ranges[-1][1], 1) == day:
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return [(first, last) for first, last in ranges]


def run_requests(due: Mapping[str, set], ticker_order: list[str], cursor: str) -> list[RunRequest]:
    """Few runs for the due partitions: keys needing the same assets share rectangles."""
    assets_by_key: dict[Key, list[str]] = {}
    for asset in ("signal_outcomes", "backtests"):
        for key in due.get(asset, ()):
            assets_by_key.setdefault(key, []).append(asset)
    keys_by_assets: dict[tuple[str, ...], list[Key]] = {}
    for key, assets in assets_by_key.items():
        keys_by_assets.setdefault(tuple(assets), []).append(key)
    requests = []
    for assets, keys in sorted(keys_by_assets.items()):
        for rectangle in rectangles(keys, ticker_order):
            requests.append(_request(signal_evaluation_job.name, assets, rectangle.tags(), rectangle.describe(), cursor))
    for first, last in date_ranges(due.get("portfolio_backtests", ())):
        requests.append(_request(portfolio_job.name, ("portfolio_backtests",), range_tags(None, first, last),
                                 f"{first}..{last}", cursor))
    return requests


def _request(job_name: str, assets: tuple[str, ...], tags: dict[str, str], described: str, cursor: str) -> RunRequest:
    return RunRequest(
        run_key=f"{'+'.join(assets)}:{described}:{cursor}",
        job_name=job_name,
        asset_selection=[AssetKey(a) for a in assets],
        tags={**tags, TRIGGER_TAG: "signal_validation"},
    )


def _latest_storage_id(instance, asset: str) -> int:
    records = instance.fetch_materializations(AssetKey(asset), limit=1).records
    return records[0].storage_id if records else 0


@sensor(
    name="signal_validation",
    jobs=[signal_evaluation_job, portfolio_job],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="When prices or signals land, materializes the signal_outcomes and backtests whose "
    "observation windows they complete, then portfolio_backtests of each completed date.",
)
def signal_validation_sensor(context: SensorEvaluationContext):
    instance = context.instance
    if context.cursor is None:
        # The first tick starts from now: what was materialized before the sensor existed is
        # backfilled from the UI, not replayed here as thousands of runs.
        start = {asset: _latest_storage_id(instance, asset) for asset in WATCHED}
        return SensorResult(skip_reason=SkipReason(f"started; watching {', '.join(WATCHED)} events after "
                                                   f"storage ids {start}"), cursor=json.dumps(start))
    read_up_to = json.loads(context.cursor)
    new: dict[str, set] = {}
    for asset in WATCHED:
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), after_storage_id=read_up_to.get(asset, 0)),
            limit=MAX_EVENTS_PER_TICK, ascending=True)
        new[asset] = {parse_key(r.partition_key) for r in result.records if r.partition_key}
        if result.records:
            read_up_to[asset] = result.records[-1].storage_id
        if result.has_more:
            context.log.info(f"{asset}: more than {MAX_EVENTS_PER_TICK} new events; the rest next tick")
    cursor = json.dumps(read_up_to)
    if not any(new.values()):
        return SensorResult(skip_reason=SkipReason("no new prices, llm_signals or backtests"), cursor=cursor)
    universe = instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME)
    due = due_partitions(
        new,
        lambda asset: {parse_key(k) for k in materialized_partitions(instance, asset)},
        universe,
    )
    requests = run_requests(due, list(universe), cursor)
    counts = ", ".join(f"{asset} {len(keys)}" for asset, keys in due.items() if keys)
    context.log.info(f"new events: {', '.join(f'{a} {len(k)}' for a, k in new.items() if k)}; "
                     f"due: {counts or 'nothing'}; {len(requests)} run(s)")
    if not requests:
        return SensorResult(skip_reason=SkipReason("new events complete no window whose inputs are all "
                                                   "materialized"), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)
