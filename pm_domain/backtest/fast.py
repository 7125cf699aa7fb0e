"""The production path: every window of a ledger at once, in one pass per metric.

The windows ending at each requested date are rows of (windows x window_sessions) matrices, NaN
outside a window's sessions, so each metric of pm_domain.performance is one call over all of them.
Three things reference.py does plainly are done here without repeating work:
- the stationary-bootstrap counts of a window length N are drawn once per process (a bounded
  cache) and the windows with N sessions are resampled by one matrix product;
- the calls of a window are counted without a (windows x calls) matrix: grouped by horizon, the
  calls of a window are one run of each group, summed as a difference of exact prefix sums;
- a stressed verdict computes only the metrics the verdict reads, and the Sharpe's interval only
  where every other criterion is met.
tests/unit/test_backtest_fast.py checks every function here against reference.py on random
windows.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from pm_domain import performance as perf
from pm_domain.attribution import ATTRIBUTION_SCHEMA, llm_verdict, paired_sharpe_difference_interval

from .ledger import calls_by_ledger_index, ledger_values, require_every_session
from .rules import (
    BACKTEST_SCHEMA,
    CONTAMINATED_COLUMNS,
    COUNT_COLUMNS,
    METRIC_COLUMNS,
    NO_CONTAMINATED_SESSION,
    BacktestRules,
    missing_prices_reason,
    missing_signals_reason,
    no_clean_session_reason,
    no_signal_reason,
    verdict,
)

# --- the windows as matrices ---------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """The trailing windows of one ledger ending at each requested session, as (windows x W)
    matrices, W = window_sessions: column j of row i is ledger session ends[i] - W + 1 + j, NaN
    before the window's first session with a position and everywhere in a window without metrics."""

    ends: np.ndarray  # ledger index of each window's end date
    firsts: np.ndarray  # ledger index of its first session with a position, -1 when none
    reasons: list[str | None]  # why it has no metrics, None when it has
    net: np.ndarray
    benchmark: np.ndarray
    positions: np.ndarray
    turnover: np.ndarray

    def session_index(self) -> np.ndarray:
        """The ledger index of each (window, column)."""
        width = self.net.shape[-1]
        return self.ends[:, None] - width + 1 + np.arange(width)[None, :]

    def without_reason(self) -> np.ndarray:
        return np.array([reason is None for reason in self.reasons], dtype=bool)


def first_known_from(known: np.ndarray) -> np.ndarray:
    """For each index i, the smallest j >= i with known[j] (len(known) when none)."""
    index = np.where(known, np.arange(len(known)), len(known))
    return np.minimum.accumulate(index[::-1])[::-1]


def trailing_windows(ledger: pl.DataFrame, end_dates: Sequence[dt.date], rules: BacktestRules) -> Windows:
    """The window of each end date: from the first session with a position among the last
    window_sessions to the end date, none (with the reason) where a signal or price is missing."""
    dates = ledger["date"].to_list()
    where = {day: i for i, day in enumerate(dates)}
    ends = np.array([where[day] for day in end_dates], dtype=np.int64)
    column = {c: ledger_values(ledger, c) for c in
              ("position", "asset_return", "gross_return", "turnover", "entry_turnover")}
    width = rules.window_sessions
    starts = np.maximum(ends - width + 1, 0)
    with_position = ~np.isnan(column["position"])
    firsts = first_known_from(with_position)[starts]
    firsts = np.where(firsts <= ends, firsts, -1)
    # Missing positions and returns before each index: a window's gaps are a difference of two.
    missing_position = np.concatenate([[0], np.cumsum(~with_position)])
    missing_return = np.concatenate([[0], np.cumsum(np.isnan(column["asset_return"]))])
    reasons: list[str | None] = []
    for end, start, first in zip(ends, starts, firsts, strict=True):
        if first < 0:
            reasons.append(no_signal_reason(dates[start], dates[end], rules))
        elif missing_position[end + 1] - missing_position[first]:
            gap = first + int(np.flatnonzero(~with_position[first:end + 1])[0])
            reasons.append(missing_signals_reason(int(missing_position[end + 1] - missing_position[first]),
                                                  dates[gap], rules))
        elif missing_return[end + 1] - missing_return[first]:
            gap = first + int(np.flatnonzero(np.isnan(column["asset_return"][first:end + 1]))[0])
            reasons.append(missing_prices_reason(int(missing_return[end + 1] - missing_return[first]), dates[gap]))
        else:
            reasons.append(None)
    offsets = ends[:, None] - width + 1 + np.arange(width)[None, :]
    usable = np.array([r is None for r in reasons])
    inside = (offsets >= firsts[:, None]) & usable[:, None]
    safe = np.clip(offsets, 0, None)

    def window(values: np.ndarray) -> np.ndarray:
        return np.where(inside, values[safe], np.nan)

    first_day = offsets == firsts[:, None]
    turnover = np.where(first_day, column["entry_turnover"][safe], column["turnover"][safe])
    turnover = np.where(inside, turnover, np.nan)
    net = window(column["gross_return"]) - rules.cost_rate * turnover
    return Windows(ends, firsts, reasons, net, window(column["asset_return"]), window(column["position"]), turnover)


