"""The naive forecasts every model is judged against."""

from __future__ import annotations

import numpy as np


def random_walk(origins: np.ndarray, horizons: tuple[int, ...]) -> np.ndarray:
    """Random walk on log prices: the expected h-session log return is 0."""
    return np.zeros((len(origins), len(horizons)))


def drift(log_prices: np.ndarray, origins: np.ndarray, horizons: tuple[int, ...], window: int) -> np.ndarray:
    """Random walk with drift: h times the mean daily log return over the `window` sessions to t.

    mean = (x[t] - x[t - w]) / w with w = min(window, t); NaN where t = 0 (no return yet).
    """
    lookback = np.minimum(window, origins)
    with np.errstate(invalid="ignore", divide="ignore"):
        daily = (log_prices[origins] - log_prices[origins - lookback]) / lookback
    daily = np.where(lookback > 0, daily, np.nan)
    return daily[:, None] * np.asarray(horizons, dtype=float)[None, :]
