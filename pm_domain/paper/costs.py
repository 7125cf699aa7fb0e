"""What a fill costs: slippage against the reference price and an explicit commission.

There is no free default: a book that trades pays per share (with a minimum per order) and bps
of the notional, and every fill moves against the trader by `slippage_bps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BPS = 1e-4


@dataclass(frozen=True)
class CostModel:
    slippage_bps: float = 5.0
    commission_per_share: float = 0.005
    commission_minimum: float = 1.0  # per order that fills at least one share
    commission_bps: float = 0.0

    def __post_init__(self) -> None:
        for name in ("slippage_bps", "commission_per_share", "commission_minimum", "commission_bps"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    @property
    def free(self) -> bool:
        return not any((self.slippage_bps, self.commission_per_share, self.commission_minimum, self.commission_bps))

    def without_costs(self) -> CostModel:
        return CostModel(0.0, 0.0, 0.0, 0.0)


def fill_prices(reference: np.ndarray, signed_shares: np.ndarray, slippage_bps: float) -> np.ndarray:
    """A buy pays reference x (1 + slippage), a sell receives reference x (1 - slippage)."""
    return reference * (1.0 + np.sign(signed_shares) * slippage_bps * BPS)


def commissions(signed_shares: np.ndarray, prices: np.ndarray, model: CostModel) -> np.ndarray:
    """max(minimum, per_share x |shares| + bps x notional) per order that fills; 0 where none does."""
    quantity = np.abs(signed_shares)
    notional = quantity * np.where(np.isnan(prices), 0.0, prices)
    charged = np.maximum(model.commission_minimum, model.commission_per_share * quantity + model.commission_bps * BPS * notional)
    return np.where(quantity > 0, charged, 0.0)
