"""`pm`: the research platform's command line, on the project's Dagster instance.

    pm demo
    pm materialize --assets A,B [--tickers T,U] [--from DATE] [--to DATE] [--config-json JSON]
    pm backfill --assets A,B [--tickers T,U] --from DATE [--to DATE] [--url URL] [--wait SECONDS]
    pm tickers list | add TICKER... | remove TICKER... | sync [--file PATH]
    pm partitions [ASSET...]
    pm failures [--last N]
    pm runs slots | release RUN_ID
    pm ui [--port PORT]
    pm summary
    pm postgres start | stop | status [--home PATH]
    pm book [--date DATE] [--amendments N]

With DAGSTER_HOME unset, `pm` uses the project's own instance, `.dagster_home/` beside
`workspace.yaml`, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from pm_domain import calendar, settings
from pm_domain.tickers import TickerError, read_watchlist, validate_tickers
from pm_jobs.cli import book

DEMO_TICKERS = ["^GSPC", "^IXIC"]
DEMO_END = "2018-12-31"
DEMO_SESSIONS = 120
# The LLM stages cover the last 60 sessions, so the backtests have a window worth reading. With a
# real model the replies are bounded (pm_domain/llm/schemas.py): about 2-4 s a call on two cores.
DEMO_LLM_SESSIONS = 60
LLM_TABLES = ("llm_analysis", "llm_signals", "risk_assessments")
PAPER_ASSETS = ["target_weights", "paper_fills", "paper_book", "paper_orders"]
DATE_ONLY_ASSETS = ("portfolio_backtests", *PAPER_ASSETS)


PROJECT_ROOT = settings.PROJECT_ROOT


class InstanceError(RuntimeError):
    """No Dagster instance to use."""


def use_project_instance() -> str:
    """Point DAGSTER_HOME at the project's `.dagster_home` when it is unset; return the instance
    in use and why. Dagster's own advice (`export DAGSTER_HOME=~/dagster_home`) would be an empty one."""
    from pm_jobs.large_instance import load_instance_env

    home = os.environ.get("DAGSTER_HOME")
    if home:
        loaded = load_instance_env(Path(home))
        return f"{home} (DAGSTER_HOME" + (f"; {len(loaded)} settings from instance.env)" if loaded else ")")
    project_home = PROJECT_ROOT / ".dagster_home"
    if not (project_home / "dagster.yaml").is_file():
        raise InstanceError(f"DAGSTER_HOME is unset and {project_home}/dagster.yaml is missing: "
                            "run pm from the project's checkout, or export DAGSTER_HOME=/path/to/instance")
    os.environ["DAGSTER_HOME"] = str(project_home)
    return f"{project_home} (the project's; DAGSTER_HOME is unset)"


def _instance():
    from dagster import DagsterInstance

    return DagsterInstance.get()


def add_tickers(instance, tickers: Sequence[str]) -> list[str]:
    """Add validated tickers to the `tickers` dimension; returns the ones that were new."""
    from pm_assets.partitions import TICKERS_PARTITIONS_NAME

    valid = validate_tickers(tickers)
    known = set(instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME))
    new = [t for t in valid if t not in known]
    if new:
        instance.add_dynamic_partitions(TICKERS_PARTITIONS_NAME, new)
    return new


def remove_tickers(instance, tickers: Sequence[str]) -> list[str]:
    """Take tickers out of the `tickers` dimension; their stored rows in DuckDB stay. Returns the
    ones that were there."""
    from pm_assets.partitions import TICKERS_PARTITIONS_NAME

    valid = validate_tickers(tickers)
    known = set(instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME))
    removed = [t for t in valid if t in known]
    for ticker in removed:
        instance.delete_dynamic_partition(TICKERS_PARTITIONS_NAME, ticker)
    return removed


