"""Performance metrics of a return series, each one function stating its formula.

Conventions (../shared/DESIGN.md, "Definitions to follow"):
- `returns` are daily simple returns, 252 trading days a year, in a NumPy array whose LAST axis
  is time: a 1-D series, or a 2-D stack of series (one row per backtest window), so one call
  evaluates thousands of windows.
- NaN marks a day with no observation and is dropped: every function gives, for a row with NaN,
  exactly what it gives for that row with the NaN removed (in compounding a dropped day is a
  day of zero return). N below is the number of observations, not of array slots.
- A ratio whose denominator is zero (no dispersion, no downside, no drawdown, no loss) is NaN,
  never +-inf: an undefined metric is stored as null, not as an extreme number.
- A function returns a float for a 1-D input and an array of one value per row for 2-D.

Where empyrical defines a metric, the result equals empyrical's on the NaN-free series to 1e-9
(tests/unit/test_performance.py checks it on real index returns), except that empyrical returns +-inf
where these return NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np

TRADING_DAYS_PER_YEAR = 252
# empyrical treats a benchmark variance below this as zero (beta undefined); so do we.
MIN_BENCHMARK_VARIANCE = 1.0e-30


def _as_float(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim not in (1, 2):
        raise ValueError(f"returns must be 1-D or 2-D (windows x days), got shape {array.shape}")
    return array


def _result(values: np.ndarray, like: np.ndarray) -> float | np.ndarray:
    values = np.asarray(values, dtype=float)
    return float(values) if like.ndim == 1 else values


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is zero or either side is NaN."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    out = np.full(numerator.shape, np.nan)
    usable = (denominator != 0) & np.isfinite(denominator) & np.isfinite(numerator)
    np.divide(numerator, denominator, out=out, where=usable)
    return out


def observations(returns: np.ndarray) -> int | np.ndarray:
    """N = the number of non-NaN returns."""
    r = _as_float(returns)
    count = np.sum(~np.isnan(r), axis=-1)
    return int(count) if r.ndim == 1 else count


def _mean(r: np.ndarray) -> np.ndarray:
    """nanmean without numpy's warning for a row with no observation (NaN there)."""
    if r.shape[-1] and not np.isnan(r).any():
        return np.mean(r, axis=-1)
    count = np.sum(~np.isnan(r), axis=-1)
    return _divide(np.nansum(r, axis=-1), count)


def _std(r: np.ndarray) -> np.ndarray:
    """Sample standard deviation (ddof=1), NaN below 2 observations; exactly 0 for a constant
    series (the two-pass formula can leave ~1e-19 there, which would make a ratio explode)."""
    if r.shape[-1] == 0:
        return np.full(r.shape[:-1], np.nan)
    if r.shape[-1] > 1 and not np.isnan(r).any():
        spread = np.std(r, axis=-1, ddof=1)
        return np.where(np.max(r, axis=-1) == np.min(r, axis=-1), 0.0, spread)
    count = np.sum(~np.isnan(r), axis=-1)
    centred = r - np.expand_dims(_mean(r), -1)
    variance = _divide(np.nansum(centred**2, axis=-1), count - 1.0)
    variance = np.where(count < 2, np.nan, variance)
    with np.errstate(invalid="ignore"):
        constant = np.nanmax(np.where(np.isnan(r), -np.inf, r), axis=-1) == np.nanmin(
            np.where(np.isnan(r), np.inf, r), axis=-1)
    return np.where(constant & (count >= 2), 0.0, np.sqrt(variance))


def total_return(returns: np.ndarray) -> float | np.ndarray:
    """prod(1 + r_t) - 1; NaN when there is no observation."""
    r = _as_float(returns)
    growth = np.prod(np.where(np.isnan(r), 1.0, 1.0 + r), axis=-1)
    return _result(np.where(observations(r) == 0, np.nan, growth - 1.0), r)


