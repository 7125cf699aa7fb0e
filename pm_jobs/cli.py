"""`pm`: manage the ticker universe and run the demo against the project-local instance.

    pm tickers list | add TICKER... | remove TICKER... | sync [--file PATH]
    pm partitions [ASSET...]
    pm runs slots | release RUN_ID
    pm backfill --assets A,B --tickers T,U --from DATE --to DATE [--url URL] [--wait SECONDS]
    pm demo
    pm summary
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence

from pm_domain import calendar, settings
from pm_domain.tickers import TickerError, read_watchlist, validate_tickers

DEMO_TICKERS = ["^GSPC", "^IXIC"]
DEMO_END = "2018-12-31"
DEMO_SESSIONS = 120
# The LLM stages cover the last 60 sessions, so the backtests have a window worth reading. With a
# real model the replies are bounded (pm_domain/llm/schemas.py): about 2-4 s a call on two cores.
DEMO_LLM_SESSIONS = 60
LLM_TABLES = ("llm_analysis", "llm_signals", "risk_assessments")


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
    mark it failed, if it still says it is running, and release its slots. Its rows are untouched
    (a killed write never commits)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r} on this instance (`dagster run list` shows them)")
    status = run.status.value
    if not run.is_finished:
        instance.report_run_failed(run, "released by `pm runs release`: its process is gone")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return f"run {run_id} ({status}) marked failed and its pool slots freed" if not run.is_finished \
        else f"run {run_id} ({status}): its pool slots freed"


def run_backfill(args) -> int:
    import datetime as dt

    from pm_assets.partitions import TICKERS_PARTITIONS_NAME
    from pm_jobs.backfill import BackfillError, date_range, launch_backfill, ticker_date_ranges, wait_for_backfill

    assets = [a.strip() for a in args.assets.split(",") if a.strip()]
    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    try:
        if args.tickers:
            order = _instance().get_dynamic_partitions(TICKERS_PARTITIONS_NAME)
            ranges = ticker_date_ranges(validate_tickers(args.tickers.split(",")), start, end, order)
        else:  # an asset partitioned by date alone (portfolio_backtests)
            ranges = date_range(start, end)
        backfill_id = launch_backfill(args.url, assets, ranges)
        print(f"backfill {backfill_id}: {', '.join(assets)} over {', '.join(f'{a}...{b}' for a, b in ranges)} -> "
              f"{args.url}/runs/b/{backfill_id}", flush=True)
        if not args.wait:
            return 0
        progress = wait_for_backfill(args.url, backfill_id, args.wait,
                                     report=lambda p: print(f"  {p.describe()}", flush=True))
    except BackfillError as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return 1
    return 0 if progress.succeeded else 1


def materialize_range(instance, assets: Sequence[str], tickers: Sequence[str] | None, start: str | None,
                      end: str | None):
    """One in-process run of `assets` over dates start..end for the tickers (tickers None: an
    asset partitioned by date alone; start None: assets without partitions, the SQL marts)."""
    from dagster import AssetKey

    from pm_assets.partitions import range_tags
    from pm_jobs.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[AssetKey(a) for a in assets],
        tags=range_tags(tickers, start, end) if start is not None else {},
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )


def portfolio_overview_summary() -> list[str]:
    """The morning page (the portfolio_overview mart), as docs/marts.md shows it."""
    import duckdb

    from pm_resources.store import query, table_exists

    with duckdb.connect(settings.duckdb_path(), read_only=True) as conn:
        if not table_exists(conn, "portfolio_overview"):
            return []
        rows = query(conn, "SELECT ticker, last_price_date, sessions_behind, signal_date, action, confidence, "
                           "signal_source, risk_level, verdict FROM portfolio_overview ORDER BY ticker")
    lines = ["portfolio_overview (the morning page):"]
    for r in rows.iter_rows(named=True):
        confidence = "-" if r["confidence"] is None else f"{r['confidence']:.2f}"
        lines.append(f"  {r['ticker']:<8} prices to {r['last_price_date']} ({r['sessions_behind']} behind)  "
                     f"signal {r['signal_date']} {r['action']} conf {confidence} ({r['signal_source']})  "
                     f"risk {r['risk_level']}  backtest {r['verdict']}")
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
            lines.append(f"  {table:<18} {stats['n']:>7} rows  {stats['tickers']} tickers  "
                         f"{stats['first']} .. {stats['last']}")
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
                   "llm_sharpe_delta_ci_upper, llm_held_back, llm_verdict")


def backtest_summary() -> list[str]:
    """The backtests of the last date: the metrics table docs/demo.md shows."""
    import duckdb

    from pm_resources.store import query, table_exists

    with duckdb.connect(settings.duckdb_path(), read_only=True) as conn:
        if not table_exists(conn, "backtests"):
            return []
        rows = query(conn, "SELECT ticker, date, sessions, total_return, buy_hold_total_return, sharpe, max_drawdown, "
                           "exposure, trades, hit_rate, verdict, verdict_reason FROM backtests "
                           "WHERE date = (SELECT max(date) FROM backtests) ORDER BY ticker")
        book = query(conn, "SELECT weighting, date, sessions, total_return, buy_hold_total_return, sharpe, exposure, verdict, "
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
                     f"trades {r['trades']}  hit rate {number(r['hit_rate'], True)}  {r['verdict']}: {r['verdict_reason']}")
    for r in (book.iter_rows(named=True) if book is not None else []):
        lines.append(f"  book/{r['weighting']:<13} {r['sessions']:>3} sessions  return {number(r['total_return'], True)} "
                     f"vs {number(r['buy_hold_total_return'], True)}  Sharpe {number(r['sharpe'])}  "
                     f"exposure {number(r['exposure'], True)}  {r['verdict']}")
    lines.append("What the LLM adds (final signals vs the same rules with the LLM's veto off, same days):")
    named = [(r["name"], r) for r in attribution.iter_rows(named=True)]
    named += [(f"book/{r['weighting']}", r) for r in (book.iter_rows(named=True) if book is not None else [])]
    for name, r in named:
        interval = ("-" if r["llm_sharpe_delta_ci_lower"] is None
                    else f"[{r['llm_sharpe_delta_ci_lower']:.2f}, {r['llm_sharpe_delta_ci_upper']:.2f}]")
        lines.append(f"  {name:<18} return {number(r['total_return'], True)} vs forecast-only "
                     f"{number(r['forecast_only_total_return'], True)}  Sharpe {number(r['sharpe'])} vs "
                     f"{number(r['forecast_only_sharpe'])}  difference {number(r['llm_delta_sharpe'])} "
                     f"(90% {interval})  held back {r['llm_held_back']}  {r['llm_verdict']}")
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
            SELECT ticker,
                   sum(llm_calls) AS llm_calls,
                   sum(llm_hit_rate * llm_calls) / nullif(sum(llm_calls), 0) AS llm_hit_rate,
                   sum(llm_brier_score * llm_calls) / nullif(sum(llm_calls), 0) AS llm_brier,
                   sum(llm_days_always_up_hit_rate * llm_calls) / nullif(sum(llm_calls), 0) AS llm_up,
                   sum(forecast_calls) AS forecast_calls,
                   sum(forecast_hit_rate * forecast_calls) / nullif(sum(forecast_calls), 0) AS forecast_hit_rate,
                   sum(forecast_brier_score * forecast_calls) / nullif(sum(forecast_calls), 0) AS forecast_brier,
                   sum(forecast_days_always_up_hit_rate * forecast_calls) / nullif(sum(forecast_calls), 0) AS forecast_up
            FROM llm_scorecard GROUP BY ticker ORDER BY ticker""")

    def pct(value) -> str:
        return "-" if value is None else f"{value:.0%}"

    def num(value) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = ["The LLM's own calls vs the forecast's (llm_scorecard; hit rate, Brier, always-up on the same days):"]
    for r in rows.iter_rows(named=True):
        lines.append(f"  {r['ticker']:<8} LLM {r['llm_calls']} calls, hit {pct(r['llm_hit_rate'])}, Brier "
                     f"{num(r['llm_brier'])} (always up {pct(r['llm_up'])})  forecast {r['forecast_calls']} calls, hit "
                     f"{pct(r['forecast_hit_rate'])}, Brier {num(r['forecast_brier'])} (always up {pct(r['forecast_up'])})")
    return lines


