"""SARIMAX on log prices (statsmodels), forecasting from the Kalman-filtered state.

The model is fitted (maximum likelihood) on one window; with those parameters fixed, one Kalman
filter pass over later data gives the filtered state at every origin, and the h-step forecast of
the log price is Z T^h a[t|t] (plus intercepts). The filtered state at t uses data up to t only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from statsmodels.tsa.statespace.sarimax import SARIMAX

LJUNG_BOX_LAGS = 10


@dataclass(frozen=True)
class SarimaxFit:
    order: tuple[int, int, int]
    trend: str
    params: np.ndarray
    converged: bool
    ljung_box_p: float


def _model(log_prices: np.ndarray, order: tuple[int, int, int], trend: str) -> SARIMAX:
    from statsmodels.tsa.statespace.sarimax import SARIMAX  # here, not at the top: docs/scale.md "Process start"

    return SARIMAX(log_prices, order=order, trend=trend)


def fit_sarimax(log_prices: np.ndarray, order: tuple[int, int, int], trend: str = "c") -> SarimaxFit:
    """Fit by MLE. `trend="c"` with d=1 is a drift in the log-price differences."""
    from statsmodels.stats.diagnostic import acorr_ljungbox  # here, not at the top: docs/scale.md "Process start"
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _model(log_prices, order, trend).fit(disp=False)
    converged = bool(result.mle_retvals.get("converged", False)) and not any(
        issubclass(w.category, ConvergenceWarning) for w in caught
    )
    burn = max(order[1], 1)  # the first residuals carry the diffuse initialisation
    residuals = np.asarray(result.resid)[burn:]
    ljung_box_p = float(acorr_ljungbox(residuals, lags=[LJUNG_BOX_LAGS])["lb_pvalue"].iloc[0])
    if not np.all(np.isfinite(result.params)):
        raise ValueError("SARIMAX returned non-finite parameters")
    return SarimaxFit(order, trend, np.asarray(result.params), converged, ljung_box_p)


def forecast_sarimax(
    fit: SarimaxFit, log_prices: np.ndarray, origins: np.ndarray, horizons: tuple[int, ...]
) -> np.ndarray:
    """h-session log-return forecasts (len(origins) x len(horizons)) from fixed parameters.

    `log_prices` starts at the first value the filter should see; origins index into it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The Kalman filter's own results: statsmodels' wrapper would also estimate the
        # parameters' covariance (half the time of a forecast), which a forecast does not read.
        system = _model(log_prices[: origins.max() + 1], fit.order, fit.trend).filter(fit.params, return_ssm=True)
    transition = system.transition[:, :, 0]
    state_intercept = system.state_intercept[:, 0]
    design = system.design[0, :, 0]
    obs_intercept = float(system.obs_intercept[0, 0])
    state = system.filtered_state[:, origins]  # k_states x n_origins
    forecasts = np.empty((len(origins), len(horizons)))
    wanted = {h: i for i, h in enumerate(horizons)}
    for step in range(1, max(horizons) + 1):
        state = transition @ state + state_intercept[:, None]
        if step in wanted:
            forecasts[:, wanted[step]] = design @ state + obs_intercept - log_prices[origins]
    return forecasts
