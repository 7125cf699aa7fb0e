"""MSSA-RL-style forecast: SSA whose reconstruction rank is chosen per market regime.

The rule, fixed and auditable (everything it learns comes from the fit window, which ends on or
before the forecast date):
1. Base signal: rank-1 SSA (the trend). Its one-step forecast errors e[s] (known at s + 1) are
   the residuals the regime is read from.
2. Regime at t = (change point, volatility):
   - change point: the standardised CUSUM of the last `cusum_window` residuals,
     max_k |sum_{i<=k} (e_i - mean e)| / (sd(e) sqrt(n)), exceeds 1.358, the 5% critical value of
     the supremum of a Brownian bridge (Ploberger and Kraemer's OLS-CUSUM test);
   - volatility: the variance of the last `variance_window` residuals against the terciles of that
     rolling variance over the fit window: low / mid / high.
3. Action: a rank from `candidate_ranks`. The table (regime -> rank) is learned in the fit window
   like a one-step tabular bandit: for each regime, the rank whose one-step forecasts had the
   lowest mean squared error over the window's past origins in that regime; a regime seen fewer
   than `min_visits` times takes the rank that was best over all origins.
Like the SAMOSSA model, SSA runs on daily log returns (see samossa.py for why not log prices);
the h-session forecast is the sum of the recurrent forecasts of the next h returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pm_domain.forecasting import ssa

CANDIDATE_RANKS = (1, 2, 3, 5, 8)
CUSUM_CRITICAL_5PCT = 1.358
VOLATILITY_LEVELS = ("low", "mid", "high")


@dataclass(frozen=True)
class RankMaps:
    tail_map: np.ndarray
    forecast_map: np.ndarray


@dataclass(frozen=True)
class MssaRlFit:
    """What a fit learned: the leading eigenvectors (L x the largest candidate rank) and the
    regime table. Each rank's maps are derived from the eigenvectors on first use (see SamossaFit)."""

    window: int
    eigenvectors: np.ndarray
    candidate_ranks: tuple[int, ...]
    max_horizon: int
    variance_terciles: tuple[float, float]
    rank_table: dict[str, int]
    cusum_window: int
    variance_window: int

    def table_json(self) -> str:
        return json.dumps(self.rank_table, sort_keys=True)

    @cached_property
    def maps(self) -> dict[int, RankMaps]:
        return {rank: rank_maps(self.eigenvectors[:, :rank], self.max_horizon) for rank in self.candidate_ranks}


def rank_maps(eigenvectors: np.ndarray, max_horizon: int) -> RankMaps:
    return RankMaps(ssa.tail_map(eigenvectors), ssa.forecast_map(ssa.recurrence(eigenvectors), max_horizon))


def _signal_forecasts(maps: RankMaps, returns: np.ndarray, origins: np.ndarray, steps: int) -> np.ndarray:
    """Recurrent forecasts of the next `steps` returns after each origin (n_origins x steps)."""
    span = maps.tail_map.shape[1]
    reconstructed = ssa.lagged_windows(returns, origins, span) @ maps.tail_map.T
    return reconstructed @ maps.forecast_map[:steps].T


