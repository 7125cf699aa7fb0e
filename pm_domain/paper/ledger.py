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


def order_rows(path: BookPath, ks: Sequence[int], orders: np.ndarray, targets: pl.DataFrame, book: str,
               placed_at: dt.datetime) -> pl.DataFrame:
    """The orders placed at the close of sessions `ks` (`orders`: signed shares, sessions x
    tickers) with what they were decided from; `targets` are those dates' target_weights rows."""
    chosen = np.zeros(len(path.sessions), bool)
    chosen[list(ks)] = True
    k, i = np.nonzero((orders != 0) & chosen[:, None])
    if not len(k):
        return pl.DataFrame(schema=ORDER_SCHEMA)
    signed = orders[k, i]
    fill_sessions = [*path.sessions[1:], calendar.shift_trading_days(path.sessions[-1], 1)]
    opens = {day: calendar.session_open(day) for day in {fill_sessions[j] for j in set(k.tolist())}}
    before_open = placed_at.replace(tzinfo=dt.UTC)
    frame = pl.DataFrame({
        "date": [path.sessions[j] for j in k], "ticker": [path.tickers[j] for j in i],
        "side": np.where(signed > 0, "BUY", "SELL"), "shares": np.abs(signed),
        "fill_session": [fill_sessions[j] for j in k], "target_shares": path.target_shares[k, i],
        "held_shares": path.target_shares[k, i] - signed, "nav_at_placement": path.nav[k],
        "close_at_placement": path.marked_close[k, i],
    }).with_columns(
        pl.format("{}-{}-{}-{}", pl.lit(book), pl.col("date").dt.strftime("%Y%m%d"), pl.col("ticker"), pl.col("side"))
        .alias("client_order_id"), pl.lit(book).alias("book"), pl.lit(ORDER_TYPE).alias("order_type"),
        pl.lit(placed_at).cast(pl.Datetime("us")).alias("placed_at"),
        pl.col("fill_session").replace_strict({d: before_open < at for d, at in opens.items()}, return_dtype=pl.Boolean)
        .alias("placed_before_fill_open"),
    )
    decided = (targets.select("date", "ticker", pl.col("weight").alias("target_weight"), "signal_id", "action", "prompt_hash",
                              "llm_model", "model_digest", pl.col("method").alias("weights_method"))
               if targets.height else pl.DataFrame(schema={c: ORDER_SCHEMA[c] for c in (
                   "date", "ticker", "target_weight", "signal_id", "action", "prompt_hash", "llm_model", "model_digest",
                   "weights_method")}))
    frame = frame.join(decided, on=["date", "ticker"], how="left").with_columns(pl.col("target_weight").fill_null(0.0))
    return frame.with_columns(decision_hashes(frame).alias("decision_hash")).select(
        [pl.col(c).cast(t) for c, t in ORDER_SCHEMA.items()])


def decision_hashes(orders: pl.DataFrame) -> pl.Series:
    """What each order was decided from: a different signal, model, prompt, weight, price or size
    gives a different hash."""
    return pl.Series([decision_hash(row) for row in orders.iter_rows(named=True)], dtype=pl.String)


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


def fill_rows(path: BookPath, ks: Sequence[int], book: str, fill_model: str) -> pl.DataFrame:
    """What the fills of sessions `ks` did to the orders placed the session before each."""
    chosen = np.zeros(len(path.sessions), bool)
    chosen[list(ks)] = True
    k, i = np.nonzero((path.due_orders != 0) & chosen[:, None])
    if not len(k):
        return pl.DataFrame(schema=FILL_SCHEMA)
    order_sessions = [calendar.shift_trading_days(path.sessions[0], -1), *path.sessions[:-1]]
    ordered, filled, cut = path.due_orders[k, i], path.fill_shares[k, i], path.cut_shares[k, i]
    price = path.fill_price[k, i]
    statuses = [_fill_status(bool(p), o, f, c, path.tickers[j], path.sessions[d])
                for p, o, f, c, j, d in zip(path.pending[k, i], ordered, filled, cut, i, k, strict=True)]
    frame = pl.DataFrame({
        "date": [path.sessions[j] for j in k], "order_date": [order_sessions[j] for j in k],
        "ticker": [path.tickers[j] for j in i], "side": np.where(ordered > 0, "BUY", "SELL"),
        "ordered_shares": np.abs(ordered), "filled_shares": np.abs(filled), "cut_shares": np.abs(cut),
        "status": [s for s, _ in statuses], "reason": pl.Series([r for _, r in statuses], dtype=pl.String),
        "reference_price": _nullable(path.fill_reference[k, i]), "fill_price": _nullable(price),
        "slippage_cost": path.fill_slippage[k, i], "commission": path.fill_commission[k, i],
        "notional": np.abs(filled) * np.where(np.isfinite(price), price, 0.0),
    }).with_columns(
        pl.format("{}-{}-{}-{}", pl.lit(book), pl.col("order_date").dt.strftime("%Y%m%d"), pl.col("ticker"), pl.col("side"))
        .alias("client_order_id"), pl.lit(fill_model).alias("fill_model"))
    return frame.select([pl.col(c).cast(t) for c, t in FILL_SCHEMA.items()])


def _nullable(values: np.ndarray) -> pl.Series:
    return pl.Series(values).fill_nan(None)


def _fill_status(pending: bool, ordered: float, filled: float, cut: float, ticker: str, day: dt.date) -> tuple[str, str | None]:
    if pending:
        return "pending", f"no open price for {ticker} on {day} yet"
    if filled == 0:
        return "refused", f"insufficient cash: all {abs(cut):g} shares refused (margin is off)"
    if cut:
        return "cut", f"insufficient cash: {abs(cut):g} of {abs(ordered):g} shares refused (margin is off)"
    return "filled", None


def position_rows(path: BookPath, ks: Sequence[int]) -> pl.DataFrame:
    """The holdings at the close of sessions `ks`."""
    chosen = np.zeros(len(path.sessions), bool)
    chosen[list(ks)] = True
    k, i = np.nonzero((path.shares != 0) & chosen[:, None])
    shares, close, cost = path.shares[k, i], path.marked_close[k, i], path.average_cost[k, i]
    return pl.DataFrame({
        "date": [path.sessions[j] for j in k], "ticker": [path.tickers[j] for j in i], "shares": shares,
        "average_cost": cost, "close": close, "stale_close": path.stale_close[k, i],
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
