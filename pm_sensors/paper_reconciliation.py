"""paper_reconciliation: after each run that wrote the paper book, an alert row in `run_failures`
(where `pm failures` and the morning's to-do list look) for every date of the run whose paper NAV
is further from the backtest of the same weights than PM_PAPER_ALERT_BPS, and every order still
pending or refused after its session. Rows are keyed by date and kind: a re-run does not repeat them.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from dagster import DagsterRunStatus, DefaultSensorStatus, RunStatusSensorContext, run_status_sensor
from dagster_duckdb import DuckDBResource

from pm_assets.dagster_compat import run_step_successes
from pm_domain import settings
from pm_domain.paper.reconcile import alert_rows
from pm_resources.store import KeyedRows, query, table_exists, upsert_rows
from pm_sensors.run_failures import FAILURE_KEY, FAILURE_SCHEMA, ensure_failures_table, run_partitions

STEP = "paper_trading"  # the multi-asset's op


def failure_rows_for(alerts: pl.DataFrame, job_name: str, tags: dict[str, str], at: dt.datetime) -> pl.DataFrame:
    """The alerts as run_failures rows: run_id `paper:<date>:<kind>`, step the alert's kind."""
    return pl.DataFrame([{
        "run_id": f"paper:{r['date']}:{r['kind']}", "step": r["kind"], "job_name": job_name, "failed_at": at,
        "asset": r["asset"], "partitions": str(r["date"]), "trigger": "paper_reconciliation",
        "error_class": "PaperBookAlert", "error": r["message"],
    } for r in alerts.iter_rows(named=True)], schema=FAILURE_SCHEMA)


def record_alerts(conn, dates: tuple[dt.date, dt.date], job_name: str, tags: dict[str, str]) -> pl.DataFrame:
    """Upsert the alerts of the book's dates in `dates` (first, last); returns the new ones."""
    if not table_exists(conn, "paper_book"):
        return pl.DataFrame(schema=FAILURE_SCHEMA)
    book = query(conn, "SELECT * FROM paper_book WHERE date BETWEEN ? AND ?", list(dates))
    fills = query(conn, "SELECT * FROM paper_fills WHERE date BETWEEN ? AND ?", list(dates)) \
        if table_exists(conn, "paper_fills") else pl.DataFrame(schema={"date": pl.Date, "status": pl.String})
    rows = failure_rows_for(alert_rows(book, fills, settings.paper_alert_bps()), job_name, tags,
                            dt.datetime.now(dt.UTC).replace(tzinfo=None))
    ensure_failures_table(conn)
    known = set(query(conn, "SELECT run_id FROM run_failures WHERE run_id LIKE 'paper:%'")["run_id"].to_list())
    new = rows.filter(~pl.col("run_id").is_in(list(known)))
    if new.height:
        upsert_rows(conn, KeyedRows("run_failures", new, FAILURE_KEY))
    return new


def wrote_the_book(instance, run_id: str) -> bool:
    """Whether the run's paper_trading step (the book's) succeeded: a run's step successes are
    few, whatever its partitions."""
    return STEP in run_step_successes(instance, run_id)


def run_dates(tags: dict[str, str]) -> tuple[dt.date, dt.date] | None:
    partitions = run_partitions(tags)
    if partitions is None or "|" in partitions:
        return None
    first, _, last = partitions.partition("...")
    return dt.date.fromisoformat(first), dt.date.fromisoformat(last or first)


@run_status_sensor(
    name="paper_reconciliation",
    run_status=DagsterRunStatus.SUCCESS,
    monitor_all_code_locations=True,
    default_status=DefaultSensorStatus.RUNNING,
    description="After a run that wrote paper_book: an alert row in run_failures when the paper NAV drifts past "
    "PM_PAPER_ALERT_BPS from the backtest of the same weights, or an order stays unfilled past its session.",
)
def paper_reconciliation_sensor(context: RunStatusSensorContext, duckdb: DuckDBResource):
    run = context.dagster_run
    dates = run_dates(dict(run.tags))
    if dates is None or not wrote_the_book(context.instance, run.run_id):
        return
    with duckdb.get_connection() as conn:
        new = record_alerts(conn, dates, run.job_name, dict(run.tags))
    for row in new.iter_rows(named=True):
        context.log.warning(f"paper book alert {row['partitions']} {row['step']}: {row['error']}")
