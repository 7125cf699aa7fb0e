"""nightly_research: after the US close, the day's session for every ticker, in one run.

Replaces the old hand-scheduled nightly `.bat`. The tick runs on weekdays at PM_NIGHTLY_TIME in
PM_NIGHTLY_TIMEZONE (default 18:30 America/New_York); a weekday that is not an NYSE session
(a holiday), or a tick before that session's close, is skipped with the reason.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from pm_assets.partitions import EXCHANGE_TIMEZONE, TICKERS_PARTITIONS_NAME, range_tags
from pm_domain import calendar, settings
from pm_jobs.jobs import research_job


def nightly_cron(at: dt.time) -> str:
    return f"{at.minute} {at.hour} * * 1-5"


def session_to_run(tick: dt.datetime) -> tuple[dt.date | None, str]:
    """The session a tick at `tick` (timezone-aware) materializes, or None and why not.

    It is the exchange-local date of the tick, provided that date is a session that has closed."""
    local_day = tick.astimezone(ZoneInfo(EXCHANGE_TIMEZONE)).date()
    if not calendar.is_trading_day(local_day):
        return None, f"{local_day} is not an {calendar.EXCHANGE} session (weekend or exchange holiday)"
    close = calendar.session_close(local_day)
    if close > tick:
        return None, (f"the {local_day} session closes at {close.astimezone(ZoneInfo(EXCHANGE_TIMEZONE)):%H:%M} "
                      f"{EXCHANGE_TIMEZONE}, after this tick ({tick.isoformat()}): set PM_NIGHTLY_TIME later")
    return local_day, "closed"


@schedule(
    name="nightly_research",
    job=research_job,
    cron_schedule=nightly_cron(settings.nightly_time()),
    execution_timezone=settings.nightly_timezone(),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekdays after the US close: the day's session through the research stages for every "
    "ticker of the universe, as one run. Holidays are skipped.",
)
def nightly_research_schedule(context: ScheduleEvaluationContext):
    day, why = session_to_run(context.scheduled_execution_time)
    if day is None:
        return SkipReason(why)
    tickers = context.instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME)
    if not tickers:
        return SkipReason("the universe is empty: add tickers with `pm tickers add`, the watchlist or the UI")
    context.log.info(f"nightly run for {day}: {len(tickers)} ticker(s) {', '.join(tickers[:10])}")
    # One run covers every ticker: a rectangle from the first ticker to the last, on one date.
    return RunRequest(run_key=f"nightly:{day}", tags={**range_tags(tickers, day, day), "pm/trigger": "nightly"})
