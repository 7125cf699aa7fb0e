"""`pm summary` and `pm partitions`, and the reports read from the DuckDB store: the failed runs
(`pm failures`), and what the demo prints (where the LLM rows came from, the backtests and what
the LLM added, the LLM's own calls, the morning page)."""

from __future__ import annotations

import argparse
import datetime as dt
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from pm_domain import settings
from pm_jobs.cli.instance import QUIET, dagster_instance

LLM_TABLES = ("llm_analysis", "llm_signals", "risk_assessments")
WIDTH = 108  # the longest line a report prints, its indent included


def add_parser(commands) -> None:
    partitions = commands.add_parser("partitions", help="materialized partitions per asset and ticker")
    partitions.add_argument("assets", nargs="*", help="asset names (default: every asset)")
    partitions.set_defaults(func=run_partitions)
    commands.add_parser("summary", help="rows per table in the DuckDB store").set_defaults(func=run_summary, instance=QUIET)


def run_partitions(args: argparse.Namespace) -> int:
    from pm_assets import ALL_ASSETS  # the asset definitions import dagster: not for `pm --help`

    names = args.assets or [key.to_user_string() for asset in ALL_ASSETS for key in asset.keys]
    print("\n".join(partition_status(dagster_instance(), names)))
    return 0


def run_summary(args: argparse.Namespace) -> int:
    print("\n".join(store_summary()))
    return 0


def _store(path: str | None = None) -> duckdb.DuckDBPyConnection:
    from pm_resources.connections import connect  # imports dagster (pm_resources): not for `pm --help`

    return connect(path or settings.duckdb_path(), read_only=True)


def _sql():
    """pm_resources.store's query, table_exists and identifier."""
    from pm_resources import store  # pm_resources imports dagster: not for `pm --help`

    return store


def packed(head: str, parts: Sequence[str], indent: int, sep: str = "  ") -> list[str]:
    """`head` then the parts, as many to a line as fit in WIDTH, the next lines indented by
    `indent`; a part is split (at spaces) only when it alone is longer than a line."""
    lines, line, fresh = [], head, True  # fresh: nothing on the line after its head or indent yet
    for part in parts:
        if not fresh and len(line) + len(sep) + len(part) > WIDTH:
            lines.append(line)
            line, fresh = " " * indent, True
        line += ("" if fresh else sep) + part
        fresh = False
    return [wrapped for line in [*lines, line] for wrapped in
            textwrap.wrap(line, WIDTH, subsequent_indent=" " * (indent + 2), break_on_hyphens=False)]


def partition_status(instance, assets: Sequence[str]) -> list[str]:
    """Materialized partitions per asset and ticker, as the Dagster instance records them."""
    from pm_assets.dagster_compat import materialized_partitions  # dagster is slow to import: not for `pm --help`
    from pm_assets.partitions import TICKERS_PARTITIONS_NAME, trading_day_partitions

    tickers = instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME)
    sessions = len(trading_day_partitions.get_partition_keys())
    lines = [f"{len(tickers)} ticker(s) x {sessions} trading days "
             f"({trading_day_partitions.get_first_partition_key()} .. {trading_day_partitions.get_last_partition_key()})"]
    for asset in assets:
        keys = materialized_partitions(instance, asset)
        by_ticker: dict[str, list[dt.date]] = {}
        for key in keys:
            day, _, ticker = key.partition("|")
            by_ticker.setdefault(ticker or "(all tickers)", []).append(dt.date.fromisoformat(day))
        lines.append(f"{asset}: {len(keys)} materialized")
        for ticker in [t for t in tickers if t in by_ticker] + sorted(set(by_ticker) - set(tickers)):
            days = by_ticker[ticker]
            removed = "" if ticker in tickers or ticker == "(all tickers)" else "  (removed from the universe)"
            lines.append(f"  {ticker:<14} {len(days):>5} dates  {min(days)} .. {max(days)}{removed}")
    return lines


