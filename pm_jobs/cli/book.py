"""`pm book`: the paper book as of a date (default its last): NAV, P&L, costs and the gap to the
backtest of the same weights with its parts, positions, the date's orders and fills, and the
amendments re-runs recorded."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING


from pm_domain import settings
from pm_jobs.cli.instance import QUIET

if TYPE_CHECKING:
    import polars as pl


def add_parser(commands) -> None:
    book = commands.add_parser("book", help="the paper book: NAV, positions, the date's orders and fills, amendments")
    book.add_argument("--date", default=None, help="as of this trading day (default: the book's last)")
    book.add_argument("--amendments", type=int, default=10, metavar="N", help="how many of the latest amendments (default 10)")
    book.set_defaults(func=run, instance=QUIET)


def run(args: argparse.Namespace) -> int:
    from pm_jobs.selection import parse_date  # imports dagster: not for `pm --help`

    day = parse_date("--date", args.date) if args.date else None
    print("\n".join(book_report(settings.duckdb_path(), day, args.amendments)))
    return 0


def book_report(path: str, day: dt.date | None = None, amendments: int = 10) -> list[str]:
    # polars, and pm_resources (dagster): not for `pm --help`
    import polars as pl

    from pm_resources.connections import connect
    from pm_resources.store import query, table_exists

    with connect(path, read_only=True) as conn:
        if not table_exists(conn, "paper_book"):
            return ["no paper book yet: materialize target_weights and paper_book (make demo does; docs/paper.md)"]
        books = query(conn, "SELECT * FROM paper_book WHERE date <= coalesce(?, date) ORDER BY date DESC LIMIT 1", [day])
        if not books.height:
            first = query(conn, "SELECT min(date) AS d FROM paper_book").item()
            return [f"the paper book starts at {first}: nothing on or before {day}"]
        book = books.row(0, named=True)
        on = book["date"]
        positions = query(conn, "SELECT * FROM paper_positions WHERE date = ? ORDER BY ticker", [on])
        orders = query(conn, "SELECT * FROM paper_orders WHERE date = ? ORDER BY ticker", [on]) \
            if table_exists(conn, "paper_orders") else pl.DataFrame()
        fills = query(conn, "SELECT * FROM paper_fills WHERE date = ? ORDER BY ticker", [on]) \
            if table_exists(conn, "paper_fills") else pl.DataFrame()
        changes = query(conn, "SELECT * FROM paper_order_amendments ORDER BY recorded_at DESC, date DESC LIMIT ?",
                        [amendments]) if table_exists(conn, "paper_order_amendments") else pl.DataFrame()
    return [*summary_lines(book), *position_lines(positions), *order_lines(orders, on), *fill_lines(fills, on),
            *amendment_lines(changes)]


def summary_lines(book: dict) -> list[str]:
    from pm_domain.paper.reconcile import GAP_PARTS  # imports scipy: not for `pm --help`

    since = book["nav"] / book["initial_cash"] - 1
    parts = ", ".join(f"{part} {book[f'gap_{part}_bps']:+.1f}" for part in GAP_PARTS)
    return [
        f"paper book '{book['book']}' as of {book['date']} (inception {book['inception']}, initial cash {book['initial_cash']:,.2f}):",
        f"  NAV {book['nav']:,.2f} ({since:+.2%})  cash {book['cash']:,.2f}  market value {book['market_value']:,.2f}",
        f"  P&L realized {book['realized_pnl']:,.2f}  unrealized {book['unrealized_pnl']:,.2f}",
        f"  costs paid {book['costs']:,.2f} (commission {book['commission']:,.2f}, slippage {book['slippage']:,.2f}; "
        f"today {book['costs_day']:,.2f})  turnover {book['turnover']:.2f}x",
        f"  backtest of the same weights {book['reference_nav']:,.2f}: gap {book['gap_bps']:+.1f} bps of the initial cash",
        f"    = {parts}",
        f"  equal-weight buy and hold of the same tickers {book['benchmark_nav']:,.2f}",
    ]


def position_lines(positions: pl.DataFrame) -> list[str]:
    if not positions.height:
        return ["positions: none (all cash)"]
    return ["positions:"] + [
        f"  {r['ticker']:<8} {r['shares']:>10,.4g} shares  avg cost {r['average_cost']:,.2f}  close {r['close']:,.2f}"
        f"{' (stale)' if r['stale_close'] else ''}  value {r['market_value']:,.2f}  weight {r['weight']:.1%}  "
        f"unrealized {r['unrealized_pnl']:,.2f}" for r in positions.iter_rows(named=True)]


def order_lines(orders: pl.DataFrame, on: dt.date) -> list[str]:
    if not orders.height:
        return [f"orders placed at the close of {on}: none"]
    lines = [f"orders placed at the close of {on} (market on open, {orders['fill_session'][0]}):"]
    for r in orders.iter_rows(named=True):
        timing = "before its open" if r["placed_before_fill_open"] else "after its open (a backfill: not a forward test)"
        lines.append(f"  {r['client_order_id']:<32} {r['side']:<4} {r['shares']:,.4g}  target {r['target_weight']:.1%}  "
                     f"from {r['signal_id']} ({r['weights_method']}, prompt {str(r['prompt_hash'])[:10]})  "
                     f"placed {r['placed_at']:%Y-%m-%d %H:%M} UTC, {timing}")
    return lines


def fill_lines(fills: pl.DataFrame, on: dt.date) -> list[str]:
    if not fills.height:
        return [f"fills at the open of {on}: none"]
    lines = [f"fills at the open of {on}:"]
    for r in fills.iter_rows(named=True):
        price = "-" if r["fill_price"] is None else f"{r['fill_price']:,.4f} (open {r['reference_price']:,.4f})"
        lines.append(f"  {r['client_order_id']:<32} {r['status']:<8} {r['filled_shares']:,.4g}/{r['ordered_shares']:,.4g} "
                     f"at {price}  commission {r['commission']:,.2f}" + (f"  {r['reason']}" if r["reason"] else ""))
    return lines


def amendment_lines(changes: pl.DataFrame) -> list[str]:
    if not changes.height:
        return ["amendments: none (no re-run asked for other orders than those placed)"]
    return [f"amendments (latest {changes.height}; the placed orders stand):"] + [
        f"  {r['date']} {r['client_order_id']:<32} {r['kind']:<7} {r['reason']} (recorded {r['recorded_at']:%Y-%m-%d %H:%M} UTC)"
        for r in changes.iter_rows(named=True)]
