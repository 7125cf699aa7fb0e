"""pm_domain.outcomes and pm_domain.backtest on small, hand-checkable frames and on the sample
index data: timing (entry at the next close, no look-ahead), costs, gaps, empty and short
windows, the verdict, and the portfolio book."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from arch.data import sp500

from pm_domain import calendar
from pm_domain import performance as perf
from pm_domain.backtest import (
    BACKTEST_SCHEMA,
    BacktestRules,
    backtest_core,
    ledger_and_calls,
    portfolio_ledger,
    strategy_returns,
    verdict,
    window_metrics,
    window_series,
)
from pm_domain.outcomes import OUTCOME_SCHEMA, SessionGrid, signal_outcomes

START = dt.date(2018, 1, 2)
NO_BOOTSTRAP = {"bootstrap_replications": 200}


def sessions(first: dt.date, count: int) -> list[dt.date]:
    return calendar.trading_days(first, calendar.shift_trading_days(first, count - 1))


def price_frame(days: list[dt.date], values: list[float] | np.ndarray, ticker: str = "AAA") -> pl.DataFrame:
    return pl.DataFrame({"ticker": ticker, "date": days, "price": np.asarray(values, dtype=float)})


def signal_frame(days: list[dt.date], actions: list[str], ticker: str = "AAA", confidence: float = 0.6,
                 size: float = 0.2, horizon: int = 1) -> pl.DataFrame:
    return pl.DataFrame({"ticker": ticker, "date": days, "action": actions, "confidence": confidence,
                         "position_size": size, "horizon": horizon},
                        schema_overrides={"horizon": pl.Int64})


@pytest.fixture(scope="module")
def sample_prices() -> pl.DataFrame:
    frame = sp500.load().reset_index()
    return pl.DataFrame({"ticker": "^GSPC", "date": frame["Date"].dt.date, "price": frame["Adj Close"]}).filter(
        pl.col("date") >= dt.date(2016, 1, 4))


def random_signals(days: list[dt.date], seed: int, ticker: str = "^GSPC") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"ticker": ticker, "date": days, "action": rng.choice(["BUY", "SELL", "HOLD"], len(days)),
                         "confidence": rng.uniform(0.5, 0.8, len(days)), "position_size": rng.uniform(0, 0.25, len(days)),
                         "horizon": 5}, schema_overrides={"horizon": pl.Int64})


def backtest_rows(signals, prices, ends, rules=None):
    rules = rules or BacktestRules(**NO_BOOTSTRAP)
    grid = SessionGrid(calendar.shift_trading_days(min(ends), -(rules.window_sessions + 2)), max(ends))
    ledger, calls = ledger_and_calls(signals, prices, grid, rules.sizing)
    ticker = signals["ticker"][0] if signals.height else prices["ticker"][0]
    return window_metrics(ledger.filter(pl.col("ticker") == ticker), calls.filter(pl.col("ticker") == ticker),
                          ends, rules), ledger


# --- signal_outcomes ---------------------------------------------------------------------------

def test_outcome_enters_at_the_next_close_and_counts_sessions_on_the_calendar():
    days = sessions(START, 40)
    prices = price_frame(days, 100.0 + np.arange(40))
    rows = signal_outcomes(signal_frame(days[:1], ["BUY"], horizon=5), prices)
    row = rows.row(0, named=True)
    assert row["entry_date"] == days[1] and row["entry_price"] == 101.0
    assert row["realised_return_1d"] == pytest.approx(102 / 101 - 1)
    assert row["realised_return_5d"] == pytest.approx(106 / 101 - 1)
    assert row["realised_return_30d"] == pytest.approx(131 / 101 - 1)
    assert row["horizon_date"] == days[6] and row["hit"] is True
    assert row["status"] == "validated" and row["sessions_tracked"] == 30
    assert rows.schema == pl.Schema(OUTCOME_SCHEMA)


def test_a_missing_price_row_is_a_gap_not_a_shorter_window():
    days = sessions(START, 40)
    prices = price_frame(days, 100.0 + np.arange(40)).filter(pl.col("date") != days[6])
    row = signal_outcomes(signal_frame(days[:1], ["SELL"], horizon=5), prices).row(0, named=True)
    # The old tracker took the 5th price ROW after the gap; sessions are counted on the calendar.
    assert row["realised_return_5d"] is None and row["hit"] is None
    assert row["status"] == "pending" and "missing" in row["status_reason"]


def test_status_is_pending_until_the_30_session_window_closes():
    days = sessions(START, 40)
    prices = price_frame(days[:20], 100.0 - np.arange(20))
    rows = signal_outcomes(signal_frame(days[:2], ["SELL", "HOLD"], horizon=5), prices)
    sell, hold = rows.row(0, named=True), rows.row(1, named=True)
    assert sell["hit"] is True  # the 5-session outcome is known ...
    assert sell["status"] == "pending" and "awaiting prices through" in sell["status_reason"]  # ... the window is not
    assert sell["sessions_tracked"] == 18 and sell["realised_return_30d"] is None
    assert hold["status"] == "not_traded" and hold["hit"] is None


def test_a_wrong_call_fails_and_a_flat_return_is_a_miss():
    days = sessions(START, 40)
    prices = price_frame(days, np.r_[100.0, 100.0, np.full(38, 100.0)])
    row = signal_outcomes(signal_frame(days[:1], ["BUY"], horizon=5), prices).row(0, named=True)
    assert row["realised_return_horizon"] == 0.0 and row["hit"] is False and row["status"] == "failed"


def test_a_signal_on_a_non_trading_day_is_refused():
    with pytest.raises(ValueError, match="is not a .*trading day"):
        signal_outcomes(signal_frame([dt.date(2018, 1, 6)], ["BUY"]), price_frame([START], [1.0]))


# --- the ledger and the core --------------------------------------------------------------------

def test_position_is_the_signal_of_two_sessions_before_and_costs_are_charged_per_change():
    days = sessions(START, 8)
    prices = price_frame(days, [100, 101, 102, 100, 99, 103, 104, 105])
    signals = signal_frame(days, ["BUY", "HOLD", "SELL", "SELL", "HOLD", "HOLD", "HOLD", "HOLD"])
    rules = BacktestRules(window_sessions=5, cost_bps=10.0, **NO_BOOTSTRAP)
    rows, ledger = backtest_rows(signals, prices, [days[-1]], rules)
    ledger = ledger.filter(pl.col("date").is_in(days))
    # BUY on day 0 is entered at the close of day 1 and earns day 2's return.
    assert ledger["position"].to_list() == [None, None, 1.0, 0.0, -1.0, -1.0, 0.0, 0.0]
    r = np.array([100, 101, 102, 100, 99, 103, 104, 105], float)
    returns = r[1:] / r[:-1] - 1
    # Window of 5 sessions ending on day 7: days 3..7, starting flat; the positions are
    # 0, -1, -1, 0, 0 so costs are paid on day 4 (enter short) and day 6 (exit).
    expected = np.array([0.0, -returns[3] - 0.001, -returns[4], 0.0 - 0.001, 0.0])
    assert rows["total_return"][0] == pytest.approx(np.prod(1 + expected) - 1, abs=1e-12)
    assert rows["trades"][0] == 2 and rows["exposure"][0] == pytest.approx(0.4)
    assert rows["net_return"][0] == pytest.approx(0.0)


def test_strategy_returns_start_flat():
    net = strategy_returns(np.array([1.0, 1.0, -1.0]), np.array([0.01, 0.02, 0.03]), 0.001)
    np.testing.assert_allclose(net, [0.01 - 0.001, 0.02, -0.03 - 0.002])


def test_backtest_core_matches_a_loop_over_days():
    rng = np.random.default_rng(3)
    prices = 100 * np.cumprod(1 + rng.normal(0, 0.01, (3, 60)), axis=1)
    signals = rng.choice([-1.0, 0.0, 1.0], (3, 60))
    core = backtest_core(signals, prices, 0.0005)
    for row in range(3):
        position, net = 0.0, []
        for day in range(1, 60):
            new = signals[row, day - 2] if day >= 2 else 0.0
            net.append(new * (prices[row, day] / prices[row, day - 1] - 1) - 0.0005 * abs(new - position))
            position = new
        np.testing.assert_allclose(core["net_returns"][row], net, atol=1e-15)
        assert core["sharpe"][row] == pytest.approx(perf.sharpe_ratio(np.array(net)), abs=1e-12)


# --- windows: no look-ahead, gaps, empty and short histories ------------------------------------

def test_no_look_ahead_changing_later_prices_and_signals_leaves_earlier_backtests_alone(sample_prices):
    days = [d for d in sample_prices["date"].to_list() if d >= dt.date(2017, 1, 3)]
    signals = random_signals(days, seed=7)
    ends = [d for d in days if dt.date(2018, 6, 1) <= d <= dt.date(2018, 6, 29)]
    before, _ = backtest_rows(signals, sample_prices, ends)
    cut = dt.date(2018, 6, 29)
    shocked_prices = sample_prices.with_columns(
        pl.when(pl.col("date") >= cut).then(pl.col("price") * 1.5).otherwise(pl.col("price")).alias("price"))
    flipped = signals.with_columns(pl.when(pl.col("date") >= dt.date(2018, 6, 27)).then(pl.lit("BUY"))
                                   .otherwise(pl.col("action")).alias("action"))
    after, _ = backtest_rows(flipped, shocked_prices, ends)
    unchanged = [c for c in BACKTEST_SCHEMA if c not in ("verdict_failed",)]
    assert before.filter(pl.col("date") < cut).select(unchanged).equals(after.filter(pl.col("date") < cut).select(unchanged))
    assert before.filter(pl.col("date") == cut)["total_return"][0] != after.filter(pl.col("date") == cut)["total_return"][0]


def test_hits_count_only_calls_whose_outcome_is_known_by_the_date(sample_prices):
    days = [d for d in sample_prices["date"].to_list() if d >= dt.date(2018, 1, 2)]
    signals = random_signals(days, seed=11).with_columns(pl.lit(20, pl.Int64).alias("horizon"))
    rows, _ = backtest_rows(signals, sample_prices, [days[-1]])
    outcomes = signal_outcomes(signals, sample_prices)
    known = outcomes.filter(pl.col("hit").is_not_null() & (pl.col("horizon_date") <= days[-1])
                            & (pl.col("date") >= calendar.shift_trading_days(days[-1], -253)))
    assert rows["calls"][0] == known.height
    assert rows["hit_rate"][0] == pytest.approx(known["hit"].cast(pl.Float64).mean())
    brier = ((known["confidence"] - known["hit"].cast(pl.Float64)) ** 2).mean()
    assert rows["brier_score"][0] == pytest.approx(brier)


def test_the_metrics_are_the_performance_functions_on_the_window(sample_prices):
    days = [d for d in sample_prices["date"].to_list() if d >= dt.date(2017, 1, 3)]
    signals = random_signals(days, seed=5)
    rows, ledger = backtest_rows(signals, sample_prices, [days[-1]])
    series = window_series(ledger.filter(pl.col("ticker") == "^GSPC"), days[-1], BacktestRules(**NO_BOOTSTRAP))
    net, bench = series["strategy_return"].to_numpy(), series["buy_hold_return"].to_numpy()
    row = rows.row(0, named=True)
    assert row["sessions"] == 252 == series.height
    for column, value in [("sharpe", perf.sharpe_ratio(net)), ("sortino", perf.sortino_ratio(net)),
                          ("max_drawdown", perf.max_drawdown(net)), ("calmar", perf.calmar_ratio(net)),
                          ("annual_return", perf.annual_return(net)), ("alpha", perf.alpha(net, bench)),
                          ("beta", perf.beta(net, bench)), ("buy_hold_total_return", perf.total_return(bench))]:
        assert row[column] == pytest.approx(value, abs=1e-12), column
    assert row["sharpe_ci_lower"] < row["sharpe"] < row["sharpe_ci_upper"]
    assert 0 < row["probabilistic_sharpe"] < 1
    assert series["strategy_equity"][-1] == pytest.approx(1 + row["total_return"])


def test_no_signals_in_the_window_is_a_null_row_with_a_reason():
    days = sessions(START, 30)
    prices = price_frame(days, 100.0 + np.arange(30))
    signals = signal_frame(days[:3], ["BUY", "BUY", "BUY"])
    rows, _ = backtest_rows(signals, prices, [days[-1]], BacktestRules(window_sessions=10, **NO_BOOTSTRAP))
    row = rows.row(0, named=True)
    assert row["verdict"] == "insufficient_data" and "no signal in the 10-session window" in row["verdict_reason"]
    assert all(row[c] is None for c in ("total_return", "sharpe", "max_drawdown", "hit_rate", "calls"))


def test_a_price_gap_inside_the_window_is_a_null_row_naming_the_date():
    days = sessions(START, 30)
    prices = price_frame(days, 100.0 + np.arange(30)).filter(pl.col("date") != days[20])
    signals = signal_frame(days, ["BUY"] * 30)
    rows, _ = backtest_rows(signals, prices, [days[15], days[-1]], BacktestRules(window_sessions=10, **NO_BOOTSTRAP))
    assert rows["verdict"].to_list() == ["failed", "insufficient_data"]
    assert f"first {days[20]}" in rows["verdict_reason"][1] and "2 session(s)" in rows["verdict_reason"][1]
    assert rows["sharpe"][1] is None


def test_a_missing_signal_inside_the_window_is_a_null_row():
    days = sessions(START, 30)
    signals = signal_frame(days, ["BUY"] * 30).filter(pl.col("date") != days[20])
    rows, _ = backtest_rows(signals, price_frame(days, 100.0 + np.arange(30)), [days[-1]],
                            BacktestRules(window_sessions=10, **NO_BOOTSTRAP))
    assert rows["verdict"][0] == "insufficient_data" and "signals missing for 1 session" in rows["verdict_reason"][0]


def test_a_window_longer_than_the_history_uses_what_exists_and_says_so_in_sessions():
    days = sessions(START, 25)
    rows, _ = backtest_rows(signal_frame(days, ["BUY"] * 25), price_frame(days, 100 * 1.001 ** np.arange(25)),
                            [days[-1]])
    row = rows.row(0, named=True)
    assert row["sessions"] == 23 and row["window_start"] == days[2]
    assert "min_sessions" in row["verdict_failed"] and "23 sessions < 30" in row["verdict_reason"]


def test_all_hold_is_flat_with_undefined_ratios_not_invented_ones():
    days = sessions(START, 40)
    rows, _ = backtest_rows(signal_frame(days, ["HOLD"] * 40), price_frame(days, 100 + np.sin(np.arange(40))),
                            [days[-1]])
    row = rows.row(0, named=True)
    assert row["total_return"] == 0.0 and row["exposure"] == 0.0 and row["trades"] == 0
    assert row["sharpe"] is None and row["hit_rate"] is None and row["calls"] == 0 and row["profit_factor"] is None
    assert row["verdict"] == "failed" and "Sharpe undefined <= 0" in row["verdict_reason"]


def test_unknown_actions_are_refused():
    days = sessions(START, 5)
    with pytest.raises(ValueError, match="unknown action"):
        backtest_rows(signal_frame(days, ["BUY", "STRONG_BUY", "HOLD", "HOLD", "HOLD"]), price_frame(days, np.ones(5)),
                      [days[-1]])


# --- verdict -----------------------------------------------------------------------------------

def test_verdict_names_each_failed_criterion():
    good = {"annual_return": 0.2, "excess_return": 0.05, "total_return": 0.2, "buy_hold_total_return": 0.15,
            "sessions": 252, "sharpe": 1.5, "sharpe_ci_lower": 0.2, "probabilistic_sharpe": 0.99}
    rules = BacktestRules()
    assert verdict(good, None, rules)[:2] == ("passed", [])
    status, failed, why = verdict(good | {"annual_return": 0.05, "probabilistic_sharpe": 0.9}, None, rules)
    assert status == "failed" and failed == ["annual_return", "probabilistic_sharpe"]
    assert "annual return 5.00% <= 10%" in why and "probabilistic Sharpe 0.900 < 0.95" in why
    assert verdict(good | {"sharpe_ci_lower": -0.1}, None, rules)[1] == ["sharpe_interval_positive"]
    assert verdict(good, "no signal", rules) == ("insufficient_data", ["data"], "no signal")


# --- the portfolio book ------------------------------------------------------------------------

def test_equal_weight_book_is_the_mean_of_the_sleeves_and_position_size_book_caps_gross_exposure():
    days = sessions(START, 6)
    prices = pl.concat([price_frame(days, [100, 101, 102, 103, 104, 105], "AAA"),
                        price_frame(days, [50, 49, 48, 47, 46, 45], "BBB")])
    signals = pl.concat([signal_frame(days, ["BUY"] * 6, "AAA", size=0.8), signal_frame(days, ["SELL"] * 6, "BBB", size=0.7)])
    grid = SessionGrid(days[0], days[-1])
    unit, _ = ledger_and_calls(signals, prices, grid, "unit")
    book = portfolio_ledger(unit, "equal").filter(pl.col("date") == days[3]).row(0, named=True)
    aaa, bbb = 103 / 102 - 1, 47 / 48 - 1
    assert book["gross_return"] == pytest.approx((aaa - bbb) / 2)
    assert book["asset_return"] == pytest.approx((aaa + bbb) / 2) and book["position"] == pytest.approx(1.0)
    sized, _ = ledger_and_calls(signals, prices, grid, "signal")
    book = portfolio_ledger(sized, "position_size").filter(pl.col("date") == days[3]).row(0, named=True)
    assert book["position"] == pytest.approx(1.0)  # 0.8 + 0.7 scaled down to 100%
    assert book["gross_return"] == pytest.approx((0.8 * aaa - 0.7 * bbb) / 1.5)
    with pytest.raises(ValueError, match="weighting"):
        portfolio_ledger(unit, "market_cap")