def annual_return(returns: np.ndarray) -> float | np.ndarray:
    """CAGR = (prod(1 + r_t))^(252 / N) - 1; NaN when N = 0."""
    r = _as_float(returns)
    count = np.asarray(observations(r), dtype=float)
    growth = 1.0 + np.asarray(total_return(r))
    with np.errstate(divide="ignore", invalid="ignore"):
        cagr = np.power(growth, _divide(TRADING_DAYS_PER_YEAR, count)) - 1.0
    return _result(cagr, r)


def annual_volatility(returns: np.ndarray) -> float | np.ndarray:
    """std(r, ddof=1) * sqrt(252); NaN below 2 observations."""
    r = _as_float(returns)
    return _result(_std(r) * math.sqrt(TRADING_DAYS_PER_YEAR), r)


def sharpe_ratio(returns: np.ndarray, risk_free: float = 0.0) -> float | np.ndarray:
    """mean(r - rf) / std(r - rf, ddof=1) * sqrt(252), rf a daily rate; NaN below 2
    observations or with zero dispersion."""
    r = _as_float(returns) - risk_free
    return _result(_divide(_mean(r), _std(r)) * math.sqrt(TRADING_DAYS_PER_YEAR), r)


def downside_deviation(returns: np.ndarray, required_return: float = 0.0) -> float | np.ndarray:
    """sqrt(mean(min(r - required, 0)^2)) * sqrt(252), the mean over ALL observations (days
    above the required return count as zeros); NaN when N = 0."""
    r = _as_float(returns) - required_return
    shortfall = np.minimum(r, 0.0)
    return _result(np.sqrt(_mean(shortfall**2)) * math.sqrt(TRADING_DAYS_PER_YEAR), r)


def sortino_ratio(returns: np.ndarray, required_return: float = 0.0) -> float | np.ndarray:
    """mean(r - required) * 252 / downside_deviation(r, required); NaN below 2 observations or
    without a day below the required return."""
    r = _as_float(returns)
    adjusted = r - required_return
    ratio = _divide(_mean(adjusted) * TRADING_DAYS_PER_YEAR, np.asarray(downside_deviation(r, required_return)))
    return _result(np.where(observations(r) < 2, np.nan, ratio), r)


def equity_curve(returns: np.ndarray) -> np.ndarray:
    """E_t = prod_{s<=t}(1 + r_s), starting from E_0 = 1 (not included); a NaN day keeps E flat."""
    r = _as_float(returns)
    return np.cumprod(np.where(np.isnan(r), 1.0, 1.0 + r), axis=-1)


def drawdown_series(returns: np.ndarray) -> np.ndarray:
    """D_t = E_t / max_{s<=t} E_s - 1 on the equity curve, with E_0 = 1 a candidate peak."""
    r = _as_float(returns)
    equity = equity_curve(r)
    start = np.ones(equity.shape[:-1] + (1,))
    peaks = np.maximum.accumulate(np.concatenate([start, equity], axis=-1), axis=-1)[..., 1:]
    return equity / peaks - 1.0


def max_drawdown(returns: np.ndarray) -> float | np.ndarray:
    """min_t(E_t / max_{s<=t} E_s - 1) on equity (not on returns), E_0 = 1 a candidate peak, so
    a first-day loss counts; <= 0, NaN when N = 0."""
    r = _as_float(returns)
    if r.shape[-1] == 0:
        return _result(np.full(r.shape[:-1], np.nan), r)
    deepest = np.min(drawdown_series(r), axis=-1)
    return _result(np.where(observations(r) == 0, np.nan, np.minimum(deepest, 0.0)), r)


def calmar_ratio(returns: np.ndarray) -> float | np.ndarray:
    """CAGR / |max drawdown|; NaN without a drawdown."""
    r = _as_float(returns)
    drawdown = np.asarray(max_drawdown(r))
    return _result(_divide(np.asarray(annual_return(r)), np.where(drawdown < 0, -drawdown, 0.0)), r)


