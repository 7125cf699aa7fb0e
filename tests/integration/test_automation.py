"""The nightly schedule, the watchlist sensor, the signal-validation sensor and the run-failure
sensor, evaluated against a real (ephemeral) Dagster instance: the events they read are real
materialization events in its event log, the partitions real dynamic partitions."""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    PartitionKeyRange,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from dagster_duckdb import DuckDBResource

from pm_assets import prices
from pm_assets.partitions import (
    TICKERS_PARTITIONS_NAME,
    PartitionRectangle,
    daily_ticker_partitions,
    rectangles,
    trading_day_partitions,
)
from pm_domain import calendar
from pm_domain.outcomes import signal_dates_observed_on
from pm_domain.tickers import TickerError
from pm_jobs.cli.reports import partition_status
from pm_jobs.cli.tickers import remove_tickers
from pm_jobs.definitions import defs
from pm_jobs.schedules import nightly_research_schedule, session_to_run
from pm_resources.connections import connect as store_connect
from pm_resources.price_source import PriceSourceResource
from pm_resources.store import query
from pm_sensors.run_failures import run_failures_sensor
from pm_sensors.signal_validation import signal_validation_sensor
from pm_sensors.universe import watchlist_sync_sensor

NEW_YORK = ZoneInfo("America/New_York")
D = dt.date(2018, 12, 31)
TICKERS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


@pytest.fixture()
def instance():
    """A temporary on-disk instance (schedules and sensors need one they can reference)."""
    with instance_for_test() as temporary:
        yield temporary


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=NEW_YORK)


def universe(instance, tickers=TICKERS):
    instance.add_dynamic_partitions(TICKERS_PARTITIONS_NAME, list(tickers))
    return instance


