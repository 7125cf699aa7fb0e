"""Risk measures for one ticker: historical and GARCH VaR/CVaR, volatility, drawdown, beta, alpha
and a heuristic risk score, plus `assess`, which evaluates them at many dates without look-ahead.

Returns are daily simple returns r_t = P_t / P_{t-1} - 1 unless a function says log returns;
252 trading days a year. Losses (VaR, CVaR) are reported as positive numbers. Inputs are 1-D
float arrays: a NaN or infinite value raises ValueError (silently dropping it would shift the
window); an input too short for the measure gives nan.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

import numpy as np
import polars as pl

TRADING_DAYS_PER_YEAR = 252
VAR_LEVEL = 0.95
VOLATILITY_WINDOW = 20
# `assess`'s trailing windows, in returns: historical VaR/CVaR, max drawdown, beta (pairs).
VAR_WINDOW = 250
DRAWDOWN_WINDOW = 252
BETA_WINDOW = 252
# The prices a date's metrics read (the date's own included): N returns need N + 1 prices.
LOOKBACK_SESSIONS = max(VAR_WINDOW, DRAWDOWN_WINDOW, BETA_WINDOW) + 1
# Below this many returns a tail quantile or a 20-day volatility says nothing: `assess` leaves
# every metric null.
MIN_RETURNS = 20
MIN_BETA_PAIRS = 60
# empyrical treats a benchmark variance below this as zero (beta undefined).
MIN_BENCHMARK_VARIANCE = 1.0e-30

# risk_score: each component is value / scale clipped to [0, 1], then weighted. The scales are
# judgement calls (a 60% annualised volatility, a 40% drawdown, a 5% daily VaR and a beta of 2
# all count as "maximal"), not estimates.
VOLATILITY_SCALE = 0.60
DRAWDOWN_SCALE = 0.40
VAR_SCALE = 0.05
BETA_SCALE = 2.0
VOLATILITY_WEIGHT = 0.35
DRAWDOWN_WEIGHT = 0.25
VAR_WEIGHT = 0.25
BETA_WEIGHT = 0.15

# risk_level: upper bounds (exclusive) of each band; a score >= the last bound is "extreme".
RISK_LEVELS = (("low", 0.25), ("medium", 0.50), ("high", 0.75))
EXTREME_LEVEL = "extreme"
UNKNOWN_LEVEL = "unknown"

# Alert thresholds: a metric past one is a concern the risk narrative must name. They are applied
# by pm_domain.llm.fallback.risk_flags (which pm_domain.llm.content judges replies by) and stated by
# `describe_alerts`; tests/unit/test_rules_once.py checks that risk_flags fires exactly past them.
ALERT_VOLATILITY = 0.30  # annualised 20-day volatility above
ALERT_DRAWDOWN = -0.20  # max drawdown over DRAWDOWN_WINDOW below
ALERT_VAR = 0.025  # daily historical VaR95 above
ALERT_ABS_BETA = 1.3  # |beta| above
ALERT_STOP_VAR_DAYS = 2  # a trade's stop distance under this many days of VaR95

ASSESS_SCHEMA = {
    "date": pl.Date,
    "var_95_hist": pl.Float64,
    "cvar_95_hist": pl.Float64,
    "volatility_20d": pl.Float64,
    "max_drawdown_252d": pl.Float64,
    "beta": pl.Float64,
    "risk_observations": pl.Int64,
    "risk_score": pl.Float64,
    "risk_level": pl.String,
}


def _checked(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains {int(np.isnan(array).sum())} NaN value(s)")
    if np.isinf(array).any():
        raise ValueError(f"{name} contains {int(np.isinf(array).sum())} infinite value(s)")
    return array


def _checked_level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def _checked_pair(returns: np.ndarray, benchmark_returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, b = _checked(returns, "returns"), _checked(benchmark_returns, "benchmark_returns")
    if len(r) != len(b):
        raise ValueError(f"returns ({len(r)}) and benchmark_returns ({len(b)}) differ in length")
    return r, b


def historical_var(returns: np.ndarray, level: float = VAR_LEVEL) -> float:
    """Historical value at risk, a positive loss: VaR = -quantile(r, 1 - level).

    The quantile is numpy's default (method="linear": interpolation between order statistics at
    position (n - 1)(1 - level)). Negative when even that quantile is a gain. nan for no returns.
    """
    level = _checked_level(level)
    r = _checked(returns, "returns")
    if len(r) == 0:
        return math.nan
    return float(-np.quantile(r, 1 - level))


def historical_cvar(returns: np.ndarray, level: float = VAR_LEVEL) -> float:
    """Historical expected shortfall, a positive loss: CVaR = -mean(r[r <= -VaR]), with VaR from
    `historical_var` at the same level. nan for no returns."""
    level = _checked_level(level)
    r = _checked(returns, "returns")
    if len(r) == 0:
        return math.nan
    tail = r[r <= np.quantile(r, 1 - level)]
    # The interpolated quantile is >= min(r) in exact arithmetic; guard against rounding anyway.
    return float(-(tail.mean() if len(tail) else r.min()))


def _conditional_quantile(nu: float | None) -> tuple[bool, float]:
    """(is Student-t, nu) after the None / non-finite -> normal rule."""
    if nu is None or not math.isfinite(nu):
        return False, math.nan
    if nu <= 2:
        raise ValueError(f"nu must exceed 2 for a unit-variance Student-t, got {nu}")
    return True, float(nu)


def _checked_moments(mu: float, sigma: float) -> None:
    if not math.isfinite(mu):
        raise ValueError(f"mu must be finite, got {mu}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be finite and positive, got {sigma}")


def garch_var(mu: float, sigma: float, nu: float | None = None, level: float = VAR_LEVEL) -> float:
    """One-period VaR of the log return under the fitted conditional distribution, a positive
    loss of log return (the simple-return loss is 1 - exp(-VaR)). With a = 1 - level:

    normal (nu None or not finite): VaR = -(mu + sigma * z_a), z_a = Phi^-1(a);
    standardised Student-t (unit variance, nu > 2): VaR = -(mu + sigma * t_nu^-1(a) * sqrt((nu - 2) / nu)).
    """
    a = 1 - _checked_level(level)
    _checked_moments(mu, sigma)
    is_t, nu = _conditional_quantile(nu)
    from scipy import stats  # here, not at the top: docs/scale.md "Process start"
    q = stats.t.ppf(a, nu) * math.sqrt((nu - 2) / nu) if is_t else stats.norm.ppf(a)
    return float(-(mu + sigma * q))


def garch_cvar(mu: float, sigma: float, nu: float | None = None, level: float = VAR_LEVEL) -> float:
    """One-period expected shortfall of the log return under the fitted conditional distribution,
    a positive loss of log return. With a = 1 - level:

    normal (nu None or not finite): CVaR = -(mu - sigma * phi(z_a) / a), z_a = Phi^-1(a);
    standardised Student-t (unit variance, nu > 2), q = t_nu^-1(a):
    CVaR = -(mu - sigma * sqrt((nu - 2) / nu) * (f_nu(q) / a) * (nu + q^2) / (nu - 1)),
    f_nu the Student-t density.
    """
    a = 1 - _checked_level(level)
    _checked_moments(mu, sigma)
    is_t, nu = _conditional_quantile(nu)
    from scipy import stats  # here, not at the top: docs/scale.md "Process start"
    if is_t:
        q = stats.t.ppf(a, nu)
        tail_mean = math.sqrt((nu - 2) / nu) * (stats.t.pdf(q, nu) / a) * (nu + q**2) / (nu - 1)
    else:
        tail_mean = stats.norm.pdf(stats.norm.ppf(a)) / a
    return float(-(mu - sigma * tail_mean))


def annualised_volatility(log_returns: np.ndarray, window: int = VOLATILITY_WINDOW) -> float:
    """std(last `window` log returns, ddof=1) * sqrt(252); nan with fewer than `window` returns."""
    if window < 2:
        raise ValueError(f"window must be at least 2, got {window}")
    r = _checked(log_returns, "log_returns")
    if len(r) < window:
        return math.nan
    return float(np.std(r[-window:], ddof=1) * math.sqrt(TRADING_DAYS_PER_YEAR))


def max_drawdown(returns: np.ndarray) -> float:
    """min(E_t / max_{s<=t} E_s - 1) with E_0 = 1, E_t = prod_{i<=t}(1 + r_i), as empyrical.

    E_0 = 1 is a candidate peak, so a loss on the first day counts. <= 0; nan for no returns.
    """
    r = _checked(returns, "returns")
    if len(r) == 0:
        return math.nan
    equity = np.concatenate(([1.0], np.cumprod(1 + r)))
    return float(np.min(equity / np.maximum.accumulate(equity) - 1))


def beta(returns: np.ndarray, benchmark_returns: np.ndarray) -> float:
    """beta = mean((b - mean(b)) * r) / mean((b - mean(b))^2), i.e. cov(r, b) / var(b) with the
    same ddof (0) on both sides, as empyrical.beta. nan for fewer than 2 pairs or when
    var(b) < 1e-30. Pairs must already be aligned (same dates, same order)."""
    r, b = _checked_pair(returns, benchmark_returns)
    if len(r) < 2:
        return math.nan
    centred = b - b.mean()
    variance = np.mean(centred**2)
    if variance < MIN_BENCHMARK_VARIANCE:
        return math.nan
    return float(np.mean(centred * r) / variance)


def alpha(returns: np.ndarray, benchmark_returns: np.ndarray, risk_free: float = 0.0) -> float:
    """Annualised alpha as empyrical.alpha:
    (1 + mean((r - rf) - beta * (b - rf)))^252 - 1, beta from `beta(r, b)`, rf a daily rate.
    nan for fewer than 2 pairs or an undefined beta."""
    r, b = _checked_pair(returns, benchmark_returns)
    if len(r) < 2:
        return math.nan
    slope = beta(r, b)
    if math.isnan(slope):
        return math.nan
    daily = np.mean((r - risk_free) - slope * (b - risk_free))
    return float((1 + daily) ** TRADING_DAYS_PER_YEAR - 1)


def _missing(value: float | None) -> bool:
    return value is None or not math.isfinite(value)


def risk_score(
    volatility_20d: float | None,
    max_drawdown_252d: float | None,
    var_95: float | None,
    beta: float | None,
) -> float:
    """Heuristic risk scale in [0, 1], not a model: sum(w_i * c_i) / sum(w_i) over the available
    components, with

    c_vol = clip(volatility_20d / VOLATILITY_SCALE, 0, 1), w = VOLATILITY_WEIGHT (annualised volatility);
    c_dd = clip(|max_drawdown_252d| / DRAWDOWN_SCALE, 0, 1), w = DRAWDOWN_WEIGHT;
    c_var = clip(var_95 / VAR_SCALE, 0, 1), w = VAR_WEIGHT (daily VaR as a positive loss);
    c_beta = clip(|beta| / BETA_SCALE, 0, 1), w = BETA_WEIGHT.

    A None or nan input drops its component and the remaining weights are renormalised; nan when
    every input is missing.
    """
    components = [
        (volatility_20d, VOLATILITY_SCALE, VOLATILITY_WEIGHT),
        (None if _missing(max_drawdown_252d) else abs(max_drawdown_252d), DRAWDOWN_SCALE, DRAWDOWN_WEIGHT),
        (var_95, VAR_SCALE, VAR_WEIGHT),
        (None if _missing(beta) else abs(beta), BETA_SCALE, BETA_WEIGHT),
    ]
    present = [(min(max(value / scale, 0.0), 1.0), weight)
               for value, scale, weight in components if not _missing(value)]
    if not present:
        return math.nan
    return sum(c * w for c, w in present) / sum(w for _, w in present)


def risk_level(score: float | None) -> str:
    """The first band of RISK_LEVELS whose (exclusive) upper bound the score is below, else
    "extreme" (`describe_levels` prints them); "unknown" for a missing score."""
    if _missing(score):
        return UNKNOWN_LEVEL
    for name, upper in RISK_LEVELS:
        if score < upper:
            return name
    return EXTREME_LEVEL


def _checked_prices(frame: pl.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(dates as datetime64[D], prices) after checking the (date, price) contract."""
    missing = {"date", "price"} - set(frame.columns)
    if missing:
        raise ValueError(f"{name} lacks column(s) {sorted(missing)}")
    if frame.schema["date"] != pl.Date:
        raise ValueError(f"{name}.date must be pl.Date, got {frame.schema['date']}")
    if frame["date"].null_count() or frame["price"].null_count():
        raise ValueError(f"{name} has null dates or prices")
    dates = frame["date"].to_numpy()
    prices = _checked(frame["price"].cast(pl.Float64).to_numpy(), f"{name}.price")
    if (prices <= 0).any():
        raise ValueError(f"{name}.price must be positive")
    if (np.diff(dates) <= np.timedelta64(0, "D")).any():
        raise ValueError(f"{name} dates must be sorted ascending and unique")
    return dates, prices


