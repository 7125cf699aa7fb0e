"""Singular spectrum analysis (basic SSA, Golyandina et al.) as fixed linear maps.

Once the eigenvector basis of a window's trajectory matrix is chosen, everything the forecasts
need is linear in the last observations:
- the reconstruction of the last L-1 points is `tail_map @ x[-(2L-2):]`, exactly what diagonal
  averaging of the whole window gives at its end (only the last 2L-2 values reach those points);
- the recurrent (LRR) forecast j steps ahead is `forecast_map[j-1] @ reconstruction[-(L-1):]`.
So a basis fitted on one date can be applied to every later date of a block with one matrix
product, which is how the fast path reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class SsaError(ValueError):
    """The series cannot be decomposed or forecast with the requested window and rank."""


@dataclass(frozen=True)
class SsaBasis:
    """Left singular vectors (columns, L x L') and singular values of a trajectory matrix."""

    eigenvectors: np.ndarray
    singular_values: np.ndarray

    @property
    def window(self) -> int:
        return self.eigenvectors.shape[0]

    def leading(self, rank: int) -> np.ndarray:
        return self.eigenvectors[:, :rank]


def trajectory(series: np.ndarray, window: int) -> np.ndarray:
    """The L x K Hankel matrix whose column j is series[j : j + L] (K = n - L + 1)."""
    if not 2 <= window <= len(series) - 1:
        raise SsaError(f"SSA window {window} needs 2 <= L < n (n = {len(series)})")
    return sliding_window_view(series, window).T


def decompose(series: np.ndarray, window: int) -> SsaBasis:
    """SVD of the trajectory matrix: X = U diag(s) V'."""
    if not np.all(np.isfinite(series)):
        raise SsaError("SSA input holds NaN or infinite values")
    eigenvectors, singular_values, _ = np.linalg.svd(trajectory(series, window), full_matrices=False)
    return SsaBasis(eigenvectors, singular_values)


def rank_for_variance(singular_values: np.ndarray, share: float) -> int:
    """Smallest r with sum(s[:r]^2) / sum(s^2) >= share (the eigentriples' explained variance)."""
    energy = np.cumsum(singular_values**2)
    if energy[-1] <= 0:
        raise SsaError("SSA input has zero variance")
    return int(np.searchsorted(energy / energy[-1], share) + 1)


def diagonal_average(matrix: np.ndarray) -> np.ndarray:
    """Hankelisation: the mean of each anti-diagonal of an L x K matrix, a series of L + K - 1."""
    rows, columns = matrix.shape
    total = np.zeros(rows + columns - 1)
    count = np.zeros(rows + columns - 1)
    for row in range(rows):
        total[row : row + columns] += matrix[row]
        count[row : row + columns] += 1
    return total / count


def reconstruct(series: np.ndarray, eigenvectors: np.ndarray) -> np.ndarray:
    """The series rebuilt from the given eigenvectors: diagonal average of U U' X."""
    window = eigenvectors.shape[0]
    x = trajectory(series, window)
    return diagonal_average(eigenvectors @ (eigenvectors.T @ x))


def tail_map(eigenvectors: np.ndarray) -> np.ndarray:
    """(L-1) x (2L-2) matrix giving the reconstruction of the last L-1 points from the last 2L-2.

    For a series of 2L-2 values the trajectory has K = L-1 columns; column k of U U' X adds the
    projector P = U U' at offset (k, k) of the series-to-series map, and diagonal averaging divides
    each position by how many (row, column) cells land on it.
    """
    window = eigenvectors.shape[0]
    span = 2 * window - 2
    projector = eigenvectors @ eigenvectors.T
    linear_map = np.zeros((span, span))
    counts = np.zeros(span)
    for column in range(window - 1):
        linear_map[column : column + window, column : column + window] += projector
        counts[column : column + window] += 1
    return (linear_map / counts[:, None])[-(window - 1):]


def recurrence(eigenvectors: np.ndarray) -> np.ndarray:
    """LRR coefficients a (length L-1): y[n] = a . y[n-L+1 : n] for the reconstructed signal.

    a = sum_i pi_i U_i[:-1] / (1 - nu^2), with pi_i the last coordinate of U_i, nu^2 = sum pi_i^2.
    """
    last = eigenvectors[-1, :]
    verticality = float(last @ last)
    if verticality >= 1.0 - 1e-9:
        raise SsaError("SSA recurrence undefined: the basis contains the last unit vector (nu^2 = 1)")
    return eigenvectors[:-1, :] @ last / (1.0 - verticality)


def forecast_map(coefficients: np.ndarray, steps: int) -> np.ndarray:
    """steps x (L-1) matrix: row j-1 maps the last L-1 reconstructed values to the j-step forecast."""
    lags = len(coefficients)
    # Each value is kept as a combination of the L-1 starting values: start with the identity.
    history = [row for row in np.eye(lags)]
    rows = []
    for _ in range(steps):
        nxt = coefficients @ np.array(history[-lags:])
        history.append(nxt)
        rows.append(nxt)
    return np.array(rows)


def lagged_windows(series: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Rows series[e - length + 1 : e + 1] for each end index e (len(ends) x length)."""
    starts = ends - length + 1
    if starts.min() < 0:  # a negative index would wrap around to the end of the series
        raise SsaError(f"an origin has fewer than {length} values before it")
    windows = sliding_window_view(series, length)
    return windows[starts]