def keys_of(tags: dict[str, str], instance, partitions_def=daily_ticker_partitions) -> set[str]:
    """The partition keys a run with these range tags covers, as Dagster resolves them."""
    key_range = PartitionKeyRange(tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"])
    if partitions_def is trading_day_partitions:
        return set(partitions_def.get_partition_keys_in_range(key_range))
    return set(partitions_def.get_partition_keys_in_range(key_range, dynamic_partitions_store=instance))


# --- the nightly schedule ----------------------------------------------------------------------

def test_nightly_tick_is_one_run_covering_every_ticker_on_the_closed_session(instance):
    universe(instance)
    data = nightly_research_schedule.evaluate_tick(
        build_schedule_context(instance=instance, scheduled_execution_time=at(D, 18, 30)))
    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert request.run_key == "nightly:2018-12-31"
    assert keys_of(request.tags, instance) == {f"2018-12-31|{t}" for t in TICKERS}
    assert defs.resolve_job_def("daily_research").name == "daily_research"


@pytest.mark.parametrize("day, why", [
    (dt.date(2018, 12, 25), "not an XNYS session"),       # Christmas
    (dt.date(2018, 12, 5), "not an XNYS session"),        # closed for President Bush's funeral
    (dt.date(2018, 12, 29), "not an XNYS session"),       # a Saturday
])
def test_nightly_tick_on_a_day_without_a_session_is_skipped_with_the_reason(instance, day, why):
    universe(instance)
    data = nightly_research_schedule.evaluate_tick(
        build_schedule_context(instance=instance, scheduled_execution_time=at(day, 18, 30)))
    assert not data.run_requests and why in data.skip_message


def test_a_tick_before_the_close_is_skipped_and_an_early_close_is_not():
    assert session_to_run(at(D, 15, 0))[0] is None
    assert "closes at 16:00" in session_to_run(at(D, 15, 0))[1]
    # The day after Thanksgiving closes at 13:00: a 14:00 tick has its session.
    assert session_to_run(at(dt.date(2018, 11, 23), 14, 0)) == (dt.date(2018, 11, 23), "closed")
    # A tick configured in another time zone runs the exchange-local date.
    london = dt.datetime(2018, 12, 31, 23, 30, tzinfo=ZoneInfo("Europe/London"))
    assert session_to_run(london) == (D, "closed")


def test_nightly_tick_with_an_empty_universe_is_skipped(instance):
    data = nightly_research_schedule.evaluate_tick(
        build_schedule_context(instance=instance, scheduled_execution_time=at(D, 18, 30)))
    assert not data.run_requests and "universe is empty" in data.skip_message


def test_the_nightly_request_materializes_exactly_its_partitions_and_skips_a_removed_ticker(instance, db_path):
    universe(instance, ["AAA", "BBB", "CCC"])
    resources = {"duckdb": DuckDBResource(database=db_path), "price_source": PriceSourceResource(source="synthetic")}
    day = dt.date(2018, 12, 28)
    request = nightly_research_schedule.evaluate_tick(
        build_schedule_context(instance=instance, scheduled_execution_time=at(day, 18, 30))).run_requests[0]
    assert materialize([prices], instance=instance, resources=resources, tags=request.tags).success
    assert instance.get_materialized_partitions(AssetKey("prices")) == {f"{day}|{t}" for t in ("AAA", "BBB", "CCC")}

    assert remove_tickers(instance, ["BBB", "ZZZ"]) == ["BBB"]
    status = partition_status(instance, ["prices"])
    assert status[1:] == ["prices: 3 materialized", f"  AAA                1 dates  {day} .. {day}",
                          f"  CCC                1 dates  {day} .. {day}",
                          f"  BBB                1 dates  {day} .. {day}  (removed from the universe)"]
    with store_connect(db_path) as conn:  # its history stays stored
        assert conn.execute("SELECT count(*) FROM prices WHERE ticker = 'BBB'").fetchone()[0] == 1
    request = nightly_research_schedule.evaluate_tick(
        build_schedule_context(instance=instance, scheduled_execution_time=at(D, 18, 30))).run_requests[0]
    assert keys_of(request.tags, instance) == {"2018-12-31|AAA", "2018-12-31|CCC"}


# --- the watchlist ------------------------------------------------------------------------------

def test_watchlist_sensor_adds_new_tickers_only_and_never_removes(instance, tmp_path, monkeypatch):
    watchlist = tmp_path / "watchlist.txt"
    watchlist.write_text("# mine\nAAA\nMSFT  # added today\n\nBRK.B\n")
    monkeypatch.setenv("PM_WATCHLIST", str(watchlist))
    universe(instance, ["AAA", "OLD"])
    data = watchlist_sync_sensor.evaluate_tick(build_sensor_context(instance=instance))
    assert [(r.partitions_def_name, list(r.partition_keys)) for r in data.dynamic_partitions_requests] == [
        ("tickers", ["MSFT", "BRK.B"])]
    assert not data.run_requests
    instance.add_dynamic_partitions("tickers", ["MSFT", "BRK.B"])  # what the daemon does with the request
    again = watchlist_sync_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=data.cursor))
    assert not again.dynamic_partitions_requests and "none new" in again.skip_message
    assert "OLD" in instance.get_dynamic_partitions("tickers")


def test_watchlist_sensor_refuses_a_malformed_file_naming_it_and_adds_nothing(instance, tmp_path, monkeypatch):
    watchlist = tmp_path / "watchlist.txt"
    watchlist.write_text("AAA\nDROP TABLE prices;\n")
    monkeypatch.setenv("PM_WATCHLIST", str(watchlist))
    with pytest.raises(TickerError, match=r"watchlist.txt:\d+: invalid ticker 'DROP TABLE prices;'"):
        watchlist_sync_sensor(build_sensor_context(instance=instance))
    assert instance.get_dynamic_partitions("tickers") == []


# --- rectangles ---------------------------------------------------------------------------------

def test_rectangles_cover_exactly_the_keys_merging_sessions_and_adjacent_tickers():
    order = ["A", "B", "C", "D"]
    christmas_week = [dt.date(2018, 12, 24), dt.date(2018, 12, 26)]  # consecutive sessions
    keys = [(d, t) for d in christmas_week for t in ("A", "B", "D")] + [(dt.date(2018, 12, 31), "C"), (D, "GONE")]
    assert rectangles(keys, order) == [
        PartitionRectangle(("A", "B"), christmas_week[0], christmas_week[1]),
        PartitionRectangle(("D",), christmas_week[0], christmas_week[1]),
        PartitionRectangle(("C",), D, D),
    ]
    assert rectangles([(dt.date(2018, 12, 20), "A"), (dt.date(2018, 12, 24), "A")], order) == [
        PartitionRectangle(("A",), dt.date(2018, 12, 20), dt.date(2018, 12, 20)),
        PartitionRectangle(("A",), dt.date(2018, 12, 24), dt.date(2018, 12, 24)),
    ]


