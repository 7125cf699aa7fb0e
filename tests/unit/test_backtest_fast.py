"""The fast path (pm_domain.backtest.fast, what production runs: every window at once) against the
plain reference (pm_domain.backtest.reference: one window at a time, one performance function per
metric) on random ledgers with gaps, short first windows, pooled calls and a knowledge cutoff; and
the fast path's shortcuts against the straightforward computation they replace: cached bootstrap
counts, percentile intervals, calls counted by runs, intervals grouped by window length.

Fast and reference agree exactly on every count, date, verdict and reason. A float may differ in
its last bits where the order of a sum differs (a row padded with NaN against the window's own
days; k windows' resamples in one matrix product against one): to 1e-12 relative."""

import datetime as dt
import warnings

import numpy as np
import polars as pl
import pytest

from pm_domain import calendar
from pm_domain import performance as perf
from pm_domain.attribution import forecast_only_signals, paired_sharpe_difference_interval
from pm_domain.backtest import (
    STRESSES,
    BacktestRules,
    fast,
    ledger_and_calls,
    portfolio_ledger,
    reference,
    ticker_ledger,
)
from pm_domain.outcomes import SessionGrid

START = dt.date(2018, 1, 2)
SESSIONS = 150
RULES = BacktestRules(window_sessions=40, bootstrap_replications=200)


def random_market(seed: int, tickers: tuple[str, ...] = ("AAA",)) -> tuple[pl.DataFrame, pl.DataFrame, list]:
    """Prices and signals of a random walk: signals from the 15th session on (the first windows
    have none), one price and one signal missing (windows with a reason), random horizons,
    confidences (some null) and an LLM that vetoes 30% of the forecast's trades."""
    rng = np.random.default_rng(seed)
    days = calendar.trading_days(START, calendar.shift_trading_days(START, SESSIONS - 1))
    n = len(days)
    prices = pl.concat([pl.DataFrame({"ticker": t, "date": days, "price": 100 * np.cumprod(1 + rng.normal(3e-4, 0.012, n))})
                        for t in tickers]).filter(pl.col("date") != days[int(rng.integers(60, 80))])
    proposed = [rng.choice(["BUY", "SELL", "HOLD"], n, p=[0.45, 0.35, 0.2]) for _ in tickers]
    signals = pl.concat([pl.DataFrame({
        "ticker": t, "date": days, "forecast_action": proposal,
        "action": np.where(rng.random(n) < 0.3, "HOLD", proposal),
        "confidence": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(0.45, 0.85, n)),
        "position_size": rng.uniform(0, 0.25, n), "horizon": rng.choice([1, 5, 20], n),
        "kelly_fraction": rng.uniform(-0.2, 0.8, n), "rules": '{"kelly_share": 0.5, "max_position": 0.25}',
    }) for t, proposal in zip(tickers, proposed, strict=True)]).with_columns(
        pl.col("confidence").fill_nan(None), pl.col("horizon").cast(pl.Int64))
    signals = signals.filter((pl.col("date") >= days[15]) & (pl.col("date") != days[int(rng.integers(100, 120))]))
    return prices, signals, days


