"""Stressed verdicts (pm_domain.backtest.STRESSES): the delay as a rule, each stress recomputed as
the plain verdict under the stressed rules, and robust_verdict on strategies whose answer is
known: an edge that costs eat at 5x, an edge that lives on the exact timing, and one that
survives both."""

import collections
import dataclasses

import numpy as np
import polars as pl
import pytest

from pm_domain import calendar
from pm_domain.backtest import (
    BACKTEST_SCHEMA,
    ROBUST_SCHEMA,
    STRESS_DELAY_SESSIONS,
    STRESS_EXTRA_DELAYS,
    STRESSES,
    BacktestRules,
    backtest_core,
    robust_verdict,
    scored_calls,
    ticker_ledger,
    window_metrics,
    with_robust_verdicts,
)
from pm_domain.outcomes import SessionGrid, signal_outcomes
from tests.unit.test_backtest import START, price_frame, sessions, signal_frame

WINDOW = 120
QUICK = {"bootstrap_replications": 200}
ACTION = {1: "BUY", -1: "SELL", 0: "HOLD"}


def foresight(returns: np.ndarray, wanted: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame, list]:
    """Prices with these daily returns (returns[d] is session d's) and the signals whose position
    at the usual lag of 2 sessions is wanted[d]: the signal of session t is wanted[t + 2]."""
    days = sessions(START, len(returns))
    actions = [ACTION[int(w)] for w in wanted[2:]] + ["HOLD", "HOLD"]
    return signal_frame(days, actions), price_frame(days, 100 * np.cumprod(1 + returns)), days


def robust_rows(signals: pl.DataFrame, prices: pl.DataFrame, ends: list, rules: BacktestRules) -> pl.DataFrame:
    """window_metrics with the stressed verdicts beside them, one ticker, as ticker_backtests
    builds them (a grid reaching back as far as the assets read)."""
    first = calendar.shift_trading_days(min(ends), -(rules.window_sessions + rules.position_lag + STRESS_DELAY_SESSIONS))
    grid = SessionGrid(first, max(ends))
    ledgers = {extra: ticker_ledger(signals, prices, grid, rules.sizing, rules.delay_sessions + extra)
               for extra in STRESS_EXTRA_DELAYS}
    calls = scored_calls(signal_outcomes(signals, prices), grid, rules.delay_sessions)
    return with_robust_verdicts(window_metrics(ledgers[0], calls, ends, rules), ledgers, ends, rules)