# --- signal validation --------------------------------------------------------------------------

def report(instance, asset: str, keys):
    for day, ticker in keys:
        instance.report_runless_asset_event(AssetMaterialization(asset_key=asset, partition=f"{day}|{ticker}"))


def tick(instance, cursor):
    data = signal_validation_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))
    return data, data.cursor


def requested(data, instance) -> dict[tuple[str, ...], set[str]]:
    """{assets: partition keys} over every run request of a tick."""
    out: dict[tuple[str, ...], set[str]] = {}
    for request in data.run_requests:
        assets = tuple(sorted(k.to_user_string() for k in request.asset_selection))
        job = defs.resolve_job_def(request.job_name)
        assert set(request.asset_selection) <= set(job.asset_layer.selected_asset_keys)
        partitions_def = trading_day_partitions if assets == ("portfolio_backtests",) else daily_ticker_partitions
        out.setdefault(assets, set()).update(keys_of(request.tags, instance, partitions_def))
    return out


def test_validation_sensor_requests_exactly_the_completed_windows_once(instance):
    universe(instance, ["AAA", "BBB", "CCC"])
    tickers = ["AAA", "BBB", "CCC"]
    closing = signal_dates_observed_on(D)  # signals whose 1-, 5- and 30-session windows close on D
    assert closing == [calendar.shift_trading_days(D, -n) for n in (2, 6, 31)]
    history = [d for d in calendar.trading_days(closing[-1], calendar.shift_trading_days(D, -1))]
    report(instance, "prices", [(d, t) for d in history for t in tickers])
    # Signals exist for the window dates, except BBB on the 30-session date.
    report(instance, "llm_signals", [(d, t) for d in closing for t in tickers if (d, t) != (closing[-1], "BBB")])

    first, cursor = tick(instance, None)
    assert not first.run_requests and "started" in first.skip_message  # history is not replayed

    # The nightly run's prices for D land: the three windows closing on D are due; D's own
    # backtest waits for D's signals.
    report(instance, "prices", [(D, t) for t in tickers])
    data, cursor = tick(instance, cursor)
    assert requested(data, instance) == {("signal_outcomes",): {
        f"{d}|{t}" for d in closing for t in tickers if (d, t) != (closing[-1], "BBB")}}
    assert len(data.run_requests) == 4  # 3 dates; BBB's gap splits the 30-session date in two
    assert not tick(instance, cursor)[0].run_requests  # idempotent: nothing new, nothing requested

    # D's signals land: D's outcomes (pending) and backtests, as one run.
    report(instance, "llm_signals", [(D, t) for t in tickers])
    data, cursor = tick(instance, cursor)
    assert requested(data, instance) == {("backtests", "signal_outcomes"): {f"{D}|{t}" for t in tickers}}
    assert len(data.run_requests) == 1

    # The portfolio book of D waits until every ticker's backtest of D is in.
    report(instance, "backtests", [(D, "AAA"), (D, "BBB")])
    data, cursor = tick(instance, cursor)
    assert not data.run_requests
    report(instance, "backtests", [(D, "CCC")])
    data, cursor = tick(instance, cursor)
    assert requested(data, instance) == {("portfolio_backtests",): {str(D)}}


def test_validation_sensor_catches_up_on_every_night_missed_while_down(instance):
    tickers = ["AAA", "BBB"]
    universe(instance, tickers)
    nights = calendar.trading_days(dt.date(2018, 12, 24), D)  # 5 sessions
    signal_days = calendar.trading_days(calendar.shift_trading_days(nights[0], -31), nights[-1])
    report(instance, "llm_signals", [(d, t) for d in signal_days if d < nights[0] for t in tickers])
    _, cursor = tick(instance, None)
    # Five nights of prices and signals arrive while the daemon is down ...
    report(instance, "prices", [(d, t) for d in nights for t in tickers])
    report(instance, "llm_signals", [(d, t) for d in nights for t in tickers])
    data, cursor = tick(instance, cursor)
    due = requested(data, instance)
    expected_outcomes = {f"{s}|{t}" for d in nights for s in [*signal_dates_observed_on(d), d] for t in tickers}
    assert due[("backtests", "signal_outcomes")] == {f"{d}|{t}" for d in nights for t in tickers}
    assert due[("backtests", "signal_outcomes")] | due[("signal_outcomes",)] == expected_outcomes
    # ... and consecutive sessions share runs: far fewer runs than dates x tickers
    assert len(data.run_requests) < len({k.split("|")[0] for k in expected_outcomes})
    assert not tick(instance, cursor)[0].run_requests


