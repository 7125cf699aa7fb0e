"""Forecast accuracy measures, each one formula (errors e = realised - forecast)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


def realised_log_returns(histories: dict[str, pl.DataFrame], horizons: tuple[int, ...]) -> pl.DataFrame:
    """ticker, date, horizon, realised = log(P[t+h] / P[t]) from (ticker, date, price) histories;
    origins without h later prices are left out."""
    frames = []
    for history in histories.values():
        ordered = history.sort("date").with_columns(pl.col("price").log().alias("log_price"))
        frames.extend(
            ordered.select("ticker", "date", pl.lit(h, pl.Int64).alias("horizon"),
                           (pl.col("log_price").shift(-h) - pl.col("log_price")).alias("realised"))
            for h in horizons
        )
    return pl.concat(frames).drop_nulls("realised")


def rmse(errors: np.ndarray) -> float:
    """sqrt(mean(e^2))."""
    return float(np.sqrt(np.mean(np.square(errors))))


def mase(errors: np.ndarray, random_walk_errors: np.ndarray) -> float:
    """mean|e| / mean|e_rw|: MAE scaled by the random walk's MAE on the same origins (RW = 1)."""
    return float(np.mean(np.abs(errors)) / np.mean(np.abs(random_walk_errors)))


def coverage(realised: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of outcomes inside [lower, upper]."""
    return float(np.mean((realised >= lower) & (realised <= upper)))


def hit_rate(forecast: np.ndarray, realised: np.ndarray) -> float:
    """Share of origins with a non-zero forecast whose sign matches the outcome's sign."""
    called = forecast != 0
    return float(np.mean(np.sign(forecast[called]) == np.sign(realised[called]))) if called.any() else float("nan")


def up_share(realised: np.ndarray) -> float:
    """Hit rate of the naive call 'always up': the share of positive outcomes."""
    return float(np.mean(realised > 0))


@dataclass(frozen=True)
class DieboldMariano:
    statistic: float
    p_value: float


def diebold_mariano(errors_a: np.ndarray, errors_b: np.ndarray, horizon: int) -> DieboldMariano:
    """Diebold-Mariano test of equal squared-error loss for one series of forecasts:
    loss_differential_test(e_a^2 - e_b^2, horizon). Negative: a is better."""
    return loss_differential_test(np.square(errors_a) - np.square(errors_b), horizon)


def loss_differential_test(d: np.ndarray, horizon: int) -> DieboldMariano:
    """Diebold-Mariano statistic of a loss-differential series d (in time order), with the
    Harvey-Leybourne-Newbold small-sample correction.

    DM = mean(d) / sqrt(V / n), V = gamma_0 + 2 sum_{k=1}^{h-1} gamma_k (h-step forecasts
    overlap, so their loss differences are MA(h-1)); HLN multiplies DM by
    sqrt((n + 1 - 2h + h(h-1)/n) / n) and compares it with Student-t(n - 1).
    """
    n = len(d)
    centred = d - d.mean()
    gamma = [centred @ centred / n] + [centred[k:] @ centred[:-k] / n for k in range(1, horizon)]
    variance = gamma[0] + 2 * sum(gamma[1:])
    if variance <= 0:  # the truncated estimate can go negative; fall back on gamma_0 alone
        variance = gamma[0]
    if variance <= 0:  # identical losses: no evidence either way
        return DieboldMariano(0.0, 1.0)
    statistic = d.mean() / np.sqrt(variance / n)
    statistic *= np.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    from scipy import stats  # here, not at the top: docs/scale.md "Process start"
    p_value = 2 * stats.t.sf(abs(statistic), df=n - 1)
    return DieboldMariano(float(statistic), float(p_value))