def partition_status(instance, assets: Sequence[str]) -> list[str]:
    """Materialized partitions per asset and ticker, as the Dagster instance records them."""
    import datetime as dt

    from dagster import AssetKey

    from pm_assets.partitions import TICKERS_PARTITIONS_NAME, trading_day_partitions

    tickers = instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME)
    sessions = len(trading_day_partitions.get_partition_keys())
    lines = [f"{len(tickers)} ticker(s) x {sessions} trading days "
             f"({trading_day_partitions.get_first_partition_key()} .. {trading_day_partitions.get_last_partition_key()})"]
    for asset in assets:
        keys = instance.get_materialized_partitions(AssetKey(asset))
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


def pool_slot_holders(instance) -> list[str]:
    """Which runs hold a slot of each pool, and their status: a run that holds one while it is not
    running (its process was killed) blocks every later step of that pool."""
    lines = []
    for pool in sorted(instance.event_log_storage.get_concurrency_keys()):
        info = instance.event_log_storage.get_concurrency_info(pool)
        holders = sorted(info.active_run_ids)
        lines.append(f"{pool}: limit {info.slot_count}, held by {len(holders)} run(s)")
        for run_id in holders:
            run = instance.get_run_by_id(run_id)
            status = run.status.value if run else "deleted"
            lines.append(f"  {run_id}  {status}{'' if status == 'STARTED' else '  (not running: release it)'}")
    return lines or ["no pool slots in use"]


def release_run(instance, run_id: str) -> str:
    """Free the pool slots of a run whose process died without ending it (SIGKILL, a power cut):
    mark it failed, if it still says it is running, and release its slots. The stranded_runs
    sensor does this by itself within a minute when the daemon runs."""
    from pm_sensors.stranded_runs import release

    if instance.get_run_by_id(run_id) is None:
        raise ValueError(f"no run {run_id!r} on this instance (`dagster run list` shows them)")
    return release(instance, run_id, "released by `pm runs release`: its process is gone")


def run_backfill(args) -> int:
    from pm_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, range_tags
    from pm_jobs.backfill import BackfillError, launch_backfill, ui_url, wait_for_backfill
    from pm_jobs.materialize import plan_selection
    from pm_jobs.selection import BY_DATE, SelectionError

    url = args.url or ui_url()
    try:
        selection = plan_selection(_instance(), _names(args.assets), _names(args.tickers), args.start, args.end)
        if selection.start is None:
            raise SelectionError(f"{', '.join(selection.assets)}: not partitioned, nothing to backfill "
                                 "(pm materialize builds them)")
        ranges = []
        for block in selection.ticker_blocks:
            tags = range_tags(None if selection.partitioning == BY_DATE else block, selection.start, selection.end)
            ranges.append((tags[RANGE_START_TAG], tags[RANGE_END_TAG]))
        backfill_id = launch_backfill(url, list(selection.assets), ranges)
        print(f"backfill {backfill_id}: {selection.describe()} -> {url}/runs/b/{backfill_id}", flush=True)
        if not args.wait:
            return 0
        progress = wait_for_backfill(url, backfill_id, args.wait,
                                     report=lambda p: print(f"  {p.describe()}", flush=True))
    except (BackfillError, SelectionError) as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, BackfillError) else 2
    for line in progress.failures:
        print(f"pm: {line}", file=sys.stderr)
    return 0 if progress.succeeded else 1