def sessions_kept(windows: Windows, keep: np.ndarray, reason_if_none: str) -> Windows:
    """The windows cut down to the sessions of `keep` (windows x W): the rest NaN, the first
    kept session as the window's first, and `reason_if_none` where a window with metrics keeps no
    session. The turnover and net return of a kept session stay the window's (a cut does not
    charge a new entry)."""
    kept = keep & ~np.isnan(windows.net)
    any_kept = kept.any(axis=-1)
    firsts = np.where(any_kept, np.where(kept, windows.session_index(), np.iinfo(np.int64).max).min(axis=-1), -1)
    reasons = [r if r is not None or ok else reason_if_none for r, ok in zip(windows.reasons, any_kept, strict=True)]

    def cut(values: np.ndarray) -> np.ndarray:
        return np.where(kept, values, np.nan)

    return Windows(windows.ends, firsts, reasons, cut(windows.net), cut(windows.benchmark), cut(windows.positions),
                   cut(windows.turnover))


def sessions_and_with_metrics(windows: Windows) -> tuple[np.ndarray, np.ndarray]:
    """(sessions, with_metrics): the observations per window, and which windows have metrics."""
    sessions = perf.observations(windows.net)
    return sessions, windows.without_reason() & (sessions > 0)


# --- stationary-bootstrap counts and intervals -----------------------------------------------------

# The stationary-bootstrap counts of every window length N met in this process, as the smallest
# unsigned integers that hold them (a count is at most N): windows grow through N = 2..W in a
# ledger's first year, and each ticker (and its forecast-only twin, and the paired interval) walks
# them again, so a small LRU of N would hold none of them when next asked. 1000 x N bytes each:
# 32 MB for every N up to the default 252; the least recently used go beyond the budget.
COUNTS_CACHE_BYTES = 128 * 2**20
_counts_cache: OrderedDict[tuple[int, int, float, int], np.ndarray] = OrderedDict()
_counts_cache_bytes = 0
_counts_lock = threading.Lock()


def cached_bootstrap_counts(observations: int, replications: int, block: float, seed: int) -> np.ndarray:
    """perf.stationary_bootstrap_counts (float64, replications x N), cached for the process."""
    global _counts_cache_bytes
    key = (observations, replications, block, seed)
    with _counts_lock:
        compact = _counts_cache.get(key)
        if compact is not None:
            _counts_cache.move_to_end(key)
    if compact is None:
        counts = perf.stationary_bootstrap_counts(observations, replications, block, seed)
        kind = np.uint8 if observations <= np.iinfo(np.uint8).max else (
            np.uint16 if observations <= np.iinfo(np.uint16).max else np.uint32)
        compact = counts.astype(kind)
        with _counts_lock:
            if key not in _counts_cache:
                _counts_cache[key] = compact
                _counts_cache_bytes += compact.nbytes
            while _counts_cache_bytes > COUNTS_CACHE_BYTES and len(_counts_cache) > 1:
                _counts_cache_bytes -= _counts_cache.popitem(last=False)[1].nbytes
        return counts
    return compact.astype(np.float64)


