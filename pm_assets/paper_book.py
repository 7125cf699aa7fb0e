"""`paper_fills`, `paper_book` and `paper_orders`: the paper book, one step per range of dates.

A book is path-dependent (each night's orders are sized from the holdings the previous night's
orders left), so the three are one multi-asset computed date by date in that order: the fills at
d's open of the orders placed at d-1's close, the book marked at d's close, then d's orders.
Dagster's asset graph admits no cycle between assets, so the link from d-1's orders to d's fills
is the broker's, as it would be with a real one: paper_orders -> broker -> paper_fills; the
graph draws paper_fills -> paper_book -> paper_orders, and paper_book on its own previous date.

Each run re-plays the book from its inception (its first date) with every order already placed
kept exactly as placed, and writes the run's dates: placed orders are never rewritten, a re-run
with other inputs records an amendment instead (pm_domain/paper/ledger.py).
"""

import datetime as dt
import time

import numpy as np
import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    multi_asset,
)
from dagster_duckdb import DuckDBResource

from pm_assets.inputs import MissingInputsError
from pm_assets.metadata import preview_markdown
from pm_assets.partitions import trading_day_partitions
from pm_assets.target_weights import PAPER_GROUP, SAME_DATE
from pm_domain import calendar, settings
from pm_domain.paper import ledger
from pm_domain.paper.book import BookPath, BookStart, simulate
from pm_domain.paper.reconcile import GAP_PARTS, benchmark_equity, reconcile
from pm_domain.plots import paper_nav_png, png_markdown
from pm_resources.broker import SimulatedBrokerResource
from pm_resources.store import LedgerRows, PartitionRows, query, table_exists, write_partitions

PREVIOUS_DATE = TimeWindowPartitionMapping(start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True)
KINDS = {"duckdb", "polars"}
CHECKS = {
    "paper_fills": [
        ("fills_after_order_session", True, "blocks: a fill dated on or before the session its order was placed"),
        ("fills_complete", False, "warns: an order left pending (no open price yet) or cut for want of cash"),
    ],
    "paper_book": [
        ("nav_identity", True, "blocks: cash + sum of shares x close differs from the NAV by a cent or more"),
        ("pnl_identity", True, "blocks: NAV differs from initial cash + realized + unrealized P&L - commission by a cent or more"),
        ("cash_non_negative", True, "blocks: cash below zero while margin is off"),
        ("whole_shares", True, "blocks: a fractional position while fractional shares are off"),
        ("reconciliation_gap", False, "warns: the paper NAV is further from the backtest of the same weights than "
                                      "PM_PAPER_ALERT_BPS (default 100 bps of the initial cash)"),
    ],
    "paper_orders": [
        ("orders_unchanged", False, "warns: a re-run would have placed other orders for an already placed date "
                                    "(the placed orders stand; the amendments table says what changed)"),
    ],
}


class BookError(ValueError):
    """The book cannot be played over the asked dates; the message says what to do."""


