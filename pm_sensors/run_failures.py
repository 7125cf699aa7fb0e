"""run_failures: every failed run on the instance becomes rows of the `run_failures` table (one
per failed step: the asset, the partitions, the error), and a log line.

The sensor watches every run the instance records, those launched by the webserver and the daemon
and those run in a process of their own (`dagster asset materialize`, tests), once the daemon is
running; `pm materialize` and `pm demo` record their own failures at once (the same rows: the key
is run and step). `pm failures` and `SELECT * FROM run_failures ORDER BY failed_at DESC` are the
morning's to-do list; the UI's run page has the full logs.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl
from collections.abc import Sequence

import duckdb as duckdb_module
from dagster import DagsterRun, DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor
from dagster_duckdb import DuckDBResource

from pm_assets import ALL_ASSETS, SQL_ASSETS
from pm_assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from pm_resources.store import KeyedRows, create_table, upsert_rows

FAILURE_SCHEMA = {
    "run_id": pl.String, "step": pl.String, "job_name": pl.String, "failed_at": pl.Datetime("us"),
    "asset": pl.String, "partitions": pl.String, "trigger": pl.String, "error_class": pl.String,
    "error": pl.String,
}
FAILURE_KEY = ("run_id", "step")


def run_partitions(tags: dict[str, str]) -> str | None:
    """The partitions a run covered, as its tags say: one key, or `start...end`."""
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    if RANGE_START_TAG in tags:
        return f"{tags[RANGE_START_TAG]}...{tags.get(RANGE_END_TAG, '?')}"
    return None


def failure_rows(run_id: str, job_name: str, tags: dict[str, str], failed_at: dt.datetime,
                 step_failures: list[tuple[str, str | None, str]], run_error: str, assets: set[str]) -> pl.DataFrame:
    """One row per failed step (step key, error class, message); a run that failed outside any
    step (it could not start, or was killed) gets one row with step `(run)`."""
    failures = step_failures or steps_lost_by_workers(run_error) or [("(run)", None, run_error)]
    return pl.DataFrame(
        [{"run_id": run_id, "step": step, "job_name": job_name, "failed_at": failed_at,
          # an asset's op is named after the asset; a check's step is not an asset
          "asset": step if step in assets else None, "partitions": run_partitions(tags),
          "trigger": tags.get("pm/trigger") or tags.get("dagster/schedule_name") or tags.get("dagster/sensor_name"),
          "error_class": error_class, "error": message[:4000]}
         for step, error_class, message in failures],
        schema=FAILURE_SCHEMA,
    )


def steps_lost_by_workers(run_error: str) -> list[tuple[str, str | None, str]]:
    """(step, error class, message) of each step whose Celery task failed outside the step, as
    dagster-celery's run error lists them (`[ts_forecasts]: billiard.exceptions.WorkerLostError:
    Worker exited prematurely: signal 9 (SIGKILL)`): the step never recorded a failure of its own."""
    found = []
    for line in run_error.splitlines():
        match = WORKER_STEP_ERROR.match(line.strip())
        if match:
            step, qualified, message = match.groups()
            found.append((step, qualified.split(".")[-1], message))
    return found


WORKER_STEP_ERROR = re.compile(r"^\[([\w.-]+)\]: ([\w.]+): (.+)$")


def run_failure_text(failure_event) -> str:
    """The run failure's error (dagster-celery's names the lost steps), else its message."""
    error = getattr(failure_event.event_specific_data, "error", None) if failure_event else None
    return error.message if error is not None else (failure_event.message or "" if failure_event else "")


def without_class(message: str, cls_name: str | None) -> str:
    """`pkg.module.SomeError: what happened` -> `what happened` (the class has its own column)."""
    head, sep, rest = message.strip().partition(": ")
    return rest if sep and cls_name and head.split(".")[-1] == cls_name else message.strip()


def ensure_failures_table(conn: duckdb_module.DuckDBPyConnection) -> None:
    """Create the empty table, so the to-do list can be queried before anything has failed."""
    create_table(conn, "run_failures", FAILURE_SCHEMA)


def step_failure_causes(step_failure_events: Sequence) -> list[tuple[str, str | None, str]]:
    """(step, root error class, root message) of each STEP_FAILURE event.

    Dagster wraps the asset's exception in its own step error: the root cause is the one that
    names what was wrong (the full chain is on the run page)."""
    causes = []
    for event in step_failure_events:
        error = getattr(event.event_specific_data, "error", None)
        while error is not None and error.cause is not None:
            error = error.cause
        causes.append((event.step_key or "(unknown step)", getattr(error, "cls_name", None),
                       without_class(error.message, error.cls_name) if error is not None else event.message or ""))
    return causes


def run_failure_rows(run: DagsterRun, step_failure_events: Sequence, run_error: str) -> pl.DataFrame:
    """The run's failure rows (one per failed step), as of now."""
    assets = {key.to_user_string() for asset in [*ALL_ASSETS, *SQL_ASSETS] for key in asset.keys}
    return failure_rows(run.run_id, run.job_name, dict(run.tags), dt.datetime.now(dt.UTC).replace(tzinfo=None),
                        step_failure_causes(step_failure_events), run_error, assets)


def write_failure_rows(conn: duckdb_module.DuckDBPyConnection, rows: pl.DataFrame) -> None:
    ensure_failures_table(conn)
    upsert_rows(conn, KeyedRows("run_failures", rows, FAILURE_KEY))


def record_failed_run(conn: duckdb_module.DuckDBPyConnection, run: DagsterRun, step_failure_events: Sequence,
                      run_error: str) -> pl.DataFrame:
    """Upsert the run's failure rows (one per failed step) and return them."""
    rows = run_failure_rows(run, step_failure_events, run_error)
    write_failure_rows(conn, rows)
    return rows


@run_failure_sensor(
    name="run_failures",
    default_status=DefaultSensorStatus.RUNNING,
    # Every run on the instance, in-process ones included: they have no code location to match.
    monitor_all_code_locations=True,
    description="Records every failed run on the instance (asset, partitions, root error) in the run_failures table.",
)
def run_failures_sensor(context: RunFailureSensorContext, duckdb: DuckDBResource):
    with duckdb.get_connection() as conn:
        rows = record_failed_run(conn, context.dagster_run, context.get_step_failure_events(),
                                 run_failure_text(context.failure_event))
    for row in rows.iter_rows(named=True):
        context.log.warning(f"run {row['run_id'][:8]} ({row['job_name']}) failed at {row['step']} "
                            f"on {row['partitions']}: {row['error_class']}: {row['error'].splitlines()[0][:200]}")