def bootstrap_counts(observations: int, rules: BacktestRules) -> np.ndarray:
    """The rules' resamples of N = `observations` days, from the process's cache."""
    return cached_bootstrap_counts(observations, rules.bootstrap_replications, rules.bootstrap_block,
                                   rules.bootstrap_seed)


def sharpe_intervals(net: np.ndarray, rules: BacktestRules) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of each window's bootstrap interval of the Sharpe: the windows with N
    sessions resampled together, NaN below 2 sessions."""
    lower, upper = np.full(len(net), np.nan), np.full(len(net), np.nan)
    for n, index, compact in perf.rows_by_observations(net):
        if n < 2:
            continue
        lower[index], upper[index] = perf.bootstrap_sharpe_interval(compact, bootstrap_counts(n, rules),
                                                                    rules.interval, rules.daily_risk_free)
    return lower, upper


def paired_sharpe_intervals(final: Windows, twin: Windows, rules: BacktestRules) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of each window's paired interval of Sharpe(final) - Sharpe(twin) over the
    sessions both have (attribution.paired_sharpe_difference_interval), NaN below 2 sessions."""
    both = ~np.isnan(final.net) & ~np.isnan(twin.net)
    final_net, twin_net = np.where(both, final.net, np.nan), np.where(both, twin.net, np.nan)
    lower, upper = np.full(len(final.ends), np.nan), np.full(len(final.ends), np.nan)
    for n, index, compact in perf.rows_by_observations(final_net):
        if n < 2:
            continue
        twin_compact = twin_net[index][both[index]].reshape(len(index), n)
        lower[index], upper[index] = paired_sharpe_difference_interval(
            compact, twin_compact, bootstrap_counts(n, rules), rules.interval, rules.daily_risk_free)
    return lower, upper


# --- the calls of each window ------------------------------------------------------------------

def subnormal_multiples(values: np.ndarray) -> list[int]:
    """Each (finite) float64 exactly, as an integer number of 2^-1074 (the smallest subnormal)."""
    exact = []
    for value in values.tolist():
        numerator, denominator = value.as_integer_ratio()  # the denominator is a power of two
        exact.append(numerator << (1075 - denominator.bit_length()))
    return exact


SUBNORMAL_UNIT = 1 << 1074


@dataclass(frozen=True)
class CallRuns:
    """Which calls count in which window, without a (windows x calls) matrix, which grows with the
    square of the dates for the portfolio's pooled calls. A call counts in the window ending at T
    when its position earns inside the window and its outcome is known by T. Grouped by horizon
    (known - position session) and sorted by position, the calls of a window are one run
    [low, high) of each group."""

    with_calls: np.ndarray  # the windows that can hold calls (a first session, no reason)
    runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per group: (calls in position order, low, high)

    def count(self, selected: np.ndarray) -> np.ndarray:
        """Per window, how many of its calls are `selected` (a bool per call)."""
        total = np.zeros(len(self.with_calls), np.int64)
        for group, low, high in self.runs:
            prefix = np.concatenate([[0], np.cumsum(selected[group])])
            total[self.with_calls] += prefix[high] - prefix[low]
        return total

    def exact_sum(self, values: np.ndarray) -> np.ndarray:
        """Per window, the sum of `values` over its calls: exact (in integers) and rounded once, so a
        count of hits is the count a row sum would give."""
        total = np.zeros(len(self.with_calls), dtype=object)
        for group, low, high in self.runs:
            prefix = np.array([0, *itertools.accumulate(subnormal_multiples(values[group]))], dtype=object)
            total[self.with_calls] += prefix[high] - prefix[low]
        return np.array([int(t) / SUBNORMAL_UNIT for t in total])