@multi_asset(
    name="paper_trading",
    specs=[
        AssetSpec("paper_fills", group_name=PAPER_GROUP, kinds=KINDS, deps=[AssetDep("prices", partition_mapping=SAME_DATE)],
                  description="Per session: the orders placed at the previous close, filled at this session's open "
                  "x (1 +/- slippage) plus commission, cut to the cash there is, or pending with the reason."),
        AssetSpec("paper_book", group_name=PAPER_GROUP, kinds=KINDS,
                  deps=["paper_fills", AssetDep("paper_book", partition_mapping=PREVIOUS_DATE), AssetDep("prices", partition_mapping=SAME_DATE)],
                  description="Per session: cash, positions, NAV at the close, realized and unrealized P&L, turnover and "
                  "costs (day and cumulative), and the gap to the backtest of the same weights split into its parts."),
        AssetSpec("paper_orders", group_name=PAPER_GROUP, kinds=KINDS, deps=["target_weights", "paper_book"],
                  description="Per session: the market-on-open orders that move the holdings to the day's target weights, "
                  "with a deterministic client_order_id, placed_at and what they were decided from. Never rewritten."),
    ],
    check_specs=[AssetCheckSpec(name, asset=asset, blocking=blocking, description=help)
                 for asset, checks in CHECKS.items() for name, blocking, help in checks],
    partitions_def=trading_day_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool="duckdb",
)
def paper_trading(context: AssetExecutionContext, duckdb: DuckDBResource, broker: SimulatedBrokerResource):
    began = time.perf_counter()
    dates = sorted(dt.date.fromisoformat(key) for key in context.partition_keys)
    rules = broker.rules()
    with duckdb.get_connection() as conn:
        stored_book = _read(conn, "paper_book", "SELECT date, orders_placed, orders_placed_at FROM paper_book ORDER BY date")
        inception = _inception(stored_book, dates)
        targets = _read(conn, "target_weights", "SELECT * FROM target_weights WHERE date BETWEEN ? AND ?", [inception, dates[-1]])
        placed = _read(conn, "paper_orders", "SELECT * FROM paper_orders WHERE date BETWEEN ? AND ?", [inception, dates[-1]])
        sessions = calendar.trading_days(inception, dates[-1])
        _require_targets(targets, sessions, inception)
        tickers = tuple(sorted(set(targets["ticker"].to_list()) | set(placed["ticker"].to_list() if placed.height else [])))
        prices = query(conn, "SELECT ticker, date, open, close FROM prices WHERE ticker IN (SELECT unnest(?::VARCHAR[])) "
                             "AND date BETWEEN ? AND ?", [list(tickers), inception, dates[-1]])
    opens, closes = (_matrix(prices, column, sessions, tickers) for column in ("open", "close"))
    _require_prices(closes, sessions, dates)
    weights = _matrix(targets, "weight", sessions, tickers)
    frozen = {d: (int(n), at) for d, n, at in stored_book.iter_rows() if at is not None} if stored_book.height else {}
    placed_matrix = _placed_matrix(placed, frozen, sessions, tickers)
    path = simulate(sessions, tickers, opens, closes, weights, rules, BookStart.new(broker.initial_cash, len(tickers)), placed_matrix)
    replayed = any(day in frozen for day in sessions)
    reconciliation = reconcile(path.nav, sessions, tickers, opens, closes, weights, rules, broker.initial_cash,
                               fresh_nav=None if replayed else path.nav)
    run = [sessions.index(d) for d in dates]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    placing = [k for k in run if sessions[k] not in frozen]
    orders = ledger.order_rows(path, placing, path.orders, targets, broker.book, now)
    changes, amendment_counts = _amendments(path, [k for k in run if sessions[k] in frozen], targets, placed, broker.book, now)
    counts = dict(orders.group_by("date").len().iter_rows()) if orders.height else {}
    placements = {k: frozen[sessions[k]] if sessions[k] in frozen else (counts.get(sessions[k], 0), now) for k in run}
    fills = ledger.fill_rows(path, run, broker.book, rules.fill_at)
    positions = ledger.position_rows(path, run)
    benchmark = benchmark_equity(closes)
    book = ledger.book_rows(path, run, broker.book, inception, broker.initial_cash, reconciliation, benchmark,
                            placements, amendment_counts)
    with duckdb.get_connection() as conn:
        write_partitions(
            conn, list(tickers), dates,
            [PartitionRows("paper_fills", fills, ("date", "client_order_id")), PartitionRows("paper_book", book, ("date",)),
             PartitionRows("paper_positions", positions, ("date", "ticker"))],
            ledger_rows=[LedgerRows("paper_orders", orders, ("date", "client_order_id")),
                         LedgerRows("paper_order_amendments", changes, ("date", "client_order_id", "proposed_decision_hash"))])
    last = book.row(-1, named=True)
    context.log.info(f"paper book {dates[0]}..{dates[-1]} (inception {inception}): NAV {last['nav']:,.2f}, "
                     f"costs {last['costs']:,.2f}, {orders.height} order(s) placed, {changes.height} amendment(s), "
                     f"gap to the backtest {last['gap_bps']:+.1f} bps")
    _plot(context, path, reconciliation.reference_nav, benchmark * broker.initial_cash, dates[-1])
    compute_seconds = round(time.perf_counter() - began, 3)
    yield _fills_result(fills, compute_seconds)
    yield _book_result(book, positions, rules, compute_seconds)
    yield _orders_result(orders, changes, compute_seconds)


