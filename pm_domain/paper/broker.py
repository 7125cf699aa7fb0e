"""The broker boundary, and the simulated exchange that is the default behind it.

A broker takes the day's orders (`submit`), can `cancel` the ones not yet filled, reports the
`fills` of a session and the `positions` it holds. The book's code speaks only this interface,
so a real broker's paper endpoint can be added behind it; none is shipped, because none can be
reached and exercised from here. Orders and positions travel as share arrays aligned with the
book's tickers (a real adapter maps them to symbols and order ids).

The simulated exchange fills a session's due orders at a reference price (the session's open for
a market-on-open order) moved by slippage, charges the commission, sells before it buys, and,
without margin, cuts buys to the cash there is (`cut_shares`, with the reason). An order whose
reference price is missing stays `pending`: it is a day order, so the next orders are sized from
what was actually held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from pm_domain.paper.costs import CostModel, commissions, fill_prices

# next_open: market-on-open at the next session (the paper book). signal_close: filled at the close
# the order was decided at, which no one can trade; only the reconciliation uses it, as the
# frictionless limit the backtest assumes.
FillAt = Literal["next_open", "signal_close"]
FILL_AT: tuple[FillAt, ...] = ("next_open", "signal_close")
# Whole shares are rounded toward zero, so a target never buys past its weight.
SHARE_EPSILON = 1e-9


@dataclass(frozen=True)
class ExchangeRules:
    costs: CostModel = field(default_factory=CostModel)
    fractional_shares: bool = False
    allow_margin: bool = False
    fill_at: FillAt = "next_open"

    def __post_init__(self) -> None:
        if self.fill_at not in FILL_AT:
            raise ValueError(f"fill_at must be one of {FILL_AT}, got {self.fill_at!r}")

    def shares(self, amounts: np.ndarray) -> np.ndarray:
        return amounts if self.fractional_shares else np.trunc(amounts + np.sign(amounts) * SHARE_EPSILON)


@dataclass
class SessionFills:
    """What one session's fills did, per ticker (0 where nothing filled)."""

    shares: np.ndarray  # signed
    prices: np.ndarray  # NaN where nothing filled
    reference: np.ndarray
    commission: np.ndarray
    slippage: np.ndarray  # |shares| x |price - reference|
    realized: np.ndarray
    pending: np.ndarray  # bool: due, with no reference price
    cut_shares: np.ndarray  # signed shares refused for want of cash
    due: np.ndarray  # the signed shares the session's orders asked for


class Broker(Protocol):
    def submit(self, session: int, signed_shares: np.ndarray, decided_at_close: np.ndarray) -> None: ...
    def cancel(self, session: int) -> np.ndarray: ...
    def fills(self, session: int, opens: np.ndarray) -> SessionFills: ...
    def positions(self) -> tuple[np.ndarray, np.ndarray]: ...


class SimulatedExchange:
    """Cash, shares and average cost per ticker, and the orders due at each session."""

    def __init__(self, rules: ExchangeRules, cash: float, shares: np.ndarray, average_cost: np.ndarray):
        self.rules = rules
        self.cash = float(cash)
        self.shares = np.asarray(shares, dtype=np.float64).copy()
        self.average_cost = np.asarray(average_cost, dtype=np.float64).copy()
        self._due: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def submit(self, session: int, signed_shares: np.ndarray, decided_at_close: np.ndarray) -> None:
        """Orders decided at `session`'s close, due at the next session (next_open) or at once."""
        due = session + 1 if self.rules.fill_at == "next_open" else session
        self._due[due] = (np.asarray(signed_shares, dtype=np.float64), np.asarray(decided_at_close, dtype=np.float64))

    def cancel(self, session: int) -> np.ndarray:
        """Withdraw the orders due at `session`; returns their signed shares."""
        orders, _ = self._due.pop(session, (np.zeros_like(self.shares), None))
        return orders

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        return self.shares.copy(), self.average_cost.copy()

    def fills(self, session: int, opens: np.ndarray) -> SessionFills:
        orders, decided_at = self._due.pop(session, (np.zeros_like(self.shares), np.full_like(self.shares, np.nan)))
        reference = opens if self.rules.fill_at == "next_open" else decided_at
        known = np.isfinite(reference)
        pending = (orders != 0) & ~known
        wanted = np.where(pending, 0.0, orders)
        base = np.where(known, reference, 0.0)
        filled = self._affordable(wanted, base)
        traded = fill_prices(base, filled, self.rules.costs.slippage_bps) * (filled != 0)
        commission = commissions(filled, traded, self.rules.costs)
        realized = self._apply(filled, traded)
        self.cash -= float(filled @ traded + commission.sum())
        return SessionFills(filled, np.where(filled != 0, traded, np.nan), np.where(orders != 0, reference, np.nan),
                            commission, np.abs(filled) * np.abs(traded - base) * (filled != 0), realized, pending,
                            wanted - filled, orders)

    def _cost(self, signed_shares: np.ndarray, reference: np.ndarray) -> float:
        """Cash the trades take (negative: bring), commission included; `reference` has no NaN."""
        prices = fill_prices(reference, signed_shares, self.rules.costs.slippage_bps)
        return float(signed_shares @ prices + commissions(signed_shares, prices, self.rules.costs).sum())

    def _affordable(self, wanted: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Sells in full; buys scaled down together until cash pays for them (no margin)."""
        if self.rules.allow_margin or not np.any(wanted > 0):
            return wanted
        sells, buys = np.minimum(wanted, 0.0), np.maximum(wanted, 0.0)
        cash_after_sells = self.cash - self._cost(sells, reference)
        total = self._cost(buys, reference)
        if total <= cash_after_sells + 1e-9:
            return wanted
        scale = max(cash_after_sells, 0.0) / total
        for _ in range(60):
            scaled = self.rules.shares(buys * scale)
            if self._cost(scaled, reference) <= cash_after_sells + 1e-9:
                return sells + scaled
            scale *= 0.999
        return sells

    def _apply(self, signed_shares: np.ndarray, prices: np.ndarray) -> np.ndarray:
        """Move shares and average cost; returns the P&L realised by closing shares."""
        held, cost, q = self.shares, self.average_cost, signed_shares
        after = held + q
        adding = (held == 0) | (np.sign(q) == np.sign(held))
        closing = ~adding & (q != 0)
        closed = np.where(closing, np.minimum(np.abs(q), np.abs(held)), 0.0)
        realized = closed * (prices - cost) * np.sign(held)
        with np.errstate(divide="ignore", invalid="ignore"):
            blended = np.where(after != 0, (held * cost + q * prices) / after, 0.0)
        flipped = closing & (np.abs(q) > np.abs(held))
        self.average_cost = np.where(q == 0, cost, np.where(adding, blended, np.where(
            flipped, prices, np.where(np.abs(after) < SHARE_EPSILON, 0.0, cost))))
        self.shares = np.where(np.abs(after) < SHARE_EPSILON, 0.0, after)
        return realized
