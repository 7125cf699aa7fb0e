"""The paper book against the backtest of the same weights, and the gap split into its parts.

The reference is the portfolio backtest's arithmetic (`backtest.strategy_returns`) on the book's
own target weights: the weights decided at a session's close earn the next session, n_d = sum_i
w_i,d-1 r_i,d - c sum_i |w_i,d-1 - w_i,d-2|, with c the book's slippage plus commission bps. It is
the frictionless limit of the book: fractional shares, no costs, every order filled at the close
it was decided at; there the book's NAV equals the reference's equity (tested to 1e-9).

Each part is the change in NAV (as a share of the initial cash, in bps) from removing one
friction, in this order, so the parts add up to the gap exactly:
- `placed_orders`: the placed orders against the ones today's inputs would place (amendments);
- `costs`: the book's slippage and commission, less the reference's bps costs;
- `rounding`: whole shares against fractional ones;
- `pending`: orders left pending (no open price) or cut for want of cash, against all filled;
- `timing`: the next session's open against the close the order was decided at;
- `residual`: what the frictionless book and the reference still differ by (rounding error).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl

from pm_domain import performance as perf
from pm_domain.backtest import strategy_returns
from pm_domain.paper.book import BookStart, simulate
from pm_domain.paper.broker import ExchangeRules

GAP_PARTS = ("placed_orders", "costs", "rounding", "pending", "timing", "residual")


def close_returns(closes: np.ndarray) -> np.ndarray:
    """Session returns from the closes (S x T), 0 on a session or the one after with no close
    (the book marks a missing close at the last one known)."""
    carried = closes.copy()
    for k in range(1, len(carried)):
        carried[k] = np.where(np.isfinite(carried[k]), carried[k], carried[k - 1])
    returns = np.zeros_like(carried)
    with np.errstate(divide="ignore", invalid="ignore"):
        returns[1:] = carried[1:] / carried[:-1] - 1.0
    return np.nan_to_num(returns, nan=0.0, posinf=0.0, neginf=0.0)


def reference_equity(weights: np.ndarray, closes: np.ndarray, cost_bps: float) -> np.ndarray:
    """Equity (1.0 at the first close) of the weights decided at each close earning the next
    session, charged cost_bps per unit of weight changed."""
    positions = np.zeros_like(weights)
    positions[1:] = np.nan_to_num(weights[:-1])
    net = strategy_returns(positions.T, close_returns(closes).T, cost_bps * 1e-4).sum(axis=0)
    net[0] = 0.0
    return perf.equity_curve(net)


def benchmark_equity(closes: np.ndarray) -> np.ndarray:
    """The equal-weight buy-and-hold of the tickers, rebalanced daily (mean session return)."""
    returns = close_returns(closes)
    known = np.isfinite(closes)
    known[1:] &= known[:-1]
    daily = np.divide((returns * known).sum(axis=1), known.sum(axis=1), out=np.zeros(len(closes)),
                      where=known.sum(axis=1) > 0)
    daily[0] = 0.0
    return perf.equity_curve(daily)


@dataclass(frozen=True)
class Reconciliation:
    """Per session: the reference's NAV, the gap (book minus reference) and its parts, in bps of
    the initial cash."""

    reference_nav: np.ndarray
    gap_bps: np.ndarray
    parts_bps: dict[str, np.ndarray]


def reconcile(book_nav: np.ndarray, sessions, tickers, opens: np.ndarray, closes: np.ndarray,
              weights: np.ndarray, rules: ExchangeRules, initial_cash: float,
              fresh_nav: np.ndarray | None = None) -> Reconciliation:
    """Split book_nav's gap to the reference over the same sessions, from the book's start.
    `fresh_nav` is the book played with the orders today's inputs place, when the caller has it
    (a book with no date placed before this run: book_nav itself)."""
    new = BookStart.new(initial_cash, len(tickers))

    def nav(step_rules: ExchangeRules) -> np.ndarray:
        return simulate(sessions, tickers, opens, closes, weights, step_rules, new).nav / initial_cash

    costs = rules.costs
    fresh = nav(rules) if fresh_nav is None else fresh_nav / initial_cash
    free = nav(dataclasses.replace(rules, costs=costs.without_costs()))
    fractional = dataclasses.replace(rules, costs=costs.without_costs(), fractional_shares=True)
    fractional_nav = nav(fractional)
    # Every order filled: the missing open priced at the order's own close, cash not binding.
    all_filled = _all_filled_nav(sessions, tickers, opens, closes, weights, fractional, new) / initial_cash
    at_close = nav(dataclasses.replace(fractional, allow_margin=True, fill_at="signal_close"))
    reference = reference_equity(weights, closes, costs.slippage_bps + costs.commission_bps)
    reference_free = reference_equity(weights, closes, 0.0)
    book = book_nav / initial_cash
    parts = {
        "placed_orders": book - fresh,
        "costs": (fresh - free) - (reference - reference_free),
        "rounding": free - fractional_nav,
        "pending": fractional_nav - all_filled,
        "timing": all_filled - at_close,
        "residual": at_close - reference_free,
    }
    return Reconciliation(reference * initial_cash, (book - reference) * 1e4,
                          {name: values * 1e4 for name, values in parts.items()})


def _all_filled_nav(sessions, tickers, opens, closes, weights, rules: ExchangeRules, start: BookStart) -> np.ndarray:
    """The book with every order filled: a missing open is taken at the previous close (the price
    the order was decided at) and margin is allowed, so no order is pending or cut."""
    previous_close = np.vstack([start.last_close[None, :], closes[:-1]])
    filled_opens = np.where(np.isfinite(opens), opens, previous_close)
    return simulate(sessions, tickers, filled_opens, closes, weights,
                    dataclasses.replace(rules, allow_margin=True), start).nav


def alert_rows(book: pl.DataFrame, fills: pl.DataFrame, threshold_bps: float) -> pl.DataFrame:
    """What needs a person: dates whose paper NAV is further than `threshold_bps` from the
    reference, and orders still pending or refused after their fill session, when the book has
    moved past it. Columns: date, kind, asset, message."""
    import polars as pl

    rows = []
    for r in book.filter(pl.col("gap_bps").abs() > threshold_bps).iter_rows(named=True):
        parts = ", ".join(f"{part} {r[f'gap_{part}_bps']:+.1f}" for part in GAP_PARTS if abs(r[f"gap_{part}_bps"]) >= 0.05)
        rows.append({"date": r["date"], "kind": "reconciliation_gap", "asset": "paper_book",
                     "message": f"paper NAV {r['nav']:,.2f} is {r['gap_bps']:+.1f} bps of the initial cash from the backtest "
                                f"of the same weights ({r['reference_nav']:,.2f}), past {threshold_bps:g} bps; parts: {parts}"})
    last = book["date"].max() if book.height else None
    stuck = fills.filter(pl.col("status").is_in(["pending", "refused"]) & (pl.col("date") < last)) if last else fills.clear()
    for r in stuck.iter_rows(named=True):
        rows.append({"date": r["date"], "kind": "unfilled_order", "asset": "paper_fills",
                     "message": f"order {r['client_order_id']} ({r['side']} {r['ordered_shares']:g} {r['ticker']}, placed "
                                f"{r['order_date']}) is still {r['status']} after its session {r['date']}: {r['reason']}"})
    return pl.DataFrame(rows, schema={"date": pl.Date, "kind": pl.String, "asset": pl.String, "message": pl.String})