def test_validation_cursor_survives_a_restart_of_the_instance_process(tmp_path):
    """The cursor is stored state: a new process with the same instance resumes from it."""
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(tmp_path)) as first:
        universe(first, ["AAA"])
        _, cursor = tick(first, None)
        report(first, "llm_signals", [(D, "AAA")])
        report(first, "prices", [(D, "AAA")])
    with DagsterInstance.from_config(str(tmp_path)) as second:
        data, cursor = tick(second, cursor)
        assert requested(data, second) == {("backtests", "signal_outcomes"): {f"{D}|AAA"}}
        assert json.loads(cursor)["prices"] > 0


# --- run failures -------------------------------------------------------------------------------

def test_run_failure_sensor_records_the_asset_partitions_and_error(instance, db_path):
    universe(instance, ["NOPE"])
    resources = {"duckdb": DuckDBResource(database=db_path), "price_source": PriceSourceResource(source="sample")}
    from tests.support.runs import range_tags

    result = materialize([prices], instance=instance, resources=resources, raise_on_error=False,
                         tags={**range_tags(["NOPE"], "2018-12-28", "2018-12-31"), "pm/trigger": "nightly"})
    assert not result.success
    context = build_run_status_sensor_context(
        sensor_name="run_failures", dagster_event=result.get_run_failure_event(), dagster_instance=instance,
        dagster_run=result.dagster_run, resources={"duckdb": DuckDBResource(database=db_path)})
    run_failures_sensor(context)
    run_failures_sensor(context)  # a second delivery of the same failure does not duplicate it
    with store_connect(db_path) as conn:
        rows = query(conn, "SELECT * FROM run_failures")
    assert rows.height == 1
    row = rows.row(0, named=True)
    assert (row["run_id"], row["step"], row["asset"], row["trigger"]) == (result.run_id, "prices", "prices", "nightly")
    assert row["partitions"] == "2018-12-28|NOPE...2018-12-31|NOPE"
    assert row["error_class"] == "PriceSourceError"
    assert row["error"].startswith("source 'sample' has no ticker NOPE")


# --- settings and freshness ---------------------------------------------------------------------

def test_prices_freshness_follows_the_nightly_time(monkeypatch):
    from pm_assets.prices import prices_freshness_policy

    policy = defs.resolve_assets_def("prices").specs_by_key[AssetKey("prices")].freshness_policy
    assert (policy.deadline_cron, policy.timezone) == ("30 20 * * 1-5", "America/New_York")
    monkeypatch.setenv("PM_NIGHTLY_TIME", "23:30")
    monkeypatch.setenv("PM_NIGHTLY_TIMEZONE", "Europe/London")
    late = prices_freshness_policy()  # the deadline passes midnight: Tuesday..Saturday
    assert (late.deadline_cron, late.timezone) == ("30 1 * * 2-6", "Europe/London")


@pytest.mark.parametrize("name, value, message", [
    ("PM_NIGHTLY_TIME", "6pm", "is not a time of day"),
    ("PM_NIGHTLY_TIMEZONE", "Mars/Olympus", "is not an IANA time zone"),
    ("PM_LLM_HEALTH_INTERVAL", "5", "at least 30"),
])
def test_bad_automation_settings_are_refused_by_name(monkeypatch, name, value, message):
    from pm_domain import settings

    monkeypatch.setenv(name, value)
    reader = {"PM_NIGHTLY_TIME": settings.nightly_time, "PM_NIGHTLY_TIMEZONE": settings.nightly_timezone,
              "PM_LLM_HEALTH_INTERVAL": settings.llm_health_interval_seconds}[name]
    with pytest.raises(settings.SettingsError, match=f"{name}=.*{message}"):
        reader()
