"""run_failures: every failed run of this code location becomes rows of the `run_failures`
table (one per failed step: the asset, the partitions, the error), and a log line.

`SELECT * FROM run_failures ORDER BY failed_at DESC` is the morning's to-do list; the UI's run
page has the full logs.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from dagster import DefaultSensorStatus, RunFailureSensorContext, run_failure_sensor
from dagster_duckdb import DuckDBResource

from pm_assets import ALL_ASSETS, SQL_ASSETS
from pm_assets.partitions import RANGE_END_TAG, RANGE_START_TAG
from pm_resources.store import KeyedRows, upsert_rows

FAILURE_SCHEMA = {
    "run_id": pl.String, "step": pl.String, "job_name": pl.String, "failed_at": pl.Datetime("us"),
    "asset": pl.String, "partitions": pl.String, "trigger": pl.String, "error_class": pl.String,
    "error": pl.String,
}


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
    failures = step_failures or [("(run)", None, run_error)]
    return pl.DataFrame(
        [{"run_id": run_id, "step": step, "job_name": job_name, "failed_at": failed_at,
          # an asset's op is named after the asset; a check's step is not an asset
          "asset": step if step in assets else None, "partitions": run_partitions(tags),
          "trigger": tags.get("pm/trigger") or tags.get("dagster/schedule_name") or tags.get("dagster/sensor_name"),
          "error_class": error_class, "error": message[:4000]}
         for step, error_class, message in failures],
        schema=FAILURE_SCHEMA,
    )


def _without_class(message: str, cls_name: str | None) -> str:
    """`pkg.module.SomeError: what happened` -> `what happened` (the class has its own column)."""
    head, sep, rest = message.strip().partition(": ")
    return rest if sep and cls_name and head.split(".")[-1] == cls_name else message.strip()


@run_failure_sensor(
    name="run_failures",
    default_status=DefaultSensorStatus.RUNNING,
    description="Records every failed run (asset, partitions, error) in the run_failures table.",
)
def run_failures_sensor(context: RunFailureSensorContext, duckdb: DuckDBResource):
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        error = getattr(event.event_specific_data, "error", None)
        # Dagster wraps the asset's exception in its own step error: record the root cause, the
        # one that names what was wrong (the full chain is on the run page).
        while error is not None and error.cause is not None:
            error = error.cause
        steps.append((event.step_key or "(unknown step)", getattr(error, "cls_name", None),
                      _without_class(error.message, error.cls_name) if error is not None else event.message or ""))
    assets = {key.to_user_string() for asset in [*ALL_ASSETS, *SQL_ASSETS] for key in asset.keys}
    rows = failure_rows(run.run_id, run.job_name, dict(run.tags), dt.datetime.now(dt.UTC).replace(tzinfo=None),
                        steps, context.failure_event.message or "", assets)
    with duckdb.get_connection() as conn:
        upsert_rows(conn, KeyedRows("run_failures", rows, ("run_id", "step")))
    for row in rows.iter_rows(named=True):
        context.log.warning(f"run {row['run_id'][:8]} ({row['job_name']}) failed at {row['step']} "
                            f"on {row['partitions']}: {row['error_class']}: {row['error'].splitlines()[0][:200]}")
