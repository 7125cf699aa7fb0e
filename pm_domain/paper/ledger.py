"""The book's path as the rows the paper tables hold: orders (placed once, never rewritten), the
amendments a re-run with other inputs records instead, fills, the book and its positions; and
the invariants the asset checks assert on them."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence

import numpy as np
import polars as pl

from pm_domain import calendar
from pm_domain.paper.book import BookPath
from pm_domain.paper.broker import ExchangeRules
from pm_domain.paper.reconcile import GAP_PARTS, Reconciliation

ORDER_TYPE = "market_on_open"
CENT = 0.005

ORDER_SCHEMA = {
    "date": pl.Date, "client_order_id": pl.String, "book": pl.String, "ticker": pl.String, "side": pl.String,
    "shares": pl.Float64, "order_type": pl.String, "fill_session": pl.Date, "target_weight": pl.Float64,
    "target_shares": pl.Float64, "held_shares": pl.Float64, "nav_at_placement": pl.Float64,
    "close_at_placement": pl.Float64, "placed_at": pl.Datetime("us"), "placed_before_fill_open": pl.Boolean,
    "signal_id": pl.String, "action": pl.String, "prompt_hash": pl.String, "llm_model": pl.String,
    "model_digest": pl.String, "weights_method": pl.String, "decision_hash": pl.String,
}
AMENDMENT_SCHEMA = {
    "date": pl.Date, "client_order_id": pl.String, "ticker": pl.String, "kind": pl.String,
    "placed_shares": pl.Float64, "proposed_shares": pl.Float64, "placed_decision_hash": pl.String,
    "proposed_decision_hash": pl.String, "reason": pl.String, "recorded_at": pl.Datetime("us"),
}
FILL_SCHEMA = {
    "date": pl.Date, "client_order_id": pl.String, "order_date": pl.Date, "ticker": pl.String, "side": pl.String,
    "ordered_shares": pl.Float64, "filled_shares": pl.Float64, "cut_shares": pl.Float64, "status": pl.String,
    "reason": pl.String, "reference_price": pl.Float64, "fill_price": pl.Float64, "fill_model": pl.String,
    "slippage_cost": pl.Float64, "commission": pl.Float64, "notional": pl.Float64,
}
POSITION_SCHEMA = {
    "date": pl.Date, "ticker": pl.String, "shares": pl.Float64, "average_cost": pl.Float64, "close": pl.Float64,
    "stale_close": pl.Boolean, "market_value": pl.Float64, "unrealized_pnl": pl.Float64, "weight": pl.Float64,
}
BOOK_SCHEMA = {
    "date": pl.Date, "book": pl.String, "inception": pl.Date, "initial_cash": pl.Float64, "cash": pl.Float64,
    "market_value": pl.Float64, "nav": pl.Float64, "positions": pl.Int64, "realized_pnl_day": pl.Float64,
    "realized_pnl": pl.Float64, "unrealized_pnl": pl.Float64, "commission_day": pl.Float64,
    "commission": pl.Float64, "slippage_day": pl.Float64, "slippage": pl.Float64, "costs_day": pl.Float64,
    "costs": pl.Float64, "turnover_day": pl.Float64, "turnover": pl.Float64, "fills": pl.Int64,
    "pending_orders": pl.Int64, "cut_orders": pl.Int64, "stale_closes": pl.Int64, "orders_placed": pl.Int64,
    "orders_placed_at": pl.Datetime("us"), "amendments": pl.Int64, "reference_nav": pl.Float64,
    "benchmark_nav": pl.Float64, "gap_bps": pl.Float64, **{f"gap_{part}_bps": pl.Float64 for part in GAP_PARTS},
}


def side(signed_shares: float) -> str:
    return "BUY" if signed_shares > 0 else "SELL"


def client_order_id(book: str, day: dt.date, ticker: str, signed_shares: float) -> str:
    """Deterministic: the same book, date, ticker and side always name the same order."""
    return f"{book}-{day:%Y%m%d}-{ticker}-{side(signed_shares)}"


def decision_hash(row: dict) -> str:
    """What the order was decided from: a different signal, model, prompt, weight, price or size
    gives a different hash."""
    fields = [row["ticker"], row["side"], round(row["shares"], 6), round(row["target_weight"] or 0.0, 10),
              row["close_at_placement"], row["signal_id"], row["prompt_hash"], row["model_digest"], row["weights_method"]]
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()[:16]


def order_rows(path: BookPath, k: int, orders: np.ndarray, targets: pl.DataFrame, book: str,
               placed_at: dt.datetime) -> pl.DataFrame:
    """The orders of session k (signed shares per ticker) with what they were decided from;
    `targets` are that date's target_weights rows."""
    day = path.sessions[k]
    fill_session = calendar.shift_trading_days(day, 1)
    by_ticker = {r["ticker"]: r for r in targets.iter_rows(named=True)}
    before_open = placed_at.replace(tzinfo=dt.UTC) < calendar.session_open(fill_session)
    rows = []
    for i in np.flatnonzero(orders != 0):
        ticker, target = path.tickers[i], by_ticker.get(path.tickers[i], {})
        row = {
            "date": day, "client_order_id": client_order_id(book, day, ticker, orders[i]), "book": book,
            "ticker": ticker, "side": side(orders[i]), "shares": float(abs(orders[i])), "order_type": ORDER_TYPE,
            "fill_session": fill_session, "target_weight": target.get("weight", 0.0),
            "target_shares": float(path.target_shares[k, i]), "held_shares": float(path.target_shares[k, i] - orders[i]),
            "nav_at_placement": float(path.nav[k]), "close_at_placement": float(path.marked_close[k, i]),
            "placed_at": placed_at, "placed_before_fill_open": before_open, "signal_id": target.get("signal_id"),
            "action": target.get("action"), "prompt_hash": target.get("prompt_hash"), "llm_model": target.get("llm_model"),
            "model_digest": target.get("model_digest"), "weights_method": target.get("method"),
        }
        rows.append(row | {"decision_hash": decision_hash(row)})
    return pl.DataFrame(rows, schema=ORDER_SCHEMA)