def call_runs(calls: pl.DataFrame, windows: Windows) -> CallRuns:
    """The runs of `calls` (position and known sessions counted by ledger index) in `windows`."""
    with_calls = (windows.firsts >= 0) & windows.without_reason()
    if not calls.height or not with_calls.any():
        return CallRuns(with_calls, [])
    position = calls["position_session"].to_numpy().astype(np.int64)
    horizon = calls["known_session"].to_numpy().astype(np.int64) - position
    firsts, ends = windows.firsts[with_calls], windows.ends[with_calls]
    runs = []
    for d in np.unique(horizon):
        group = np.flatnonzero(horizon == d)
        group = group[np.argsort(position[group], kind="stable")]
        positions = position[group]
        low = np.searchsorted(positions, firsts, side="left")
        high = np.maximum(np.searchsorted(positions, ends - max(int(d), 0), side="right"), low)
        runs.append((group, low, high))
    return CallRuns(with_calls, runs)


def hit_rates(calls: pl.DataFrame, runs: CallRuns) -> tuple[np.ndarray, np.ndarray]:
    """(calls, hit_rate) per window: the number of calls and mean(hit), NaN without a call."""
    count = runs.count(np.ones(calls.height, dtype=bool))
    hits = runs.exact_sum(calls["hit"].cast(pl.Float64).to_numpy())
    with np.errstate(invalid="ignore"):
        return count, np.where(count > 0, hits / np.maximum(count, 1), np.nan)


