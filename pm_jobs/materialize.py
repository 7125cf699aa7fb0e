"""In-process runs for `pm materialize` and `pm demo`: checked selections, short progress lines,
and a failed run told in one line (and recorded in `run_failures`).

A run uses the resources of the environment's settings unless given a `Settings` of its own
(`config`): the demo passes `settings.current().model_copy(update={"price_source": "sample"})`
rather than writing PM_PRICE_SOURCE into the process's environment.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult, JobExecutionResult, logger

from pm_domain import settings
from pm_jobs.selection import BY_DATE, BY_DATE_AND_TICKER, UNPARTITIONED, Selection, check_price_files, plan


def partitioning_by_asset() -> dict[str, str]:
    """Every asset's name and how it is partitioned, in the graph's order."""
    from pm_assets import ALL_ASSETS, SQL_ASSETS
    from pm_assets.partitions import daily_ticker_partitions, trading_day_partitions

    kinds = {}
    for asset in [*ALL_ASSETS, *SQL_ASSETS]:
        kind = (BY_DATE_AND_TICKER if asset.partitions_def == daily_ticker_partitions
                else BY_DATE if asset.partitions_def == trading_day_partitions else UNPARTITIONED)
        for key in asset.keys:
            kinds[key.to_user_string()] = kind
    return kinds


def partition_bounds() -> tuple[dt.date, dt.date]:
    from pm_assets.partitions import trading_day_partitions

    return (dt.date.fromisoformat(trading_day_partitions.get_first_partition_key()),
            dt.date.fromisoformat(trading_day_partitions.get_last_partition_key()))


def plan_selection(instance: DagsterInstance, assets: list[str], tickers: list[str], start: str | None,
                   end: str | None, config: settings.Settings | None = None) -> Selection:
    """What was asked, checked in one line before any run, the price files included (`config`:
    whose price source; default the environment's)."""
    from pm_assets.partitions import TICKERS_PARTITIONS_NAME

    selection = plan(assets, tickers, start, end, partitioning_by_asset(),
                     instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME), partition_bounds())
    return check_price_files(selection, config)


class Progress:
    """Lines for a person at a terminal: what each step says, and a heartbeat when a step is
    silent (Dagster records every partition's event after the step's own work)."""

    def __init__(self, stream=sys.stdout, quiet_seconds: float = 15.0):
        self.stream = stream
        self.quiet_seconds = quiet_seconds
        self.last_line = time.monotonic()
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)
            self.last_line = time.monotonic()

    @contextmanager
    def heartbeat(self, what: str) -> Iterator[None]:
        began = time.monotonic()
        done = threading.Event()

        def beat():
            while not done.wait(1.0):
                if time.monotonic() - self.last_line >= self.quiet_seconds:
                    self.line(f"  ... {what}: {time.monotonic() - began:.0f} s")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def progress_logger(progress: Progress):
    """A Dagster logger that prints the assets' own log lines (not Dagster's event stream), the
    first line of each, as `  step: message`."""

    class StepLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            meta = getattr(record, "dagster_meta", None) or {}
            if meta.get("dagster_event") is not None or record.levelno < logging.INFO:
                return
            message = str(meta.get("orig_message") or record.getMessage()).strip().splitlines()
            level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
            progress.line(f"  {meta.get('step_key') or 'run'}: {level}{message[0] if message else ''}")

    @logger(description="The assets' own log lines, one line each, for `pm`.")
    def step_lines(_init_context) -> logging.Logger:
        log = logging.Logger("pm", level=logging.INFO)
        log.addHandler(StepLines())
        return log

    return step_lines


def execute(instance: DagsterInstance, assets: tuple[str, ...], tags: dict[str, str], progress: Progress,
            run_config: dict | None = None,
            config: settings.Settings | None = None) -> ExecuteInProcessResult | JobExecutionResult:
    """One in-process run; `config` (default: the environment's settings) chooses its resources.
    On a cluster (PM_CELERY_BROKER), the run's steps execute on its workers instead."""
    if config is None and settings.current().celery_broker:
        from pm_jobs.cluster import require_workers

        require_workers(settings.current().celery_broker)
        return execute_on_workers(instance, assets, tags, progress, run_config)
    from pm_jobs.definitions import defs

    chosen = defs if config is None else definitions_for(config)
    job = chosen.resolve_implicit_global_asset_job_def().with_logger_defs({"console": progress_logger(progress)})
    return job.execute_in_process(
        instance=instance,
        asset_selection=[AssetKey(a) for a in assets],
        tags=tags,
        run_config={**(run_config or {}), "loggers": {"console": {}}},
        raise_on_error=False,
    )