def _names(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def run_materialize(args) -> int:
    """`pm materialize`: the selection checked, then one in-process run per block of tickers."""
    from pm_jobs.materialize import Progress, ensure_store_tables, plan_selection, run_selection

    run_config = None
    if args.config_json:
        try:
            run_config = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            print(f"pm: --config-json is not JSON: {exc}", file=sys.stderr)
            return 2
    instance = _instance()
    selection = plan_selection(instance, _names(args.assets), _names(args.tickers), args.start, args.end)
    progress = Progress()
    ensure_store_tables()
    progress.line(f"materializing {selection.describe()} ...")
    outcomes = run_selection(instance, selection, progress, run_config)
    for outcome in outcomes:
        if outcome.success:
            progress.line(f"run {outcome.run_id[:8]} succeeded in {outcome.seconds:.1f} s")
        else:
            print(f"pm: run {outcome.run_id[:8]} failed at {outcome.failure} "
                  "(recorded in run_failures: pm failures)", file=sys.stderr)
            return 1
    return 0


def run_failures_report(last: int) -> list[str]:
    """The latest rows of `run_failures`, newest first."""
    import duckdb

    from pm_resources.store import query, table_exists

    path = settings.duckdb_path()
    if not Path(path).exists():
        return [f"no store yet at {path}: nothing has run"]
    with duckdb.connect(path, read_only=True) as conn:
        if not table_exists(conn, "run_failures"):
            return ["no failed run recorded"]
        rows = query(conn, "SELECT failed_at, run_id, job_name, step, partitions, error_class, error "
                           "FROM run_failures ORDER BY failed_at DESC LIMIT ?", [last])
    if rows.is_empty():
        return ["no failed run recorded"]
    return [f"{r['failed_at']:%Y-%m-%d %H:%M}  run {r['run_id'][:8]} ({r['job_name']})  {r['step']}  "
            f"{r['partitions'] or '-'}  {r['error_class'] or ''}: {(r['error'] or '').strip().splitlines()[0][:200]}"
            for r in rows.iter_rows(named=True)]


def run_ui(port: int) -> int:
    """Start `dagster dev` (webserver and daemon) on 127.0.0.1:port, refusing a busy port before
    either starts (otherwise the daemon runs on without a webserver)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            print(f"pm: port {port} on 127.0.0.1 is in use (another `make ui`?): make ui PORT={port + 1}",
                  file=sys.stderr)
            return 2
    from pm_jobs.backfill import remember_ui_url

    remember_ui_url(f"http://127.0.0.1:{port}")
    dagster = Path(sys.executable).with_name("dagster")
    os.chdir(PROJECT_ROOT)
    os.execv(str(dagster), [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)])
    return 0  # not reached: exec replaces this process


def portfolio_overview_summary() -> list[str]:
    """The morning page (the portfolio_overview mart), as docs/marts.md shows it."""
    import duckdb

    from pm_resources.store import query, table_exists

    with duckdb.connect(settings.duckdb_path(), read_only=True) as conn:
        if not table_exists(conn, "portfolio_overview"):
            return []
        rows = query(conn, "SELECT ticker, last_price_date, sessions_behind, signal_date, action, confidence, "
                           "signal_source, risk_level, verdict, robust_verdict FROM portfolio_overview ORDER BY ticker")
    lines = ["portfolio_overview (the morning page):"]
    for r in rows.iter_rows(named=True):
        confidence = "-" if r["confidence"] is None else f"{r['confidence']:.2f}"
        lines.append(f"  {r['ticker']:<8} prices to {r['last_price_date']} ({r['sessions_behind']} behind)  "
                     f"signal {r['signal_date']} {r['action']} conf {confidence} ({r['signal_source']})  "
                     f"risk {r['risk_level']}  backtest {r['verdict']} (robust_verdict {r['robust_verdict']})")
    return lines


def store_summary() -> list[str]:
    import duckdb

    from pm_resources.store import identifier, query

    lines = []
    path = settings.duckdb_path()
    with duckdb.connect(path, read_only=True) as conn:
        tables = query(conn, "SELECT table_name, bool_or(column_name = 'ticker') AND bool_or(column_name = 'date') "
                             "AS partitioned FROM information_schema.columns GROUP BY 1 ORDER BY 1")
        for table, partitioned in tables.iter_rows():
            if not partitioned:  # the LLM cache, the sensors' tables, the marts: not keyed by ticker and date
                count = query(conn, f"SELECT count(*) AS n FROM {identifier(table)}")["n"][0]
                lines.append(f"  {table:<18} {count:>7} rows")
                continue
            stats = query(conn, f'SELECT count(*) AS n, count(DISTINCT ticker) AS tickers, '
                                f'min(date) AS first, max(date) AS last FROM {identifier(table)}').row(0, named=True)
            lines.append(f"  {table:<18} {stats['n']:>7} rows" + (f"  {stats['tickers']} tickers  {stats['first']} .. "
                                                                    f"{stats['last']}" if stats["n"] else ""))
    return [f"DuckDB store {path}:", *lines]


def llm_summary() -> list[str]:
    """Where the LLM rows came from (ollama / cache / fallback / skipped), Ollama's median latency,
    and the valid share of the replies the model gave (fresh or from the cache)."""
    import duckdb

    from pm_resources.store import query, table_exists

    lines = ["LLM rows by source:"]
    with duckdb.connect(settings.duckdb_path(), read_only=True) as conn:
        for table in LLM_TABLES:
            if not table_exists(conn, table):
                continue
            stats = query(conn, f"SELECT llm_source, llm_outcome, count(*) AS n, median(latency_ms) AS latency "
                                f"FROM {table} GROUP BY ALL ORDER BY ALL")
            parts = [f"{r['llm_source']} ({r['llm_outcome']}) {r['n']}"
                     + (f", median latency {r['latency']:.0f} ms" if r["latency"] is not None else "")
                     for r in stats.iter_rows(named=True)]
            answered = stats.filter(stats["llm_outcome"].is_in(["ok", "invalid_reply"]))
            valid = int(answered.filter(answered["llm_outcome"] == "ok")["n"].sum())
            share = f"; valid replies {valid}/{int(answered['n'].sum())}" if answered.height else ""
            lines.append(f"  {table:<18} {'; '.join(parts)}{share}")
    return lines


ATTRIBUTION_SQL = ("forecast_only_total_return, forecast_only_sharpe, llm_delta_sharpe, llm_sharpe_delta_ci_lower, "
                   "llm_sharpe_delta_ci_upper, llm_held_back, llm_clean_sessions, llm_verdict, llm_verdict_reason, "
                   "contaminated_llm_delta_sharpe, contaminated_llm_sharpe_delta_ci_lower, "
                   "contaminated_llm_sharpe_delta_ci_upper, contaminated_llm_verdict")


def backtest_summary() -> list[str]:
    """The backtests of the last date: the metrics table docs/demo.md shows."""
    import duckdb

    from pm_resources.store import query, table_exists

    with duckdb.connect(settings.duckdb_path(), read_only=True) as conn:
        if not table_exists(conn, "backtests"):
            return []
        rows = query(conn, "SELECT ticker, date, sessions, total_return, buy_hold_total_return, sharpe, max_drawdown, "
                           "exposure, trades, hit_rate, verdict, verdict_reason, robust_verdict, robust_reason "
                           "FROM backtests "
                           "WHERE date = (SELECT max(date) FROM backtests) ORDER BY ticker")
        book = query(conn, "SELECT weighting, date, sessions, total_return, buy_hold_total_return, sharpe, exposure, verdict, "
                           "robust_verdict, robust_reason, "
                           f"{ATTRIBUTION_SQL} FROM portfolio_backtests "
                           "WHERE date = (SELECT max(date) FROM portfolio_backtests) "
                           "ORDER BY weighting") if table_exists(conn, "portfolio_backtests") else None
        attribution = query(conn, f"SELECT ticker AS name, date, sessions, total_return, sharpe, {ATTRIBUTION_SQL} "
                                  "FROM backtests WHERE date = (SELECT max(date) FROM backtests) ORDER BY ticker")

    def number(value, percent=False) -> str:
        return "-" if value is None else (f"{value:.2%}" if percent else f"{value:.2f}")

    lines = ["Backtests of the last date (strategy net of costs vs buy-and-hold of the same sessions):"]
    for r in rows.iter_rows(named=True):
        lines.append(f"  {r['ticker']:<8} {r['date']} {r['sessions']:>3} sessions  return {number(r['total_return'], True)} "
                     f"vs {number(r['buy_hold_total_return'], True)}  Sharpe {number(r['sharpe'])}  "
                     f"max DD {number(r['max_drawdown'], True)}  exposure {number(r['exposure'], True)}  "
                     f"trades {r['trades']}  hit rate {number(r['hit_rate'], True)}  {r['verdict']}: {r['verdict_reason']}  "
                     f"robust_verdict {r['robust_verdict']}: {r['robust_reason']}")
    for r in (book.iter_rows(named=True) if book is not None else []):
        lines.append(f"  book/{r['weighting']:<13} {r['sessions']:>3} sessions  return {number(r['total_return'], True)} "
                     f"vs {number(r['buy_hold_total_return'], True)}  Sharpe {number(r['sharpe'])}  "
                     f"exposure {number(r['exposure'], True)}  {r['verdict']}  "
                     f"robust_verdict {r['robust_verdict']}: {r['robust_reason']}")
    lines.append("What the LLM adds (final signals vs the same rules with the LLM's veto off, same days), "
                 "from sessions after the model's knowledge cutoff only; the earlier sessions' figures are "
                 "contaminated (the model may remember them) and are not evidence:")
    named = [(r["name"], r) for r in attribution.iter_rows(named=True)]
    named += [(f"book/{r['weighting']}", r) for r in (book.iter_rows(named=True) if book is not None else [])]
    for name, r in named:
        interval = ("-" if r["llm_sharpe_delta_ci_lower"] is None
                    else f"[{r['llm_sharpe_delta_ci_lower']:.2f}, {r['llm_sharpe_delta_ci_upper']:.2f}]")
        lines.append(f"  {name:<18} return {number(r['total_return'], True)} vs forecast-only "
                     f"{number(r['forecast_only_total_return'], True)}  Sharpe {number(r['sharpe'])} vs "
                     f"{number(r['forecast_only_sharpe'])}  difference {number(r['llm_delta_sharpe'])} "
                     f"(90% {interval})  held back {r['llm_held_back']}  {r['llm_clean_sessions']} clean sessions: "
                     f"{r['llm_verdict']}" + (f" ({r['llm_verdict_reason']})" if r["llm_verdict_reason"] else ""))
        dirty = ("-" if r["contaminated_llm_sharpe_delta_ci_lower"] is None else
                 f"[{r['contaminated_llm_sharpe_delta_ci_lower']:.2f}, {r['contaminated_llm_sharpe_delta_ci_upper']:.2f}]")
        lines.append(f"  {'':<18} contaminated sessions, not evidence: difference "
                     f"{number(r['contaminated_llm_delta_sharpe'])} (90% {dirty})  {r['contaminated_llm_verdict']}")
    return lines


def llm_scorecard_summary() -> list[str]:
    """The LLM's own calls against the forecast's and always-up, per ticker over every month stored
    (the llm_scorecard mart, weighted by calls)."""
    import duckdb

    from pm_resources.store import query, table_exists

    with duckdb.connect(settings.duckdb_path(), read_only=True) as conn:
        if not table_exists(conn, "llm_scorecard"):
            return []
        rows = query(conn, """
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

    def num(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = ["The LLM's own calls vs the forecast's (llm_scorecard; hit rate, Brier, always-up on the same days), "
             "clean (after the model's cutoff: evidence) and contaminated (not evidence):"]
    if "clean" not in rows["knowledge"].to_list():
        lines.append("  no call after the model's knowledge cutoff: nothing here is evidence of skill")
    for r in rows.iter_rows(named=True):
        lines.append(f"  {r['ticker']:<8} {r['knowledge']:<12} LLM {r['llm_calls']} calls, hit {pct(r['llm_hit_rate'])}, Brier "
                     f"{num(r['llm_brier'])} (always up {pct(r['llm_up'])})  forecast {r['forecast_calls']} calls, hit "
                     f"{pct(r['forecast_hit_rate'])}, Brier {num(r['forecast_brier'])} (always up {pct(r['forecast_up'])})")
    return lines


def mart_names() -> list[str]:
    from pm_assets import SQL_ASSETS

    return [key.to_user_string() for asset in SQL_ASSETS for key in asset.keys]


def run_demo() -> int:
    import datetime as dt

    from dagster import AssetCheckSeverity

    from pm_jobs.materialize import Progress, ensure_store_tables, plan_selection, run_selection

    if os.environ.get("PM_PRICE_SOURCE", "sample") != "sample":
        print("the demo reads the bundled sample data: unset PM_PRICE_SOURCE or set it to 'sample'")
        return 2
    os.environ["PM_PRICE_SOURCE"] = "sample"
    instance = _instance()
    add_tickers(instance, DEMO_TICKERS)
    end = dt.date.fromisoformat(DEMO_END)
    first_feature_day = calendar.shift_trading_days(end, -(DEMO_SESSIONS - 1))
    history_start = settings.start_date().isoformat()
    from pm_resources.ollama import ollama_from_env

    ollama = ollama_from_env()
    llm_sessions = DEMO_LLM_SESSIONS
    first_llm_day = calendar.shift_trading_days(end, -(llm_sessions - 1))
    # A backtest's first position is the signal of two sessions before: earlier dates have none.
    first_backtest_day = calendar.shift_trading_days(first_llm_day, 2).isoformat()
    first_llm_day = first_llm_day.isoformat()
    steps = [
        (["prices"], history_start, "price history for indicator warm-up and forecasts"),
        (["features", "ts_forecasts"], first_feature_day.isoformat(), f"the last {DEMO_SESSIONS} sessions of 2018"),
        (list(LLM_TABLES), first_llm_day,
         f"the last {llm_sessions} sessions, LLM mode {ollama.mode}, Ollama at {ollama.host}"),
        (["signal_outcomes"], first_llm_day, "each signal's realised outcome"),
        (["backtests"], first_backtest_day, "the walk-forward backtest of the stored signals"),
        (["portfolio_backtests"], first_backtest_day, "both tickers as one book"),
        (PAPER_ASSETS, first_llm_day, "the paper book: each close's orders filled at the next open, weighted "
         "equally (60 sessions are too few calls for a measured Kelly size)"),
        (mart_names(), None, "the SQL marts of dbt_like_sql/models"),
    ]
    run_configs = {PAPER_ASSETS[0]: {"ops": {"target_weights": {"config": {"method": "equal"}}}}}
    blocking_failed = 0
    progress = Progress()
    ensure_store_tables()
    for assets, start, why in steps:
        tickers = [] if start is None or assets[0] in DATE_ONLY_ASSETS else DEMO_TICKERS
        selection = plan_selection(instance, assets, tickers, start, DEMO_END if start else None)
        progress.line(f"materializing {selection.describe()}: {why} ...")
        outcomes = run_selection(instance, selection, progress, run_configs.get(assets[0]))
        outcome = outcomes[-1]
        evaluations = [e for o in outcomes for e in o.result.get_asset_check_evaluations()]
        errors = [e.check_name for e in evaluations if not e.passed and e.severity == AssetCheckSeverity.ERROR]
        warnings_ = [e.check_name for e in evaluations if not e.passed and e.severity != AssetCheckSeverity.ERROR]
        blocking_failed += len(errors)
        progress.line(f"  run {outcome.run_id[:8]} {'succeeded' if outcome.success else 'FAILED'} in "
                      f"{outcome.seconds:.1f} s; checks {len(evaluations) - len(errors) - len(warnings_)}/"
                      f"{len(evaluations)} passed"
                      + (f"; FAILED (blocking): {', '.join(errors)}" if errors else "")
                      + (f"; warnings: {', '.join(warnings_)}" if warnings_ else ""))
        if not outcome.success:
            print(f"pm: run {outcome.run_id[:8]} failed at {outcome.failure}", file=sys.stderr)
            return 1
    print("\n".join(store_summary()))
    print("\n".join(llm_summary()))
    print("\n".join(backtest_summary()))
    print("\n".join(llm_scorecard_summary()))
    print("\n".join(book.book_report(settings.duckdb_path())[:5]))
    print("\n".join(portfolio_overview_summary()))
    print(f"\nDagster instance: {instance.root_directory}")
    print("Open it with `make ui`, then http://127.0.0.1:3000: Lineage shows the graph, Catalog -> backtests -> "
          "Partitions -> 2018-12-31 the equity curve and what the LLM added (the tour: docs/ui.md).")
    return 0 if blocking_failed == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pm", description=__doc__.splitlines()[0],
        epilog="With DAGSTER_HOME unset, pm uses the project's instance (.dagster_home). Docs: docs/operations.md")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("demo", help="materialize the sample demo into the instance and print what it shows")
    materialize = commands.add_parser(
        "materialize", help="run assets over dates x tickers in this process (checked first)",
        description="Run assets over a date range and tickers in this process, one run per block of tickers "
                    "adjacent in the universe. Holidays, reversed or out-of-range dates, unknown assets and "
                    "tickers not in the universe are refused in one line before anything runs.")
    _selection_arguments(materialize)
    materialize.add_argument("--config-json", default=None, metavar="JSON",
                             help="run config, as the launchpad takes it, e.g. "
                                  "'{\"ops\": {\"ts_forecasts\": {\"config\": {\"refit_every\": 20}}}}'")
    backfill = commands.add_parser("backfill", help="launch a backfill on the running webserver (as the UI does)",
                                   description="Launch an asset backfill through the running webserver (make ui); "
                                               "the daemon runs it. Checked like pm materialize.")
    _selection_arguments(backfill)
    backfill.add_argument("--url", default=None,
                          help="the webserver (default: the one `make ui` started, else http://127.0.0.1:3000)")
    backfill.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                          help="follow the backfill until it finishes, at most this long; print failed steps' errors")

    tickers = commands.add_parser("tickers", help="list, add, remove or sync the tickers (partitions)")
    tickers_actions = tickers.add_subparsers(dest="action", required=True, metavar="ACTION")
    tickers_actions.add_parser("list", help="the universe, in the order tickers were added")
    add = tickers_actions.add_parser("add", help="add tickers to the universe")
    add.add_argument("symbols", nargs="+", metavar="TICKER")
    remove = tickers_actions.add_parser("remove", help="take tickers out of the universe (stored rows stay)")
    remove.add_argument("symbols", nargs="+", metavar="TICKER")
    sync = tickers_actions.add_parser("sync", help="add every ticker of the watchlist file")
    sync.add_argument("--file", default=None, help="watchlist path (default PM_WATCHLIST, data/watchlist.txt)")

    partitions = commands.add_parser("partitions", help="materialized partitions per asset and ticker")
    partitions.add_argument("assets", nargs="*", help="asset names (default: every asset)")
    failures = commands.add_parser("failures", help="the latest failed runs: step, partitions, root error")
    failures.add_argument("--last", type=int, default=20, help="how many rows (default 20)")
    runs = commands.add_parser("runs", help="pool slots held by runs; release a run whose process died")
    runs_actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    runs_actions.add_parser("slots", help="which runs hold each pool's slots")
    release = runs_actions.add_parser("release", help="mark a dead run failed and free its pool slots")
    release.add_argument("run_id")
    ui = commands.add_parser("ui", help="the Dagster UI and daemon on 127.0.0.1 (what make ui runs)")
    ui.add_argument("--port", type=int, default=3000, help="default 3000")
    commands.add_parser("summary", help="rows per table in the DuckDB store")
    book.add_parser(commands)
    postgres = commands.add_parser(
        "postgres", help="the large-backfill instance: a project-local PostgreSQL (what make large-instance runs)",
        description="Build and start (or stop) the large-backfill instance: Dagster's storage in a PostgreSQL "
                    "on 127.0.0.1 with event batching and ranged planned events (docs/scale.md).")
    postgres_actions = postgres.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, why in [("start", "build the instance if needed and start its PostgreSQL (idempotent)"),
                        ("stop", "stop its PostgreSQL (the data stays)"), ("status", "is its PostgreSQL running, and where")]:
        postgres_actions.add_parser(action, help=why).add_argument(
            "--home", default=None, help="the instance's folder (default .dagster_large)")
    return parser


