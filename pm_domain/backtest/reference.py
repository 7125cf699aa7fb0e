"""The backtest of one ledger written plainly: one window at a time, each metric one function of
pm_domain.performance on the window's own days (empyrical's way). This is the definition; fast.py
is what production runs, every window at once, and tests/unit/test_backtest_fast.py holds the two
together on random windows. Too slow for production: it draws the bootstrap again for every window.

The window dated T (trailing_window) is the ledger's sessions from the first with a position among
the last window_sessions up to T. It has no metrics when a signal or a price is missing inside it.
Its net return on day d is n_d = p_d r_d - c |p_d - p_{d-1}|, the first day charged c |p_first|
(a window starts flat); its benchmark is the asset's return r_d, buy-and-hold of the same days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from pm_domain import performance as perf
from pm_domain.attribution import ATTRIBUTION_METRICS, ATTRIBUTION_SCHEMA, llm_verdict, paired_sharpe_difference_interval

from .ledger import calls_by_ledger_index, ledger_values
from .rules import (
    BACKTEST_SCHEMA,
    CONTAMINATED_COLUMNS,
    METRIC_COLUMNS,
    NO_CONTAMINATED_SESSION,
    BacktestRules,
    missing_prices_reason,
    missing_signals_reason,
    no_clean_session_reason,
    no_signal_reason,
    verdict,
)

NO_CALLS = pl.DataFrame(schema={"position_session": pl.Int64, "known_session": pl.Int64, "hit": pl.Float64,
                                "confidence": pl.Float64})


@dataclass(frozen=True)
class Window:
    """One backtest window: its days as ledger indices and, for each day, the strategy's net
    return, the benchmark's return, the position and its turnover. No days when it has a reason."""

    end: int  # ledger index of the end date
    first: int  # ledger index of its first day, -1 when it has none
    reason: str | None  # why it has no metrics, None when it has
    days: np.ndarray
    net: np.ndarray
    benchmark: np.ndarray
    positions: np.ndarray
    turnover: np.ndarray

    def kept(self, keep: np.ndarray, reason_if_none: str) -> Window:
        """The window cut down to its days where `keep`: the first kept day becomes its first (its
        turnover and net return stay what they were: a cut is not a new entry)."""
        if self.reason is not None:
            return self
        if not keep.any():
            return without_days(self.end, -1, reason_if_none)
        return Window(self.end, int(self.days[keep][0]), None, self.days[keep], self.net[keep],
                      self.benchmark[keep], self.positions[keep], self.turnover[keep])


def without_days(end: int, first: int, reason: str) -> Window:
    empty = np.array([], dtype=float)
    return Window(end, first, reason, np.array([], dtype=np.int64), empty, empty, empty, empty)


def trailing_window(ledger: pl.DataFrame, end_date: dt.date, rules: BacktestRules) -> Window:
    """The window of the backtest dated `end_date`."""
    dates = ledger["date"].to_list()
    end = dates.index(end_date)
    start = max(end - rules.window_sessions + 1, 0)
    position, asset_return = ledger_values(ledger, "position"), ledger_values(ledger, "asset_return")
    with_position = np.flatnonzero(~np.isnan(position[start:end + 1]))
    if not len(with_position):
        return without_days(end, -1, no_signal_reason(dates[start], dates[end], rules))
    first = start + int(with_position[0])
    days = np.arange(first, end + 1)
    no_signal = days[np.isnan(position[days])]
    if len(no_signal):
        return without_days(end, first, missing_signals_reason(len(no_signal), dates[no_signal[0]], rules))
    no_return = days[np.isnan(asset_return[days])]
    if len(no_return):
        return without_days(end, first, missing_prices_reason(len(no_return), dates[no_return[0]]))
    turnover = ledger_values(ledger, "turnover")[days]
    turnover[0] = ledger_values(ledger, "entry_turnover")[first]
    net = ledger_values(ledger, "gross_return")[days] - rules.cost_rate * turnover
    return Window(end, first, None, days, net, asset_return[days], position[days], turnover)


# --- the metrics of one window -------------------------------------------------------------------

def trades(window: Window) -> int:
    """Days whose position changed (an entry on the window's first day counts)."""
    return int(np.sum(window.turnover > 0))


def strategy_metrics(window: Window, rules: BacktestRules) -> dict[str, float]:
    """The window's returns against buy-and-hold of the same days."""
    rf = rules.daily_risk_free
    net, benchmark = window.net, window.benchmark
    with np.errstate(all="ignore"):
        return {
            "total_return": perf.total_return(net),
            "annual_return": perf.annual_return(net),
            "volatility": perf.annual_volatility(net),
            "sharpe": perf.sharpe_ratio(net, rf),
            "sortino": perf.sortino_ratio(net, rf),
            "max_drawdown": perf.max_drawdown(net),
            "calmar": perf.calmar_ratio(net),
            "alpha": perf.alpha(net, benchmark, rf),
            "beta": perf.beta(net, benchmark, rf),
            "buy_hold_total_return": perf.total_return(benchmark),
            "buy_hold_annual_return": perf.annual_return(benchmark),
            "buy_hold_sharpe": perf.sharpe_ratio(benchmark, rf),
            "buy_hold_max_drawdown": perf.max_drawdown(benchmark),
            "excess_return": perf.total_return(net) - perf.total_return(benchmark),
            "profit_factor": perf.profit_factor(net),
            "trades": trades(window),
            "exposure": perf.exposure(window.positions),
            "probabilistic_sharpe": perf.probabilistic_sharpe_ratio(net - rf),
        }


