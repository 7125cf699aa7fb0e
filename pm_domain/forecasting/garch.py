"""Volatility: GARCH(1,1) with Student-t innovations (arch), EWMA(0.94) as the labelled fallback.

arch fits the parameters on one window. The variance recursion is then written out here,
sigma2[t] = omega + alpha r[t-1]^2 + beta sigma2[t-1] started from arch's backcast, so the state
at an origin provably reads returns up to that origin (arch's own in-sample pass bounds the
variance with statistics of the whole sample it is given). Tests check it matches arch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

EWMA_LAMBDA = 0.94
PERSISTENCE_LIMIT = 0.97
# arch's optimiser is best conditioned on returns in percent.
_SCALE = 100.0
_BACKCAST_SPAN = 75


@dataclass(frozen=True)
class VolatilityFit:
    """What the engine needs to run the variance recursion, and why this model was chosen."""

    model: str  # "garch_t" or "ewma_0.94"
    omega: float
    alpha: float
    beta: float
    nu: float | None
    converged: bool
    persistence: float | None
    fallback_reason: str | None

    @property
    def is_fallback(self) -> bool:
        return self.model != "garch_t"


def ewma_fit(reason: str, persistence: float | None = None, converged: bool = False, nu: float | None = None) -> VolatilityFit:
    """EWMA variance: sigma2[t] = lambda sigma2[t-1] + (1 - lambda) r[t-1]^2, lambda = 0.94."""
    return VolatilityFit("ewma_0.94", 0.0, 1.0 - EWMA_LAMBDA, EWMA_LAMBDA, nu, converged, persistence, reason)


def fit_volatility(returns: np.ndarray) -> VolatilityFit:
    """GARCH(1,1)-t by MLE on `returns` (daily log returns); EWMA when the fit fails or
    alpha + beta >= PERSISTENCE_LIMIT (a near-integrated GARCH forecasts poorly far ahead)."""
    from arch import arch_model  # here, not at the top: docs/scale.md "Process start"

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = arch_model(returns * _SCALE, mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(
                disp="off", show_warning=False
            )
    except Exception as exc:  # arch raises several types on degenerate input
        return ewma_fit(f"GARCH fit failed: {type(exc).__name__}: {exc}"[:200])
    params = result.params
    omega, alpha, beta, nu = (float(params[k]) for k in ("omega", "alpha[1]", "beta[1]", "nu"))
    converged = result.convergence_flag == 0
    persistence = alpha + beta
    if not converged:
        return ewma_fit("GARCH optimiser did not converge", persistence, converged, nu)
    if not np.isfinite([omega, alpha, beta]).all():
        return ewma_fit("GARCH returned non-finite parameters", None, converged, nu)
    if persistence >= PERSISTENCE_LIMIT:
        return ewma_fit(f"GARCH persistence {persistence:.4f} >= {PERSISTENCE_LIMIT}", persistence, converged, nu)
    return VolatilityFit("garch_t", omega / _SCALE**2, alpha, beta, nu, converged, persistence, None)


def backcast(returns: np.ndarray) -> float:
    """arch's starting variance: exponentially weighted (0.94) mean of the first 75 squared returns."""
    span = min(_BACKCAST_SPAN, len(returns))
    weights = EWMA_LAMBDA ** np.arange(span)
    return float(weights @ returns[:span] ** 2 / weights.sum())


def conditional_variance(fit: VolatilityFit, returns: np.ndarray) -> np.ndarray:
    """sigma2[t] for t = 0..n: the variance of returns[t] given returns before t, and sigma2[n],
    the one-step-ahead variance after the last return (length n + 1)."""
    start = backcast(returns)
    variance = np.empty(len(returns) + 1)
    previous_variance, previous_square = start, start
    for t in range(len(returns) + 1):
        variance[t] = fit.omega + fit.alpha * previous_square + fit.beta * previous_variance
        if t < len(returns):
            previous_variance, previous_square = variance[t], returns[t] ** 2
    return variance


def variance_paths(fit: VolatilityFit, next_variance: np.ndarray, steps: int) -> np.ndarray:
    """E[r[t+j]^2 | t] for j = 1..steps from the one-step variances (n_origins x steps).

    GARCH: long-run + (alpha + beta)^(j-1) (sigma2[t+1] - long-run). EWMA: flat, sigma2[t+1].
    """
    powers = np.arange(steps)
    if fit.is_fallback:
        return np.repeat(next_variance[:, None], steps, axis=1)
    persistence = fit.alpha + fit.beta
    long_run = fit.omega / (1.0 - persistence)
    return long_run + persistence ** powers[None, :] * (next_variance[:, None] - long_run)