def brier_scores(calls: pl.DataFrame, runs: CallRuns) -> np.ndarray:
    """mean((confidence - hit)^2) per window over the calls with a confidence, NaN without one."""
    hit = calls["hit"].cast(pl.Float64).to_numpy()
    confidence = calls["confidence"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    with_confidence = ~np.isnan(confidence)
    error = np.where(with_confidence, (np.where(with_confidence, confidence, 0.0) - hit) ** 2, 0.0)
    scored = runs.count(with_confidence)
    errors = runs.exact_sum(error)
    with np.errstate(invalid="ignore"):
        return np.where(scored > 0, errors / np.maximum(scored, 1), np.nan)


# --- the metrics of each window ------------------------------------------------------------------

def trades(windows: Windows) -> np.ndarray:
    """Sessions whose position changed (an entry on the window's first session counts)."""
    return np.sum(np.nan_to_num(windows.turnover) > 0, axis=-1)


def return_metrics(windows: Windows, rules: BacktestRules) -> dict[str, np.ndarray]:
    """The metrics of METRIC_COLUMNS that read only the windows' returns and positions."""
    rf = rules.daily_risk_free
    net, benchmark = windows.net, windows.benchmark
    with np.errstate(all="ignore"):
        values = {
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
            "profit_factor": perf.profit_factor(net),
            "trades": trades(windows),
            "exposure": perf.exposure(windows.positions),
            "probabilistic_sharpe": perf.probabilistic_sharpe_ratio(net - rf),
        }
    values["excess_return"] = values["total_return"] - values["buy_hold_total_return"]
    return values


def verdict_metrics(windows: Windows, rules: BacktestRules) -> dict[str, np.ndarray]:
    """Only what `verdict` reads besides sessions and the Sharpe's interval."""
    with np.errstate(all="ignore"):
        values = {
            "annual_return": perf.annual_return(windows.net),
            "total_return": perf.total_return(windows.net),
            "buy_hold_total_return": perf.total_return(windows.benchmark),
            "sharpe": perf.sharpe_ratio(windows.net, rules.daily_risk_free),
            "probabilistic_sharpe": perf.probabilistic_sharpe_ratio(windows.net - rules.daily_risk_free),
        }
    values["excess_return"] = values["total_return"] - values["buy_hold_total_return"]
    return values


def attribution_metrics(calls: pl.DataFrame, windows: Windows, rules: BacktestRules) -> dict[str, np.ndarray]:
    """attribution.ATTRIBUTION_METRICS of each window. `calls` counted by ledger index."""
    with np.errstate(all="ignore"):
        return {
            "total_return": perf.total_return(windows.net),
            "annual_return": perf.annual_return(windows.net),
            "sharpe": perf.sharpe_ratio(windows.net, rules.daily_risk_free),
            "hit_rate": hit_rates(calls, call_runs(calls, windows))[1],
            "trades": trades(windows),
            "exposure": perf.exposure(windows.positions),
        }


def stored(values: dict[str, np.ndarray], with_metrics: np.ndarray) -> pl.DataFrame:
    """The metrics as stored: null outside the windows with metrics and where undefined."""
    masked = pl.DataFrame({c: np.where(with_metrics, np.asarray(v, dtype=float), np.nan) for c, v in values.items()})
    return masked.with_columns(pl.col(pl.Float64).fill_nan(None)).with_columns(
        pl.col(c).cast(pl.Int64) for c in values if c in COUNT_COLUMNS)


def metric_rows(ledger: pl.DataFrame, calls: pl.DataFrame, windows: Windows, rules: BacktestRules,
                sharpe_bounds: tuple[np.ndarray, np.ndarray]) -> pl.DataFrame:
    """BACKTEST_SCHEMA rows of `windows`, given their Sharpe intervals (sharpe_intervals)."""
    calls = calls_by_ledger_index(calls, ledger)
    runs = call_runs(calls, windows)
    count, hit_rate = hit_rates(calls, runs)
    values = return_metrics(windows, rules) | {
        "calls": count, "hit_rate": hit_rate, "brier_score": brier_scores(calls, runs),
        "sharpe_ci_lower": sharpe_bounds[0], "sharpe_ci_upper": sharpe_bounds[1]}
    sessions, with_metrics = sessions_and_with_metrics(windows)
    dates = ledger["date"].to_list()
    rows = pl.DataFrame({
        "date": [dates[e] for e in windows.ends],
        "window_start": [dates[f] if ok else None for f, ok in zip(windows.firsts, with_metrics, strict=True)],
        "sessions": sessions,
        **{c: np.where(with_metrics, np.asarray(values[c], dtype=float), np.nan) for c in METRIC_COLUMNS},
        "position": ledger_values(ledger, "position")[windows.ends],
        "asset_return": ledger_values(ledger, "asset_return")[windows.ends],
        "net_return": np.where(with_metrics, windows.net[:, -1], np.nan),
    }).with_columns(pl.col(pl.Float64).fill_nan(None))
    verdicts = [verdict(row, reason, rules) for row, reason in zip(rows.iter_rows(named=True), windows.reasons,
                                                                   strict=True)]
    rows = rows.with_columns(
        pl.Series("verdict", [v[0] for v in verdicts], pl.String),
        pl.Series("verdict_failed", [v[1] for v in verdicts], pl.List(pl.String)),
        pl.Series("verdict_reason", [v[2] for v in verdicts], pl.String),
    )
    return rows.with_columns(pl.col(*COUNT_COLUMNS).cast(pl.Int64)).select(list(BACKTEST_SCHEMA))


# --- the production entry points ---------------------------------------------------------------

def window_metrics(ledger: pl.DataFrame, calls: pl.DataFrame, end_dates: Sequence[dt.date],
                   rules: BacktestRules) -> pl.DataFrame:
    """The backtest rows of ONE ledger (a ticker, or the portfolio) for each date of `end_dates`:
    the metrics of BACKTEST_SCHEMA over each trailing window, the verdict, and the ledger of the
    date itself. `calls` are that ledger's scored_calls. Ledger sessions must be the grid's, in
    order, reaching `window_sessions + 2` sessions before the first end date."""
    require_every_session(ledger)
    windows = trailing_windows(ledger, end_dates, rules)
    return metric_rows(ledger, calls, windows, rules, sharpe_intervals(windows.net, rules))


def attribution_columns(final: pl.DataFrame, twin: pl.DataFrame, calls: pl.DataFrame, twin_calls: pl.DataFrame,
                        final_windows: Windows, twin_windows: Windows, rules: BacktestRules,
                        with_metrics: np.ndarray) -> pl.DataFrame:
    """ATTRIBUTION_SCHEMA over the sessions the windows hold, for the windows `with_metrics`."""
    ok = with_metrics & final_windows.without_reason()
    final_values = stored(attribution_metrics(calls_by_ledger_index(calls, final), final_windows, rules), ok)
    twin_values = stored(attribution_metrics(calls_by_ledger_index(twin_calls, twin), twin_windows, rules), ok)
    both = ~np.isnan(final_windows.net) & ~np.isnan(twin_windows.net)
    held = np.sum(both & (np.nan_to_num(final_windows.positions) != np.nan_to_num(twin_windows.positions)), axis=-1)
    columns = {
        **{f"forecast_only_{metric}": twin_values[metric] for metric in twin_values.columns},
        **{f"llm_delta_{metric}": final_values[metric] - twin_values[metric] for metric in final_values.columns},
        **sharpe_difference_verdicts(final_windows, twin_windows, rules, ok),
        "llm_held_back": np.where(ok, held, 0).astype(np.int64),
    }
    return pl.DataFrame({c: columns[c] for c in ATTRIBUTION_SCHEMA}, schema=ATTRIBUTION_SCHEMA)


def contaminated_columns(final_windows: Windows, twin_windows: Windows, rules: BacktestRules,
                         with_metrics: np.ndarray) -> pl.DataFrame:
    """CONTAMINATED_COLUMNS (as contaminated_*) over the sessions the windows hold."""
    ok = with_metrics & final_windows.without_reason()
    sharpe = {name: stored({"sharpe": perf.sharpe_ratio(w.net, rules.daily_risk_free)}, ok)["sharpe"]
              for name, w in (("final", final_windows), ("twin", twin_windows))}
    columns = {"llm_delta_sharpe": sharpe["final"] - sharpe["twin"],
               **sharpe_difference_verdicts(final_windows, twin_windows, rules, ok)}
    return pl.DataFrame({c: columns[c] for c in CONTAMINATED_COLUMNS},
                        schema={c: ATTRIBUTION_SCHEMA[c] for c in CONTAMINATED_COLUMNS}).rename(
        lambda c: f"contaminated_{c}")


def sharpe_difference_verdicts(final_windows: Windows, twin_windows: Windows, rules: BacktestRules,
                               ok: np.ndarray) -> dict[str, list]:
    """The paired interval of the Sharpe difference and the LLM's verdict, for the windows `ok`."""
    lower, upper = paired_sharpe_intervals(final_windows, twin_windows, rules)
    bounds = [(None if np.isnan(lo) or not good else float(lo), None if np.isnan(up) or not good else float(up))
              for lo, up, good in zip(lower, upper, ok, strict=True)]
    return {"llm_sharpe_delta_ci_lower": [b[0] for b in bounds],
            "llm_sharpe_delta_ci_upper": [b[1] for b in bounds],
            "llm_verdict": [llm_verdict(lo, up, good) for (lo, up), good in zip(bounds, ok, strict=True)]}


def backtest_with_attribution(final: pl.DataFrame, twin: pl.DataFrame, calls: pl.DataFrame,
                              twin_calls: pl.DataFrame, end_dates: Sequence[dt.date],
                              rules: BacktestRules, clean_from: int = 0,
                              cutoff_note: str = "") -> pl.DataFrame:
    """window_metrics of the `final` ledger and, beside each row, what the LLM added: the
    forecast-only `twin` ledger's metrics, the final's minus the twin's, the held-back signals and
    the paired bootstrap interval and verdict of the Sharpe difference (pm_domain.attribution),
    over the window's CLEAN sessions only: those from ledger index `clean_from` on, the first
    position set by a signal after the answering model's knowledge cutoff. The same Sharpe
    difference, interval and verdict over the window's earlier (contaminated) sessions stand
    beside them as contaminated_*. `cutoff_note` names the cutoff in the reason a window has no
    clean session."""
    require_every_session(final)
    require_every_session(twin)
    final_windows, twin_windows = trailing_windows(final, end_dates, rules), trailing_windows(twin, end_dates, rules)
    final_rows = metric_rows(final, calls, final_windows, rules, sharpe_intervals(final_windows.net, rules))
    with_metrics = np.array([v != "insufficient_data" for v in final_rows["verdict"].to_list()], dtype=bool)
    clean = final_windows.session_index() >= clean_from
    no_clean = no_clean_session_reason(cutoff_note)
    clean_final = sessions_kept(final_windows, clean, no_clean)
    attribution = attribution_columns(final, twin, calls, twin_calls, clean_final,
                                      sessions_kept(twin_windows, clean, no_clean), rules, with_metrics)
    contaminated = contaminated_columns(sessions_kept(final_windows, ~clean, NO_CONTAMINATED_SESSION),
                                        sessions_kept(twin_windows, ~clean, NO_CONTAMINATED_SESSION), rules,
                                        with_metrics)
    clean_sessions = np.sum(clean & ~np.isnan(final_windows.net), axis=-1)
    reasons = [None if v != "insufficient_data" else (r or no_clean)
               for v, r in zip(attribution["llm_verdict"].to_list(), clean_final.reasons, strict=True)]
    extra = pl.DataFrame({
        "llm_clean_sessions": np.where(with_metrics, clean_sessions, 0).astype(np.int64),
        "llm_verdict_reason": pl.Series(reasons, dtype=pl.String),
    })
    return pl.concat([final_rows, attribution, extra, contaminated], how="horizontal")


def verdict_statuses(ledger: pl.DataFrame, end_dates: Sequence[dt.date], rules: BacktestRules) -> list[str]:
    """The verdict ("passed" | "failed" | "insufficient_data") window_metrics gives each end date
    of `ledger` under `rules`, from only the metrics the verdict reads. The bootstrap interval of
    the Sharpe, the costly one, is computed only for the windows that meet every other criterion:
    elsewhere the verdict fails whatever the interval is."""
    require_every_session(ledger)
    windows = trailing_windows(ledger, end_dates, rules)
    sessions, with_metrics = sessions_and_with_metrics(windows)
    values = stored(verdict_metrics(windows, rules), with_metrics)
    rows = [row | {"sessions": int(n)} for row, n in zip(values.iter_rows(named=True), sessions, strict=True)]
    statuses = [verdict(row | {"sharpe_ci_lower": float("inf")}, reason, rules)[0]
                for row, reason in zip(rows, windows.reasons, strict=True)]
    pending = np.flatnonzero(np.array(statuses) == "passed")
    if len(pending):
        lower, _ = sharpe_intervals(windows.net[pending], rules)
        for i, bound in zip(pending, lower, strict=True):
            row = rows[i] | {"sharpe_ci_lower": None if np.isnan(bound) else float(bound)}
            statuses[i] = verdict(row, windows.reasons[i], rules)[0]
    return statuses


def window_series(ledger: pl.DataFrame, end_date: dt.date, rules: BacktestRules,
                  twin: pl.DataFrame | None = None) -> pl.DataFrame:
    """The daily series behind the backtest dated `end_date` (for the equity plot): date,
    strategy and buy-and-hold returns and equity, the strategy's drawdown, and with `twin` (the
    forecast-only ledger) its equity. Empty when the window has no usable data."""
    windows = trailing_windows(ledger, [end_date], rules)
    inside = ~np.isnan(windows.net[0])
    if windows.reasons[0] is not None or not inside.any():
        return pl.DataFrame(schema={"date": pl.Date, "strategy_return": pl.Float64, "buy_hold_return": pl.Float64,
                                    "strategy_equity": pl.Float64, "buy_hold_equity": pl.Float64,
                                    "drawdown": pl.Float64})
    dates = ledger["date"].to_list()
    days = [dates[i] for i in windows.session_index()[0][inside]]
    net, benchmark = windows.net[0][inside], windows.benchmark[0][inside]
    series = pl.DataFrame({
        "date": days, "strategy_return": net, "buy_hold_return": benchmark,
        "strategy_equity": perf.equity_curve(net), "buy_hold_equity": perf.equity_curve(benchmark),
        "drawdown": perf.drawdown_series(net),
    })
    if twin is not None:
        twin_net = np.nan_to_num(trailing_windows(twin, [end_date], rules).net[0][inside])
        series = series.with_columns(pl.Series("forecast_only_equity", perf.equity_curve(twin_net)))
    return series