def amendments(placed: pl.DataFrame, proposed: pl.DataFrame, recorded_at: dt.datetime) -> pl.DataFrame:
    """One row per order a re-run would place differently from the placed one (changed, added or
    dropped), with the inputs that differ. The placed orders stand."""
    placed_by, proposed_by = ({r["ticker"]: r for r in f.iter_rows(named=True)} for f in (placed, proposed))
    rows = []
    for ticker in sorted(set(placed_by) | set(proposed_by)):
        old, new = placed_by.get(ticker), proposed_by.get(ticker)
        if old and new and old["decision_hash"] == new["decision_hash"]:
            continue
        kind = "changed" if old and new else ("added" if new else "dropped")
        signed = (lambda r: None if r is None else r["shares"] * (1 if r["side"] == "BUY" else -1))
        rows.append({
            "date": (old or new)["date"], "client_order_id": (old or new)["client_order_id"], "ticker": ticker,
            "kind": kind, "placed_shares": signed(old), "proposed_shares": signed(new),
            "placed_decision_hash": old and old["decision_hash"], "proposed_decision_hash": new and new["decision_hash"] or "none",
            "reason": _differences(old, new), "recorded_at": recorded_at,
        })
    return pl.DataFrame(rows, schema=AMENDMENT_SCHEMA)


def _differences(old: dict | None, new: dict | None) -> str:
    if old is None:
        return f"a re-run would add {new['side']} {new['shares']:g}; the date's orders were already placed"
    if new is None:
        return f"a re-run would not place {old['side']} {old['shares']:g}; the placed order stands"
    changed = [f"{name} {old[name]} -> {new[name]}" for name in (
        "side", "shares", "target_weight", "close_at_placement", "signal_id", "prompt_hash", "model_digest",
        "weights_method") if old[name] != new[name]]
    return "inputs changed: " + "; ".join(changed) + "; the placed order stands"


def fill_rows(path: BookPath, k: int, book: str, fill_model: str) -> pl.DataFrame:
    """What session k's fills did to the orders placed the session before."""
    day, order_day = path.sessions[k], calendar.shift_trading_days(path.sessions[k], -1)
    rows = []
    for i in np.flatnonzero(path.due_orders[k] != 0):
        ordered, filled, cut = (float(m[k, i]) for m in (path.due_orders, path.fill_shares, path.cut_shares))
        status, reason = _fill_status(bool(path.pending[k, i]), ordered, filled, cut, path.tickers[i], day)
        rows.append({
            "date": day, "client_order_id": client_order_id(book, order_day, path.tickers[i], ordered),
            "order_date": order_day, "ticker": path.tickers[i], "side": side(ordered), "ordered_shares": abs(ordered),
            "filled_shares": abs(filled), "cut_shares": abs(cut), "status": status, "reason": reason,
            "reference_price": _number(path.fill_reference[k, i]), "fill_price": _number(path.fill_price[k, i]),
            "fill_model": fill_model, "slippage_cost": float(path.fill_slippage[k, i]),
            "commission": float(path.fill_commission[k, i]), "notional": abs(filled) * (_number(path.fill_price[k, i]) or 0.0),
        })
    return pl.DataFrame(rows, schema=FILL_SCHEMA)