def _selection_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--assets", required=True, help="comma-separated asset names, e.g. prices,features")
    command.add_argument("--tickers", default=None,
                         help="comma-separated (default: every ticker in the universe; none for portfolio_backtests)")
    command.add_argument("--from", dest="start", default=None, help="first trading day, YYYY-MM-DD")
    command.add_argument("--to", dest="end", default=None, help="last trading day, YYYY-MM-DD (default: --from)")


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore")  # Dagster's beta and preview notices are noise at a terminal
    args = build_parser().parse_args(argv)
    import duckdb
    from dagster import DagsterError

    from pm_jobs.large_instance import LargeInstanceError
    from pm_jobs.selection import SelectionError

    try:
        if args.command == "postgres":
            return run_postgres(args)
        home = use_project_instance()
        if args.command not in ("summary", "failures", "book"):
            print(f"pm: Dagster instance {home}", file=sys.stderr)
        return dispatch(args)
    except (TickerError, settings.SettingsError, calendar.CalendarError, SelectionError, InstanceError,
            FileNotFoundError, ValueError, LargeInstanceError) as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return 2
    except DagsterError as exc:  # an instance or definitions problem: its first line, not the traceback
        print(f"pm: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:  # the store is missing, locked by another writer, or unreadable
        print(f"pm: the store {settings.duckdb_path()}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1


def run_postgres(args: argparse.Namespace) -> int:
    from pm_jobs import large_instance
    from pm_jobs.local_postgres import PostgresFailed, PostgresNotFound

    home = Path(args.home) if args.home else large_instance.default_home()
    try:
        if args.action == "start":
            print("\n".join(large_instance.start(home)))
        else:
            print(large_instance.stop(home) if args.action == "stop" else large_instance.status(home))
    except (PostgresNotFound, PostgresFailed) as exc:
        print(f"pm: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def dispatch(args: argparse.Namespace) -> int:
    if hasattr(args, "func"):  # the commands that moved into modules of this package (pm_jobs/cli/)
        return args.func(args)
    if args.command == "demo":
        return run_demo()
    if args.command == "materialize":
        return run_materialize(args)
    if args.command == "backfill":
        return run_backfill(args)
    if args.command == "ui":
        return run_ui(args.port)
    if args.command == "failures":
        print("\n".join(run_failures_report(args.last)))
        return 0
    if args.command == "runs":
        lines = pool_slot_holders(_instance()) if args.action == "slots" else [release_run(_instance(), args.run_id)]
        print("\n".join(lines))
        return 0
    if args.command == "partitions":
        from pm_assets import ALL_ASSETS

        names = args.assets or [key.to_user_string() for asset in ALL_ASSETS for key in asset.keys]
        print("\n".join(partition_status(_instance(), names)))
        return 0
    if args.command == "summary":
        print("\n".join(store_summary()))
        return 0
    from pm_assets.partitions import TICKERS_PARTITIONS_NAME

    instance = _instance()
    if args.action == "list":
        print("\n".join(instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME)))
    elif args.action == "add":
        print(f"added: {', '.join(add_tickers(instance, args.symbols)) or 'nothing new'}")
    elif args.action == "remove":
        removed = remove_tickers(instance, args.symbols)
        print(f"removed: {', '.join(removed) or 'none of them was in the universe'} "
              "(their stored rows stay in DuckDB)")
    else:
        path = Path(args.file) if args.file else settings.watchlist_path()
        print(f"added: {', '.join(add_tickers(instance, read_watchlist(path))) or 'nothing new'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