def ledgers(prices: pl.DataFrame, signals: pl.DataFrame, days: list, rules: BacktestRules,
            book: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(final ledger, its calls, forecast-only ledger, its calls): one ticker's, or with `book`
    the portfolio's of that weighting over every ticker, its calls pooled."""
    grid = SessionGrid(days[0], days[-1])
    final, calls = ledger_and_calls(signals, prices, grid, rules.sizing, rules.delay_sessions)
    twin, twin_calls = ledger_and_calls(forecast_only_signals(signals), prices, grid, rules.sizing, rules.delay_sessions)
    if book is not None:
        return portfolio_ledger(final, book), calls, portfolio_ledger(twin, book), twin_calls
    return final, calls, twin, twin_calls


def assert_same_rows(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    # A column with no value at all is of dtype Null in the fast path's frame.
    got = got.with_columns(pl.col(c).cast(expected.schema[c]) for c in got.columns if got.schema[c] == pl.Null)
    assert got.schema == expected.schema
    for column in expected.columns:
        if expected.schema[column] == pl.Float64:
            assert got[column].is_null().to_list() == expected[column].is_null().to_list(), column
            np.testing.assert_allclose(got[column].fill_null(0.0).to_numpy(), expected[column].fill_null(0.0).to_numpy(),
                                       rtol=1e-12, atol=1e-15, err_msg=column)
        else:
            assert got[column].to_list() == expected[column].to_list(), column


CASES = {
    "unit": (RULES, None),
    "signal sizing, costs, delay, risk-free rate": (
        BacktestRules(window_sessions=40, bootstrap_replications=200, sizing="signal", cost_bps=20.0,
                      delay_sessions=1, risk_free_rate=0.03, interval=0.8), None),
    "equal-weight book": (RULES, "equal"),
    "position-size book": (BacktestRules(window_sessions=40, bootstrap_replications=200, sizing="signal"),
                           "position_size"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_window_metrics_and_verdicts_are_the_references(case):
    rules, book = CASES[case]
    prices, signals, days = random_market(1, ("AAA", "BBB") if book else ("AAA",))
    grid = SessionGrid(days[0], days[-1])
    final, calls = ledger_and_calls(signals, prices, grid, rules.sizing, rules.delay_sessions)
    final = portfolio_ledger(final, book) if book else final
    ends = days[10::2]
    rows = fast.window_metrics(final, calls, ends, rules)
    assert_same_rows(rows, reference.window_metrics(final, calls, ends, rules))
    assert set(rows["verdict"]) >= {"failed", "insufficient_data"} and rows["calls"].max() > 0
    for stress in STRESSES:
        stressed = stress.rules(rules)
        ledger = ticker_ledger(signals, prices, grid, stressed.sizing, stressed.delay_sessions)
        ledger = portfolio_ledger(ledger, book) if book else ledger
        assert fast.verdict_statuses(ledger, ends, stressed) == reference.verdict_statuses(ledger, ends, stressed)


@pytest.mark.parametrize(("case", "clean_from"), [
    ("unit", 0), ("unit", 90), ("unit", SESSIONS + 5),  # every session clean, a cutoff inside, none clean
    ("signal sizing, costs, delay, risk-free rate", 90), ("equal-weight book", 90), ("position-size book", 0)])
def test_backtest_with_attribution_is_the_references(case, clean_from):
    rules, book = CASES[case]
    prices, signals, days = random_market(2, ("AAA", "BBB") if book else ("AAA",))
    final, calls, twin, twin_calls = ledgers(prices, signals, days, rules, book)
    ends = days[10::2]
    rows = fast.backtest_with_attribution(final, twin, calls, twin_calls, ends, rules, clean_from, " (cutoff x)")
    assert_same_rows(rows, reference.backtest_with_attribution(final, twin, calls, twin_calls, ends, rules,
                                                               clean_from, " (cutoff x)"))
    if clean_from == 90:  # windows across the cutoff: verdicts on both sides
        assert set(rows["llm_verdict"]) - {"insufficient_data"} and set(rows["contaminated_llm_verdict"]) - {
            "insufficient_data"}


def test_a_random_ledger_meets_every_kind_of_window():
    prices, signals, days = random_market(1)
    final, calls, _, _ = ledgers(prices, signals, days, RULES)
    rows = reference.window_metrics(final, calls, days[10:], RULES)
    reasons = " ".join(r for r in rows["verdict_reason"].to_list() if r)
    assert "no signal in the" in reasons and "signals missing" in reasons and "prices missing" in reasons
    usable = rows.filter(pl.col("verdict") != "insufficient_data")
    assert usable["sessions"].min() < RULES.window_sessions == usable["sessions"].max()


# --- the fast path's shortcuts give the straightforward computation's numbers, exactly ------------

def test_bootstrap_counts_are_the_resamples_archs_bootstrap_draws():
    from arch.bootstrap import StationaryBootstrap

    for n, block, seed in [(1, 10.0, 42), (2, 10.0, 42), (17, 2.5, 3), (252, 10.0, 42), (300, 10.0, 7)]:
        expected = np.zeros((200, n))
        resamples = StationaryBootstrap(block, np.arange(n), seed=seed).bootstrap(200)
        for row, (data, _) in zip(expected, resamples, strict=True):
            np.add.at(row, data[0], 1.0)
        np.testing.assert_array_equal(perf.stationary_bootstrap_counts(n, 200, block, seed), expected)


def test_cached_counts_are_the_counts_whatever_integer_type_holds_them():
    for n in (30, 300):  # uint8 and uint16 in the cache
        for _ in range(2):  # computed, then from the cache
            counts = fast.cached_bootstrap_counts(n, 50, 10.0, 5)
            assert counts.dtype == np.float64
            np.testing.assert_array_equal(counts, perf.stationary_bootstrap_counts(n, 50, 10.0, 5))


def test_percentile_interval_is_nanquantile_over_the_defined_resamples():
    rng = np.random.default_rng(0)
    resampled = rng.normal(size=(400, 6))
    resampled[:50, 1] = np.nan      # partly defined: the interval over the rest
    resampled[:300, 2] = np.inf     # fewer than half defined: none
    resampled[:, 3] = np.nan        # never defined
    resampled[::2, 4] = -np.inf
    lower, upper = perf.percentile_interval(resampled, 0.9)
    defined = np.isfinite(resampled)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tail = (1.0 - 0.9) / 2.0
        expected = np.nanquantile(np.where(defined, resampled, np.nan), [tail, 1.0 - tail], axis=0)
    expected[:, defined.mean(axis=0) < 0.5] = np.nan
    np.testing.assert_array_equal(np.vstack([lower, upper]), expected)


def calls_by_matrix(calls: pl.DataFrame, windows: fast.Windows) -> dict[str, np.ndarray]:
    """The calls' window metrics from a (windows x calls) matrix of which call counts where."""
    position, known = calls["position_session"].to_numpy()[None, :], calls["known_session"].to_numpy()[None, :]
    inside = ((windows.firsts[:, None] >= 0) & (position >= windows.firsts[:, None]) & (position <= windows.ends[:, None])
              & (known <= windows.ends[:, None])) & windows.without_reason()[:, None]
    hits = np.where(inside, calls["hit"].to_numpy()[None, :], np.nan)
    confidence = np.where(inside, calls["confidence"].cast(pl.Float64).fill_null(np.nan).to_numpy()[None, :], np.nan)
    with np.errstate(all="ignore"):
        return {"calls": np.sum(~np.isnan(hits), axis=-1), "hit_rate": perf.hit_rate(hits),
                "brier_score": perf.brier_score(confidence, hits)}


def test_calls_counted_by_runs_are_those_of_the_window_by_call_matrix():
    prices, signals, days = random_market(3, ("AAA", "BBB", "CCC"))
    rules = BacktestRules(window_sessions=60, bootstrap_replications=200)
    book, calls, _, _ = ledgers(prices, signals, days, rules, "equal")  # pooled: several calls a session
    windows = fast.trailing_windows(book, days[5:], rules)
    calls = calls.with_columns(pl.col("position_session", "known_session") - book["session"][0])
    runs = fast.call_runs(calls, windows)
    count, hit_rate = fast.hit_rates(calls, runs)
    expected = calls_by_matrix(calls, windows)
    assert (expected["calls"] > 0).sum() > 30 and np.isnan(expected["hit_rate"]).sum() > 5
    np.testing.assert_array_equal(count, expected["calls"])
    np.testing.assert_array_equal(hit_rate, expected["hit_rate"])  # counts of hits: exact
    np.testing.assert_allclose(fast.brier_scores(calls, runs), expected["brier_score"], rtol=0, atol=1e-15)


def test_intervals_grouped_by_window_length_are_each_groups_interval_computed_apart():
    prices, signals, days = random_market(4)
    rules = BacktestRules(window_sessions=40, bootstrap_replications=200, risk_free_rate=0.02)
    final, _, twin, _ = ledgers(prices, signals, days, rules)
    twin = twin.with_columns(pl.when(pl.col("session") == 130).then(None).otherwise(pl.col("position")).alias("position"))
    final_windows, twin_windows = (fast.trailing_windows(ledger, days[5:], rules) for ledger in (final, twin))
    both = ~np.isnan(final_windows.net) & ~np.isnan(twin_windows.net)
    assert (both.sum(axis=1) == 0).sum() > 10  # twin windows without data
    sharpe, paired = np.full((2, len(days) - 5), np.nan), np.full((2, len(days) - 5), np.nan)
    for n, index, compact in perf.rows_by_observations(final_windows.net):
        if n >= 2:
            counts = perf.stationary_bootstrap_counts(n, 200, rules.bootstrap_block, rules.bootstrap_seed)
            sharpe[:, index] = perf.bootstrap_sharpe_interval(compact, counts, rules.interval, rules.daily_risk_free)
    final_net, twin_net = np.where(both, final_windows.net, np.nan), np.where(both, twin_windows.net, np.nan)
    for n, index, compact in perf.rows_by_observations(final_net):
        if n >= 2:
            paired[:, index] = paired_sharpe_difference_interval(
                compact, twin_net[index][both[index]].reshape(len(index), n),
                perf.stationary_bootstrap_counts(n, 200, rules.bootstrap_block, rules.bootstrap_seed), rules.interval,
                rules.daily_risk_free)
    assert np.isfinite(paired).sum() > 60 and np.isfinite(sharpe).sum() > np.isfinite(paired).sum()
    np.testing.assert_array_equal(np.vstack(fast.sharpe_intervals(final_windows.net, rules)), sharpe)
    np.testing.assert_array_equal(np.vstack(fast.paired_sharpe_intervals(final_windows, twin_windows, rules)), paired)