def failures_report(last: int, marker: Callable[[dict], str] = lambda row: "") -> list[str]:
    """The latest rows of `run_failures`, newest first, each followed by what `marker` says of it."""
    from pm_resources.connections import is_lake  # imports dagster (pm_resources): not for `pm --help`

    path = settings.duckdb_path()
    if not is_lake(path) and not Path(path).exists():
        return [f"no store yet at {path}: nothing has run"]
    sql = _sql()
    with _store(path) as conn:
        if not sql.table_exists(conn, "run_failures"):
            return ["no failed run recorded"]
        rows = sql.query(conn, "SELECT failed_at, run_id, job_name, step, asset, partitions, error_class, error "
                               "FROM run_failures ORDER BY failed_at DESC LIMIT ?", [last])
    if rows.is_empty():
        return ["no failed run recorded"]
    return [f"{r['failed_at']:%Y-%m-%d %H:%M}  run {r['run_id'][:8]} ({r['job_name']})  {r['step']}  "
            f"{r['partitions'] or '-'}  {r['error_class'] or ''}: {(r['error'] or '').strip().splitlines()[0][:200]}"
            f"{marker(r)}" for r in rows.iter_rows(named=True)]


def store_summary() -> list[str]:
    """Rows per table; the tables keyed by ticker and date with their tickers and dates."""
    sql = _sql()
    lines = []
    path = settings.duckdb_path()
    with _store(path) as conn:
        tables = sql.query(conn, "SELECT table_name, bool_or(column_name = 'ticker') AND bool_or(column_name = 'date') "
                                 "AS partitioned FROM information_schema.columns WHERE table_catalog = current_database() "
                                 "GROUP BY 1 ORDER BY 1")
        for table, partitioned in tables.iter_rows():
            if not partitioned:  # the LLM cache, the sensors' tables, the marts: not keyed by ticker and date
                count = sql.query(conn, f"SELECT count(*) AS n FROM {sql.identifier(table)}")["n"][0]
                lines.append(f"  {table:<18} {count:>7} rows")
                continue
            stats = sql.query(conn, f"SELECT count(*) AS n, count(DISTINCT ticker) AS tickers, min(date) AS first, "
                                    f"max(date) AS last FROM {sql.identifier(table)}").row(0, named=True)
            lines.append(f"  {table:<18} {stats['n']:>7} rows" + (f"  {stats['tickers']} tickers  {stats['first']} .. "
                                                                    f"{stats['last']}" if stats["n"] else ""))
    return [f"DuckDB store {path}:", *lines]


def llm_summary() -> list[str]:
    """Where the LLM rows came from (ollama / cache / fallback / skipped), Ollama's median latency,
    and the valid share of the replies the model gave (fresh or from the cache)."""
    sql = _sql()
    lines = ["LLM rows by source:"]
    with _store() as conn:
        for table in LLM_TABLES:
            if not sql.table_exists(conn, table):
                continue
            stats = sql.query(conn, f"SELECT llm_source, llm_outcome, count(*) AS n, median(latency_ms) AS latency "
                                    f"FROM {table} GROUP BY ALL ORDER BY ALL")
            parts = [f"{r['llm_source']} ({r['llm_outcome']}) {r['n']}"
                     + (f", median latency {r['latency']:.0f} ms" if r["latency"] is not None else "")
                     for r in stats.iter_rows(named=True)]
            answered = stats.filter(stats["llm_outcome"].is_in(["ok", "invalid_reply"]))
            valid = int(answered.filter(answered["llm_outcome"] == "ok")["n"].sum())
            share = f"; valid replies {valid}/{int(answered['n'].sum())}" if answered.height else ""
            lines += packed(f"  {table:<18} ", [f"{part};" for part in parts[:-1]] + [f"{parts[-1]}{share}"], 21, " ")
    return lines


def portfolio_overview_summary() -> list[str]:
    """The morning page (the portfolio_overview mart), as docs/marts.md shows it."""
    sql = _sql()
    with _store() as conn:
        if not sql.table_exists(conn, "portfolio_overview"):
            return []
        rows = sql.query(conn, "SELECT ticker, last_price_date, sessions_behind, signal_date, action, confidence, "
                               "signal_source, risk_level, verdict, robust_verdict FROM portfolio_overview ORDER BY ticker")
    lines = ["portfolio_overview (the morning page):"]
    for r in rows.iter_rows(named=True):
        confidence = "-" if r["confidence"] is None else f"{r['confidence']:.2f}"
        lines += packed(f"  {r['ticker']:<8} ", [
            f"prices to {r['last_price_date']} ({r['sessions_behind']} behind)",
            f"signal {r['signal_date']} {r['action']} conf {confidence} ({r['signal_source']})",
            f"risk {r['risk_level']}", f"backtest {r['verdict']} (robust_verdict {r['robust_verdict']})"], 11)
    return lines


