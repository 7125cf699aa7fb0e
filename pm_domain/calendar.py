"""NYSE trading days from exchange_calendars: no hand-written holiday lists."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd

from pm_domain.settings import EXCHANGE


SESSION_EPOCH = dt.date(1990, 1, 2)
EXCHANGE_NAME = {"XNYS": "NYSE"}.get(EXCHANGE, EXCHANGE)


class CalendarError(ValueError):
    """A date is not a trading day, or lies outside what the calendar covers."""


@lru_cache(maxsize=4)
def _calendar(exchange: str = EXCHANGE) -> xcals.ExchangeCalendar:
    # exchange_calendars defaults to 20 years back; the sample data starts in 1999.
    return xcals.get_calendar(exchange, start=SESSION_EPOCH.isoformat())


def trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Sessions of the exchange from `start` to `end`, both inclusive."""
    if end < start:
        return []
    sessions = _calendar().sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    return [ts.date() for ts in sessions]


def session_numbers(end: dt.date) -> dict[dt.date, int]:
    """Each session from SESSION_EPOCH to `end` numbered 0, 1, 2...: a fixed grid that does not
    depend on what data a store holds (the forecast refit schedule is laid on it)."""
    return {day: number for number, day in enumerate(trading_days(SESSION_EPOCH, end))}


def non_trading_weekdays(start: dt.date, end: dt.date) -> list[dt.date]:
    """Weekdays in [start, end] on which the exchange is closed (holidays), within calendar range."""
    calendar = _calendar()
    last = min(end, calendar.last_session.date())
    open_days = set(trading_days(start, last))
    weekdays = pd.bdate_range(start, last)
    return [day.date() for day in weekdays if day.date() not in open_days]


def is_trading_day(day: dt.date) -> bool:
    return _calendar().is_session(pd.Timestamp(day))


def closure_reason(day: dt.date) -> str | None:
    """Why the exchange is closed on `day` ("Christmas", "a Saturday"), or None on a session."""
    calendar = _calendar()
    stamp = pd.Timestamp(day)
    if day.weekday() >= 5:
        return f"a {day:%A}"
    if not calendar.first_session <= stamp <= calendar.last_session or calendar.is_session(stamp):
        return None
    named = calendar.regular_holidays.holidays(stamp, stamp, return_name=True)
    if len(named):
        return str(named.iloc[0])
    return "an unscheduled closure, such as a national day of mourning"


def session_problem(day: dt.date) -> str | None:
    """A one-line diagnosis when `day` is not a session, naming the nearest sessions; None on a session."""
    reason = closure_reason(day)
    if reason is None:
        return None
    calendar = _calendar()
    stamp = pd.Timestamp(day)
    try:
        before = calendar.date_to_session(stamp, direction="previous").date()
        after = calendar.date_to_session(stamp, direction="next").date()
    except Exception:  # past the calendar's bounds: no neighbours to name
        return f"{day} is not an {EXCHANGE_NAME} session ({reason})"
    return f"{day} is not an {EXCHANGE_NAME} session ({reason}): the nearest sessions are {before} and {after}"


def shift_trading_days(day: dt.date, offset: int) -> dt.date:
    """The session `offset` sessions after (negative: before) the trading day `day`."""
    calendar = _calendar()
    if not is_trading_day(day):
        raise CalendarError(f"{day} is not a {EXCHANGE} trading day")
    try:
        return calendar.session_offset(pd.Timestamp(day), offset).date()
    except Exception as exc:  # the calendar raises its own errors past its bounds
        raise CalendarError(f"{day} shifted by {offset} sessions is outside the calendar") from exc


def session_open(day: dt.date) -> dt.datetime:
    """The UTC time the session of `day` opens."""
    return _calendar().session_open(pd.Timestamp(day)).to_pydatetime()


def session_close(day: dt.date) -> dt.datetime:
    """The UTC time the session of `day` closes (early closes included)."""
    return _calendar().session_close(pd.Timestamp(day)).to_pydatetime()


def last_closed_session(now: dt.datetime) -> dt.date:
    """The most recent session whose close is at or before `now` (a timezone-aware time)."""
    calendar = _calendar()
    candidate = pd.Timestamp(now.date())
    if not calendar.is_session(candidate):
        candidate = calendar.date_to_session(candidate, direction="previous")
    if calendar.session_close(candidate) > pd.Timestamp(now):
        candidate = calendar.previous_session(candidate)
    return candidate.date()