def standardised_cusum(residuals: np.ndarray) -> np.ndarray:
    """OLS-CUSUM statistic of each row: max_k |cumsum(e - mean)| / (sd sqrt(n))."""
    centred = residuals - residuals.mean(axis=1, keepdims=True)
    spread = residuals.std(axis=1, ddof=1) * np.sqrt(residuals.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(np.cumsum(centred, axis=1)).max(axis=1) / spread


def _one_step_errors(maps: RankMaps, returns: np.ndarray, first: int, last: int) -> np.ndarray:
    """e[s] = r[s+1] - forecast(s) for s = first..last-1 (aligned so e[i] is for s=first+i)."""
    origins = np.arange(first, last)
    return returns[origins + 1] - _signal_forecasts(maps, returns, origins, 1)[:, 0]


def _regime_features(returns: np.ndarray, origins: np.ndarray, maps: RankMaps,
                     cusum_window: int, variance_window: int) -> tuple[np.ndarray, np.ndarray]:
    """(cusum statistic, rolling residual variance) at each origin, from errors known at t."""
    first = origins.min() - cusum_window
    errors = _one_step_errors(maps, returns, first, origins.max())
    # errors known at t are e[s] for s <= t - 1, i.e. indices up to t - 1 - first.
    ends = origins - 1 - first
    recent = ssa.lagged_windows(errors, ends, cusum_window)
    return standardised_cusum(recent), recent[:, -variance_window:].var(axis=1, ddof=1)


def regime_labels(cusum: np.ndarray, variance: np.ndarray, terciles: tuple[float, float]) -> list[str]:
    level = np.searchsorted(np.asarray(terciles), variance, side="right")
    return [
        f"{'break' if c > CUSUM_CRITICAL_5PCT else 'stable'}/{VOLATILITY_LEVELS[l]}"
        for c, l in zip(cusum, level, strict=True)
    ]


def fit_mssa_rl(
    returns: np.ndarray,
    window: int,
    max_horizon: int,
    candidate_ranks: tuple[int, ...] = CANDIDATE_RANKS,
    cusum_window: int = 60,
    variance_window: int = 20,
    min_visits: int = 20,
) -> MssaRlFit:
    basis = ssa.decompose(returns, window)
    eigenvectors = np.ascontiguousarray(basis.leading(max(candidate_ranks)))
    maps = {rank: rank_maps(eigenvectors[:, :rank], max_horizon) for rank in candidate_ranks}
    base = maps[candidate_ranks[0]]
    span = 2 * window - 2
    # Past origins of the window whose one-step outcome lies inside the window.
    origins = np.arange(span - 1 + cusum_window + 1, len(returns) - 1)
    if len(origins) < 3 * min_visits:
        raise ValueError(f"MSSA-RL needs at least {span + cusum_window + 3 * min_visits + 2} returns")
    cusum, variance = _regime_features(returns, origins, base, cusum_window, variance_window)
    terciles = (float(np.quantile(variance, 1 / 3)), float(np.quantile(variance, 2 / 3)))
    labels = np.array(regime_labels(cusum, variance, terciles))
    realised = returns[origins + 1]
    squared = {rank: (realised - _signal_forecasts(m, returns, origins, 1)[:, 0]) ** 2
               for rank, m in maps.items()}
    overall = min(candidate_ranks, key=lambda r: (squared[r].mean(), r))
    table = {}
    for cusum_label in ("break", "stable"):
        for level in VOLATILITY_LEVELS:
            regime = f"{cusum_label}/{level}"
            visits = labels == regime
            table[regime] = (
                min(candidate_ranks, key=lambda r: (squared[r][visits].mean(), r))
                if visits.sum() >= min_visits else overall
            )
    fit = MssaRlFit(window, eigenvectors, tuple(candidate_ranks), max_horizon, terciles, table,
                    cusum_window, variance_window)
    fit.__dict__["maps"] = maps  # the cached_property's slot: the same arrays it would derive
    return fit


def forecast_mssa_rl(
    fit: MssaRlFit, returns: np.ndarray, origins: np.ndarray, horizons: tuple[int, ...]
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(log-return forecasts n_origins x horizons, regime per origin, rank per origin)."""
    base = fit.maps[min(fit.maps)]
    cusum, variance = _regime_features(returns, origins, base, fit.cusum_window, fit.variance_window)
    regimes = regime_labels(cusum, variance, fit.variance_terciles)
    ranks = np.array([fit.rank_table[r] for r in regimes])
    steps = max(horizons)
    columns = np.asarray(horizons) - 1
    forecasts = np.empty((len(origins), len(horizons)))
    for rank in np.unique(ranks):
        chosen = ranks == rank
        per_step = _signal_forecasts(fit.maps[int(rank)], returns, origins[chosen], steps)
        forecasts[chosen] = np.cumsum(per_step, axis=1)[:, columns]
    return forecasts, regimes, ranks