ATTRIBUTION_SQL = ("forecast_only_total_return, forecast_only_sharpe, llm_delta_sharpe, llm_sharpe_delta_ci_lower, "
                   "llm_sharpe_delta_ci_upper, llm_held_back, llm_clean_sessions, llm_verdict, llm_verdict_reason, "
                   "contaminated_llm_delta_sharpe, contaminated_llm_sharpe_delta_ci_lower, "
                   "contaminated_llm_sharpe_delta_ci_upper, contaminated_llm_verdict")


def _number(value, percent: bool = False) -> str:
    return "-" if value is None else (f"{value:.2%}" if percent else f"{value:.2f}")


def _interval(lower, upper) -> str:
    return "-" if lower is None else f"[{lower:.2f}, {upper:.2f}]"


def backtest_summary() -> list[str]:
    """The backtests of the last date: the metrics table docs/demo.md shows, then what the LLM added."""
    sql = _sql()
    with _store() as conn:
        if not sql.table_exists(conn, "backtests"):
            return []
        last = "WHERE date = (SELECT max(date) FROM {table}) ORDER BY {order}"
        rows = sql.query(conn, "SELECT ticker, date, sessions, total_return, buy_hold_total_return, sharpe, max_drawdown, "
                               "exposure, trades, hit_rate, verdict, verdict_reason, robust_verdict, robust_reason "
                               "FROM backtests " + last.format(table="backtests", order="ticker"))
        book = sql.query(conn, "SELECT weighting, date, sessions, total_return, buy_hold_total_return, sharpe, exposure, "
                               f"verdict, robust_verdict, robust_reason, {ATTRIBUTION_SQL} FROM portfolio_backtests "
                               + last.format(table="portfolio_backtests", order="weighting")
                               ) if sql.table_exists(conn, "portfolio_backtests") else None
        attribution = sql.query(conn, f"SELECT ticker AS name, date, sessions, total_return, sharpe, {ATTRIBUTION_SQL} "
                                      "FROM backtests " + last.format(table="backtests", order="ticker"))
    books = list(book.iter_rows(named=True)) if book is not None else []
    lines = ["Backtests of the last date (strategy net of costs vs buy-and-hold of the same sessions):"]
    for r in rows.iter_rows(named=True):
        lines += packed(f"  {r['ticker']:<8} ", [
            f"{r['date']} {r['sessions']:>3} sessions",
            f"return {_number(r['total_return'], True)} vs {_number(r['buy_hold_total_return'], True)}",
            f"Sharpe {_number(r['sharpe'])}", f"max DD {_number(r['max_drawdown'], True)}",
            f"exposure {_number(r['exposure'], True)}", f"trades {r['trades']}",
            f"hit rate {_number(r['hit_rate'], True)}"], 11)
        lines += packed(" " * 11, [f"{r['verdict']}: {r['verdict_reason']}"], 11)
        lines += packed(" " * 11, [f"robust_verdict {r['robust_verdict']}: {r['robust_reason']}"], 11)
    for r in books:
        lines += packed(f"  book/{r['weighting']:<13} ", [
            f"{r['sessions']:>3} sessions",
            f"return {_number(r['total_return'], True)} vs {_number(r['buy_hold_total_return'], True)}",
            f"Sharpe {_number(r['sharpe'])}", f"exposure {_number(r['exposure'], True)}", r["verdict"]], 21)
        lines += packed(" " * 21, [f"robust_verdict {r['robust_verdict']}: {r['robust_reason']}"], 21)
    lines += textwrap.wrap("What the LLM adds (final signals vs the same rules with the LLM's veto off, same days), from "
                           "sessions after the model's knowledge cutoff only; the earlier sessions' figures are "
                           "contaminated (the model may remember them) and are not evidence:", WIDTH)
    named = [(r["name"], r) for r in attribution.iter_rows(named=True)] + [(f"book/{r['weighting']}", r) for r in books]
    for name, r in named:
        lines += packed(f"  {name:<18} ", [
            f"return {_number(r['total_return'], True)} vs forecast-only {_number(r['forecast_only_total_return'], True)}",
            f"Sharpe {_number(r['sharpe'])} vs {_number(r['forecast_only_sharpe'])}",
            f"difference {_number(r['llm_delta_sharpe'])} "
            f"(90% {_interval(r['llm_sharpe_delta_ci_lower'], r['llm_sharpe_delta_ci_upper'])})",
            f"held back {r['llm_held_back']}"], 21)
        lines += packed(" " * 21, [f"{r['llm_clean_sessions']} clean sessions: {r['llm_verdict']}"
                                   + (f" ({r['llm_verdict_reason']})" if r["llm_verdict_reason"] else "")], 21)
        lines += packed(" " * 21, [
            "contaminated sessions, not evidence:",
            f"difference {_number(r['contaminated_llm_delta_sharpe'])} (90% "
            f"{_interval(r['contaminated_llm_sharpe_delta_ci_lower'], r['contaminated_llm_sharpe_delta_ci_upper'])})",
            str(r["contaminated_llm_verdict"])], 21, " ")
    return lines


