"""The book's path over sessions: each session's fills (the orders of the session before, at its
open), the book marked at the close, and the orders that session's targets ask for.

Session k, in order:
1. the orders placed at k-1's close fill at k's open (`SimulatedExchange.fills`);
2. the book is marked at k's close: market value = sum shares x close (the last known close where
   k has none, flagged stale), NAV = cash + market value;
3. the orders of k move the holdings to the targets: target shares = weight x NAV / close, whole
   shares rounded toward zero unless fractional. A session whose orders were already placed
   (`placed`) keeps them exactly; what the inputs would place now is returned beside them
   (`fresh_orders`), for the amendments.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from pm_domain.paper.broker import ExchangeRules, SimulatedExchange


@dataclass(frozen=True)
class BookStart:
    """The book at the close before its first session (a new book: cash only)."""

    cash: float
    shares: np.ndarray
    average_cost: np.ndarray
    last_close: np.ndarray
    open_orders: np.ndarray  # signed shares placed at that close, due at the first session
    open_orders_close: np.ndarray
    cumulative: dict[str, float] = field(default_factory=dict)

    @property
    def nav(self) -> float:
        return self.cash + float(np.nansum(self.shares * self.last_close))

    @classmethod
    def new(cls, cash: float, tickers: int) -> BookStart:
        if not np.isfinite(cash) or cash <= 0:
            raise ValueError(f"initial_cash must be a positive amount, got {cash}")
        zeros = np.zeros(tickers)
        return cls(cash, zeros, zeros, np.full(tickers, np.nan), zeros, np.full(tickers, np.nan))


CUMULATIVE = ("realized_pnl", "commission", "slippage", "turnover")


@dataclass
class BookPath:
    """Arrays over sessions (S) and sessions x tickers (S x T)."""

    sessions: list[dt.date]
    tickers: tuple[str, ...]
    cash: np.ndarray
    market_value: np.ndarray
    nav: np.ndarray
    realized_day: np.ndarray
    commission_day: np.ndarray
    slippage_day: np.ndarray
    traded_notional_day: np.ndarray
    shares: np.ndarray
    average_cost: np.ndarray
    marked_close: np.ndarray
    stale_close: np.ndarray
    fill_shares: np.ndarray
    fill_price: np.ndarray
    fill_reference: np.ndarray
    fill_commission: np.ndarray
    fill_slippage: np.ndarray
    pending: np.ndarray
    cut_shares: np.ndarray
    due_orders: np.ndarray  # the orders each session's fills worked on (placed the session before)
    orders: np.ndarray  # placed at each session's close
    fresh_orders: np.ndarray
    target_shares: np.ndarray
    start_cumulative: dict[str, float]
    start_nav: float

    def cumulative(self, name: str) -> np.ndarray:
        daily = {"realized_pnl": self.realized_day, "commission": self.commission_day,
                 "slippage": self.slippage_day, "turnover": self.turnover_day}[name]
        return self.start_cumulative.get(name, 0.0) + np.cumsum(daily)

    @property
    def turnover_day(self) -> np.ndarray:
        """Traded notional over the NAV at the close before."""
        previous = np.concatenate([[self.start_nav], self.nav[:-1]])
        return np.divide(self.traded_notional_day, previous, out=np.zeros_like(previous), where=previous != 0)

    @property
    def unrealized(self) -> np.ndarray:
        return np.nansum(self.shares * (self.marked_close - self.average_cost), axis=1)


def order_shares(weights: np.ndarray, nav: float, closes: np.ndarray, held: np.ndarray,
                 rules: ExchangeRules) -> tuple[np.ndarray, np.ndarray]:
    """(target shares, signed order shares) that move `held` to `weights` of `nav` at `closes`;
    no order where the close is unknown."""
    known = np.isfinite(closes) & (closes > 0)
    target = np.where(known, rules.shares(np.where(known, weights * nav / np.where(known, closes, 1.0), 0.0)), held)
    orders = np.where(np.abs(target - held) > 1e-12, target - held, 0.0)
    return target, orders


def simulate(sessions: list[dt.date], tickers: tuple[str, ...], opens: np.ndarray, closes: np.ndarray,
             weights: np.ndarray, rules: ExchangeRules, start: BookStart,
             placed: np.ndarray | None = None) -> BookPath:
    """The book over `sessions` (S x T price and weight matrices; NaN weight = flat). `placed`
    holds each session's already placed orders (NaN rows: not placed yet)."""
    n, t = closes.shape
    exchange = SimulatedExchange(rules, start.cash, start.shares, start.average_cost)
    if np.any(start.open_orders != 0):
        exchange.submit(-1, start.open_orders, start.open_orders_close)
    matrix = {name: np.zeros((n, t)) for name in (
        "shares", "average_cost", "marked_close", "fill_shares", "fill_commission", "fill_slippage",
        "cut_shares", "due_orders", "orders", "fresh_orders", "target_shares")}
    for name in ("fill_price", "fill_reference"):
        matrix[name] = np.full((n, t), np.nan)
    stale, pending = np.zeros((n, t), bool), np.zeros((n, t), bool)
    daily = {name: np.zeros(n) for name in ("cash", "market_value", "nav", "realized_day", "commission_day",
                                             "slippage_day", "traded_notional_day")}
    last_close = start.last_close.copy()
    weights = np.where(np.isnan(weights), 0.0, weights)
    for k in range(n):
        _record_fills(exchange.fills(k, opens[k]) if rules.fill_at == "next_open" else None, k, matrix, daily, pending)
        has_close = np.isfinite(closes[k])
        stale[k] = ~has_close & (exchange.shares != 0)
        last_close = np.where(has_close, closes[k], last_close)
        nav = exchange.cash + _held_value(exchange.shares, last_close)
        target, fresh = order_shares(weights[k], nav, np.where(has_close, closes[k], np.nan), exchange.shares, rules)
        chosen = fresh if placed is None or np.isnan(placed[k, 0]) else placed[k]
        matrix["target_shares"][k], matrix["fresh_orders"][k], matrix["orders"][k] = target, fresh, chosen
        exchange.submit(k, chosen, closes[k])
        if rules.fill_at == "signal_close":
            _record_fills(exchange.fills(k, opens[k]), k, matrix, daily, pending)
        matrix["shares"][k], matrix["average_cost"][k] = exchange.positions()
        matrix["marked_close"][k] = last_close
        daily["cash"][k] = exchange.cash
        daily["market_value"][k] = _held_value(exchange.shares, last_close)
        daily["nav"][k] = daily["cash"][k] + daily["market_value"][k]
    return BookPath(list(sessions), tuple(tickers), **daily, stale_close=stale, pending=pending,
                    start_cumulative=dict(start.cumulative), start_nav=start.nav, **matrix)


def _held_value(shares: np.ndarray, closes: np.ndarray) -> float:
    held = shares != 0
    return float(shares[held] @ closes[held]) if held.any() else 0.0


def _record_fills(fills, k: int, matrix: dict, daily: dict, pending: np.ndarray) -> None:
    if fills is None:
        return
    matrix["fill_shares"][k] += fills.shares
    matrix["fill_price"][k] = np.where(fills.shares != 0, fills.prices, matrix["fill_price"][k])
    matrix["fill_reference"][k] = np.where(np.isfinite(fills.reference), fills.reference, matrix["fill_reference"][k])
    matrix["fill_commission"][k] += fills.commission
    matrix["fill_slippage"][k] += fills.slippage
    matrix["cut_shares"][k] += fills.cut_shares
    matrix["due_orders"][k] += fills.due
    pending[k] |= fills.pending
    daily["realized_day"][k] += float(fills.realized.sum())
    daily["commission_day"][k] += float(fills.commission.sum())
    daily["slippage_day"][k] += float(fills.slippage.sum())
    daily["traded_notional_day"][k] += float(np.abs(fills.shares) @ np.where(fills.shares != 0, fills.prices, 0.0))
