"""`pm demo`: the sample data through every stage into the instance and the store, then what it
shows (docs/demo.md). The steps are the table STEPS, walked in order."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import sys
from typing import NamedTuple

from pm_domain import settings
from pm_jobs.cli import book, reports
from pm_jobs.cli.instance import dagster_instance
from pm_jobs.cli.materialize import TerminalLines
from pm_jobs.cli.tickers import add_tickers

DEMO_TICKERS = ("^GSPC", "^IXIC")
DEMO_END = dt.date(2018, 12, 31)
DEMO_SESSIONS = 120
# The LLM stages cover the last 60 sessions, so the backtests have a window worth reading. With a
# real model the replies are bounded (pm_domain/llm/schemas.py): about 2-4 s a call on two cores.
DEMO_LLM_SESSIONS = 60
PAPER_ASSETS = ("target_weights", "paper_fills", "paper_book", "paper_orders")
MARTS = ()  # the step's assets are the SQL marts of dbt_like_sql/models, whatever they are


class Step(NamedTuple):
    """One run of the demo: which assets, from which first day (a key of `first_days`; None for
    unpartitioned assets) to DEMO_END, per ticker or by date alone, and what to say of it."""

    assets: tuple[str, ...]
    first_day: str | None
    by_ticker: bool
    says: str  # formatted with the demo's figures: sessions, llm_sessions, mode, host
    run_config: dict | None = None


STEPS = (
    Step(("prices",), "history", True, "price history for indicator warm-up and forecasts"),
    Step(("features", "ts_forecasts"), "features", True, "the last {sessions} sessions of 2018"),
    Step(reports.LLM_TABLES, "llm", True, "the last {llm_sessions} sessions, LLM mode {mode}, Ollama at {host}"),
    Step(("signal_outcomes",), "llm", True, "each signal's realised outcome"),
    Step(("backtests",), "backtests", True, "the walk-forward backtest of the stored signals"),
    Step(("portfolio_backtests",), "backtests", False, "both tickers as one book"),
    Step(PAPER_ASSETS, "llm", False, "the paper book: each close's orders filled at the next open, equal weights "
         "(too few calls for Kelly)",
         {"ops": {"target_weights": {"config": {"method": "equal"}}}}),
    Step(MARTS, None, False, "the SQL marts of dbt_like_sql/models"),
)


def add_parser(commands) -> None:
    commands.add_parser("demo", help="materialize the sample demo into the instance and print what it shows"
                        ).set_defaults(func=run)


def demo_settings() -> settings.Settings | None:
    """The environment's settings with the bundled sample data as the price source, passed to every
    run as configuration; None when PM_PRICE_SOURCE names another source (the demo refuses it)."""
    config = settings.current()
    if "price_source" in config.model_fields_set and config.price_source != "sample":
        return None
    return config.model_copy(update={"price_source": "sample"})


def first_days(config: settings.Settings) -> dict[str, str]:
    """Each step's first day: the price history from PM_START_DATE, features and forecasts over
    the last DEMO_SESSIONS, the LLM stages over the last DEMO_LLM_SESSIONS, and the backtests two
    sessions later (a backtest's first position is the signal of two sessions before)."""
    from pm_domain import calendar  # exchange_calendars and pandas: not for `pm --help`

    first_llm_day = calendar.shift_trading_days(DEMO_END, -(DEMO_LLM_SESSIONS - 1))
    return {"history": config.start_date.isoformat(),
            "features": calendar.shift_trading_days(DEMO_END, -(DEMO_SESSIONS - 1)).isoformat(),
            "llm": first_llm_day.isoformat(),
            "backtests": calendar.shift_trading_days(first_llm_day, 2).isoformat()}


def run(args: argparse.Namespace) -> int:
    # the engine and the resources import dagster and every asset: not for `pm --help`
    from pm_assets import SQL_ASSETS
    from pm_jobs.materialize import Progress, ensure_store_tables
    from pm_resources.ollama import ollama_from

    config = demo_settings()
    if config is None:
        print("the demo reads the bundled sample data: unset PM_PRICE_SOURCE or set it to 'sample'")
        return 2
    instance = dagster_instance()
    add_tickers(instance, DEMO_TICKERS)
    ollama = ollama_from(config)
    figures = {"sessions": DEMO_SESSIONS, "llm_sessions": DEMO_LLM_SESSIONS, "mode": ollama.mode, "host": ollama.host}
    marts = tuple(key.to_user_string() for asset in SQL_ASSETS for key in asset.keys)
    starts = first_days(config)
    progress = Progress(stream=TerminalLines())
    ensure_store_tables(config)
    blocking_failed = 0
    for step in STEPS:
        failed = run_step(instance, step._replace(assets=step.assets or marts), starts, figures, progress, config)
        if failed is None:
            return 1
        blocking_failed += failed
    for report in (reports.store_summary, reports.llm_summary, reports.backtest_summary,
                   reports.llm_scorecard_summary, paper_book_head, reports.portfolio_overview_summary):
        print("\n".join(report()))
    print(f"\nDagster instance: {instance.root_directory}")
    print("Open it with `make ui`, then http://127.0.0.1:3000: Lineage shows the graph, Catalog -> backtests ->\n"
          "Partitions -> 2018-12-31 the equity curve and what the LLM added (the tour: docs/ui.md).")
    return 0 if blocking_failed == 0 else 1


def run_step(instance, step: Step, starts: dict[str, str], figures: dict, progress,
             config: settings.Settings) -> int | None:
    """Materialize one step and print its checks; the number of blocking checks that failed, or
    None when a run failed (said on stderr)."""
    from dagster import AssetCheckSeverity  # dagster takes seconds to import: not for `pm --help`

    from pm_jobs.materialize import plan_selection, run_selection

    start = starts[step.first_day] if step.first_day else None
    tickers = list(DEMO_TICKERS) if step.by_ticker and start else []
    selection = plan_selection(instance, list(step.assets), tickers, start, DEMO_END.isoformat() if start else None,
                               config)
    progress.line(f"materializing {selection.describe()}:")
    progress.line(f"  {step.says.format(**figures)} ...")
    outcomes = run_selection(instance, selection, progress, step.run_config, config=config)
    outcome = outcomes[-1]
    evaluations = [e for o in outcomes for e in o.result.get_asset_check_evaluations()]
    errors = [e.check_name for e in evaluations if not e.passed and e.severity == AssetCheckSeverity.ERROR]
    warnings = [e.check_name for e in evaluations if not e.passed and e.severity != AssetCheckSeverity.ERROR]
    progress.line(f"  run {outcome.run_id[:8]} {'succeeded' if outcome.success else 'FAILED'} in "
                  f"{outcome.seconds:.1f} s; checks {len(evaluations) - len(errors) - len(warnings)}/"
                  f"{len(evaluations)} passed"
                  + (f"; FAILED (blocking): {', '.join(errors)}" if errors else "")
                  + (f"; warnings: {', '.join(warnings)}" if warnings else ""))
    if not outcome.success:
        print(f"pm: run {outcome.run_id[:8]} failed at {outcome.failure}", file=sys.stderr)
        return None
    return len(errors)


def paper_book_head() -> list[str]:
    """The paper book's summary, the lines before its positions (`pm book` prints it all)."""
    lines = book.book_report(settings.duckdb_path())
    return list(itertools.takewhile(lambda line: not line.startswith("positions"), lines))