def _amendments(path: BookPath, ks: list[int], targets: pl.DataFrame, placed: pl.DataFrame, book: str,
                now: dt.datetime) -> tuple[pl.DataFrame, dict[int, int]]:
    """What a re-run of already placed dates would place differently, per date."""
    if not ks:
        return pl.DataFrame(schema=ledger.AMENDMENT_SCHEMA), {}
    proposed = ledger.order_rows(path, ks, path.fresh_orders, targets, book, now)
    frames, counts = [], {}
    for k in ks:
        day = path.sessions[k]
        placed_day = placed.filter(pl.col("date") == day) if placed.height else pl.DataFrame(schema=ledger.ORDER_SCHEMA)
        frames.append(ledger.amendments(placed_day, proposed.filter(pl.col("date") == day), now))
        counts[k] = frames[-1].height
    return pl.concat(frames), counts


def _read(conn, table: str, sql: str, params: list | None = None) -> pl.DataFrame:
    return query(conn, sql, params or []) if table_exists(conn, table) else pl.DataFrame()


def _inception(stored_book: pl.DataFrame, dates: list[dt.date]) -> dt.date:
    """The book's first date: the first stored, or the run's first for a new book."""
    if not stored_book.height:
        return dates[0]
    inception = stored_book["date"].min()
    if dates[0] < inception:
        raise BookError(f"paper_book starts at {inception} (its inception); {dates[0]} is before it and would rewrite "
                        "every placed order after it: start a new book (PM_PAPER_BOOK and a new store) instead")
    return inception


def _require_targets(targets: pl.DataFrame, sessions: list[dt.date], inception: dt.date) -> None:
    have = set(targets["date"].to_list()) if targets.height else set()
    missing = [d for d in sessions if d not in have]
    if missing:
        raise MissingInputsError(f"target_weights has no rows for {missing[0]} ({len(missing)} session(s) missing between "
                                 f"the book's inception {inception} and {sessions[-1]}): materialize target_weights "
                                 "for them first")


def _require_prices(closes: np.ndarray, sessions: list[dt.date], dates: list[dt.date]) -> None:
    for day in dates:
        if not np.isfinite(closes[sessions.index(day)]).any():
            raise MissingInputsError(f"prices has no close for any of the book's tickers on {day}: materialize prices first")


def _matrix(frame: pl.DataFrame, column: str, sessions: list[dt.date], tickers: tuple[str, ...]) -> np.ndarray:
    """sessions x tickers of `column`, NaN where the frame has no value."""
    out = np.full((len(sessions), len(tickers)), np.nan)
    if not frame.height:
        return out
    row, col = {d: i for i, d in enumerate(sessions)}, {t: j for j, t in enumerate(tickers)}
    for day, ticker, value in frame.select("date", "ticker", column).iter_rows():
        if day in row and ticker in col and value is not None:
            out[row[day], col[ticker]] = value
    return out


def _placed_matrix(placed: pl.DataFrame, frozen: dict, sessions: list[dt.date], tickers: tuple[str, ...]) -> np.ndarray:
    """Signed shares of the placed orders on frozen dates (0 where none), NaN rows elsewhere."""
    out = np.full((len(sessions), len(tickers)), np.nan)
    index = {d: i for i, d in enumerate(sessions)}
    for day in frozen:
        if day in index:
            out[index[day]] = 0.0
    if placed.height:
        col = {t: j for j, t in enumerate(tickers)}
        for day, ticker, side, shares in placed.select("date", "ticker", "side", "shares").iter_rows():
            if day in frozen and day in index:
                out[index[day], col[ticker]] += shares if side == "BUY" else -shares
    return out


def _plot(context: AssetExecutionContext, path: BookPath, reference: np.ndarray, benchmark: np.ndarray, last: dt.date) -> None:
    png = paper_nav_png(path.sessions, path.nav.tolist(), reference.tolist(), benchmark.tolist())
    context.add_asset_metadata({"nav_plot": MetadataValue.md(png_markdown(png, "paper NAV against the backtest and buy and hold"))},
                               asset_key=AssetKey("paper_book"), partition_key=str(last))


def _check(asset: str, name: str, failing: pl.DataFrame, described: str, severity=AssetCheckSeverity.ERROR) -> AssetCheckResult:
    return AssetCheckResult(asset_key=asset, check_name=name, passed=failing.height == 0, severity=severity,
                            description=described, metadata={"failing_rows": failing.height,
                                                             "examples": MetadataValue.md(preview_markdown(failing, failing.columns[:6], rows=3))
                                                             if failing.height else "none"})


