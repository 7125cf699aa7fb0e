"""SAMOSSA-style forecast: SSA for the deterministic part, an AR model for the residual.

After Alomar, Dahleh, Mann, Shah (2023), "SAMoSSA: Multivariate Singular Spectrum Analysis with
Stochastic Autoregressive Noise", on one series: basic SSA (window L, rank r chosen as the fewest
eigentriples explaining `variance_share` of the trajectory's energy) estimates the deterministic
component; AutoReg(p) (statsmodels) is fitted on the residual series - reconstruction. The
forecast of each next value is the SSA recurrent forecast plus the AR forecast of the residual.

The series is the daily log return, not the log price. On log prices the leading eigentriple is
the price level, and its recurrence coefficients (summing to slightly more or less than 1) turn
that level into spurious returns: on 2002-2009 sample data that gave daily forecasts of -0.4%
and twice the random walk's RMSE. The h-session forecast is the sum of the next h forecasts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pm_domain.forecasting import ssa


@dataclass(frozen=True)
class SamossaFit:
    """What a fit learned: the leading eigenvectors (L x rank) and the residual's AR model. The
    linear maps are derived from the eigenvectors on first use, so a fit kept between nights
    stores a few hundred numbers instead of the maps' thousands and forecasts bit-identically."""

    rank: int
    explained_share: float
    eigenvectors: np.ndarray
    max_horizon: int
    ar_intercept: float
    ar_coefficients: np.ndarray  # phi_1..phi_p

    @property
    def window(self) -> int:
        return self.eigenvectors.shape[0]

    @cached_property
    def tail_map(self) -> np.ndarray:
        return ssa.tail_map(self.eigenvectors)

    @cached_property
    def forecast_map(self) -> np.ndarray:
        return ssa.forecast_map(ssa.recurrence(self.eigenvectors), self.max_horizon)


def fit_samossa(
    returns: np.ndarray, window: int, variance_share: float, ar_lags: int, max_horizon: int
) -> SamossaFit:
    from statsmodels.tsa.ar_model import AutoReg  # here, not at the top: docs/scale.md "Process start"

    basis = ssa.decompose(returns, window)
    rank = min(ssa.rank_for_variance(basis.singular_values, variance_share), window - 1)
    eigenvectors = np.ascontiguousarray(basis.leading(rank))
    residual = returns - ssa.reconstruct(returns, eigenvectors)
    ar = AutoReg(residual, lags=ar_lags, trend="c").fit()
    energy = basis.singular_values**2
    return SamossaFit(
        rank=rank,
        explained_share=float(energy[:rank].sum() / energy.sum()),
        eigenvectors=eigenvectors,
        max_horizon=max_horizon,
        ar_intercept=float(ar.params[0]),
        ar_coefficients=np.asarray(ar.params[1:]),
    )


def ar_forecast(intercept: float, coefficients: np.ndarray, recent: np.ndarray, steps: int) -> np.ndarray:
    """Iterated AR forecasts; `recent` holds the last p values per origin, oldest first."""
    lags = len(coefficients)
    history = recent.copy()
    out = np.empty((recent.shape[0], steps))
    for step in range(steps):
        # phi_1 multiplies the most recent value.
        nxt = intercept + history[:, -lags:][:, ::-1] @ coefficients
        out[:, step] = nxt
        history = np.column_stack([history, nxt])
    return out


def forecast_samossa(
    fit: SamossaFit, returns: np.ndarray, origins: np.ndarray, horizons: tuple[int, ...]
) -> np.ndarray:
    """h-session log-return forecasts; `origins` index the last known return of each origin."""
    span = 2 * fit.window - 2
    tails = ssa.lagged_windows(returns, origins, span)  # n_origins x (2L-2)
    reconstructed = tails @ fit.tail_map.T  # last L-1 reconstructed values per origin
    signal = reconstructed @ fit.forecast_map.T  # n_origins x max_h
    lags = len(fit.ar_coefficients)
    residual_now = tails[:, -lags:] - reconstructed[:, -lags:]
    residual = ar_forecast(fit.ar_intercept, fit.ar_coefficients, residual_now, fit.forecast_map.shape[0])
    cumulative = np.cumsum(signal + residual, axis=1)
    return cumulative[:, np.asarray(horizons) - 1]
