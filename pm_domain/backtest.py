"""Walk-forward backtests of stored signals: a daily ledger, trailing-window metrics after costs
against buy-and-hold of the same days, and the validation verdict.

Timing (no look-ahead): the signal of session t uses the close of t, is entered at the close of
t+1 and so first earns the return of session t+2. The position over session d is therefore the
signal of d-2: p_d = e_{d-2}, with e = +1 BUY, -1 SELL, 0 HOLD ("unit" sizing) or that sign times
the signal's position_size ("signal" sizing). HOLD means flat: each day's signal sets the next
position, stops and targets are not simulated (daily closes cannot see intraday levels).

Net return of session d: n_d = p_d r_d - c |p_d - p_{d-1}|, c = cost_bps / 10,000 per unit of
position changed, charged on the first day the new position earns. A backtest window starts
flat, so its first day pays c |p_first|.

The window of the backtest dated T is the last `window_sessions` exchange sessions ending at T,
from the first session with a position (the signals' start) on. Sessions are counted on the
exchange calendar: a missing price or signal inside the window is not skipped, it makes the row
null with a reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from pm_domain import performance as perf
from pm_domain.attribution import (
    ATTRIBUTION_METRICS,
    ATTRIBUTION_SCHEMA,
    forecast_only_signals,
    llm_verdict,
    paired_sharpe_difference_interval,
)
from pm_domain.outcomes import DIRECTION, ENTRY_LAG_SESSIONS, SessionGrid, direction, signal_outcomes

# The position over session d is the signal of d - POSITION_LAG_SESSIONS: entered at the next
# close, earning from the session after.
POSITION_LAG_SESSIONS = ENTRY_LAG_SESSIONS + 1
PORTFOLIO_WEIGHTINGS = ("equal", "position_size")

METRIC_COLUMNS = [
    "total_return", "annual_return", "volatility", "sharpe", "sortino", "max_drawdown", "calmar",
    "alpha", "beta", "buy_hold_total_return", "buy_hold_annual_return", "buy_hold_sharpe",
    "buy_hold_max_drawdown", "excess_return", "hit_rate", "calls", "profit_factor", "trades",
    "exposure", "brier_score", "sharpe_ci_lower", "sharpe_ci_upper", "probabilistic_sharpe",
]
BACKTEST_SCHEMA = {
    "date": pl.Date, "window_start": pl.Date, "sessions": pl.Int64,
    **{c: (pl.Int64 if c in ("calls", "trades") else pl.Float64) for c in METRIC_COLUMNS},
    "verdict": pl.String, "verdict_failed": pl.List(pl.String), "verdict_reason": pl.String,
    "position": pl.Float64, "asset_return": pl.Float64, "net_return": pl.Float64,
}


@dataclass(frozen=True)
class BacktestRules:
    window_sessions: int = 252
    # Per unit of position changed: a 0.1% round trip (SignalRules.round_trip_cost) is 5 bps in
    # and 5 bps out.
    cost_bps: float = 5.0
    sizing: Literal["unit", "signal"] = "unit"
    risk_free_rate: float = 0.0  # annual, as a daily rate rf / 252 in Sharpe, Sortino and alpha
    bootstrap_replications: int = 1000
    bootstrap_block: float = 10.0  # mean block length in sessions
    bootstrap_seed: int = 42
    interval: float = 0.90
    # The old system's criteria, and the two statistics it lacked.
    min_annual_return: float = 0.10
    min_sessions: int = 30
    min_probabilistic_sharpe: float = 0.95
    # Extra sessions between a signal and its entry: p_d = e_{d - POSITION_LAG_SESSIONS - delay_sessions}
    # (the verdict is also recomputed with one session more: STRESSES).
    delay_sessions: int = 0

    def __post_init__(self) -> None:
        if self.window_sessions < 2:
            raise ValueError(f"window_sessions must be at least 2, got {self.window_sessions}")
        if self.delay_sessions < 0:
            raise ValueError(f"delay_sessions must be >= 0, got {self.delay_sessions}")
        if self.sizing not in ("unit", "signal"):
            raise ValueError(f"sizing must be 'unit' or 'signal', got {self.sizing!r}")
        if not 0 < self.interval < 1:
            raise ValueError(f"interval must be in (0, 1), got {self.interval}")

    @property
    def cost_rate(self) -> float:
        return self.cost_bps / 10_000

    @property
    def daily_risk_free(self) -> float:
        return self.risk_free_rate / perf.TRADING_DAYS_PER_YEAR

    @property
    def position_lag(self) -> int:
        """Sessions from a signal to the first session its position earns."""
        return POSITION_LAG_SESSIONS + self.delay_sessions

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def strategy_returns(positions: np.ndarray, asset_returns: np.ndarray, cost_rate: float) -> np.ndarray:
    """n_d = p_d r_d - c |p_d - p_{d-1}| along the last axis, starting flat (p_{-1} = 0)."""
    previous = np.concatenate([np.zeros(positions.shape[:-1] + (1,)), positions[..., :-1]], axis=-1)
    return positions * asset_returns - cost_rate * np.abs(positions - previous)


def backtest_core(signals: np.ndarray, prices: np.ndarray, cost_rate: float,
                  delay_sessions: int = 0) -> dict[str, np.ndarray]:
    """The vectorised core for a (tickers x sessions) block without gaps: signals e (+1/0/-1 or
    sizes) and prices P, positions p_d = e_{d-2-delay}, net returns, equity, Sharpe and max
    drawdown per ticker. What the assets do per window, as one pass for the benchmark."""
    asset_returns = prices[:, 1:] / prices[:, :-1] - 1.0
    positions = np.zeros_like(asset_returns)
    lag = POSITION_LAG_SESSIONS + delay_sessions
    positions[:, lag - 1:] = signals[:, : max(asset_returns.shape[1] - lag + 1, 0)]
    net = strategy_returns(positions, asset_returns, cost_rate)
    return {"net_returns": net, "equity": perf.equity_curve(net), "sharpe": perf.sharpe_ratio(net),
            "max_drawdown": perf.max_drawdown(net)}


def exposure(signals: pl.DataFrame, sizing: str) -> pl.Expr:
    """e_t: the signal's direction, times its position_size under "signal" sizing."""
    sign = direction(pl.col("action")).cast(pl.Float64)
    return (sign * pl.col("position_size").fill_null(0.0) if sizing == "signal" else sign).alias("exposure")


