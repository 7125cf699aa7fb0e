"""paper_trading: each night, once every ticker's risk_assessments of a date is in, the paper
book's run for that date (target_weights, then fills at its open of the orders placed the night
before, the book at its close, and the orders for the next open).

A book is path-dependent, so a night missed (the daemon down) is caught up in the same run: it
starts after the last date the book has. The cursor is the last risk_assessments event read.
"""

from __future__ import annotations

import datetime as dt

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from pm_assets.dagster_compat import materialized_partitions
from pm_assets.partitions import TICKERS_PARTITIONS_NAME, range_tags
from pm_domain import calendar
from pm_jobs.jobs import paper_job
from pm_sensors.signal_validation import TRIGGER_TAG, new_dates_of, parse_key

WATCHED = "risk_assessments"


def paper_range(complete: set[dt.date], booked: set[dt.date]) -> tuple[dt.date, dt.date] | None:
    """The dates the next paper run covers: from the first session after the book's last date (or
    the first complete date of a new book) to the last complete date; None when nothing is new."""
    todo = {day for day in complete if not booked or day > max(booked)}
    if not todo:
        return None
    last = max(todo)
    first = calendar.shift_trading_days(max(booked), 1) if booked else min(todo)
    return min(first, last), last


def complete_dates(new_dates: set[dt.date], materialized: set[tuple[dt.date, str]], universe: list[str]) -> set[dt.date]:
    """The new dates on which every ticker of the universe has its risk assessment."""
    return {day for day in new_dates if universe and all((day, t) in materialized for t in universe)}


@sensor(
    name="paper_trading",
    job=paper_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Once every ticker's risk_assessments of a date is in, runs the paper book for it: target weights, "
    "fills at its open of the previous night's orders, the book, and the orders for the next open.",
)
def paper_trading_sensor(context: SensorEvaluationContext):
    watched = new_dates_of(context, WATCHED)
    if isinstance(watched, SensorResult):
        return watched
    new_dates, cursor = watched
    instance = context.instance
    universe = list(instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME))
    done = {parse_key(k) for k in materialized_partitions(instance, WATCHED)}
    booked = {dt.date.fromisoformat(k) for k in materialized_partitions(instance, "paper_book")}
    span = paper_range(complete_dates(new_dates, done, universe), booked)
    if span is None:
        return SensorResult(skip_reason=SkipReason("no date has every ticker's risk_assessments yet, or the book has it"),
                            cursor=cursor)
    first, last = span
    context.log.info(f"paper book {first}..{last}: every ticker's risk_assessments is in")
    return SensorResult(run_requests=[RunRequest(run_key=f"paper:{first}..{last}:{cursor}", job_name=paper_job.name,
                                                 tags={**range_tags(None, first, last), TRIGGER_TAG: "paper_trading"})],
                        cursor=cursor)