def llm_scorecard_summary() -> list[str]:
    """The LLM's own calls against the forecast's and always-up, per ticker over every month stored
    (the llm_scorecard mart, weighted by calls); a ticker of llm_signals the mart has no row for
    (no BUY or SELL call with a realised outcome) shows with 0 calls."""
    sql = _sql()
    with _store() as conn:
        if not sql.table_exists(conn, "llm_scorecard"):
            return []
        signalled = sql.query(conn, "SELECT DISTINCT ticker FROM llm_signals ORDER BY ticker")["ticker"].to_list() \
            if sql.table_exists(conn, "llm_signals") else []
        rows = sql.query(conn, """
            SELECT ticker, knowledge,
                   sum(llm_calls) AS llm_calls,
                   sum(llm_hit_rate * llm_calls) / nullif(sum(llm_calls), 0) AS llm_hit_rate,
                   sum(llm_brier_score * llm_calls) / nullif(sum(llm_calls), 0) AS llm_brier,
                   sum(llm_days_always_up_hit_rate * llm_calls) / nullif(sum(llm_calls), 0) AS llm_up,
                   sum(forecast_calls) AS forecast_calls,
                   sum(forecast_hit_rate * forecast_calls) / nullif(sum(forecast_calls), 0) AS forecast_hit_rate,
                   sum(forecast_brier_score * forecast_calls) / nullif(sum(forecast_calls), 0) AS forecast_brier,
                   sum(forecast_days_always_up_hit_rate * forecast_calls) / nullif(sum(forecast_calls), 0) AS forecast_up
            FROM llm_scorecard GROUP BY ticker, knowledge ORDER BY ticker, knowledge""")

    def pct(value) -> str:
        return "-" if value is None else f"{value:.0%}"

    def calls(who: str, n, hit, brier, up) -> str:
        return f"{who} {n or 0} calls, hit {pct(hit)}, Brier {'-' if brier is None else f'{brier:.3f}'} (always up {pct(up)})"

    lines = textwrap.wrap("The LLM's own calls vs the forecast's (llm_scorecard; hit rate, Brier, always-up on the same "
                          "days), clean (after the model's cutoff: evidence) and contaminated (not evidence):", WIDTH)
    if "clean" not in rows["knowledge"].to_list():
        lines.append("  no call after the model's knowledge cutoff: nothing here is evidence of skill")
    for r in rows.iter_rows(named=True):
        lines += packed(f"  {r['ticker']:<8} {r['knowledge']:<12} ", [
            calls("LLM", r["llm_calls"], r["llm_hit_rate"], r["llm_brier"], r["llm_up"]),
            calls("forecast", r["forecast_calls"], r["forecast_hit_rate"], r["forecast_brier"], r["forecast_up"])], 24)
    lines += [f"  {ticker:<8} {'':<12} LLM 0 calls, forecast 0 calls (no BUY or SELL call with an outcome yet)"
              for ticker in signalled if ticker not in rows["ticker"].to_list()]
    return lines