def ticker_ledger(signals: pl.DataFrame, prices: pl.DataFrame, grid: SessionGrid, sizing: str,
                  delay_sessions: int = 0) -> pl.DataFrame:
    """Per ticker and session of `grid`: price, asset_return r_d, the day's exposure e_d, the
    position p_d = e_{d-2-delay_sessions}, turnover |p_d - p_{d-1}| and entry_turnover |p_d| (a
    window's first day). Null where a price or signal is missing: gaps stay visible."""
    unknown = set(signals["action"].unique().to_list()) - set(DIRECTION)
    if unknown:
        raise ValueError(f"llm_signals hold unknown action(s) {sorted(unknown)}: expected BUY, SELL or HOLD")
    tickers = sorted(set(signals["ticker"].to_list()) | set(prices["ticker"].to_list()))
    frame = (
        pl.DataFrame({"ticker": tickers}, schema={"ticker": pl.String}).join(grid.frame, how="cross")
        .join(prices.select("ticker", "date", "price"), on=["ticker", "date"], how="left")
        .join(signals.select("ticker", "date", "action", "confidence", "position_size"),
              on=["ticker", "date"], how="left")
        .sort("ticker", "session")
        .with_columns(exposure(signals, sizing))
    )
    return frame.with_columns(
        (pl.col("price") / pl.col("price").shift(1) - 1.0).over("ticker").alias("asset_return"),
        pl.col("exposure").shift(POSITION_LAG_SESSIONS + delay_sessions).over("ticker").alias("position"),
    ).with_columns(
        (pl.col("position") - pl.col("position").shift(1)).abs().over("ticker").alias("turnover"),
        pl.col("position").abs().alias("entry_turnover"),
        (pl.col("position") * pl.col("asset_return")).alias("gross_return"),
    )


def portfolio_ledger(ledger: pl.DataFrame, weighting: str) -> pl.DataFrame:
    """All tickers as one book, per session: weights w_i = p_i / N_d over the N_d tickers with a
    position and a return that day ("equal"), or w_i = p_i under signal sizing scaled down so
    sum |w_i| <= 1 ("position_size"). Gross return sum w_i r_i; turnover sum |w_i,d - w_i,d-1|;
    the benchmark is the equal-weight buy-and-hold of the same tickers, mean r_i. `position` is
    the gross exposure sum |w_i|."""
    if weighting not in PORTFOLIO_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {PORTFOLIO_WEIGHTINGS}, got {weighting!r}")
    known = pl.col("position").is_not_null() & pl.col("asset_return").is_not_null()
    weighted = ledger.with_columns(known.alias("known")).with_columns(
        pl.col("known").sum().over("session").alias("tickers_known"),
        pl.when(pl.col("known")).then(pl.col("position")).otherwise(0.0).alias("raw_weight"),
    )
    if weighting == "equal":
        weight = pl.col("raw_weight") / pl.col("tickers_known")
    else:
        gross = pl.col("raw_weight").abs().sum().over("session")
        weight = pl.col("raw_weight") / pl.max_horizontal(gross, pl.lit(1.0))
    weighted = weighted.with_columns(weight.fill_nan(0.0).alias("weight")).sort("ticker", "session").with_columns(
        (pl.col("weight") - pl.col("weight").shift(1).over("ticker").fill_null(0.0)).abs().alias("weight_change"))
    return (
        weighted.group_by("session", "date")
        .agg(
            pl.col("tickers_known").first(),
            (pl.col("weight") * pl.col("asset_return").fill_null(0.0)).sum().alias("gross_return"),
            pl.col("weight_change").sum().alias("turnover"),
            pl.col("weight").abs().sum().alias("entry_turnover"),
            pl.col("asset_return").filter(pl.col("known")).mean().alias("asset_return"),
        )
        .with_columns(
            pl.when(pl.col("tickers_known") > 0).then(pl.col("entry_turnover")).alias("position"),
            pl.lit("PORTFOLIO").alias("ticker"),
        )
        .with_columns(pl.when(pl.col("tickers_known") > 0).then(pl.col(c)).alias(c)
                      for c in ("gross_return", "turnover", "entry_turnover", "asset_return"))
        .sort("session")
    )


def scored_calls(outcomes: pl.DataFrame, grid: SessionGrid, delay_sessions: int = 0) -> pl.DataFrame:
    """BUY/SELL calls whose hit is known, with the session their position first earns (signal + 2
    + delay_sessions) and the session their outcome is known (the horizon's exit close): ticker,
    position_session, known_session, hit (1.0 / 0.0), confidence."""
    return (
        outcomes.filter(pl.col("hit").is_not_null())
        .with_columns(grid.number("date", "signal_session"), grid.number("horizon_date", "known_session"))
        .filter(pl.col("signal_session").is_not_null() & pl.col("known_session").is_not_null())
        .select("ticker", (pl.col("signal_session") + POSITION_LAG_SESSIONS + delay_sessions).alias("position_session"),
                "known_session", pl.col("hit").cast(pl.Float64), "confidence")
    )


