"""target_weights and the paper book's step materialized in-process on real sample prices and
stored signals: what they write, their checks, a book continued night by night equal to one run,
a placed date that a re-run cannot change, and the two paper sensors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, build_run_status_sensor_context, build_sensor_context, instance_for_test, materialize, AssetMaterialization

from pm_assets import paper_trading, prices, target_weights
from pm_domain import calendar
from pm_jobs.cli.book import book_report
from pm_domain.signal_validation import LAYERS
from pm_resources.broker import SimulatedBrokerResource
from pm_resources.connections import connect as store_connect
from pm_resources.database import ClosingDuckDBResource
from pm_resources.price_source import PriceSourceResource
from pm_resources.store import query, replace_partitions
from pm_sensors.paper_reconciliation import paper_reconciliation_sensor
from pm_sensors.paper_trading import paper_range, paper_trading_sensor
from pm_assets.partitions import range_tags as partition_range_tags
from tests.support.runs import range_tags
from tests.support.stores import copy_of
from tests.support.runs import failure_message

pytestmark = pytest.mark.timeout(240)

TICKERS = ["^GSPC", "^IXIC"]
DAYS = calendar.trading_days(dt.date(2018, 10, 1), dt.date(2018, 12, 31))
PAPER = [target_weights, paper_trading]


def signal_rows(seed: int = 0, days=DAYS) -> pl.DataFrame:
    """Stored llm_signals as the stage writes them (the columns the book reads): random calls with
    half-Kelly sizes, a few failing a validation layer."""
    rng = np.random.default_rng(seed)
    n = len(days) * len(TICKERS)
    failing = rng.random(n) < 0.1
    return pl.DataFrame({
        "ticker": [t for t in TICKERS for _ in days], "date": list(days) * len(TICKERS),
        "action": rng.choice(["BUY", "BUY", "SELL", "HOLD"], n), "confidence": rng.uniform(0.5, 0.8, n),
        "position_size": rng.uniform(0.05, 0.3, n), "prompt_hash": [f"p{seed}-{i}" for i in range(n)],
        "llm_model": "gemma3:270m",
        **{f"validation_{layer}": np.where(failing & (layer == "technical"), "fail", "pass").tolist() for layer in LAYERS},
        **{f"validation_{layer}_reason": ["RSI and trend against" if f and layer == "technical" else None for f in failing]
           for layer in LAYERS},
    }, schema_overrides={f"validation_{layer}_reason": pl.String for layer in LAYERS})


@pytest.fixture(scope="module")
def upstream_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("paper") / "upstream.duckdb")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("tickers", TICKERS)
        result = materialize([prices], instance=instance, tags=range_tags(TICKERS, "2017-09-01", "2018-12-31"),
                             resources={"duckdb": ClosingDuckDBResource(database=path),
                                        "price_source": PriceSourceResource(source="sample")})
        assert result.success
    with store_connect(path) as conn:
        replace_partitions(conn, "llm_signals", signal_rows(), TICKERS, DAYS)
    return path


@pytest.fixture()
def store(upstream_store, tmp_path):
    return copy_of(upstream_store, tmp_path)


def run_book(instance, path, start, end, method="signal_kelly", broker=None):
    if not instance.get_dynamic_partitions("tickers"):
        instance.add_dynamic_partitions("tickers", TICKERS)
    return materialize(PAPER, instance=instance, raise_on_error=False, tags=partition_range_tags(None, start, end),
                       run_config={"ops": {"target_weights": {"config": {"method": method}}}},
                       resources={"duckdb": ClosingDuckDBResource(database=path),
                                  "broker": broker or SimulatedBrokerResource()})


def table(path, sql, params=()):
    with store_connect(path, read_only=True) as conn:
        return query(conn, sql, list(params))


def checks(result):
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def test_the_book_over_a_quarter_writes_every_table_with_its_checks_and_nav_plot(instance, store):
    result = run_book(instance, store, DAYS[0], DAYS[-1])
    assert result.success, failure_message(result)
    outcome = checks(result)
    assert len(outcome) == 9 and all(passed for (_, name), passed in outcome.items() if name != "reconciliation_gap"), outcome
    book = table(store, "SELECT * FROM paper_book ORDER BY date")
    assert book["date"].to_list() == DAYS and book["inception"].unique().to_list() == [DAYS[0]]
    orders = table(store, "SELECT * FROM paper_orders ORDER BY date, ticker")
    fills = table(store, "SELECT * FROM paper_fills ORDER BY date, ticker")
    assert orders.height > 20 and fills["status"].unique().to_list() == ["filled"]
    # Every order but the last night's has its fill at the next session's open, with costs.
    joined = orders.filter(pl.col("date") < DAYS[-1]).join(fills, on="client_order_id", suffix="_fill")
    assert joined.height == orders.filter(pl.col("date") < DAYS[-1]).height
    assert (joined["date_fill"] == joined["fill_session"]).all() and (joined["commission"] >= 1.0).all()
    prices_ = table(store, "SELECT ticker, date, open FROM prices")
    priced = joined.join(prices_, left_on=["ticker", "date_fill"], right_on=["ticker", "date"])
    assert np.allclose(priced["reference_price"], priced["open"])
    assert (orders["placed_before_fill_open"] == False).all()  # noqa: E712  a backfill of 2018 is not forward
    assert book["costs"][-1] > 0 and book["cash"].min() >= 0
    assert (orders["weights_method"] == "signal_kelly").all() and orders["signal_id"].null_count() == 0
    weights = table(store, "SELECT * FROM target_weights")
    assert weights.filter(pl.col("reason").str.starts_with("validation_technical failed")).height > 0
    assert weights.group_by("date").agg(pl.col("weight").sum()).select(pl.col("weight").max()).item() <= 1.0 + 1e-9
    last = book.row(-1, named=True)
    parts = sum(last[f"gap_{p}_bps"] for p in ("placed_orders", "costs", "rounding", "pending", "timing", "residual"))
    assert parts == pytest.approx(last["gap_bps"], abs=1e-9) and abs(last["gap_residual_bps"]) < 1e-6
    assert outcome[("paper_book", "reconciliation_gap")] == (book["gap_bps"].abs().max() <= 100)
    plotted = [e for e in instance.fetch_materializations(AssetKey("paper_book"), limit=200).records
               if "nav_plot" in e.asset_materialization.metadata]
    assert [e.partition_key for e in plotted] == [str(DAYS[-1])]


def test_a_book_continued_night_by_night_equals_one_run_and_its_orders_stand(instance, store, tmp_path, upstream_store):
    middle = DAYS.index(dt.date(2018, 11, 15))
    assert run_book(instance, store, DAYS[0], DAYS[middle]).success
    placed = table(store, "SELECT * FROM paper_orders ORDER BY client_order_id")
    for day in DAYS[middle + 1: middle + 3]:
        assert run_book(instance, store, day, day).success
    assert run_book(instance, store, DAYS[middle + 3], DAYS[-1]).success
    (tmp_path / "whole").mkdir()
    whole = copy_of(upstream_store, tmp_path / "whole")
    with DagsterInstance.ephemeral() as other:
        assert run_book(other, whole, DAYS[0], DAYS[-1]).success
    columns = ["date", "cash", "nav", "costs", "turnover", "gap_bps"]
    stepwise = table(store, f"SELECT {', '.join(columns)} FROM paper_book ORDER BY date")
    assert stepwise.equals(table(whole, f"SELECT {', '.join(columns)} FROM paper_book ORDER BY date"))
    later = table(store, "SELECT * FROM paper_orders ORDER BY client_order_id").filter(pl.col("date") <= DAYS[middle])
    assert later.equals(placed)  # placed_at included: nothing rewritten


def test_a_re_run_with_other_signals_keeps_the_placed_orders_and_records_amendments(instance, store):
    assert run_book(instance, store, DAYS[0], DAYS[20]).success
    placed = table(store, "SELECT * FROM paper_orders ORDER BY client_order_id")
    book = table(store, "SELECT date, nav, orders_placed_at FROM paper_book ORDER BY date")
    with store_connect(store) as conn:  # a new LLM reply changes the first fortnight's signals
        replace_partitions(conn, "llm_signals", signal_rows(seed=7, days=DAYS[:10]), TICKERS, DAYS[:10])
    result = run_book(instance, store, DAYS[0], DAYS[20])
    assert result.success, failure_message(result)
    assert checks(result)[("paper_orders", "orders_unchanged")] is False  # a warning, not a failure
    assert table(store, "SELECT * FROM paper_orders ORDER BY client_order_id").equals(placed)
    again = table(store, "SELECT date, nav, orders_placed_at FROM paper_book ORDER BY date")
    assert again.equals(book)  # the book plays the placed orders, not the new signals
    amendments = table(store, "SELECT * FROM paper_order_amendments")
    assert amendments.height > 0 and amendments["date"].max() <= DAYS[9]
    assert amendments["reason"].str.contains("the placed order stands|already placed").all()
    assert (table(store, "SELECT gap_placed_orders_bps FROM paper_book WHERE date = ?", [DAYS[20]]).item() != 0)
    report = "\n".join(book_report(store, amendments=3))
    assert f"paper book 'paper' as of {DAYS[20]} (inception {DAYS[0]}" in report
    assert "amendments (latest 3; the placed orders stand):" in report and "placed_orders" in report
    assert book_report(store, DAYS[0] - dt.timedelta(days=3)) == [f"the paper book starts at {DAYS[0]}: nothing on or before {DAYS[0] - dt.timedelta(days=3)}"]
    # The same re-run twice records nothing new.
    assert run_book(instance, store, DAYS[0], DAYS[20]).success
    assert table(store, "SELECT count(*) AS n FROM paper_order_amendments").item() == amendments.height


def test_a_date_before_the_inception_and_a_gap_in_target_weights_are_refused_in_one_line(instance, store):
    assert run_book(instance, store, DAYS[10], DAYS[12]).success
    result = run_book(instance, store, DAYS[5], DAYS[6])
    assert not result.success
    assert f"paper_book starts at {DAYS[10]} (its inception); {DAYS[5]} is before it" in failure_message(result)
    with store_connect(store) as conn:
        conn.execute("DELETE FROM target_weights WHERE date = ?", [DAYS[12]])
    result = materialize([paper_trading], instance=instance, raise_on_error=False, tags=partition_range_tags(None, DAYS[13], DAYS[13]),
                         resources={"duckdb": ClosingDuckDBResource(database=store), "broker": SimulatedBrokerResource()})
    assert not result.success
    assert f"target_weights has no rows for {DAYS[12]}" in failure_message(result)


def test_pm_book_refuses_a_malformed_date_in_one_line(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "book", "--date", "2018-13-01"], capture_output=True, text=True,
                         env={"DAGSTER_HOME": str(tmp_path), "PM_DUCKDB_PATH": str(tmp_path / "x.duckdb"), "PATH": "/usr/bin:/bin"},
                         timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == "pm: --date '2018-13-01' is not a date: use YYYY-MM-DD"


def test_fractional_costless_book_has_no_rounding_or_cost_gap(instance, store):
    free = SimulatedBrokerResource(slippage_bps=0, commission_per_share=0, commission_minimum=0, fractional_shares=True)
    assert run_book(instance, store, DAYS[0], DAYS[-1], method="equal", broker=free).success
    book = table(store, "SELECT * FROM paper_book ORDER BY date")
    assert book["costs"].max() == 0
    assert book["gap_rounding_bps"].abs().max() < 1e-9 and book["gap_costs_bps"].abs().max() < 1e-9
    assert (book["gap_bps"] - book["gap_timing_bps"]).abs().max() < 1e-6  # all that is left is the open


def test_the_reconciliation_sensor_writes_alerts_where_failures_go_once(store, monkeypatch):
    with instance_for_test() as instance:
        result = run_book(instance, store, DAYS[0], DAYS[-1], method="equal")
        assert result.success
        monkeypatch.setenv("PM_PAPER_ALERT_BPS", "0.01")
        run = instance.get_run_by_id(result.run_id)
        context = build_run_status_sensor_context(sensor_name="paper_reconciliation", dagster_event=result.get_run_success_event(),
                                                  dagster_instance=instance, dagster_run=run,
                                                  resources={"duckdb": ClosingDuckDBResource(database=store)})
        paper_reconciliation_sensor(context)
        alerts = table(store, "SELECT * FROM run_failures WHERE trigger = 'paper_reconciliation'")
        assert alerts.height > 0 and set(alerts["asset"]) == {"paper_book"}
        assert alerts["error"][0].startswith("paper NAV") and "past 0.01 bps" in alerts["error"][0]
        paper_reconciliation_sensor(context)
        assert table(store, "SELECT count(*) AS n FROM run_failures").item() == alerts.height


def test_the_paper_trading_sensor_runs_each_complete_night_and_catches_up():
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("tickers", TICKERS)
        first = paper_trading_sensor.evaluate_tick(build_sensor_context(instance=instance))
        assert "started" in first.skip_message
        for ticker in TICKERS[:1]:
            instance.report_runless_asset_event(AssetMaterialization("risk_assessments", partition=f"{DAYS[0]}|{ticker}"))
        waiting = paper_trading_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=first.cursor))
        assert not waiting.run_requests  # one ticker's risk is not in yet
        instance.report_runless_asset_event(AssetMaterialization("risk_assessments", partition=f"{DAYS[0]}|{TICKERS[1]}"))
        data = paper_trading_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=waiting.cursor))
        [request] = data.run_requests
        assert request.job_name == "nightly_paper"
        assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
            str(DAYS[0]), str(DAYS[0]))
    assert paper_range({DAYS[5]}, {DAYS[0], DAYS[1]}) == (DAYS[2], DAYS[5])  # the nights missed come along
    assert paper_range({DAYS[1]}, {DAYS[0], DAYS[1]}) is None
