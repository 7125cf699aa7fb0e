"""Ensemble weights from each model's recent out-of-sample errors, known at the forecast date."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Weights:
    """Per target origin: one weight per model (rows sum to 1) and how they were obtained."""

    values: np.ndarray  # n_targets x n_models, 0 for a model without a forecast at the target
    errors_used: np.ndarray  # per target: past errors behind the weights (0: equal weights)
    basis: list[str]


def inverse_mse_weights(
    forecasts: np.ndarray,
    realised: np.ndarray,
    horizon: int,
    targets: np.ndarray,
    error_window: int,
    min_errors: int,
    benchmark: int | None = None,
) -> Weights:
    """w_m = (1 / MSE_m) / sum_k (1 / MSE_k), MSE over the last `error_window` origins whose
    outcome was known at the target: origins i <= j - h for target position j.

    `forecasts` is n_origins x n_models over consecutive sessions, `realised[i]` the outcome of
    origin i (x[i + h] - x[i], NaN if unknown). A model with no forecast at the target gets 0. When
    fewer than `min_errors` past errors exist, the available models share equal weights.

    With a `benchmark` column (the random walk), a model whose MSE over the window exceeds the
    benchmark's gets weight 0: only models with recent skill over the naive forecast take part.
    """
    n_models = forecasts.shape[1]
    values = np.zeros((len(targets), n_models))
    errors_used = np.zeros(len(targets), dtype=np.int64)
    basis = []
    for row, target in enumerate(targets):
        available = np.isfinite(forecasts[target])
        if not available.any():
            basis.append("none")
            continue
        last_known = target - horizon
        first = max(0, last_known - error_window + 1)
        if last_known < 0:
            errors = np.empty((0, n_models))
        else:
            errors = realised[first : last_known + 1, None] - forecasts[first : last_known + 1]
        counts = np.isfinite(errors).sum(axis=0)
        usable = available & (counts >= min_errors)
        if not usable.any():
            values[row, available] = 1.0 / available.sum()
            basis.append(f"equal: fewer than {min_errors} known errors")
            continue
        mse = np.full(n_models, np.inf)
        with np.errstate(invalid="ignore"):
            mse[usable] = np.nanmean(errors[:, usable] ** 2, axis=0)
        if benchmark is not None and usable[benchmark]:
            # Each model against the benchmark on the same origins (a model may have gaps).
            for model in np.flatnonzero(usable):
                both = np.isfinite(errors[:, model]) & np.isfinite(errors[:, benchmark])
                if np.mean(errors[both, model] ** 2) > np.mean(errors[both, benchmark] ** 2):
                    usable[model] = False
        inverse = np.where(usable, 1.0 / np.maximum(mse, np.finfo(float).tiny), 0.0)
        values[row] = inverse / inverse.sum()
        errors_used[row] = int(counts[usable].min())
        gate = ", models worse than the random walk excluded" if benchmark is not None else ""
        basis.append(f"inverse MSE of the last {error_window} known errors{gate}")
    return Weights(values, errors_used, basis)
