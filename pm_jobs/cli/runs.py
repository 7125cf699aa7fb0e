"""`pm runs slots | release RUN_ID` (the pool slots runs hold) and `pm failures` (the failed runs,
each marked once its partitions have since materialized)."""

from __future__ import annotations

import argparse
import datetime as dt
import functools
from collections.abc import Sequence

from pm_jobs.cli import reports
from pm_jobs.cli.instance import QUIET, dagster_instance

# A failed backfill can cover years x tickers: past this many partitions the later materializations
# are read whole and matched here, rather than named one by one in the query.
MANY_PARTITIONS = 500


def add_parser(commands) -> None:
    failures = commands.add_parser("failures", help="the latest failed runs: step, partitions, root error")
    failures.add_argument("--last", type=int, default=20, help="how many rows (default 20)")
    failures.set_defaults(func=run_failures, instance=QUIET)
    runs = commands.add_parser("runs", help="pool slots held by runs; release a run whose process died")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("slots", help="which runs hold each pool's slots").set_defaults(func=run_slots)
    release = actions.add_parser("release", help="mark a dead run failed and free its pool slots")
    release.add_argument("run_id")
    release.set_defaults(func=run_release)


def run_failures(args: argparse.Namespace) -> int:
    instance = functools.cache(dagster_instance)  # opened for the first row, if there is one
    print("\n".join(reports.failures_report(args.last, marker=lambda failure: since_succeeded(instance(), failure))))
    return 0


def run_slots(args: argparse.Namespace) -> int:
    print("\n".join(pool_slot_holders(dagster_instance())))
    return 0


def run_release(args: argparse.Namespace) -> int:
    print(release_run(dagster_instance(), args.run_id))
    return 0


def pool_slot_holders(instance) -> list[str]:
    """Which runs hold a slot of each pool, and their status: a run that holds one while it is not
    running (its process was killed) blocks every later step of that pool."""
    from pm_assets.dagster_compat import pool_slot_usage  # imports dagster: not for `pm --help`

    lines = []
    for usage in pool_slot_usage(instance):
        lines.append(f"{usage.pool}: limit {usage.limit}, held by {len(usage.holders)} run(s)")
        for run_id in sorted(usage.holders):
            run = instance.get_run_by_id(run_id)
            status = run.status.value if run else "deleted"
            lines.append(f"  {run_id}  {status}{'' if status == 'STARTED' else '  (not running: release it)'}")
    return lines or ["no pool slots in use"]


def release_run(instance, run_id: str) -> str:
    """Free the pool slots of a run whose process died without ending it (SIGKILL, a power cut):
    mark it failed, if it still says it is running, and release its slots. The stranded_runs
    sensor does this by itself within a minute when the daemon runs."""
    from pm_sensors.stranded_runs import release  # pm_sensors imports dagster: not for `pm --help`

    if instance.get_run_by_id(run_id) is None:
        raise ValueError(f"no run {run_id!r} on this instance (`dagster run list` shows them)")
    return release(instance, run_id, "released by `pm runs release`: its process is gone")


def failed_partitions(partitions: str, universe: Sequence[str]) -> list[str]:
    """The partition keys a failure row names: one key, or a range `start...end` over trading days
    (x the tickers from start's to end's in the universe's order, for keys `date|ticker`)."""
    from pm_domain import calendar  # exchange_calendars and pandas: not for `pm --help`

    if "..." not in partitions:
        return [partitions]
    start, _, end = partitions.partition("...")
    (first, _, ticker_from), (last, _, ticker_to) = start.partition("|"), end.partition("|")
    days = [d.isoformat() for d in calendar.trading_days(dt.date.fromisoformat(first), dt.date.fromisoformat(last))]
    if not ticker_from:
        return days
    if ticker_from in universe and ticker_to in universe:
        tickers = list(universe[universe.index(ticker_from):universe.index(ticker_to) + 1])
    else:  # one of them was removed since: the two the range names
        tickers = list(dict.fromkeys([ticker_from, ticker_to]))
    return [f"{day}|{ticker}" for day in days for ticker in tickers]


def since_succeeded(instance, failure: dict) -> str:
    """'  (since succeeded <when>)' when every partition of a `run_failures` row has materialized
    after the failure (when the last of them did, UTC like failed_at), '  (since succeeded: n/m
    partitions)' when some have, '' when none has or the step is not an asset's."""
    # dagster takes seconds to import: not for `pm --help`
    from dagster import AssetKey, AssetRecordsFilter

    from pm_assets.partitions import TICKERS_PARTITIONS_NAME

    asset, partitions, failed_at = failure["asset"], failure["partitions"], failure["failed_at"]
    if asset is None:
        return ""
    universe = instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME) if partitions and "|" in partitions else []
    try:
        keys = failed_partitions(partitions, universe) if partitions else None
    except ValueError:  # a range that is not of trading days: no mark rather than no list
        return ""
    after = failed_at.replace(tzinfo=dt.UTC).timestamp()  # run_failures stores UTC without a zone
    named = keys if keys is not None and len(keys) <= MANY_PARTITIONS else None
    records_filter = AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=named, after_timestamp=after)
    first_success: dict[str | None, float] = {}
    cursor, more = None, True
    while more:
        page = instance.fetch_materializations(records_filter, limit=1000, cursor=cursor, ascending=True)
        for record in page.records:
            first_success.setdefault(record.partition_key, record.timestamp)
        cursor, more = page.cursor, page.has_more
    wanted = [None] if keys is None else keys
    done = [first_success[key] for key in wanted if key in first_success]
    if not done:
        return ""
    if len(done) < len(wanted):
        return f"  (since succeeded: {len(done)}/{len(wanted)} partitions)"
    return f"  (since succeeded {dt.datetime.fromtimestamp(max(done), dt.UTC):%Y-%m-%d %H:%M})"