def _fill_status(pending: bool, ordered: float, filled: float, cut: float, ticker: str, day: dt.date) -> tuple[str, str | None]:
    if pending:
        return "pending", f"no open price for {ticker} on {day} yet"
    if filled == 0:
        return "refused", f"insufficient cash: all {abs(cut):g} shares refused (margin is off)"
    if cut:
        return "cut", f"insufficient cash: {abs(cut):g} of {abs(ordered):g} shares refused (margin is off)"
    return "filled", None


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def position_rows(path: BookPath, k: int) -> pl.DataFrame:
    held = np.flatnonzero(path.shares[k] != 0)
    shares, close, cost = path.shares[k, held], path.marked_close[k, held], path.average_cost[k, held]
    return pl.DataFrame({
        "date": [path.sessions[k]] * len(held), "ticker": [path.tickers[i] for i in held], "shares": shares,
        "average_cost": cost, "close": close, "stale_close": path.stale_close[k, held],
        "market_value": shares * close, "unrealized_pnl": shares * (close - cost), "weight": shares * close / path.nav[k],
    }, schema=POSITION_SCHEMA)


def book_rows(path: BookPath, ks: Sequence[int], book: str, inception: dt.date, initial_cash: float,
              reconciliation: Reconciliation, benchmark_nav: np.ndarray, orders_placed: dict[int, tuple[int, dt.datetime]],
              amendment_counts: dict[int, int]) -> pl.DataFrame:
    cumulative = {name: path.cumulative(name) for name in ("realized_pnl", "commission", "slippage", "turnover")}
    unrealized, turnover_day = path.unrealized, path.turnover_day
    rows = []
    for k in ks:
        fills = path.due_orders[k] != 0
        rows.append({
            "date": path.sessions[k], "book": book, "inception": inception, "initial_cash": initial_cash,
            "cash": path.cash[k], "market_value": path.market_value[k], "nav": path.nav[k],
            "positions": int(np.count_nonzero(path.shares[k])), "realized_pnl_day": path.realized_day[k],
            "realized_pnl": cumulative["realized_pnl"][k], "unrealized_pnl": unrealized[k],
            "commission_day": path.commission_day[k], "commission": cumulative["commission"][k],
            "slippage_day": path.slippage_day[k], "slippage": cumulative["slippage"][k],
            "costs_day": path.commission_day[k] + path.slippage_day[k],
            "costs": cumulative["commission"][k] + cumulative["slippage"][k],
            "turnover_day": turnover_day[k], "turnover": cumulative["turnover"][k],
            "fills": int(np.count_nonzero(path.fill_shares[k])), "pending_orders": int(np.count_nonzero(path.pending[k] & fills)),
            "cut_orders": int(np.count_nonzero(path.cut_shares[k])), "stale_closes": int(np.count_nonzero(path.stale_close[k])),
            "orders_placed": orders_placed[k][0], "orders_placed_at": orders_placed[k][1],
            "amendments": amendment_counts.get(k, 0), "reference_nav": reconciliation.reference_nav[k],
            "benchmark_nav": benchmark_nav[k] * initial_cash, "gap_bps": reconciliation.gap_bps[k],
            **{f"gap_{part}_bps": reconciliation.parts_bps[part][k] for part in GAP_PARTS},
        })
    return pl.DataFrame(rows, schema=BOOK_SCHEMA)


def nav_identity_breaks(book: pl.DataFrame, positions: pl.DataFrame) -> pl.DataFrame:
    """Dates where cash + sum shares x close differs from the NAV by a cent or more."""
    value = positions.group_by("date").agg((pl.col("shares") * pl.col("close")).sum().alias("held_value"))
    return (book.join(value, on="date", how="left").with_columns(pl.col("held_value").fill_null(0.0))
            .with_columns((pl.col("cash") + pl.col("held_value") - pl.col("nav")).alias("difference"))
            .filter(pl.col("difference").abs() >= CENT).select("date", "cash", "held_value", "nav", "difference"))


def pnl_identity_breaks(book: pl.DataFrame) -> pl.DataFrame:
    """Dates where NAV != initial cash + realized + unrealized - commission by a cent or more
    (slippage is inside the fill prices, so inside the P&L)."""
    return (book.with_columns((pl.col("initial_cash") + pl.col("realized_pnl") + pl.col("unrealized_pnl")
                               - pl.col("commission") - pl.col("nav")).alias("difference"))
            .filter(pl.col("difference").abs() >= CENT).select("date", "nav", "difference"))


def fractional_positions(positions: pl.DataFrame) -> pl.DataFrame:
    return positions.filter((pl.col("shares") - pl.col("shares").round(0)).abs() > 1e-9)


def fills_not_after_order(fills: pl.DataFrame) -> pl.DataFrame:
    return fills.filter(pl.col("date") <= pl.col("order_date"))