def execute_on_workers(instance: DagsterInstance, assets: tuple[str, ...], tags: dict[str, str], progress: Progress,
                       run_config: dict | None = None) -> JobExecutionResult:
    """One run whose steps are Celery tasks on the cluster's workers (this process plans and waits,
    as `dagster asset materialize` does); then each step's worker and outcome, one line each."""
    from dagster import execute_job

    from pm_assets.dagster_compat import free_pool_slots, reconstructable_asset_job

    keys = [AssetKey(a) for a in assets]
    result = execute_job(reconstructable_asset_job("pm_jobs.definitions", "defs", keys), instance=instance,
                         asset_selection=keys, tags=tags, raise_on_error=False,
                         # the lines below say what a person needs; the run's page has every event
                         run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}, **(run_config or {})})
    # A step whose Celery task was lost (its worker's process killed, Redis gone) never recorded its
    # end, so its pool slot would stay taken and every later step of the pool wait; the run is over.
    free_pool_slots(instance, result.run_id)
    workers = {}
    for event in result.all_events:
        worker = event.event_specific_data and getattr(event.event_specific_data, "metadata", {}).get("Celery worker")
        if event.step_key and worker is not None:
            workers[event.step_key] = getattr(worker, "value", worker)
        if event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            outcome = "done" if event.event_type_value == "STEP_SUCCESS" else "FAILED"
            progress.line(f"  {event.step_key}: {outcome} on {workers.get(event.step_key, 'a worker')}")
    return result


@functools.lru_cache(maxsize=4)
def definitions_for(config: settings.Settings) -> Definitions:
    """The definitions with `config`'s resources, built once per Settings (a frozen model, so a key).
    An asset job's resources cannot be overridden per run (Dagster requires the assets' own)."""
    from pm_jobs import definitions

    return definitions.definitions_for(config)


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    success: bool
    seconds: float
    result: ExecuteInProcessResult
    failure: str | None  # the one line that says what went wrong


def run_tags(selection: Selection, block: tuple[str, ...]) -> dict[str, str]:
    from pm_assets.partitions import range_tags

    if selection.start is None:
        return {"pm/trigger": "pm"}
    return {**range_tags(block or None, selection.start, selection.end), "pm/trigger": "pm"}


def run_selection(instance: DagsterInstance, selection: Selection, progress: Progress,
                  run_config: dict | None = None, config: settings.Settings | None = None) -> list[RunOutcome]:
    """One run per ticker block, in order; stops at the first failed run. `config`: as in `execute`."""
    outcomes = []
    for block in selection.ticker_blocks or ((),):
        began = time.perf_counter()
        with progress.heartbeat("still running"):
            result = execute(instance, selection.assets, run_tags(selection, block), progress, run_config, config)
        failure = None if result.success else record_failure(instance, result, config)
        outcomes.append(RunOutcome(result.run_id, result.success, time.perf_counter() - began, result, failure))
        if not result.success:
            break
    return outcomes


def record_failure(instance: DagsterInstance, result: ExecuteInProcessResult,
                   config: settings.Settings | None = None) -> str:
    """Write the failed run into `run_failures` (the store of `config`, default the environment's)
    and return its first failed step in one line."""
    import duckdb

    from pm_sensors.run_failures import run_failure_rows, run_failure_text, write_failure_rows

    from pm_resources.database import store_connection

    failure_events = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    run_error = run_failure_text(next((e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE"), None))
    rows = run_failure_rows(instance.get_run_by_id(result.run_id), failure_events, run_error)
    first = rows.row(0, named=True)
    message = first["error"].strip().splitlines()
    line = f"{first['step']}: {message[0] if message else 'failed'}"
    try:
        with store_connection((config or settings.current()).duckdb_path) as conn:
            write_failure_rows(conn, rows)
    except duckdb.Error as exc:  # the store is locked or unwritable: still tell the person what failed
        return f"{line} (not recorded: {exc})"
    return line


def ensure_store_tables(config: settings.Settings | None = None) -> None:
    """The tables a person queries before anything has gone wrong (`run_failures`) exist from
    the first run on (in the store of `config`, default the environment's)."""
    from pm_resources.database import store_connection
    from pm_sensors.run_failures import ensure_failures_table

    with store_connection((config or settings.current()).duckdb_path) as conn:
        ensure_failures_table(conn)