# The stationary-bootstrap counts of every window length N met in this process, as the smallest
# unsigned integers that hold them (a count is at most N): windows grow through N = 2..W in a
# ledger's first year, and each ticker (and its forecast-only twin, and the paired interval) walks
# them again, so a small LRU of N would hold none of them when next asked. 1000 x N bytes each:
# 32 MB for every N up to the default 252; the least recently used go beyond the budget.
COUNTS_CACHE_BYTES = 128 * 2**20
_counts_cache: OrderedDict[tuple[int, int, float, int], np.ndarray] = OrderedDict()
_counts_cache_bytes = 0
_counts_lock = threading.Lock()


def _bootstrap_counts(observations: int, replications: int, block: float, seed: int) -> np.ndarray:
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


@dataclass(frozen=True)
class _Windows:
    """The windows of one ledger ending at each requested session, as (windows x W) matrices."""

    ends: np.ndarray
    firsts: np.ndarray  # first session index with a position, -1 when none
    reasons: list[str | None]
    net: np.ndarray
    benchmark: np.ndarray
    positions: np.ndarray
    turnover: np.ndarray


def _next_known(known: np.ndarray) -> np.ndarray:
    """For each index i, the smallest j >= i with known[j] (len(known) when none)."""
    index = np.where(known, np.arange(len(known)), len(known))
    return np.minimum.accumulate(index[::-1])[::-1]


