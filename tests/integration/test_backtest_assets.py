"""signal_outcomes, backtests and portfolio_backtests materialized in-process on real sample
prices, with stored signals written through the store (llm_signals' own tests cover how signals
are made; these assets read only ticker, date, action, confidence, position_size, horizon)."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from dagster_duckdb import DuckDBResource

from pm_assets import backtests, portfolio_backtests, prices, signal_outcomes
from pm_domain.calendar import trading_days
from pm_resources.connections import connect as store_connect
from pm_resources.price_source import PriceSourceResource
from pm_resources.store import replace_partitions
from tests.support.runs import range_tags
from tests.support.stores import copy_of
from tests.support.runs import failure_message, table

pytestmark = pytest.mark.timeout(180)

TICKERS = ["^GSPC", "^IXIC"]
SIGNAL_DAYS = trading_days(dt.date(2017, 6, 1), dt.date(2018, 12, 31))
START, END = "2018-11-01", "2018-12-31"
RUN_DAYS = trading_days(dt.date.fromisoformat(START), dt.date.fromisoformat(END))
# The signal model's knowledge cutoff, inside every backtest window: the attribution is drawn from
# the sessions after it, the contaminated figures from the sessions before.
CUTOFF = dt.date(2018, 6, 29)
QUICK = {"ops": {name: {"config": {"bootstrap_replications": 200}} for name in ("backtests", "portfolio_backtests")}}


def _resources(db_path):
    return {"duckdb": DuckDBResource(database=db_path), "price_source": PriceSourceResource(source="sample")}


def _run(instance, db_path, assets, start=START, end=END, run_config=None):
    if assets == [portfolio_backtests]:
        tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    else:
        tags = range_tags(TICKERS, start, end)
    config = {"ops": {k: v for k, v in (run_config or QUICK)["ops"].items() if k in {a.key.path[-1] for a in assets}}}
    return materialize(assets, instance=instance, resources=_resources(db_path), tags=tags, raise_on_error=False,
                       run_config=config)


def _signals(seed: int = 0) -> pl.DataFrame:
    """Random forecast proposals; an LLM that vetoes about a third of the trades and has its own
    random calls (the backtest's attribution and the outcomes' calibration read them)."""
    rng = np.random.default_rng(seed)
    n = len(SIGNAL_DAYS) * len(TICKERS)
    proposed = rng.choice(["BUY", "SELL", "HOLD"], n)
    vetoed = (proposed != "HOLD") & (rng.random(n) < 0.3)
    return pl.DataFrame({
        "ticker": [t for t in TICKERS for _ in SIGNAL_DAYS], "date": SIGNAL_DAYS * len(TICKERS),
        "action": np.where(vetoed, "HOLD", proposed), "confidence": rng.uniform(0.5, 0.75, n),
        "position_size": rng.uniform(0.0, 0.25, n), "horizon": np.full(n, 5), "forecast_action": proposed,
        "kelly_fraction": rng.uniform(0.0, 0.5, n), "rules": '{"kelly_share": 0.5, "max_position": 0.25}',
        "llm_action": rng.choice(["BUY", "SELL", "HOLD"], n), "llm_confidence": rng.uniform(0.3, 0.95, n),
        "knowledge_cutoff": [CUTOFF] * n, "after_cutoff": [d > CUTOFF for _ in TICKERS for d in SIGNAL_DAYS],
    })


@pytest.fixture(scope="module")
def upstream_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("backtests") / "upstream.duckdb")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("tickers", TICKERS)
        result = materialize([prices], instance=instance, resources=_resources(path),
                             tags=range_tags(TICKERS, "2016-06-01", "2018-12-31"))
        assert result.success
    with store_connect(path) as conn:
        replace_partitions(conn, "llm_signals", _signals(), TICKERS, SIGNAL_DAYS)
    return path


@pytest.fixture()
def store(upstream_store, tmp_path):
    return copy_of(upstream_store, tmp_path)


@pytest.fixture()
def universe(instance):
    instance.add_dynamic_partitions("tickers", TICKERS)
    return instance


def _checks(result):
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def test_the_three_assets_write_every_partition_once_with_plots_and_checks(universe, store):
    result = _run(universe, store, [signal_outcomes, backtests])
    assert result.success, failure_message(result)
    portfolio = _run(universe, store, [portfolio_backtests])
    assert portfolio.success, failure_message(portfolio)

    outcomes, rows = table(store, "signal_outcomes"), table(store, "backtests")
    assert outcomes.height == rows.height == len(TICKERS) * len(RUN_DAYS)
    assert rows["verdict"].is_in(["passed", "failed"]).all() and rows["sessions"].eq(252).all()
    assert rows["sharpe"].is_not_null().all() and rows["sharpe_ci_lower"].is_not_null().all()
    # Random signals: the verdict must fail, and say why.
    assert rows["verdict"].eq("failed").all() and rows["verdict_reason"].str.contains("<=").all()
    with store_connect(store, read_only=True) as conn:
        book = pl.from_arrow(conn.sql("SELECT * FROM portfolio_backtests ORDER BY date, weighting").to_arrow_table())
    assert book.height == 2 * len(RUN_DAYS) and set(book["weighting"]) == {"equal", "position_size"}
    assert book["tickers"][0].to_list() == TICKERS

    checks = _checks(result) | _checks(portfolio)
    assert checks[("backtests", "backtest_inputs_complete")] and checks[("portfolio_backtests", "backtest_inputs_complete")]
    assert checks[("signal_outcomes", "outcome_prices_complete")]
    metadata = result.asset_materializations_for_node("backtests")[0].metadata

    def plotted(run, asset, name):  # a plot lives on the last date's partitions it draws
        return {str(m.partition): m.metadata[name].value for m in run.asset_materializations_for_node(asset)
                if name in m.metadata}

    curves = plotted(result, "backtests", "equity_curve")
    assert sorted(curves) == [f"{RUN_DAYS[-1]}|{t}" for t in sorted(TICKERS)]
    assert all(c.startswith("![strategy equity") and "base64," in c for c in curves.values())
    assert "probabilistic_sharpe" in metadata["metrics"].value and metadata["verdict_failed"].value == rows.height
    assert list(plotted(portfolio, "portfolio_backtests", "equity_curve")) == [str(RUN_DAYS[-1])]
    # beside every row, the forecast-only twin and the verdict on what the LLM's vetoes did
    assert rows["llm_verdict"].is_in(["llm_adds", "llm_removes", "no_difference", "insufficient_data"]).all()
    usable = rows.filter(pl.col("verdict") != "insufficient_data")
    assert (usable["llm_held_back"] > 0).all()  # about a third of the trades were vetoed
    # Only sessions whose position comes from a signal after the cutoff (two sessions before) count.
    days = trading_days(dt.date(2017, 1, 3), dt.date.fromisoformat(END))
    first_clean = days.index(CUTOFF) + 3
    expected = [days.index(d) - max(days.index(d) - 251, first_clean) + 1 for d in usable["date"].to_list()]
    assert usable["llm_clean_sessions"].to_list() == expected
    assert usable["contaminated_llm_verdict"].is_in(["llm_adds", "llm_removes", "no_difference"]).all()
    assert usable["contaminated_llm_delta_sharpe"].is_not_null().all() and usable["llm_verdict_reason"].is_null().all()
    assert (usable["llm_delta_sharpe"] - usable["contaminated_llm_delta_sharpe"]).abs().min() > 0
    assert "llm_verdict" in metadata["llm_attribution"].value
    # Failed unstressed, so failed robust; each stress recomputed, and shown with the verdict.
    assert rows["robust_verdict"].eq("failed").all() and rows["robust_reason"].str.starts_with("failed before any stress").all()
    for stressed in ("verdict_cost_2x", "verdict_cost_5x", "verdict_delay_1"):
        assert rows[stressed].is_in(["passed", "failed"]).all() and book[stressed].is_in(["passed", "failed"]).all()
    assert book["robust_verdict"].eq("failed").all()
    assert metadata["robust_verdict_failed"].value == rows.height and "robust_verdict" in metadata["metrics"].value
    assert "robust_verdict failed: failed before any stress" in metadata["verdicts"].value
    outcome_metadata = result.asset_materializations_for_node("signal_outcomes")[0].metadata
    assert outcome_metadata["llm_calls_scored"].value > 0 and outcome_metadata["forecast_calls_scored"].value > 0
    reliability = plotted(result, "signal_outcomes", "reliability")
    assert len(reliability) == 1 and next(iter(reliability.values())).startswith("![reliability diagram](data:image/png")

    # A call is resolved exactly when its 30-session window closed by the last price, 2018-12-31.
    calls = outcomes.filter(pl.col("action") != "HOLD")
    closed = calls["window_end_date"] <= dt.date(2018, 12, 31)
    assert closed.any() and not closed.all()
    assert (calls["status"] != "pending").to_list() == closed.to_list()
    assert outcomes.filter(pl.col("date") <= dt.date(2018, 12, 20), pl.col("action") != "HOLD")["hit"].is_not_null().all()


def test_rematerializing_replaces_rows_and_gives_the_same_numbers(universe, store):
    assert _run(universe, store, [backtests, signal_outcomes]).success
    first = table(store, "backtests"), table(store, "signal_outcomes")
    assert _run(universe, store, [backtests, signal_outcomes]).success
    again = table(store, "backtests"), table(store, "signal_outcomes")
    assert first[0].equals(again[0]) and first[1].equals(again[1])


def test_old_signals_are_validated_or_failed_once_their_window_has_closed(universe, store):
    result = _run(universe, store, [signal_outcomes], "2018-09-04", "2018-10-31")
    assert result.success, failure_message(result)
    outcomes = table(store, "signal_outcomes").filter(pl.col("action") != "HOLD")
    assert outcomes["status"].is_in(["validated", "failed"]).all()
    assert (outcomes["status"] == "validated").to_list() == outcomes["hit"].to_list()
    metadata = result.asset_materializations_for_node("signal_outcomes")[0].metadata
    resolved = outcomes["hit"].cast(pl.Float64).mean()
    assert metadata["hit_rate_resolved"].value == pytest.approx(resolved)


def test_costs_lower_the_return_and_signal_sizing_lowers_exposure(universe, store):
    assert _run(universe, store, [backtests], "2018-12-31", "2018-12-31").success
    free = table(store, "backtests")
    costly = {"ops": {"backtests": {"config": {"bootstrap_replications": 200, "cost_bps": 50.0}}}}
    assert _run(universe, store, [backtests], "2018-12-31", "2018-12-31", costly).success
    charged = table(store, "backtests")
    assert (charged["total_return"] < free["total_return"]).all() and charged["cost_bps"].eq(50.0).all()
    sized = {"ops": {"backtests": {"config": {"bootstrap_replications": 200, "sizing": "signal"}}}}
    assert _run(universe, store, [backtests], "2018-12-31", "2018-12-31", sized).success
    assert (table(store, "backtests")["volatility"] < free["volatility"]).all()


def test_a_price_gap_gives_rows_with_reasons_and_a_failing_check_not_a_crash(universe, store):
    with store_connect(store) as conn:
        conn.execute("DELETE FROM prices WHERE ticker = '^IXIC' AND date = '2018-10-15'")
    result = _run(universe, store, [backtests, signal_outcomes], "2018-12-31", "2018-12-31")
    assert result.success, failure_message(result)
    rows = table(store, "backtests")
    gap = rows.filter(pl.col("ticker") == "^IXIC").row(0, named=True)
    assert gap["verdict"] == "insufficient_data" and "2018-10-15" in gap["verdict_reason"] and gap["sharpe"] is None
    assert rows.filter(pl.col("ticker") == "^GSPC")["sharpe"].is_not_null().all()
    assert not _checks(result)[("backtests", "backtest_inputs_complete")]


def test_missing_signals_for_the_run_fail_naming_the_table(universe, store):
    with store_connect(store) as conn:
        conn.execute("DELETE FROM llm_signals WHERE date = '2018-12-31'")
    for asset in (backtests, signal_outcomes):
        result = _run(universe, store, [asset], "2018-12-28", "2018-12-31")
        assert not result.success
        assert "llm_signals cover 2 of the 4 partitions" in failure_message(result)
    with store_connect(store, read_only=True) as conn:
        assert conn.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'backtests'").fetchall()[0][0] == 0


def test_outcomes_declare_the_forward_window_of_prices_they_wait_for():
    mapping = signal_outcomes.get_partition_mapping(AssetKey("prices"))
    window = mapping.downstream_mappings_by_upstream_dimension["date"].partition_mapping
    assert (window.start_offset, window.end_offset) == (1, 31)
    lookback = backtests.get_partition_mapping(AssetKey("llm_signals"))
    # 252 sessions of returns need the signals of 254 sessions before (position lag 2), and the
    # verdict under one session more of delay the one before them.
    assert lookback.downstream_mappings_by_upstream_dimension["date"].partition_mapping.start_offset == -254