def _paired(returns: np.ndarray, benchmark_returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, b = _as_float(returns), _as_float(benchmark_returns)
    if r.shape != b.shape:
        raise ValueError(f"returns {r.shape} and benchmark_returns {b.shape} differ in shape")
    missing = np.isnan(r) | np.isnan(b)
    return np.where(missing, np.nan, r), np.where(missing, np.nan, b)


def beta(returns: np.ndarray, benchmark_returns: np.ndarray, risk_free: float = 0.0) -> float | np.ndarray:
    """cov(r, b) / var(b) = mean((b - mean(b)) * r) / mean((b - mean(b))^2) over the days both
    are observed (risk_free cancels); NaN below 2 pairs or when var(b) < 1e-30."""
    r, b = _paired(returns, benchmark_returns)
    r, b = r - risk_free, b - risk_free
    centred = b - np.expand_dims(_mean(b), -1)
    variance = _mean(centred**2)
    slope = _divide(_mean(centred * r), np.where(variance < MIN_BENCHMARK_VARIANCE, 0.0, variance))
    return _result(np.where(observations(r) < 2, np.nan, slope), r)


def alpha(returns: np.ndarray, benchmark_returns: np.ndarray, risk_free: float = 0.0) -> float | np.ndarray:
    """(1 + mean((r - rf) - beta * (b - rf)))^252 - 1: the annualised mean daily excess over
    what beta explains, as empyrical.alpha (a daily mean compounded, never a total return mixed
    with an annual one); NaN where beta is."""
    r, b = _paired(returns, benchmark_returns)
    slope = np.asarray(beta(r, b, risk_free))
    daily = _mean((r - risk_free) - np.expand_dims(slope, -1) * (b - risk_free))
    return _result((1.0 + daily) ** TRADING_DAYS_PER_YEAR - 1.0, r)


def profit_factor(returns: np.ndarray) -> float | np.ndarray:
    """sum(r_t > 0) / |sum(r_t < 0)| over the days; NaN without a losing day."""
    r = _as_float(returns)
    gains = np.nansum(np.where(r > 0, r, 0.0), axis=-1)
    losses = np.nansum(np.where(r < 0, r, 0.0), axis=-1)
    return _result(_divide(gains, -losses), r)


def hit_rate(hits: np.ndarray) -> float | np.ndarray:
    """Share of calls that were right: mean(hit) over the calls, a hit 1.0 and a miss 0.0,
    NaN marking a day without a call (HOLD, or an outcome not yet known); NaN without a call."""
    return _result(_mean(_as_float(hits)), _as_float(hits))


def brier_score(probabilities: np.ndarray, hits: np.ndarray) -> float | np.ndarray:
    """mean((p - hit)^2) over the calls: p the stated probability that the call is right, hit
    1.0 or 0.0; 0 is perfect, 0.25 is what p = 0.5 always scores. NaN without a call."""
    p, outcome = _paired(probabilities, hits)
    return _result(_mean((p - outcome) ** 2), p)


def reliability(probabilities: np.ndarray, hits: np.ndarray, bins: int = 10) -> dict[str, np.ndarray]:
    """The reliability diagram's points: the calls grouped by stated probability into `bins`
    equal bins of [0, 1] (1.0 in the last), and per bin the mean stated probability, the realised
    hit rate and the number of calls. A calibrated caller's points lie on the diagonal. Bins
    without a call are left out."""
    p, outcome = (np.asarray(a, dtype=float).ravel() for a in (probabilities, hits))
    known = ~np.isnan(p) & ~np.isnan(outcome)
    p, outcome = p[known], outcome[known]
    index = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(index, minlength=bins)
    used = counts > 0
    return {"bin_lower": (np.arange(bins) / bins)[used], "mean_probability": (np.bincount(index, p, bins) / np.maximum(counts, 1))[used],
            "hit_rate": (np.bincount(index, outcome, bins) / np.maximum(counts, 1))[used], "calls": counts[used]}


def exposure(positions: np.ndarray) -> float | np.ndarray:
    """Share of observed days with a non-zero position."""
    p = _as_float(positions)
    return _result(_mean(np.where(np.isnan(p), np.nan, (p != 0).astype(float))), p)


def position_changes(positions: np.ndarray) -> int | np.ndarray:
    """Number of observed days whose position differs from the previous observed day's,
    starting flat: each entry, exit or reversal counts once (what costs are charged on)."""
    p = _as_float(positions)
    observed = ~np.isnan(p)
    # Carry the last observed position over NaN days, so a dropped day is not a change.
    last_seen = np.maximum.accumulate(np.where(observed, np.arange(p.shape[-1]), -1), axis=-1)
    carried = np.where(last_seen >= 0, np.take_along_axis(np.nan_to_num(p), np.maximum(last_seen, 0), axis=-1), 0.0)
    previous = np.concatenate([np.zeros(p.shape[:-1] + (1,)), carried[..., :-1]], axis=-1)
    changes = np.sum(observed & (p != previous), axis=-1)
    return int(changes) if p.ndim == 1 else changes


def probabilistic_sharpe_ratio(returns: np.ndarray, benchmark_sharpe: float = 0.0) -> float | np.ndarray:
    """PSR = Phi((SR - SR*) sqrt(N - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)), Bailey and
    Lopez de Prado (2012): the probability that the true per-day Sharpe exceeds SR* given N
    observations. SR is the per-day (not annualised) mean / std(ddof=1), g3 the skewness and g4
    the kurtosis (normal = 3) of the returns, both the biased moment estimators. NaN below 3
    observations or with zero dispersion."""
    r = _as_float(returns)
    count = np.asarray(observations(r), dtype=float)
    mean = np.expand_dims(_mean(r), -1)
    centred = r - mean
    m2 = _mean(centred**2)
    skewness = _divide(_mean(centred**3), m2**1.5)
    kurtosis = _divide(_mean(centred**4), m2**2)
    sharpe = _divide(_mean(r), _std(r))
    denominator = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    with np.errstate(invalid="ignore"):
        z = _divide((sharpe - benchmark_sharpe) * np.sqrt(np.maximum(count - 1.0, 0.0)),
                    np.sqrt(np.where(denominator > 0, denominator, np.nan)))
    from scipy import stats  # here, not at the top: docs/scale.md "Process start"
    psr = np.where(np.isnan(z) | (count < 3), np.nan, stats.norm.cdf(np.nan_to_num(z)))
    return _result(psr, r)


def stationary_bootstrap_counts(observations_count: int, replications: int, mean_block: float,
                                seed: int) -> np.ndarray:
    """How often each of N days appears in each stationary-bootstrap resample (Politis and Romano
    1994; index draws from arch.bootstrap.StationaryBootstrap): a (replications x N) matrix whose
    rows sum to N. A statistic that is a function of sums of r^k is then one matrix product."""
    from arch.bootstrap import StationaryBootstrap

    n = observations_count
    bootstrap = StationaryBootstrap(mean_block, np.arange(n), seed=seed)
    # The draws of bootstrap.bootstrap(replications) without resampling the data each time:
    # that generator sets its index to update_indices() once per replication, in this order.
    index = np.empty((replications, n), dtype=np.int64)
    for row in index:
        row[:] = bootstrap.update_indices()
    # Row r's days as r * N + day: one bincount counts every row.
    index += n * np.arange(replications, dtype=np.int64)[:, np.newaxis]
    return np.bincount(index.ravel(), minlength=replications * n).reshape(replications, n).astype(np.float64)


def resampled_sharpe(rows: np.ndarray, counts: np.ndarray, flat_is_zero: bool = False) -> np.ndarray:
    """The annualised Sharpe of every resample (counts, replications x N) of every row (windows x
    N, no NaN): mean / std(ddof=1) * sqrt(252) from sum(c * r) and sum(c * r^2), as
    (replications x windows). NaN where undefined; with `flat_is_zero`, a resample with no return
    and no dispersion (a strategy with no position) has Sharpe 0."""
    sharpe, flat = resampled_sharpe_and_flat(rows, counts)
    return np.where(flat, 0.0, sharpe) if flat_is_zero else sharpe


def resampled_sharpe_and_flat(rows: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """resampled_sharpe(rows, counts), and which resamples are flat (no return, no dispersion):
    both Sharpes of resampled_sharpe from one pair of matrix products."""
    n = rows.shape[1]
    sums, squares = counts @ rows.T, counts @ (rows**2).T
    mean = sums / n
    variance = np.maximum(squares - n * mean**2, 0.0) / (n - 1) if n > 1 else np.full_like(mean, np.nan)
    sharpe = _divide(mean, np.sqrt(variance)) * math.sqrt(TRADING_DAYS_PER_YEAR)
    return sharpe, (variance == 0) & (mean == 0)


def percentile_interval(resampled: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The (lower, upper) percentile interval at `confidence` of each column of `resampled`
    (replications x windows, a statistic per resample) over the resamples where it is finite
    (np.nanquantile, linear), NaN where fewer than half are."""
    tail = (1.0 - confidence) / 2.0
    defined = np.isfinite(resampled)
    complete = defined.all(axis=0)
    lower, upper = np.full((2, resampled.shape[1]), np.nan)
    # The same numbers as np.nanquantile, whose per-column Python loop is kept for the columns
    # where a resample has no value (a column without one is np.quantile's, as one 1-D call).
    if complete.all():
        lower, upper = np.quantile(resampled, [tail, 1.0 - tail], axis=0)
    elif complete.any():
        lower[complete], upper[complete] = np.quantile(resampled[:, complete], [tail, 1.0 - tail], axis=0)
    partly = ~complete & defined.any(axis=0)
    if partly.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lower[partly], upper[partly] = np.nanquantile(np.where(defined[:, partly], resampled[:, partly], np.nan),
                                                          [tail, 1.0 - tail], axis=0)
    enough = defined.mean(axis=0) >= 0.5
    return np.where(enough, lower, np.nan), np.where(enough, upper, np.nan)


def bootstrap_sharpe_interval(returns: np.ndarray, counts: np.ndarray, confidence: float = 0.90,
                              risk_free: float = 0.0) -> tuple[float, float] | tuple[np.ndarray, np.ndarray]:
    """The (lower, upper) percentile interval of the annualised Sharpe ratio over stationary
    bootstrap resamples given as `counts` (from stationary_bootstrap_counts, N columns): each
    resample's Sharpe is mean / std(ddof=1) * sqrt(252) of the resampled days, from
    sum(c * r) and sum(c * r^2). Every row of `returns` must have exactly N observations
    (no NaN). NaN bounds where the resampled Sharpe is undefined."""
    r = _as_float(returns) - risk_free
    rows = r if r.ndim == 2 else r[np.newaxis, :]
    if np.isnan(rows).any():
        raise ValueError("bootstrap_sharpe_interval takes complete windows: drop NaN days first")
    if rows.shape[1] != counts.shape[1]:
        raise ValueError(f"counts are for {counts.shape[1]} days, returns have {rows.shape[1]}")
    # A resample of only flat days has no Sharpe; the interval is over the resamples that have
    # one, and undefined when fewer than half do.
    lower, upper = percentile_interval(resampled_sharpe(rows, counts), confidence)
    if r.ndim == 1:
        return float(lower[0]), float(upper[0])
    return lower, upper


def rows_by_observations(returns: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Group the rows of a (windows x days) array by their number of observations: yields
    (N, row indices, the rows' observations compacted to N columns, in day order)."""
    r = _as_float(returns)
    present = ~np.isnan(r)
    counts = present.sum(axis=1)
    for n in np.unique(counts):
        index = np.flatnonzero(counts == n)
        yield int(n), index, r[index][present[index]].reshape(len(index), int(n))