def _windows(ledger: pl.DataFrame, end_dates: Sequence[dt.date], rules: BacktestRules) -> _Windows:
    dates = ledger["date"].to_list()
    where = {day: i for i, day in enumerate(dates)}
    ends = np.array([where[day] for day in end_dates], dtype=np.int64)
    column = {c: ledger[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in
              ("position", "asset_return", "gross_return", "turnover", "entry_turnover")}
    width = rules.window_sessions
    starts = np.maximum(ends - width + 1, 0)
    with_position = ~np.isnan(column["position"])
    firsts = _next_known(with_position)[starts]
    firsts = np.where(firsts <= ends, firsts, -1)
    missing_position = np.concatenate([[0], np.cumsum(~with_position)])
    missing_return = np.concatenate([[0], np.cumsum(np.isnan(column["asset_return"]))])
    reasons: list[str | None] = []
    for end, start, first in zip(ends, starts, firsts, strict=True):
        if first < 0:
            reasons.append(f"no signal in the {width}-session window {dates[start]}..{dates[end]} "
                           f"(a position needs a signal {rules.position_lag} sessions earlier)")
        elif missing_position[end + 1] - missing_position[first]:
            gap = first + int(np.flatnonzero(~with_position[first:end + 1])[0])
            count = int(missing_position[end + 1] - missing_position[first])
            reasons.append(f"signals missing for {count} session(s) inside the window, first for the position "
                           f"of {dates[gap]} (materialize llm_signals {rules.position_lag} sessions before)")
        elif missing_return[end + 1] - missing_return[first]:
            gap = first + int(np.flatnonzero(np.isnan(column["asset_return"][first:end + 1]))[0])
            count = int(missing_return[end + 1] - missing_return[first])
            reasons.append(f"prices missing: no return for {count} session(s) inside the window, first "
                           f"{dates[gap]} (a gap in prices; materialize prices for it)")
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
    return _Windows(ends, firsts, reasons, net, window(column["asset_return"]), window(column["position"]), turnover)


def _counts(n: int, rules: BacktestRules) -> np.ndarray:
    return _bootstrap_counts(n, rules.bootstrap_replications, rules.bootstrap_block, rules.bootstrap_seed)


def _interval(net: np.ndarray, rules: BacktestRules) -> tuple[np.ndarray, np.ndarray]:
    lower, upper = np.full(len(net), np.nan), np.full(len(net), np.nan)
    for n, index, compact in perf.rows_by_observations(net):
        if n < 2:
            continue
        lower[index], upper[index] = perf.bootstrap_sharpe_interval(compact, _counts(n, rules), rules.interval,
                                                                    rules.daily_risk_free)
    return lower, upper


def _intervals(fw: _Windows, tw: _Windows, rules: BacktestRules) -> tuple[np.ndarray, np.ndarray]:
    """((lower, upper) of the final's Sharpe, as _interval gives them; (lower, upper) of the paired
    Sharpe difference over the days both ledgers have, as attribution.paired_sharpe_difference_interval), each a (2 x windows)
    array, in one pass over the window lengths N: each N's counts are taken once, and where the
    paired windows of an N are the final's own (the twin has a return wherever the final has),
    the final's resampled Sharpes are the very numbers the pairing would compute again."""
    rf = rules.daily_risk_free
    present = ~np.isnan(fw.net)
    both = present & ~np.isnan(tw.net)
    final_net, twin_net = np.where(both, fw.net, np.nan), np.where(both, tw.net, np.nan)
    sharpe_bounds, paired_bounds = np.full((2, len(fw.ends)), np.nan), np.full((2, len(fw.ends)), np.nan)
    paired_groups = {n: (index, compact) for n, index, compact in perf.rows_by_observations(final_net) if n >= 2}
    for n, index, compact in perf.rows_by_observations(fw.net):
        if n < 2:
            continue
        counts = _counts(n, rules)
        sharpe, flat = perf.resampled_sharpe_and_flat(compact - rf, counts)
        sharpe_bounds[:, index] = perf.percentile_interval(sharpe, rules.interval)
        paired_index = paired_groups.get(n, (None,))[0]
        if (paired_index is not None and np.array_equal(paired_index, index)
                and np.array_equal(both[index], present[index])):
            del paired_groups[n]
            twin_compact = twin_net[index][both[index]].reshape(len(index), n)
            difference = (np.where(flat, 0.0, sharpe)
                          - perf.resampled_sharpe(twin_compact - rf, counts, flat_is_zero=True))
            paired_bounds[:, index] = perf.percentile_interval(difference, rules.interval)
    for n, (index, compact) in paired_groups.items():
        twin_compact = twin_net[index][both[index]].reshape(len(index), n)
        paired_bounds[:, index] = paired_sharpe_difference_interval(compact, twin_compact, _counts(n, rules),
                                                                     rules.interval, rules.daily_risk_free)
    return sharpe_bounds, paired_bounds


def _exact(values: np.ndarray) -> list[int]:
    """Each (finite) float64 exactly, as an integer number of 2^-1074 (the smallest subnormal)."""
    exact = []
    for value in values.tolist():
        numerator, denominator = value.as_integer_ratio()  # the denominator is a power of two
        exact.append(numerator << (1075 - denominator.bit_length()))
    return exact


def _call_metrics(calls: pl.DataFrame, windows: _Windows, brier: bool = True) -> dict[str, np.ndarray]:
    """Per window: calls, hit_rate = mean(hit) and brier_score = mean((confidence - hit)^2) (over
    the calls with a confidence), NaN without a call. A call counts in the window ending at T when
    its position earns inside the window and its outcome is known by T.

    Without a (windows x calls) matrix, which grows with the square of the dates for the
    portfolio's pooled calls: the calls grouped by known - position session (the horizon) are, in
    each window, one run of positions; a run's sum is a difference of prefix sums kept exactly in
    integers and rounded once (a hit count exactly as a row sum had it, a Brier sum to within its
    last bit). Without `brier`, its sums are left out (brier_score NaN)."""
    n = len(windows.ends)
    count, scored = np.zeros(n, np.int64), np.zeros(n, np.int64)
    hit_sum, error_sum = np.zeros(n, dtype=object), np.zeros(n, dtype=object)
    usable = (windows.firsts >= 0) & np.array([r is None for r in windows.reasons], dtype=bool)
    if calls.height and usable.any():
        position = calls["position_session"].to_numpy().astype(np.int64)
        lag = calls["known_session"].to_numpy().astype(np.int64) - position
        hit = calls["hit"].cast(pl.Float64).to_numpy()
        confidence = calls["confidence"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        with_confidence = ~np.isnan(confidence)
        error = np.where(with_confidence, (np.where(with_confidence, confidence, 0.0) - hit) ** 2, 0.0)
        firsts, ends = windows.firsts[usable], windows.ends[usable]
        sums = [(hit_sum, hit), (error_sum, error)] if brier else [(hit_sum, hit)]
        for d in np.unique(lag):
            group = np.flatnonzero(lag == d)
            group = group[np.argsort(position[group], kind="stable")]
            positions = position[group]
            low = np.searchsorted(positions, firsts, side="left")
            high = np.maximum(np.searchsorted(positions, ends - max(int(d), 0), side="right"), low)
            count[usable] += high - low
            scored_prefix = np.concatenate([[0], np.cumsum(with_confidence[group])])
            scored[usable] += scored_prefix[high] - scored_prefix[low]
            for total, values in sums:
                prefix = np.array([0, *itertools.accumulate(_exact(values[group]))], dtype=object)
                total[usable] += prefix[high] - prefix[low]
    unit = 1 << 1074
    hits = np.array([int(t) / unit for t in hit_sum])
    errors = np.array([int(t) / unit for t in error_sum])
    with np.errstate(invalid="ignore"):
        return {"calls": count, "hit_rate": np.where(count > 0, hits / np.maximum(count, 1), np.nan),
                "brier_score": np.where((scored > 0) & brier, errors / np.maximum(scored, 1), np.nan)}


def window_metrics(ledger: pl.DataFrame, calls: pl.DataFrame, end_dates: Sequence[dt.date],
                   rules: BacktestRules) -> pl.DataFrame:
    """The backtest rows of ONE ledger (a ticker, or the portfolio) for each date of `end_dates`:
    the metrics of BACKTEST_SCHEMA over each trailing window, the verdict, and the ledger of the
    date itself. `calls` are that ledger's scored_calls. Ledger sessions must be the grid's, in
    order, reaching `window_sessions + 2` sessions before the first end date."""
    return _metrics(ledger, calls, _windows(ledger, end_dates, rules), rules)


def _metric_values(ledger: pl.DataFrame, calls: pl.DataFrame, w: _Windows, rules: BacktestRules,
                   names: Sequence[str], interval: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The metrics `names` (of METRIC_COLUMNS) per window, before masking; only what is asked is
    computed (the bootstrap interval only for sharpe_ci_*, unless given as `interval`, the
    _interval of w.net as (2 x windows); the calls' only for theirs)."""
    rf = rules.daily_risk_free
    sessions_in_ledger = ledger["session"].to_numpy()
    if len(sessions_in_ledger) and not np.array_equal(sessions_in_ledger, np.arange(sessions_in_ledger[0],
                                                                              sessions_in_ledger[0] + len(sessions_in_ledger))):
        raise ValueError("a ledger must hold every session of its grid, in order")
    values: dict[str, np.ndarray] = {}
    if {"hit_rate", "calls", "brier_score"} & set(names):
        first_session = int(sessions_in_ledger[0]) if len(sessions_in_ledger) else 0
        call_sessions = calls.with_columns(pl.col("position_session", "known_session") - first_session)
        values |= {k: v for k, v in _call_metrics(call_sessions, w, "brier_score" in names).items() if k in names}
    if {"sharpe_ci_lower", "sharpe_ci_upper"} & set(names):
        values["sharpe_ci_lower"], values["sharpe_ci_upper"] = _interval(w.net, rules) if interval is None else interval
    formulas: dict[str, Callable[[], np.ndarray]] = {
        "total_return": lambda: perf.total_return(w.net),
        "annual_return": lambda: perf.annual_return(w.net),
        "volatility": lambda: perf.annual_volatility(w.net),
        "sharpe": lambda: perf.sharpe_ratio(w.net, rf),
        "sortino": lambda: perf.sortino_ratio(w.net, rf),
        "max_drawdown": lambda: perf.max_drawdown(w.net),
        "calmar": lambda: perf.calmar_ratio(w.net),
        "alpha": lambda: perf.alpha(w.net, w.benchmark, rf),
        "beta": lambda: perf.beta(w.net, w.benchmark, rf),
        "buy_hold_total_return": lambda: perf.total_return(w.benchmark),
        "buy_hold_annual_return": lambda: perf.annual_return(w.benchmark),
        "buy_hold_sharpe": lambda: perf.sharpe_ratio(w.benchmark, rf),
        "buy_hold_max_drawdown": lambda: perf.max_drawdown(w.benchmark),
        "profit_factor": lambda: perf.profit_factor(w.net),
        "trades": lambda: np.sum(np.nan_to_num(w.turnover) > 0, axis=-1),
        "exposure": lambda: perf.exposure(w.positions),
        "probabilistic_sharpe": lambda: perf.probabilistic_sharpe_ratio(w.net - rf),
    }
    with np.errstate(all="ignore"):
        for name in names:
            if name not in values and name in formulas:
                values[name] = formulas[name]()
    if "excess_return" in names:
        total = values.get("total_return", None)
        total = perf.total_return(w.net) if total is None else total
        buy_hold = values.get("buy_hold_total_return", None)
        buy_hold = perf.total_return(w.benchmark) if buy_hold is None else buy_hold
        values["excess_return"] = total - buy_hold
    return values


def _usable(w: _Windows) -> tuple[np.ndarray, np.ndarray]:
    """(sessions, usable): the observations per window, and which windows have metrics."""
    sessions = perf.observations(w.net)
    return sessions, np.array([r is None for r in w.reasons]) & (sessions > 0)


def _metric_columns(values: dict[str, np.ndarray], usable: np.ndarray, names: Sequence[str]) -> pl.DataFrame:
    """The metrics as stored: null outside the usable windows and where undefined."""
    masked = pl.DataFrame({c: np.where(usable, np.asarray(values[c], dtype=float), np.nan) for c in names})
    return masked.with_columns(pl.col(pl.Float64).fill_nan(None)).with_columns(
        pl.col(c).cast(pl.Int64) for c in names if c in ("calls", "trades"))


def _metrics(ledger: pl.DataFrame, calls: pl.DataFrame, w: _Windows, rules: BacktestRules,
             interval: np.ndarray | None = None) -> pl.DataFrame:
    values = _metric_values(ledger, calls, w, rules, METRIC_COLUMNS, interval)
    sessions, usable = _usable(w)
    dates = ledger["date"].to_list()
    rows = pl.DataFrame({
        "date": [dates[e] for e in w.ends],
        "window_start": [dates[f] if ok else None for f, ok in zip(w.firsts, usable, strict=True)],
        "sessions": sessions,
        **{c: np.where(usable, np.asarray(values[c], dtype=float), np.nan) for c in METRIC_COLUMNS},
        "position": ledger["position"].cast(pl.Float64).fill_null(np.nan).to_numpy()[w.ends],
        "asset_return": ledger["asset_return"].cast(pl.Float64).fill_null(np.nan).to_numpy()[w.ends],
        "net_return": np.where(usable, w.net[:, -1], np.nan),
    }).with_columns(pl.col(pl.Float64).fill_nan(None))
    verdicts = [verdict(row, reason, rules) for row, reason in zip(rows.iter_rows(named=True), w.reasons, strict=True)]
    rows = rows.with_columns(
        pl.Series("verdict", [v[0] for v in verdicts], pl.String),
        pl.Series("verdict_failed", [v[1] for v in verdicts], pl.List(pl.String)),
        pl.Series("verdict_reason", [v[2] for v in verdicts], pl.String),
    )
    return rows.with_columns(pl.col("calls", "trades").cast(pl.Int64)).select(list(BACKTEST_SCHEMA))


def verdict(row: dict, reason: str | None, rules: BacktestRules) -> tuple[str, list[str], str]:
    """("passed" | "failed" | "insufficient_data", the failed criteria, why). A criterion whose
    metric is undefined fails: no verdict is given on a number that does not exist."""
    if reason is not None:
        return "insufficient_data", ["data"], reason

    def pct(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.2%}"

    def num(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    def above(value: float | None, bound: float) -> bool:
        return value is not None and value > bound

    criteria = [
        ("annual_return", above(row["annual_return"], rules.min_annual_return),
         f"annual return {pct(row['annual_return'])} <= {rules.min_annual_return:.0%}"),
        ("beats_buy_and_hold", above(row["excess_return"], 0.0),
         f"total return {pct(row['total_return'])} <= buy-and-hold {pct(row['buy_hold_total_return'])}"),
        ("min_sessions", row["sessions"] >= rules.min_sessions,
         f"{row['sessions']} sessions < {rules.min_sessions}"),
        ("sharpe_positive", above(row["sharpe"], 0.0), f"Sharpe {num(row['sharpe'])} <= 0"),
        ("sharpe_interval_positive", above(row["sharpe_ci_lower"], 0.0),
         f"{rules.interval:.0%} bootstrap interval of the Sharpe starts at {num(row['sharpe_ci_lower'])} <= 0"),
        ("probabilistic_sharpe", row["probabilistic_sharpe"] is not None
         and row["probabilistic_sharpe"] >= rules.min_probabilistic_sharpe,
         f"probabilistic Sharpe {num(row['probabilistic_sharpe'])} < {rules.min_probabilistic_sharpe}"),
    ]
    failed = [(name, why) for name, passed, why in criteria if not passed]
    if not failed:
        return "passed", [], "every criterion met"
    return "failed", [name for name, _ in failed], "; ".join(why for _, why in failed)


def window_series(ledger: pl.DataFrame, end_date: dt.date, rules: BacktestRules,
                  twin: pl.DataFrame | None = None) -> pl.DataFrame:
    """The daily series behind the backtest dated `end_date` (for the equity plot): date,
    strategy and buy-and-hold returns and equity, the strategy's drawdown, and with `twin` (the
    forecast-only ledger) its equity. Empty when the window has no usable data."""
    w = _windows(ledger, [end_date], rules)
    inside = ~np.isnan(w.net[0])
    if w.reasons[0] is not None or not inside.any():
        return pl.DataFrame(schema={"date": pl.Date, "strategy_return": pl.Float64, "buy_hold_return": pl.Float64,
                                    "strategy_equity": pl.Float64, "buy_hold_equity": pl.Float64,
                                    "drawdown": pl.Float64})
    dates = ledger["date"].to_list()
    days = [dates[w.ends[0] - rules.window_sessions + 1 + i] for i in np.flatnonzero(inside)]
    net, benchmark = w.net[0][inside], w.benchmark[0][inside]
    series = pl.DataFrame({
        "date": days, "strategy_return": net, "buy_hold_return": benchmark,
        "strategy_equity": perf.equity_curve(net), "buy_hold_equity": perf.equity_curve(benchmark),
        "drawdown": perf.drawdown_series(net),
    })
    if twin is not None:
        twin_net = np.nan_to_num(_windows(twin, [end_date], rules).net[0][inside])
        series = series.with_columns(pl.Series("forecast_only_equity", perf.equity_curve(twin_net)))
    return series


def _restricted(w: _Windows, keep: np.ndarray, why_none: str) -> _Windows:
    """The windows cut down to the sessions of `keep` (windows x width): the rest NaN, the first
    kept session as the window's first, and `why_none` where a usable window keeps no session."""
    kept = keep & ~np.isnan(w.net)
    any_kept = kept.any(axis=-1)
    width = w.net.shape[-1]
    offsets = w.ends[:, None] - width + 1 + np.arange(width)[None, :]
    firsts = np.where(any_kept, np.where(kept, offsets, np.iinfo(np.int64).max).min(axis=-1), -1)
    reasons = [r if r is not None or ok else why_none for r, ok in zip(w.reasons, any_kept, strict=True)]

    def cut(values: np.ndarray) -> np.ndarray:
        return np.where(kept, values, np.nan)

    return _Windows(w.ends, firsts, reasons, cut(w.net), cut(w.benchmark), cut(w.positions), cut(w.turnover))


def _attribution(final: pl.DataFrame, twin: pl.DataFrame, calls: pl.DataFrame, twin_calls: pl.DataFrame,
                 fw: _Windows, tw: _Windows, rules: BacktestRules, usable: list[bool]) -> pl.DataFrame:
    """ATTRIBUTION_SCHEMA over the sessions the windows `fw`/`tw` hold."""
    _, (lower, upper) = _intervals(fw, tw, rules)
    ok = [u and r is None for u, r in zip(usable, fw.reasons, strict=True)]
    final_values = _metric_columns(_metric_values(final, calls, fw, rules, ATTRIBUTION_METRICS), np.array(ok),
                                   ATTRIBUTION_METRICS)
    twin_values = _metric_columns(_metric_values(twin, twin_calls, tw, rules, ATTRIBUTION_METRICS), np.array(ok),
                                  ATTRIBUTION_METRICS)
    both = ~np.isnan(fw.net) & ~np.isnan(tw.net)
    held = np.sum(both & (np.nan_to_num(fw.positions) != np.nan_to_num(tw.positions)), axis=-1)
    columns = {}
    for metric in ATTRIBUTION_METRICS:
        columns[f"forecast_only_{metric}"] = twin_values[metric]
        columns[f"llm_delta_{metric}"] = final_values[metric] - twin_values[metric]
    bounds = [(None if np.isnan(lo) or not good else float(lo), None if np.isnan(up) or not good else float(up))
              for lo, up, good in zip(lower, upper, ok, strict=True)]
    return pl.DataFrame({
        **columns,
        "llm_sharpe_delta_ci_lower": [b[0] for b in bounds],
        "llm_sharpe_delta_ci_upper": [b[1] for b in bounds],
        "llm_held_back": np.where(ok, held, 0).astype(np.int64),
        "llm_verdict": [llm_verdict(lo, up, good) for (lo, up), good in zip(bounds, ok, strict=True)],
    }, schema=ATTRIBUTION_SCHEMA)


CONTAMINATED_COLUMNS = ("llm_delta_sharpe", "llm_sharpe_delta_ci_lower", "llm_sharpe_delta_ci_upper", "llm_verdict")


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
    fw, tw = _windows(final, end_dates, rules), _windows(twin, end_dates, rules)
    sharpe_bounds, _ = _intervals(fw, tw, rules)
    final_rows = _metrics(final, calls, fw, rules, interval=sharpe_bounds)
    usable = [v != "insufficient_data" for v in final_rows["verdict"].to_list()]
    width = rules.window_sessions
    offsets = fw.ends[:, None] - width + 1 + np.arange(width)[None, :]
    clean = offsets >= clean_from
    no_clean = f"no session after the LLM's knowledge cutoff in the window{cutoff_note}"
    no_dirty = "no session on or before the LLM's knowledge cutoff in the window"
    clean_fw = _restricted(fw, clean, no_clean)
    attribution = _attribution(final, twin, calls, twin_calls, clean_fw, _restricted(tw, clean, no_clean), rules, usable)
    dirty = _attribution(final, twin, calls, twin_calls, _restricted(fw, ~clean, no_dirty),
                         _restricted(tw, ~clean, no_dirty), rules, usable)
    clean_sessions = np.sum(clean & ~np.isnan(fw.net), axis=-1)
    reasons = [None if v != "insufficient_data" else (r or no_clean)
               for v, r in zip(attribution["llm_verdict"].to_list(), clean_fw.reasons, strict=True)]
    extra = pl.DataFrame({
        "llm_clean_sessions": np.where(usable, clean_sessions, 0).astype(np.int64),
        "llm_verdict_reason": pl.Series(reasons, dtype=pl.String),
        **{f"contaminated_{c}": dirty[c] for c in CONTAMINATED_COLUMNS},
    })
    return pl.concat([final_rows, attribution, extra], how="horizontal")


def cutoff_note(signals: pl.DataFrame) -> str:
    """' (cutoff 2024-08-31)' or ' (cutoff unknown: set PM_LLM_KNOWLEDGE_CUTOFFS)' for a reason."""
    if "knowledge_cutoff" not in signals.columns or signals.is_empty():
        return ""
    cutoffs = signals["knowledge_cutoff"]
    if cutoffs.null_count():
        return " (the model's cutoff is unknown: set PM_LLM_KNOWLEDGE_CUTOFFS)"
    return f" (cutoff {cutoffs.max()})"


def clean_from_index(signals: pl.DataFrame, ledger_dates: Sequence[dt.date], rules: BacktestRules) -> int:
    """The ledger index of the first position set by a signal after the knowledge cutoff, with
    every later signal after it too (a later contaminated signal, e.g. a model swapped back, moves
    it on). Signals without an `after_cutoff` column carry no cutoff and count as clean (index 0);
    the assets always supply it, null (unknown) as contaminated."""
    if "after_cutoff" not in signals.columns:
        return 0
    ordered = signals.sort("date")
    dirty = ordered.filter(~pl.col("after_cutoff").fill_null(False))
    later = ordered if dirty.is_empty() else ordered.filter(pl.col("date") > dirty["date"].max())
    if later.is_empty():
        return len(ledger_dates)
    where = {day: i for i, day in enumerate(ledger_dates)}
    first = later["date"].min()
    return where.get(first, len(ledger_dates)) + rules.position_lag


def ledger_and_calls(signals: pl.DataFrame, prices: pl.DataFrame, grid: SessionGrid,
                     sizing: str, delay_sessions: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ticker ledgers and the scored calls of `signals` (ticker, date, action, confidence,
    position_size, horizon) over `grid`, from prices (ticker, date, price) up to the last date."""
    return (ticker_ledger(signals, prices, grid, sizing, delay_sessions),
            scored_calls(signal_outcomes(signals, prices), grid, delay_sessions))


def ticker_backtests(signals: pl.DataFrame, prices: pl.DataFrame, grid: SessionGrid, tickers: Sequence[str],
                     end_dates: Sequence[dt.date], rules: BacktestRules,
                     progress: Callable[[str], None] | None = None) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """Per ticker and end date: the backtest of the final signals with the forecast-only twin's
    attribution beside it (backtest_with_attribution) and the verdicts under STRESSES
    (with_robust_verdicts), and each ticker's window series of the last date with both equity
    curves. `signals` need forecast_action, kelly_fraction and rules too."""
    ledger, calls = ledger_and_calls(signals, prices, grid, rules.sizing, rules.delay_sessions)
    twin_ledger, twin_calls = ledger_and_calls(forecast_only_signals(signals), prices, grid, rules.sizing,
                                               rules.delay_sessions)
    delayed = {extra: ticker_ledger(signals, prices, grid, rules.sizing, rules.delay_sessions + extra)
               for extra in STRESS_EXTRA_DELAYS if extra}
    frames, series = [], {}
    for ticker in tickers:
        final, twin = (frame.filter(pl.col("ticker") == ticker) for frame in (ledger, twin_ledger))
        own_calls, own_twin_calls = (c.filter(pl.col("ticker") == ticker) for c in (calls, twin_calls))
        own_signals = signals.filter(pl.col("ticker") == ticker)
        rows = backtest_with_attribution(final, twin, own_calls, own_twin_calls, end_dates, rules,
                                         clean_from_index(own_signals, final["date"].to_list(), rules),
                                         cutoff_note(own_signals))
        stressed = {0: final} | {extra: frame.filter(pl.col("ticker") == ticker) for extra, frame in delayed.items()}
        frames.append(with_robust_verdicts(rows, stressed, end_dates, rules).with_columns(pl.lit(ticker).alias("ticker")))
        series[ticker] = window_series(final, max(end_dates), rules, twin)
        if progress:
            progress(f"backtests: {ticker} done ({len(end_dates)} windows)")
    return pl.concat(frames), series


# --- stressed verdicts: costs and delay that bite -----------------------------------------------

@dataclass(frozen=True)
class Stress:
    """Harsher rules a backtest's verdict is recomputed under, for the same end dates: the cost
    times `cost_multiplier`, and `extra_delay_sessions` more sessions between signal and entry."""

    column: str
    label: str
    cost_multiplier: float = 1.0
    extra_delay_sessions: int = 0

    def rules(self, rules: BacktestRules) -> BacktestRules:
        return dataclasses.replace(rules, cost_bps=rules.cost_bps * self.cost_multiplier,
                                   delay_sessions=rules.delay_sessions + self.extra_delay_sessions)


# What a passed verdict must also survive to be robust: the one place docs/backtests.md follows.
STRESSES = (
    Stress("verdict_cost_2x", "2x cost", cost_multiplier=2.0),
    Stress("verdict_cost_5x", "5x cost", cost_multiplier=5.0),
    Stress("verdict_delay_1", "+1 session delay", extra_delay_sessions=1),
)
# The delays beyond the rules' own a stress needs a ledger for (0: the rules' own ledger), and
# the most of them: the signals' lookback covers it so a delayed window keeps the same days.
STRESS_EXTRA_DELAYS = tuple(sorted({0, *(stress.extra_delay_sessions for stress in STRESSES)}))
STRESS_DELAY_SESSIONS = max(STRESS_EXTRA_DELAYS)
ROBUST_VERDICTS = ("robust", "fragile", "failed", "insufficient_data")
ROBUST_SCHEMA = {**{stress.column: pl.String for stress in STRESSES},
                 "robust_verdict": pl.String, "robust_reason": pl.String}
# What `verdict` reads besides `sessions` and `sharpe_ci_lower`.
_VERDICT_METRICS = ("annual_return", "total_return", "buy_hold_total_return", "excess_return", "sharpe",
                    "probabilistic_sharpe")


def verdict_statuses(ledger: pl.DataFrame, end_dates: Sequence[dt.date], rules: BacktestRules) -> list[str]:
    """The verdict ("passed" | "failed" | "insufficient_data") window_metrics gives each end date
    of `ledger` under `rules`, from only the metrics the verdict reads. The bootstrap interval of
    the Sharpe, the costly one, is computed only for the windows that meet every other criterion:
    elsewhere the verdict fails whatever the interval is."""
    w = _windows(ledger, end_dates, rules)
    sessions, usable = _usable(w)
    values = _metric_columns(_metric_values(ledger, pl.DataFrame(), w, rules, _VERDICT_METRICS), usable,
                             _VERDICT_METRICS)
    rows = [row | {"sessions": int(n)} for row, n in zip(values.iter_rows(named=True), sessions, strict=True)]
    statuses = [verdict(row | {"sharpe_ci_lower": float("inf")}, reason, rules)[0]
                for row, reason in zip(rows, w.reasons, strict=True)]
    pending = np.flatnonzero(np.array(statuses) == "passed")
    if len(pending):
        lower, _ = _interval(w.net[pending], rules)
        for i, bound in zip(pending, lower, strict=True):
            row = rows[i] | {"sharpe_ci_lower": None if np.isnan(bound) else float(bound)}
            statuses[i] = verdict(row, w.reasons[i], rules)[0]
    return statuses


def robust_verdict(base: str, stressed: Sequence[str]) -> tuple[str, str]:
    """(robust_verdict, robust_reason) of a backtest from its verdict and its verdicts under
    STRESSES (in that order): "robust" when it passed and passed every stress, "fragile" when it
    passed and failed at least one, "failed" when it failed unstressed, else "insufficient_data"
    (no data unstressed, or a passed verdict no stress failed but one lacked data for)."""
    if base == "insufficient_data":
        return "insufficient_data", "no verdict to stress: insufficient data"
    named = {status: [stress.label for stress, got in zip(STRESSES, stressed, strict=True) if got == status]
             for status in ("passed", "failed", "insufficient_data")}
    summary = "; ".join(f"{word} {', '.join(named[status])}" for status, word in
                        (("passed", "survives"), ("failed", "fails"), ("insufficient_data", "no data for"))
                        if named[status])
    if base == "failed":
        return "failed", f"failed before any stress ({summary})"
    if named["failed"]:
        return "fragile", summary
    if named["insufficient_data"]:
        return "insufficient_data", summary
    return "robust", summary


def with_robust_verdicts(rows: pl.DataFrame, ledgers: dict[int, pl.DataFrame], end_dates: Sequence[dt.date],
                         rules: BacktestRules) -> pl.DataFrame:
    """`rows` (the backtests of one ledger at `end_dates` under `rules`, with their `verdict`)
    with ROBUST_SCHEMA's columns beside them: the verdict under each of STRESSES for the same end
    dates, robust_verdict and robust_reason. `ledgers[k]` is the ledger built with
    rules.delay_sessions + k sessions of delay, for each k of STRESS_EXTRA_DELAYS."""
    base = rows["verdict"].to_list()
    stressed: dict[str, list[str]] = {}
    for stress in STRESSES:
        stressed_rules = stress.rules(rules)
        # A stress that changes nothing (twice a zero cost) gives the verdict itself.
        stressed[stress.column] = base if stressed_rules == rules else verdict_statuses(
            ledgers[stress.extra_delay_sessions], end_dates, stressed_rules)
    robust = [robust_verdict(status, [stressed[stress.column][i] for stress in STRESSES])
              for i, status in enumerate(base)]
    columns = pl.DataFrame({**stressed, "robust_verdict": [r[0] for r in robust],
                            "robust_reason": [r[1] for r in robust]}, schema=ROBUST_SCHEMA)
    return pl.concat([rows, columns], how="horizontal")