def mart_names() -> list[str]:
    from pm_assets import SQL_ASSETS

    return [key.to_user_string() for asset in SQL_ASSETS for key in asset.keys]


def run_demo() -> int:
    warnings.filterwarnings("ignore")  # dagster's beta warnings are noise for a demo
    import datetime as dt
    import os

    from dagster import AssetCheckSeverity

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
        (mart_names(), None, "the SQL marts of dbt_like_sql/models"),
    ]
    blocking_failed = 0
    for assets, start, why in steps:
        began = time.perf_counter()
        scope = f" for {', '.join(DEMO_TICKERS)} {start}..{DEMO_END}" if start else ""
        print(f"materializing {', '.join(assets)}{scope} ({why}) ...", flush=True)
        result = materialize_range(instance, assets, None if assets == ["portfolio_backtests"] else DEMO_TICKERS,
                                   start, DEMO_END if start else None)
        evaluations = result.get_asset_check_evaluations()
        errors = [e.check_name for e in evaluations if not e.passed and e.severity == AssetCheckSeverity.ERROR]
        warnings_ = [e.check_name for e in evaluations if not e.passed and e.severity != AssetCheckSeverity.ERROR]
        blocking_failed += len(errors)
        print(f"  run {result.run_id[:8]} {'succeeded' if result.success else 'FAILED'} in "
              f"{time.perf_counter() - began:.1f} s; checks {len(evaluations) - len(errors) - len(warnings_)}/"
              f"{len(evaluations)} passed"
              + (f"; FAILED (blocking): {', '.join(errors)}" if errors else "")
              + (f"; warnings: {', '.join(warnings_)}" if warnings_ else ""))
        if not result.success:
            return 1
    print("\n".join(store_summary()))
    print("\n".join(llm_summary()))
    print("\n".join(backtest_summary()))
    print("\n".join(llm_scorecard_summary()))
    print("\n".join(portfolio_overview_summary()))
    print(f"\nDagster instance: {instance.root_directory}")
    print("Open the UI on this instance with `make ui`, then http://127.0.0.1:3000 "
          "(Assets -> prices / features / ts_forecasts / llm_* / risk_assessments / signal_outcomes / backtests / "
          "portfolio_backtests -> Partitions shows the materialized keys, their metadata, plots (the equity "
          "curve on backtests), each LLM row's source and latency, and the checks).")
    return 0 if blocking_failed == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pm", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tickers = commands.add_parser("tickers", help="list, add or sync tickers (partitions)")
    tickers_actions = tickers.add_subparsers(dest="action", required=True)
    tickers_actions.add_parser("list")
    add = tickers_actions.add_parser("add")
    add.add_argument("symbols", nargs="+")
    remove = tickers_actions.add_parser("remove", help="take tickers out of the universe (stored rows stay)")
    remove.add_argument("symbols", nargs="+")
    sync = tickers_actions.add_parser("sync", help="add every ticker of the watchlist file")
    sync.add_argument("--file", default=None, help="watchlist path (default PM_WATCHLIST)")
    runs = commands.add_parser("runs", help="pool slots held by runs; release a run whose process died")
    runs_actions = runs.add_subparsers(dest="action", required=True)
    runs_actions.add_parser("slots", help="which runs hold each pool's slots")
    release = runs_actions.add_parser("release", help="mark a dead run failed and free its pool slots")
    release.add_argument("run_id")
    partitions = commands.add_parser("partitions", help="materialized partitions per asset and ticker")
    partitions.add_argument("assets", nargs="*", help="asset names (default: every asset)")
    backfill = commands.add_parser("backfill", help="launch a backfill on a running webserver (as the UI does)")
    backfill.add_argument("--assets", required=True, help="comma-separated asset names")
    backfill.add_argument("--tickers", default=None, help="comma-separated; omit for portfolio_backtests")
    backfill.add_argument("--from", dest="start", required=True, help="first date, YYYY-MM-DD")
    backfill.add_argument("--to", dest="end", required=True, help="last date, YYYY-MM-DD")
    backfill.add_argument("--url", default="http://127.0.0.1:3000", help="the webserver (make ui)")
    backfill.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                          help="follow the backfill until it finishes, at most this long")
    commands.add_parser("demo", help="materialize the sample demo into the project instance")
    commands.add_parser("summary", help="rows per table in the DuckDB store")
    args = parser.parse_args(argv)

    try:
        if args.command == "demo":
            return run_demo()
        if args.command == "backfill":
            return run_backfill(args)
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
            from pathlib import Path

            path = Path(args.file) if args.file else settings.watchlist_path()
            print(f"added: {', '.join(add_tickers(instance, read_watchlist(path))) or 'nothing new'}")
        return 0
    except (TickerError, settings.SettingsError, calendar.CalendarError, FileNotFoundError, ValueError) as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