def blocks(n: int, length: int = 10) -> np.ndarray:
    """+1 for `length` sessions, then -1 for `length`, and so on: a trend the day after keeps."""
    return np.where((np.arange(n) // length) % 2 == 0, 1.0, -1.0)


# --- the delay as a rule -----------------------------------------------------------------------

def test_delay_sessions_must_not_be_negative():
    with pytest.raises(ValueError, match="delay_sessions must be >= 0"):
        BacktestRules(delay_sessions=-1)
    assert BacktestRules().position_lag == 2 and BacktestRules(delay_sessions=3).position_lag == 5


def test_a_delayed_position_is_the_signal_of_two_plus_delay_sessions_before():
    days = sessions(START, 8)
    signals = signal_frame(days, ["BUY", "HOLD", "SELL", "SELL", "HOLD", "HOLD", "HOLD", "HOLD"])
    grid = SessionGrid(days[0], days[-1])
    prices = price_frame(days, np.arange(100.0, 108.0))
    assert ticker_ledger(signals, prices, grid, "unit")["position"].to_list() == [
        None, None, 1.0, 0.0, -1.0, -1.0, 0.0, 0.0]
    assert ticker_ledger(signals, prices, grid, "unit", delay_sessions=1)["position"].to_list() == [
        None, None, None, 1.0, 0.0, -1.0, -1.0, 0.0]
    outcomes = signal_outcomes(signals, prices)
    plain, delayed = scored_calls(outcomes, grid), scored_calls(outcomes, grid, delay_sessions=1)
    assert plain.height == 3 and (delayed["position_session"] - plain["position_session"]).to_list() == [1, 1, 1]
    assert delayed["known_session"].to_list() == plain["known_session"].to_list()  # the outcome is the signal's own


def test_backtest_core_with_delay_matches_a_loop_over_days():
    rng = np.random.default_rng(3)
    prices = 100 * np.cumprod(1 + rng.normal(0, 0.01, (3, 40)), axis=1)
    signals = rng.choice([-1.0, 0.0, 1.0], (3, 40))
    core = backtest_core(signals, prices, 0.0005, delay_sessions=2)
    for row in range(3):
        position, net = 0.0, []
        for day in range(1, 40):
            new = signals[row, day - 4] if day >= 4 else 0.0
            net.append(new * (prices[row, day] / prices[row, day - 1] - 1) - 0.0005 * abs(new - position))
            position = new
        np.testing.assert_allclose(core["net_returns"][row], net, atol=1e-15)


def test_one_session_of_delay_is_every_signal_dated_one_session_later():
    rng = np.random.default_rng(5)
    n = WINDOW + 20
    signals, prices, days = foresight(rng.normal(0, 0.01, n), rng.choice([-1.0, 0.0, 1.0], n))
    later = signals.with_columns(pl.Series("date", days[1:] + [calendar.shift_trading_days(days[-1], 1)]))
    ends = days[-5:]
    rules = BacktestRules(window_sessions=WINDOW, **QUICK)
    delayed = robust_rows(signals, prices, ends, dataclasses.replace(rules, delay_sessions=1))
    redated = robust_rows(later.filter(pl.col("date") <= days[-1]), prices, ends, rules)
    # Hit rate, calls and Brier score judge each signal from its own date, so they differ.
    same = [c for c in BACKTEST_SCHEMA if c not in ("hit_rate", "calls", "brier_score", "verdict_failed")]
    assert delayed.select(same).equals(redated.select(same))
    # The signals read reach far enough back that the delayed window has every session.
    assert delayed["sessions"].eq(WINDOW).all() and delayed["window_start"].to_list() == [
        calendar.shift_trading_days(end, -(WINDOW - 1)) for end in ends]


# --- robust_verdict on known answers -----------------------------------------------------------

def test_an_edge_the_costs_eat_at_5x_is_fragile_and_the_reason_names_5x():
    # In trends of 10 sessions, the strategy holds the trend every other day: its position
    # changes every session (turnover 1 a day, c = 5 bps), the timing matters only at the turns.
    # Gross 0.22% a day: 0.17% net at 1x, 0.12% at 2x, -0.03% at 5x.
    rng = np.random.default_rng(1)
    n = WINDOW + 5
    trend = blocks(n)
    signals, prices, days = foresight(trend * rng.uniform(0.003, 0.0058, n), np.where(np.arange(n) % 2 == 0, trend, 0.0))
    row = robust_rows(signals, prices, [days[-1]], BacktestRules(window_sessions=WINDOW, **QUICK)).row(0, named=True)
    assert row["verdict"] == "passed" and row["sessions"] == WINDOW
    assert (row["verdict_cost_2x"], row["verdict_cost_5x"], row["verdict_delay_1"]) == ("passed", "failed", "passed")
    assert row["robust_verdict"] == "fragile"
    assert row["robust_reason"] == "survives 2x cost, +1 session delay; fails 5x cost"


def test_an_edge_that_lives_on_the_exact_timing_fails_the_delay():
    # Returns alternate in sign and the signals foresee the session they earn at lag 2: a
    # session later each position holds the previous session's sign, the wrong one.
    rng = np.random.default_rng(2)
    n = WINDOW + 5
    alternating = (-1.0) ** np.arange(n)
    signals, prices, days = foresight(alternating * rng.uniform(0.006, 0.012, n), alternating)
    row = robust_rows(signals, prices, [days[-1]], BacktestRules(window_sessions=WINDOW, **QUICK)).row(0, named=True)
    assert (row["verdict"], row["verdict_cost_2x"], row["verdict_cost_5x"]) == ("passed", "passed", "passed")
    assert row["verdict_delay_1"] == "failed"
    assert (row["robust_verdict"], row["robust_reason"]) == ("fragile", "survives 2x cost, 5x cost; fails +1 session delay")


def test_a_trend_held_with_few_trades_is_robust():
    rng = np.random.default_rng(4)
    n = WINDOW + 5
    trend = blocks(n)
    signals, prices, days = foresight(trend * rng.uniform(0.004, 0.008, n), trend)
    row = robust_rows(signals, prices, [days[-1]], BacktestRules(window_sessions=WINDOW, **QUICK)).row(0, named=True)
    assert [row[s.column] for s in STRESSES] == ["passed"] * 3
    assert (row["robust_verdict"], row["robust_reason"]) == ("robust", "survives 2x cost, 5x cost, +1 session delay")


def test_each_stressed_verdict_is_the_plain_verdict_under_the_stressed_rules():
    # Trends with noise, signals right about the trend on 60% of days: verdicts of every kind
    # across the windows, a missing signal (insufficient data for the windows around it, a
    # session later under the delay) and the first windows shorter than the rest.
    rng = np.random.default_rng(2)
    n = 400
    trend = np.cumprod(np.where(rng.random(n) < 0.15, -1.0, 1.0))
    signals, prices, days = foresight(trend * 0.003 + rng.normal(0.0, 0.01, n), trend * (rng.random(n) < 0.6))
    signals = signals.filter(pl.col("date") != days[200])
    rules = BacktestRules(window_sessions=60, cost_bps=4.0, **QUICK)
    ends = days[40:]
    rows = robust_rows(signals, prices, ends, rules)
    for stress in STRESSES:
        direct = window_metrics(*plain_inputs(signals, prices, ends, stress.rules(rules)), ends, stress.rules(rules))
        assert rows[stress.column].to_list() == direct["verdict"].to_list(), stress.column
        assert {"passed", "failed", "insufficient_data"} <= set(rows[stress.column]), stress.column
    assert stress.rules(rules) == dataclasses.replace(rules, delay_sessions=1)
    assert STRESSES[0].rules(rules).cost_bps == 8.0 and STRESSES[1].rules(rules).cost_bps == 20.0
    counts = collections.Counter(rows["robust_verdict"])
    assert set(counts) == {"robust", "fragile", "failed", "insufficient_data"}
    # robust only where everything passed; fragile only where the verdict passed
    stressed = rows.select([s.column for s in STRESSES])
    all_passed = stressed.select(pl.all_horizontal(pl.all() == "passed"))[:, 0]
    assert ((rows["robust_verdict"] == "robust") == ((rows["verdict"] == "passed") & all_passed)).all()
    assert rows.filter(pl.col("robust_verdict") == "fragile")["verdict"].eq("passed").all()
    assert rows.filter(pl.col("verdict") == "failed")["robust_verdict"].eq("failed").all()
    assert list(rows.select(list(ROBUST_SCHEMA)).schema.items()) == list(ROBUST_SCHEMA.items())


def plain_inputs(signals: pl.DataFrame, prices: pl.DataFrame, ends: list,
                 rules: BacktestRules) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ledger and calls of a plain backtest under `rules` (its own delay, no stress)."""
    grid = SessionGrid(calendar.shift_trading_days(min(ends), -(rules.window_sessions + rules.position_lag + 1)),
                       max(ends))
    return (ticker_ledger(signals, prices, grid, rules.sizing, rules.delay_sessions),
            scored_calls(signal_outcomes(signals, prices), grid, rules.delay_sessions))


def test_a_stress_that_changes_nothing_is_the_verdict_itself():
    rng = np.random.default_rng(4)
    n = WINDOW + 5
    trend = blocks(n)
    signals, prices, days = foresight(trend * rng.uniform(0.004, 0.008, n), trend)
    row = robust_rows(signals, prices, [days[-1]], BacktestRules(window_sessions=WINDOW, cost_bps=0.0, **QUICK)).row(
        0, named=True)
    assert row["verdict_cost_2x"] == row["verdict_cost_5x"] == row["verdict"] == "passed"


def test_robust_verdict_names_what_it_survives_and_what_it_fails():
    assert robust_verdict("passed", ["passed", "passed", "passed"]) == (
        "robust", "survives 2x cost, 5x cost, +1 session delay")
    assert robust_verdict("passed", ["failed", "failed", "passed"]) == (
        "fragile", "survives +1 session delay; fails 2x cost, 5x cost")
    # A failed stress says fragile whatever the others lacked; a lacking one alone says no more.
    assert robust_verdict("passed", ["passed", "failed", "insufficient_data"]) == (
        "fragile", "survives 2x cost; fails 5x cost; no data for +1 session delay")
    assert robust_verdict("passed", ["passed", "passed", "insufficient_data"]) == (
        "insufficient_data", "survives 2x cost, 5x cost; no data for +1 session delay")
    assert robust_verdict("failed", ["failed", "failed", "failed"]) == (
        "failed", "failed before any stress (fails 2x cost, 5x cost, +1 session delay)")
    assert robust_verdict("insufficient_data", ["insufficient_data"] * 3) == (
        "insufficient_data", "no verdict to stress: insufficient data")
