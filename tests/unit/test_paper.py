"""The paper book's domain code (pm_domain/paper) on hand-built prices and weights: known answers
for a fill, the reconciliation identity, a holiday, a pending fill and a placed order that a
re-run cannot change, and the book's invariants over random 1,000-session paths."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import polars as pl
import pytest

from pm_domain import calendar
from pm_domain.paper import ledger
from pm_domain.paper.book import BookStart, simulate
from pm_domain.paper.broker import ExchangeRules, SimulatedExchange
from pm_domain.paper.costs import CostModel
from pm_domain.paper.reconcile import GAP_PARTS, alert_rows, benchmark_equity, reconcile, reference_equity
from pm_domain.paper.weights import WeightRules, apply_caps, caps_violations, target_weights, trailing_returns

FREE = CostModel(0.0, 0.0, 0.0, 0.0)


def random_market(seed: int, sessions: int, tickers: int, missing_opens: float = 0.0):
    rng = np.random.default_rng(seed)
    closes = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, (sessions, tickers)), axis=0))
    opens = closes * np.exp(rng.normal(0, 0.004, (sessions, tickers)))
    opens[rng.random((sessions, tickers)) < missing_opens] = np.nan
    weights = np.where(rng.random((sessions, tickers)) < 0.4, 0.0, rng.uniform(0, 1.0 / tickers, (sessions, tickers)))
    days = calendar.trading_days(dt.date(2010, 1, 4), dt.date(2019, 12, 31))[:sessions]
    return days, tuple(f"T{i}" for i in range(tickers)), opens, closes, weights


# --- one order ----------------------------------------------------------------------------------

def test_one_buy_fills_at_the_open_plus_slippage_pays_the_commission_and_moves_cash():
    rules = ExchangeRules(costs=CostModel(slippage_bps=5, commission_per_share=0.005, commission_minimum=1.0, commission_bps=2))
    exchange = SimulatedExchange(rules, 10_000.0, np.zeros(1), np.zeros(1))
    exchange.submit(0, np.array([100.0]), np.array([49.0]))
    fills = exchange.fills(1, np.array([50.0]))
    price = 50.0 * 1.0005
    commission = max(1.0, 0.005 * 100 + 2e-4 * 100 * price)  # 0.5 per share < 1.5006 with the bps
    assert fills.prices[0] == pytest.approx(price, abs=1e-12)
    assert fills.commission[0] == pytest.approx(commission, abs=1e-12)
    assert fills.slippage[0] == pytest.approx(100 * 50.0 * 5e-4, abs=1e-9)
    assert exchange.cash == pytest.approx(10_000 - 100 * price - commission, abs=1e-9)
    assert exchange.positions()[0][0] == 100 and exchange.positions()[1][0] == pytest.approx(price)


def test_a_sell_receives_the_open_less_slippage_and_realizes_against_the_average_cost():
    exchange = SimulatedExchange(ExchangeRules(costs=CostModel(10, 0, 0, 0)), 0.0, np.array([10.0]), np.array([40.0]))
    exchange.submit(0, np.array([-4.0]), np.array([50.0]))
    fills = exchange.fills(1, np.array([50.0]))
    assert fills.prices[0] == pytest.approx(49.95)
    assert fills.realized[0] == pytest.approx(4 * (49.95 - 40.0))
    assert exchange.cash == pytest.approx(4 * 49.95)
    assert exchange.positions()[0][0] == 6 and exchange.positions()[1][0] == 40.0


def test_buys_beyond_the_cash_are_cut_without_margin_and_kept_with_it():
    tight = SimulatedExchange(ExchangeRules(costs=FREE), 1_000.0, np.zeros(2), np.zeros(2))
    tight.submit(0, np.array([15.0, 10.0]), np.array([40.0, 40.0]))
    fills = tight.fills(1, np.array([40.0, 40.0]))  # 1,000 asked for, 1,000 there: no cut
    assert fills.cut_shares.tolist() == [0.0, 0.0] and tight.cash == pytest.approx(0.0)
    poor = SimulatedExchange(ExchangeRules(costs=FREE), 500.0, np.zeros(2), np.zeros(2))
    poor.submit(0, np.array([15.0, 10.0]), np.array([40.0, 40.0]))
    fills = poor.fills(1, np.array([40.0, 40.0]))
    assert poor.cash >= 0 and fills.shares.sum() * 40.0 <= 500.0 and fills.cut_shares.sum() > 0
    assert np.all(fills.shares == np.trunc(fills.shares))
    margin = SimulatedExchange(ExchangeRules(costs=FREE, allow_margin=True), 500.0, np.zeros(2), np.zeros(2))
    margin.submit(0, np.array([15.0, 10.0]), np.array([40.0, 40.0]))
    assert margin.fills(1, np.array([40.0, 40.0])).shares.tolist() == [15.0, 10.0] and margin.cash == pytest.approx(-500.0)


def test_costs_cannot_be_negative_or_missing():
    with pytest.raises(ValueError, match="slippage_bps must be a finite number >= 0"):
        CostModel(slippage_bps=-1)
    assert not CostModel().free  # no zero-cost default


# --- the reconciliation -------------------------------------------------------------------------

def test_frictionless_book_filled_at_the_signal_close_equals_the_backtest_equity():
    days, tickers, opens, closes, weights = random_market(3, 500, 6)
    rules = ExchangeRules(costs=FREE, fractional_shares=True, fill_at="signal_close")
    path = simulate(days, tickers, opens, closes, weights, rules, BookStart.new(1e6, 6))
    assert np.max(np.abs(path.nav / 1e6 - reference_equity(weights, closes, 0.0))) < 1e-9


def test_the_gap_is_exactly_the_sum_of_its_parts_and_each_part_is_what_it_says():
    days, tickers, opens, closes, weights = random_market(5, 400, 4, missing_opens=0.01)
    rules = ExchangeRules()  # next open, 5 bps, commission, whole shares, no margin
    path = simulate(days, tickers, opens, closes, weights, rules, BookStart.new(250_000, 4))
    rec = reconcile(path.nav, days, tickers, opens, closes, weights, rules, 250_000)
    total = sum(rec.parts_bps[part] for part in GAP_PARTS)
    assert np.max(np.abs(total - rec.gap_bps)) < 1e-9
    assert np.max(np.abs(rec.parts_bps["residual"])) < 1e-7  # the frictionless book is the backtest
    assert np.all(rec.parts_bps["placed_orders"] == 0)  # nothing was placed under other inputs
    assert rec.parts_bps["pending"][-1] != 0  # 1% of opens missing leaves orders pending
    assert rec.parts_bps["costs"][-1] < 0 and rec.parts_bps["timing"][-1] != 0
    free = reconcile(simulate(days, tickers, opens, closes, weights, dataclasses.replace(rules, costs=FREE),
                              BookStart.new(250_000, 4)).nav, days, tickers, opens, closes, weights,
                     dataclasses.replace(rules, costs=FREE), 250_000)
    assert np.max(np.abs(free.parts_bps["costs"])) < 1e-9


def test_orders_placed_under_other_inputs_are_their_own_part_of_the_gap():
    days, tickers, opens, closes, weights = random_market(8, 60, 3)
    rules = ExchangeRules()
    start = BookStart.new(100_000, 3)
    placed = np.full(weights.shape, np.nan)
    placed[10] = 0.0  # session 10 was placed with no orders at all
    path = simulate(days, tickers, opens, closes, weights, rules, start, placed)
    assert np.all(path.orders[10] == 0) and np.any(path.fresh_orders[10] != 0)
    rec = reconcile(path.nav, days, tickers, opens, closes, weights, rules, 100_000)
    assert rec.parts_bps["placed_orders"][10] == 0 and rec.parts_bps["placed_orders"][-1] != 0
    assert np.max(np.abs(sum(rec.parts_bps.values()) - rec.gap_bps)) < 1e-9


# --- calendar, pending, immutability ------------------------------------------------------------

def test_an_order_before_a_holiday_fills_at_the_next_session():
    days = calendar.trading_days(dt.date(2018, 7, 2), dt.date(2018, 7, 6))
    assert dt.date(2018, 7, 4) not in days
    closes = np.array([[100.0], [101.0], [102.0], [103.0]])
    opens = closes - 0.5
    weights = np.array([[0.0], [0.5], [0.5], [0.5]])
    path = simulate(days, ("AAA",), opens, closes, weights, ExchangeRules(costs=FREE), BookStart.new(10_000, 1))
    orders = ledger.order_rows(path, [1], path.orders, pl.DataFrame(), "paper", dt.datetime(2026, 1, 1))
    assert orders["date"].to_list() == [dt.date(2018, 7, 3)] and orders["fill_session"].to_list() == [dt.date(2018, 7, 5)]
    fills = ledger.fill_rows(path, [2], "paper", "next_open")
    assert fills.select("order_date", "date", "status", "filled_shares", "fill_price").row(0) == (
        dt.date(2018, 7, 3), dt.date(2018, 7, 5), "filled", 49.0, 101.5)  # 0.5 x 10,000 / 101 -> 49 whole shares
    assert ledger.fills_not_after_order(fills).height == 0
    assert orders["client_order_id"][0] == fills["client_order_id"][0] == "paper-20180703-AAA-BUY"


def test_a_fill_with_no_open_price_stays_pending_and_the_next_orders_size_from_what_is_held():
    days = calendar.trading_days(dt.date(2018, 12, 24), dt.date(2018, 12, 28))
    closes = np.array([[100.0], [100.0], [100.0], [100.0]])
    opens = np.array([[100.0], [np.nan], [100.0], [100.0]])
    weights = np.full((4, 1), 0.5)
    path = simulate(days, ("AAA",), opens, closes, weights, ExchangeRules(costs=FREE), BookStart.new(10_000, 1))
    fills = ledger.fill_rows(path, [1], "paper", "next_open")
    assert fills.select("status", "reason", "filled_shares").row(0) == (
        "pending", "no open price for AAA on 2018-12-26 yet", 0.0)
    assert path.cash[1] == 10_000 and path.shares[1, 0] == 0
    assert path.orders[1, 0] == 50  # placed again from the holdings there are
    assert path.shares[2, 0] == 50 and path.orders[2, 0] == 0
    book = pl.DataFrame({"date": days, "gap_bps": [0.0] * 4, "nav": [1.0] * 4})
    alerts = alert_rows(book, fills, threshold_bps=100)
    assert alerts["kind"].to_list() == ["unfilled_order"] and "still pending after its session 2018-12-26" in alerts["message"][0]


def test_a_placed_date_keeps_its_orders_and_a_re_run_with_other_inputs_records_amendments():
    days, tickers, opens, closes, weights = random_market(11, 30, 2)
    rules = ExchangeRules()
    start = BookStart.new(100_000, 2)
    first = simulate(days, tickers, opens, closes, weights, rules, start)
    targets = pl.DataFrame({"date": [days[5]] * 2, "ticker": list(tickers), "weight": weights[5].tolist(),
                            "signal_id": ["a", "b"], "prompt_hash": ["p1", "p2"], "model_digest": ["d", "d"],
                            "method": ["equal", "equal"], "action": ["BUY", "BUY"], "llm_model": ["m", "m"]})
    placed_rows = ledger.order_rows(first, [5], first.orders, targets, "paper", dt.datetime(2026, 1, 1))
    placed = np.full(weights.shape, np.nan)
    placed[: 6] = first.orders[: 6]
    changed = weights.copy()
    changed[5] = [0.0, 0.45]  # a new LLM reply: the first ticker is no longer traded
    again = simulate(days, tickers, opens, closes, changed, rules, start, placed)
    assert np.array_equal(again.orders[: 6], first.orders[: 6])  # the past stands
    assert np.allclose(again.nav[: 6], first.nav[: 6])
    new_targets = targets.with_columns(pl.Series("weight", changed[5].tolist()), pl.Series("prompt_hash", ["p9", "p2"]))
    proposed = ledger.order_rows(again, [5], again.fresh_orders, new_targets, "paper", dt.datetime(2026, 1, 2))
    amendments = ledger.amendments(placed_rows, proposed, dt.datetime(2026, 1, 2))
    assert set(amendments["ticker"]) == {tickers[0], tickers[1]} & set(amendments["ticker"])
    first_ticker = amendments.filter(pl.col("ticker") == tickers[0]).row(0, named=True)
    assert first_ticker["kind"] in ("dropped", "changed") and "the placed order stands" in first_ticker["reason"]
    assert ledger.amendments(placed_rows, placed_rows, dt.datetime(2026, 1, 2)).height == 0  # same inputs: nothing


# --- invariants ---------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_book_invariants_hold_over_a_random_1000_session_path(seed):
    days, tickers, opens, closes, weights = random_market(seed, 1000, 5, missing_opens=0.02)
    rng = np.random.default_rng(seed)
    closes[rng.random(closes.shape) < 0.01] = np.nan  # a few missing closes: marked at the last known
    rules = ExchangeRules(costs=CostModel(slippage_bps=8, commission_per_share=0.01, commission_minimum=1.0, commission_bps=1))
    path = simulate(days, tickers, opens, closes, weights * 1.6, rules, BookStart.new(50_000, 5))
    ks = list(range(1, 1000))
    rec = reconcile(path.nav, days, tickers, opens, closes, weights * 1.6, rules, 50_000)
    book = ledger.book_rows(path, ks, "paper", days[0], 50_000, rec, benchmark_equity(closes),
                            {k: (0, None) for k in ks}, {})
    positions = ledger.position_rows(path, ks)
    fills = ledger.fill_rows(path, ks, "paper", "next_open")
    assert ledger.nav_identity_breaks(book, positions).height == 0
    assert ledger.pnl_identity_breaks(book).height == 0
    assert book["cash"].min() >= -ledger.CENT
    assert ledger.fractional_positions(positions).height == 0
    assert ledger.fills_not_after_order(fills).height == 0
    assert set(fills["status"]) >= {"filled", "pending"}
    assert np.all(np.diff(book["costs"].to_numpy()) >= -1e-12) and book["costs"][-1] > 0
    assert np.all(positions["shares"].to_numpy() > 0)  # long-only weights never short


def test_the_invariant_checks_catch_a_broken_book():
    book = pl.DataFrame({"date": [dt.date(2018, 1, 2)], "cash": [100.0], "nav": [200.0], "initial_cash": [100.0],
                         "realized_pnl": [0.0], "unrealized_pnl": [50.0], "commission": [0.0]})
    positions = pl.DataFrame({"date": [dt.date(2018, 1, 2)], "ticker": ["A"], "shares": [1.5], "close": [99.0]})
    assert ledger.nav_identity_breaks(book, positions)["difference"].to_list() == [pytest.approx(100 + 1.5 * 99 - 200)]
    assert ledger.pnl_identity_breaks(book)["difference"].to_list() == [pytest.approx(-50.0)]
    assert ledger.fractional_positions(positions).height == 1


# --- target weights -----------------------------------------------------------------------------

def signals(actions, sizes, failed=None, day=dt.date(2018, 12, 31)):
    n = len(actions)
    frame = pl.DataFrame({"ticker": [f"T{i}" for i in range(n)], "date": [day] * n, "action": actions,
                          "position_size": sizes, "prompt_hash": ["h"] * n, "llm_model": ["m"] * n,
                          "model_digest": ["d"] * n})
    for layer in ("structure", "market_context"):
        status = ["fail" if failed == (layer, i) else "pass" for i in range(n)]
        frame = frame.with_columns(pl.Series(f"validation_{layer}", status),
                                   pl.Series(f"validation_{layer}_reason", ["stale feed" if s == "fail" else None for s in status]))
    return frame


NO_PRICES = pl.DataFrame(schema={"ticker": pl.String, "date": pl.Date, "close": pl.Float64})


def test_signal_kelly_weights_trade_only_validated_long_signals_under_the_caps():
    rows = target_weights(signals(["BUY", "BUY", "SELL", "HOLD", "BUY"], [0.4, 0.1, 0.2, 0.0, 0.2],
                                  failed=("market_context", 4)), NO_PRICES, WeightRules())
    by = {r["ticker"]: r for r in rows.iter_rows(named=True)}
    assert by["T0"]["weight"] == 0.25 and by["T0"]["caps_applied"] == "capped at 25% per ticker"
    assert by["T1"]["weight"] == 0.1 and by["T1"]["traded"]
    assert by["T2"]["weight"] == 0 and by["T2"]["reason"] == "SELL with shorts off: flat"
    assert by["T3"]["reason"] == "HOLD: flat"
    assert by["T4"]["weight"] == 0 and by["T4"]["reason"] == "validation_market_context failed: stale feed"
    assert by["T0"]["cash_weight"] == pytest.approx(0.65) and by["T0"]["signal_id"] == "T0|2018-12-31"
    assert caps_violations(rows, WeightRules()).height == 0


def test_the_gross_cap_scales_every_weight_together_and_shorts_are_a_setting():
    rules = WeightRules(method="equal", max_weight=0.5, max_gross=0.6, allow_shorts=True)
    rows = target_weights(signals(["BUY", "SELL", "BUY"], [0.1, 0.1, 0.1]), NO_PRICES, rules)
    assert rows["weight"].to_list() == pytest.approx([0.2, -0.2, 0.2])
    assert rows["gross_exposure"][0] == pytest.approx(0.6) and "scaled to 60% gross" in rows["caps_applied"][0]
    capped = apply_caps(pl.DataFrame({"date": [dt.date(2018, 1, 2)] * 2, "raw_weight": [0.9, -0.1]}),
                        WeightRules(allow_shorts=True))
    assert capped["weight"].to_list() == pytest.approx([0.25, -0.1]) and capped["caps_applied"][1] is None
    assert capped["cash_weight"][0] == pytest.approx(0.85)


@pytest.mark.parametrize("method", ["inverse_volatility", "hierarchical_risk_parity", "minimum_variance"])
def test_skfolio_methods_fit_on_trailing_returns_only(method):
    rng = np.random.default_rng(4)
    days = calendar.trading_days(dt.date(2017, 1, 3), dt.date(2018, 12, 31))
    volatility = {"T0": 0.005, "T1": 0.02, "T2": 0.01}
    closes = pl.concat([pl.DataFrame({"ticker": t, "date": days, "close": 100 * np.exp(np.cumsum(rng.normal(0, v, len(days))))})
                        for t, v in volatility.items()])
    day = dt.date(2018, 6, 29)
    rules = WeightRules(method=method, max_weight=1.0)
    rows = target_weights(signals(["BUY", "BUY", "BUY"], [0.1] * 3, day=day), closes, rules)
    weights = dict(zip(rows["ticker"], rows["weight"], strict=True))
    assert sum(weights.values()) == pytest.approx(1.0) and min(weights.values()) >= 0
    assert rows["fit_sessions"][0] == 252
    if method != "hierarchical_risk_parity":  # the calmest ticker weighs most
        assert weights["T0"] > weights["T2"] > weights["T1"]
    # Prices after the date change nothing: no look-ahead.
    later = closes.with_columns(pl.when(pl.col("date") > day).then(pl.col("close") * 3).otherwise(pl.col("close")).alias("close"))
    assert target_weights(signals(["BUY", "BUY", "BUY"], [0.1] * 3, day=day), later, rules)["weight"].to_list() == rows["weight"].to_list()
    assert trailing_returns(closes, ["T0"], day, 10).shape == (10, 1)


def test_a_skfolio_method_without_enough_history_leaves_the_day_flat_and_says_why():
    rows = target_weights(signals(["BUY", "BUY"], [0.1, 0.1]), NO_PRICES, WeightRules(method="minimum_variance"))
    assert rows["weight"].to_list() == [0.0, 0.0]
    assert rows["reason"][0].startswith("minimum_variance needs 20+ sessions of returns for T0, T1")


def test_weight_rules_refuse_bad_settings_in_one_line():
    with pytest.raises(ValueError, match="method must be one of signal_kelly"):
        WeightRules(method="kelly")
    with pytest.raises(ValueError, match="untradeable_layers: unknown layer"):
        WeightRules(untradeable_layers=("nope",))