def _aligned_returns(
    dates: np.ndarray, prices: np.ndarray, benchmark: pl.DataFrame | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(end dates, ticker returns, benchmark returns) over sessions present in both series.

    Prices are joined before differencing so both returns of a pair span the same interval (a
    session missing from one series would otherwise pair a 2-day return with a 1-day one).
    """
    if benchmark is None:
        empty = np.array([], dtype=float)
        return np.array([], dtype="datetime64[D]"), empty, empty
    bench_dates, bench_prices = _checked_prices(benchmark, "benchmark")
    common, own_index, bench_index = np.intersect1d(
        dates, bench_dates, assume_unique=True, return_indices=True)
    p, b = prices[own_index], bench_prices[bench_index]
    return common[1:], p[1:] / p[:-1] - 1, b[1:] / b[:-1] - 1


def _nullable(value: float) -> float | None:
    return None if math.isnan(value) else value


def assess(
    prices: pl.DataFrame,
    benchmark: pl.DataFrame | None,
    dates: Iterable[dt.date],
    *,
    var_window: int = VAR_WINDOW,
    drawdown_window: int = DRAWDOWN_WINDOW,
    beta_window: int = BETA_WINDOW,
) -> pl.DataFrame:
    """Risk metrics of one ticker at each of `dates`, each from prices dated <= that date only.

    `prices` and `benchmark`: columns date (pl.Date, ascending, unique) and price (positive).
    Out, one row per date in the given order: var_95_hist and cvar_95_hist over the last
    `var_window` simple returns, volatility_20d (annualised, log returns), max_drawdown_252d over
    the last `drawdown_window` returns, beta over the last `beta_window` date-aligned pairs (null
    below MIN_BETA_PAIRS pairs or without a benchmark), risk_observations (returns in the VaR
    window), risk_score, risk_level. With fewer than MIN_RETURNS returns every metric is null and
    the level "unknown".
    """
    windows = {"var_window": var_window, "drawdown_window": drawdown_window, "beta_window": beta_window}
    for name, window in windows.items():
        if window < 1:
            raise ValueError(f"{name} must be positive, got {window}")
    own_dates, own_prices = _checked_prices(prices, "prices")
    simple = own_prices[1:] / own_prices[:-1] - 1
    log = np.log(own_prices[1:] / own_prices[:-1])
    pair_dates, pair_own, pair_bench = _aligned_returns(own_dates, own_prices, benchmark)

    wanted = pl.Series("date", list(dates), dtype=pl.Date).to_numpy()
    positions = np.searchsorted(own_dates, wanted)
    rows = []
    for when, k in zip(wanted, positions):
        if k >= len(own_dates) or own_dates[k] != when:
            raise ValueError(f"date {when} is not in prices")
        # Price k is date t, so returns [0, k) are exactly those ending on or before t.
        window = simple[max(0, k - var_window):k]
        row = {"date": when.item(), "risk_observations": len(window)}
        if k < MIN_RETURNS:
            rows.append(row | {"risk_level": UNKNOWN_LEVEL})
            continue
        var_95 = historical_var(window)
        volatility = annualised_volatility(log[:k])
        drawdown = max_drawdown(simple[max(0, k - drawdown_window):k])
        n_pairs = int(np.searchsorted(pair_dates, when, side="right"))
        start = max(0, n_pairs - beta_window)
        slope = (beta(pair_own[start:n_pairs], pair_bench[start:n_pairs])
                 if n_pairs - start >= MIN_BETA_PAIRS else math.nan)
        score = risk_score(volatility, drawdown, var_95, slope)
        rows.append(row | {
            "var_95_hist": var_95,
            "cvar_95_hist": historical_cvar(window),
            "volatility_20d": volatility,
            "max_drawdown_252d": drawdown,
            "beta": _nullable(slope),
            "risk_score": _nullable(score),
            "risk_level": risk_level(score),
        })
    return pl.DataFrame(rows, schema=ASSESS_SCHEMA)


def assess_tickers(
    histories: dict[str, pl.DataFrame], benchmark: pl.DataFrame | None, dates: Iterable[dt.date]
) -> pl.DataFrame:
    """`assess` for every ticker of `histories` (ticker -> date, price) at `dates`, with a ticker
    column first. The benchmark may be one of the tickers (its beta is then 1)."""
    dates = list(dates)
    frames = [assess(history, benchmark, dates).with_columns(pl.lit(ticker).alias("ticker"))
              for ticker, history in sorted(histories.items())]
    frame = pl.concat(frames) if frames else pl.DataFrame(schema=ASSESS_SCHEMA).with_columns(pl.lit(None, pl.String).alias("ticker"))
    return frame.select("ticker", *ASSESS_SCHEMA)


def _percent(value: float) -> str:
    """0.025 -> "2.5%", 0.3 -> "30%"."""
    return f"{value * 100:g}%"


def _count_word(n: int) -> str:
    return {1: "one", 2: "two", 3: "three"}.get(n, str(n))


def describe_alerts() -> str:
    """The alert thresholds in words, as check descriptions and prompts state them."""
    return (f"volatility > {_percent(ALERT_VOLATILITY)}, drawdown < {_percent(ALERT_DRAWDOWN)}, "
            f"VaR95 > {_percent(ALERT_VAR)}, |beta| > {ALERT_ABS_BETA:g}, "
            f"a stop inside {_count_word(ALERT_STOP_VAR_DAYS)} days of VaR")


def describe_levels() -> str:
    """The risk levels' bands in words: "low < 0.25 <= medium < ... <= extreme"."""
    return "".join(f"{name} < {upper:g} <= " for name, upper in RISK_LEVELS) + EXTREME_LEVEL