def _fills_result(fills: pl.DataFrame, compute_seconds: float) -> MaterializeResult:
    incomplete = fills.filter(pl.col("status") != "filled").select("date", "ticker", "status", "reason")
    statuses = dict(fills.group_by("status").len().iter_rows())
    return MaterializeResult(
        asset_key="paper_fills",
        metadata={"run_rows_written": fills.height, **{f"fills_{s}": statuses.get(s, 0) for s in ("filled", "cut", "refused", "pending")},
                  "run_preview": MetadataValue.md(preview_markdown(fills, ["date", "ticker", "side", "filled_shares", "fill_price", "commission", "status"])),
                  "run_compute_seconds": compute_seconds},
        check_results=[
            _check("paper_fills", "fills_after_order_session", ledger.fills_not_after_order(fills).select("date", "order_date", "ticker"),
                   "every fill is dated after its order's session"),
            _check("paper_fills", "fills_complete", incomplete, f"{incomplete.height} order(s) pending, cut or refused",
                   AssetCheckSeverity.WARN),
        ])


def _book_result(book: pl.DataFrame, positions: pl.DataFrame, rules, compute_seconds: float) -> MaterializeResult:
    last = book.row(-1, named=True)
    negative_cash = book.filter(pl.col("cash") < -ledger.CENT).select("date", "cash") if not rules.allow_margin else book.clear().select("date", "cash")
    fractional = ledger.fractional_positions(positions).select("date", "ticker", "shares") if not rules.fractional_shares \
        else positions.clear().select("date", "ticker", "shares")
    alert = settings.paper_alert_bps()
    drift = book.filter(pl.col("gap_bps").abs() > alert).select("date", "gap_bps", *[f"gap_{p}_bps" for p in GAP_PARTS])
    return MaterializeResult(
        asset_key="paper_book",
        metadata={"run_rows_written": book.height, "nav": last["nav"], "cash": last["cash"], "costs": last["costs"],
                  "realized_pnl": last["realized_pnl"], "unrealized_pnl": last["unrealized_pnl"], "gap_bps": last["gap_bps"],
                  **{f"gap_{p}_bps": last[f"gap_{p}_bps"] for p in GAP_PARTS}, "inception": str(last["inception"]),
                  "positions": MetadataValue.md(preview_markdown(positions.filter(pl.col("date") == last["date"]),
                                                                 ["ticker", "shares", "average_cost", "close", "market_value", "weight"], rows=20)),
                  "run_preview": MetadataValue.md(preview_markdown(book, ["date", "nav", "cash", "costs_day", "turnover_day", "gap_bps"])),
                  "run_compute_seconds": compute_seconds},
        check_results=[
            _check("paper_book", "nav_identity", ledger.nav_identity_breaks(book, positions), "cash + shares x close = NAV to the cent"),
            _check("paper_book", "pnl_identity", ledger.pnl_identity_breaks(book), "NAV = initial + realized + unrealized - commission"),
            _check("paper_book", "cash_non_negative", negative_cash, "cash never below zero" if not rules.allow_margin else "margin is on"),
            _check("paper_book", "whole_shares", fractional, "whole shares only" if not rules.fractional_shares else "fractional shares are on"),
            _check("paper_book", "reconciliation_gap", drift, f"{drift.height} date(s) with the gap past {alert:g} bps",
                   AssetCheckSeverity.WARN),
        ])


def _orders_result(orders: pl.DataFrame, changes: pl.DataFrame, compute_seconds: float) -> MaterializeResult:
    return MaterializeResult(
        asset_key="paper_orders",
        metadata={"orders_placed": orders.height, "amendments": changes.height,
                  "run_preview": MetadataValue.md(preview_markdown(orders, ["date", "client_order_id", "side", "shares", "target_weight", "placed_at"])),
                  "run_amendments": MetadataValue.md(preview_markdown(changes, ["date", "client_order_id", "kind", "reason"]))
                  if changes.height else "none",
                  "run_compute_seconds": compute_seconds},
        check_results=[_check("paper_orders", "orders_unchanged", changes.select("date", "client_order_id", "kind", "reason"),
                              f"{changes.height} amendment(s) recorded; the placed orders stand", AssetCheckSeverity.WARN)])