def calls_in(calls: pl.DataFrame, window: Window) -> pl.DataFrame:
    """The calls (sessions counted by ledger index) that count in the window: their position
    earns inside it and their outcome is known by its end."""
    if window.reason is not None:
        return calls.clear()
    return calls.filter(pl.col("position_session").is_between(window.first, window.end)
                        & (pl.col("known_session") <= window.end))


def call_metrics(calls: pl.DataFrame) -> dict[str, float]:
    """The number of calls, their hit rate and Brier score (over the calls with a confidence)."""
    hits = calls["hit"].cast(pl.Float64).to_numpy()
    confidence = calls["confidence"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return {"calls": calls.height, "hit_rate": perf.hit_rate(hits), "brier_score": perf.brier_score(confidence, hits)}


def resamples(days: int, rules: BacktestRules) -> np.ndarray:
    return perf.stationary_bootstrap_counts(days, rules.bootstrap_replications, rules.bootstrap_block,
                                            rules.bootstrap_seed)


def sharpe_interval(window: Window, rules: BacktestRules) -> dict[str, float]:
    """The stationary-bootstrap percentile interval of the window's Sharpe."""
    if len(window.net) < 2:
        return {"sharpe_ci_lower": np.nan, "sharpe_ci_upper": np.nan}
    lower, upper = perf.bootstrap_sharpe_interval(window.net, resamples(len(window.net), rules), rules.interval,
                                                  rules.daily_risk_free)
    return {"sharpe_ci_lower": lower, "sharpe_ci_upper": upper}


def stored(value: float | int) -> float | int | None:
    """A metric as stored: None where undefined."""
    return None if isinstance(value, float) and np.isnan(value) else value


def window_row(ledger: pl.DataFrame, calls: pl.DataFrame, window: Window, rules: BacktestRules) -> dict:
    """The BACKTEST_SCHEMA row of one window."""
    dates = ledger["date"].to_list()
    has_metrics = window.reason is None
    metrics = dict.fromkeys(METRIC_COLUMNS)
    if has_metrics:
        values = strategy_metrics(window, rules) | call_metrics(calls_in(calls, window)) | sharpe_interval(window, rules)
        metrics = {c: stored(values[c]) for c in METRIC_COLUMNS}
    row = {
        "date": dates[window.end],
        "window_start": dates[window.first] if has_metrics else None,
        "sessions": len(window.days),
        **metrics,
        "position": stored(float(ledger_values(ledger, "position")[window.end])),
        "asset_return": stored(float(ledger_values(ledger, "asset_return")[window.end])),
        "net_return": float(window.net[-1]) if has_metrics else None,
    }
    status, failed, why = verdict(row, window.reason, rules)
    return row | {"verdict": status, "verdict_failed": failed, "verdict_reason": why}


def window_metrics(ledger: pl.DataFrame, calls: pl.DataFrame, end_dates: Sequence[dt.date],
                   rules: BacktestRules) -> pl.DataFrame:
    """fast.window_metrics, one window at a time."""
    calls = calls_by_ledger_index(calls, ledger)
    rows = [window_row(ledger, calls, trailing_window(ledger, day, rules), rules) for day in end_dates]
    return pl.DataFrame(rows, schema=BACKTEST_SCHEMA)


def verdict_statuses(ledger: pl.DataFrame, end_dates: Sequence[dt.date], rules: BacktestRules) -> list[str]:
    """fast.verdict_statuses: the verdicts of window_metrics."""
    return window_metrics(ledger, NO_CALLS, end_dates, rules)["verdict"].to_list()


# --- what the LLM added: the final signals against the forecast-only twin ---------------------------

def attribution_metrics(window: Window, calls: pl.DataFrame, rules: BacktestRules) -> dict[str, float]:
    return {"total_return": perf.total_return(window.net), "annual_return": perf.annual_return(window.net),
            "sharpe": perf.sharpe_ratio(window.net, rules.daily_risk_free),
            "hit_rate": perf.hit_rate(calls_in(calls, window)["hit"].to_numpy()),
            "trades": trades(window), "exposure": perf.exposure(window.positions)}


def shared_days(final: Window, twin: Window) -> tuple[np.ndarray, np.ndarray]:
    """Which of the final's days and which of the twin's the other has too, in the same order."""
    both = np.intersect1d(final.days, twin.days)
    return np.isin(final.days, both), np.isin(twin.days, both)


def sharpe_difference(final: Window, twin: Window, rules: BacktestRules, with_metrics: bool) -> dict:
    """Sharpe(final) - Sharpe(twin), and the paired interval of it over the days both have
    (attribution.paired_sharpe_difference_interval) with the LLM's verdict."""
    ok = with_metrics and final.reason is None
    in_final, in_twin = shared_days(final, twin)
    lower = upper = np.nan
    if in_final.sum() >= 2:
        (lower,), (upper,) = paired_sharpe_difference_interval(
            final.net[in_final][None, :], twin.net[in_twin][None, :], resamples(int(in_final.sum()), rules),
            rules.interval, rules.daily_risk_free)
    lower, upper = (None if np.isnan(bound) or not ok else float(bound) for bound in (lower, upper))
    with np.errstate(all="ignore"):
        sharpe = [stored(perf.sharpe_ratio(w.net, rules.daily_risk_free)) if ok else None for w in (final, twin)]
    return {"llm_delta_sharpe": None if None in sharpe else sharpe[0] - sharpe[1],
            "llm_sharpe_delta_ci_lower": lower, "llm_sharpe_delta_ci_upper": upper,
            "llm_verdict": llm_verdict(lower, upper, ok)}


def attribution(final: Window, twin: Window, final_calls: pl.DataFrame, twin_calls: pl.DataFrame,
                rules: BacktestRules, with_metrics: bool) -> dict:
    """The ATTRIBUTION_SCHEMA row of a window: the twin's metrics, the final's minus the twin's,
    the days the LLM held a trade back, the Sharpe difference's interval and verdict."""
    ok = with_metrics and final.reason is None
    with np.errstate(all="ignore"):
        final_values = {m: stored(v) if ok else None for m, v in attribution_metrics(final, final_calls, rules).items()}
        twin_values = {m: stored(v) if ok else None for m, v in attribution_metrics(twin, twin_calls, rules).items()}
    row = {f"forecast_only_{m}": twin_values[m] for m in ATTRIBUTION_METRICS}
    row |= {f"llm_delta_{m}": None if final_values[m] is None or twin_values[m] is None
            else final_values[m] - twin_values[m] for m in ATTRIBUTION_METRICS}
    in_final, in_twin = shared_days(final, twin)
    held = int(np.sum(final.positions[in_final] != twin.positions[in_twin]))
    interval = sharpe_difference(final, twin, rules, with_metrics)
    row |= {c: interval[c] for c in ("llm_sharpe_delta_ci_lower", "llm_sharpe_delta_ci_upper", "llm_verdict")}
    return row | {"llm_held_back": held if ok else 0}


def backtest_with_attribution(final: pl.DataFrame, twin: pl.DataFrame, calls: pl.DataFrame,
                              twin_calls: pl.DataFrame, end_dates: Sequence[dt.date],
                              rules: BacktestRules, clean_from: int = 0,
                              cutoff_note: str = "") -> pl.DataFrame:
    """fast.backtest_with_attribution, one window at a time: the attribution over the window's
    days from ledger index `clean_from` on, the Sharpe difference over the days before it."""
    rows = window_metrics(final, calls, end_dates, rules)
    final_calls, twin_calls = calls_by_ledger_index(calls, final), calls_by_ledger_index(twin_calls, twin)
    no_clean = no_clean_session_reason(cutoff_note)
    extra = []
    for day, status in zip(end_dates, rows["verdict"].to_list(), strict=True):
        with_metrics = status != "insufficient_data"
        final_window, twin_window = trailing_window(final, day, rules), trailing_window(twin, day, rules)
        clean_final = final_window.kept(final_window.days >= clean_from, no_clean)
        clean_twin = twin_window.kept(twin_window.days >= clean_from, no_clean)
        clean = attribution(clean_final, clean_twin, final_calls, twin_calls, rules, with_metrics)
        contaminated = sharpe_difference(final_window.kept(final_window.days < clean_from, NO_CONTAMINATED_SESSION),
                                         twin_window.kept(twin_window.days < clean_from, NO_CONTAMINATED_SESSION),
                                         rules, with_metrics)
        extra.append(clean | {
            "llm_clean_sessions": int(np.sum(final_window.days >= clean_from)) if with_metrics else 0,
            "llm_verdict_reason": None if clean["llm_verdict"] != "insufficient_data" else (clean_final.reason or no_clean),
            **{f"contaminated_{c}": contaminated[c] for c in CONTAMINATED_COLUMNS},
        })
    schema = {**ATTRIBUTION_SCHEMA, "llm_clean_sessions": pl.Int64, "llm_verdict_reason": pl.String,
              **{f"contaminated_{c}": ATTRIBUTION_SCHEMA[c] for c in CONTAMINATED_COLUMNS}}
    return pl.concat([rows, pl.DataFrame(extra, schema=schema)], how="horizontal")
