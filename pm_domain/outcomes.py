"""What became of each signal: the realised return after 1, 5 and 30 trading days, hit or miss,
and a status that stays `pending` until the 30-session window has closed.

Timing: a signal at date t is computed from the close of t, so it is entered at the NEXT close,
t+1 (the entry), and its h-day return is P(t+1+h) / P(t+1) - 1, where t+1+h counts exchange
sessions on the calendar, never price rows: a missing price leaves that return null (a gap),
it does not shift the window onto a later day. P is the price every stage measures returns on
(adjusted close where the source gives it). A BUY is a hit when its return at the signal's own
horizon is > 0, a SELL when it is < 0; HOLD is not a call and has no hit.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from pm_domain import calendar

OUTCOME_HORIZONS = (1, 5, 30)
TRACKING_SESSIONS = max(OUTCOME_HORIZONS)
ENTRY_LAG_SESSIONS = 1
DIRECTION = {"BUY": 1, "SELL": -1, "HOLD": 0}
STATUSES = ("pending", "validated", "failed", "not_traded")

OUTCOME_SCHEMA = {
    "ticker": pl.String, "date": pl.Date, "action": pl.String, "confidence": pl.Float64,
    "position_size": pl.Float64, "horizon": pl.Int64, "entry_date": pl.Date, "entry_price": pl.Float64,
    **{f"realised_return_{h}d": pl.Float64 for h in OUTCOME_HORIZONS},
    "horizon_date": pl.Date, "realised_return_horizon": pl.Float64, "trade_return_horizon": pl.Float64,
    "hit": pl.Boolean, "window_end_date": pl.Date, "sessions_tracked": pl.Int64,
    "last_price_date": pl.Date, "status": pl.String, "status_reason": pl.String,
}


class SessionGrid:
    """Exchange sessions numbered on a fixed grid, to move a date by n sessions in a frame."""

    def __init__(self, first: dt.date, last: dt.date):
        self.days = calendar.trading_days(first, last)
        self.frame = pl.DataFrame({"date": self.days, "session": range(len(self.days))},
                                  schema={"date": pl.Date, "session": pl.Int64})

    @classmethod
    def around(cls, first: dt.date, last: dt.date, sessions_after: int) -> SessionGrid:
        """From `first` to `sessions_after` sessions past `last` (future sessions included: the
        calendar knows them, the prices do not yet)."""
        return cls(first, calendar.shift_trading_days(last, sessions_after))

    def number(self, column: str, alias: str) -> pl.Expr:
        mapping = dict(zip(self.days, range(len(self.days)), strict=True))
        return pl.col(column).replace_strict(mapping, default=None, return_dtype=pl.Int64).alias(alias)

    def date(self, session: pl.Expr, alias: str) -> pl.Expr:
        mapping = dict(zip(range(len(self.days)), self.days, strict=True))
        return session.replace_strict(mapping, default=None, return_dtype=pl.Date).alias(alias)


def signal_dates_observed_on(price_date: dt.date) -> list[dt.date]:
    """The signal dates whose 1-, 5- or 30-session outcome becomes observable with the close of
    `price_date`: each t with t + ENTRY_LAG_SESSIONS + h = price_date, h in OUTCOME_HORIZONS
    (the last of them, h = 30, is the one whose status leaves `pending`). Dates before the
    calendar's first session are left out."""
    dates = []
    for horizon in OUTCOME_HORIZONS:
        try:
            dates.append(calendar.shift_trading_days(price_date, -(ENTRY_LAG_SESSIONS + horizon)))
        except calendar.CalendarError:
            continue
    return dates


def direction(action: pl.Expr) -> pl.Expr:
    """+1 for BUY, -1 for SELL, 0 for HOLD."""
    return action.replace_strict(DIRECTION, return_dtype=pl.Int64)


def call_hit(action: pl.Expr, realised_return: pl.Expr) -> pl.Expr:
    """True when a BUY rose or a SELL fell over the return; null for HOLD or an unknown return."""
    return (pl.when((action == "HOLD") | realised_return.is_null()).then(None)
            .otherwise(direction(action) * realised_return > 0))


def signal_outcomes(signals: pl.DataFrame, prices: pl.DataFrame) -> pl.DataFrame:
    """One row per signal (ticker, date, action, confidence, position_size, horizon), from prices
    (ticker, date, price) after it. `prices` must hold every stored price of the ticker from the
    entry on (at least through window_end_date): the last price date in it is what the status
    reads as "data so far"."""
    if signals.is_empty():
        return pl.DataFrame(schema=OUTCOME_SCHEMA)
    grid = SessionGrid.around(signals["date"].min(), signals["date"].max(),
                              ENTRY_LAG_SESSIONS + TRACKING_SESSIONS)
    price_at = prices.select("ticker", "date", "price")
    last_price = prices.group_by("ticker").agg(pl.col("date").max().alias("last_price_date"))
    rows = signals.select("ticker", "date", "action", "confidence", "position_size", "horizon").with_columns(
        grid.number("date", "signal_session"))
    if rows["signal_session"].null_count():
        first = rows.filter(pl.col("signal_session").is_null()).row(0, named=True)
        raise ValueError(f"signal on {first['date']} for {first['ticker']} is not a trading day")
    rows = rows.with_columns(
        grid.date(pl.col("signal_session") + ENTRY_LAG_SESSIONS, "entry_date"),
        *(grid.date(pl.col("signal_session") + ENTRY_LAG_SESSIONS + h, f"exit_date_{h}d") for h in OUTCOME_HORIZONS),
        grid.date(pl.col("signal_session") + ENTRY_LAG_SESSIONS + pl.col("horizon"), "horizon_date"),
    )

    def price(on: str, alias: str) -> pl.DataFrame:
        return price_at.rename({"date": on, "price": alias})

    rows = rows.join(price("entry_date", "entry_price"), on=["ticker", "entry_date"], how="left")
    for exit_column in [*(f"exit_date_{h}d" for h in OUTCOME_HORIZONS), "horizon_date"]:
        rows = rows.join(price(exit_column, f"{exit_column}_price"), on=["ticker", exit_column], how="left")
    rows = rows.join(last_price, on="ticker", how="left")

    def realised(exit_column: str) -> pl.Expr:
        return pl.col(f"{exit_column}_price") / pl.col("entry_price") - 1.0

    window_end = pl.col(f"exit_date_{TRACKING_SESSIONS}d")
    rows = rows.with_columns(
        *(realised(f"exit_date_{h}d").alias(f"realised_return_{h}d") for h in OUTCOME_HORIZONS),
        realised("horizon_date").alias("realised_return_horizon"),
        window_end.alias("window_end_date"),
    ).with_columns(
        (direction(pl.col("action")) * pl.col("realised_return_horizon")).alias("trade_return_horizon"),
        call_hit(pl.col("action"), pl.col("realised_return_horizon")).alias("hit"),
        sessions_tracked(grid),
    )
    return rows.with_columns(*_status(window_end)).select(list(OUTCOME_SCHEMA)).cast(OUTCOME_SCHEMA).sort("ticker", "date")


def sessions_tracked(grid: SessionGrid) -> pl.Expr:
    """Sessions from the entry to the last price date, at most 30: trading days on the calendar,
    however many price rows there are."""
    tracked_until = pl.min_horizontal("last_price_date", f"exit_date_{TRACKING_SESSIONS}d").alias("_until")
    elapsed = tracked_until.replace_strict(dict(zip(grid.days, range(len(grid.days)), strict=True)), default=None,
                                           return_dtype=pl.Int64) - grid.number("entry_date", "_entry")
    return elapsed.clip(0, TRACKING_SESSIONS).fill_null(0).alias("sessions_tracked")


def _status(window_end: pl.Expr) -> list[pl.Expr]:
    closed = pl.col("last_price_date") >= window_end
    gap = closed & (pl.col("entry_price").is_null() | pl.col(f"realised_return_{TRACKING_SESSIONS}d").is_null()
                    | pl.col("realised_return_horizon").is_null())
    status = (pl.when(pl.col("action") == "HOLD").then(pl.lit("not_traded"))
              .when(~closed.fill_null(False) | gap).then(pl.lit("pending"))
              .when(pl.col("hit")).then(pl.lit("validated"))
              .otherwise(pl.lit("failed")))
    horizon = pl.col("horizon").cast(pl.String)
    reason = (
        pl.when(pl.col("action") == "HOLD").then(pl.lit("HOLD is not a call"))
        .when(pl.col("last_price_date").is_null()).then(pl.lit("no price after the signal yet"))
        .when(~closed).then(pl.format("awaiting prices through {} ({} of {} sessions tracked)",
                                      window_end, pl.col("sessions_tracked"), pl.lit(TRACKING_SESSIONS)))
        .when(gap).then(pl.format("a price is missing at the entry {} or at {} / {}: re-ingest prices",
                                  pl.col("entry_date"), pl.col("horizon_date"), window_end))
        .when(pl.col("hit")).then(pl.format("{} was right over {} sessions", pl.col("action"), horizon))
        .otherwise(pl.format("{} was wrong over {} sessions", pl.col("action"), horizon))
    )
    return [status.alias("status"), reason.alias("status_reason")]


def directional_calls(signals: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """The forecast's and the LLM's own BUY/SELL calls, scored on the signal's realised return at
    its horizon: caller (`forecast` or `llm`), ticker, date, call, probability (the forecast's
    confidence, or the LLM's llm_confidence), hit. Calls whose outcome is not known yet are left
    out; so are rows without an LLM opinion."""
    joined = signals.select("ticker", "date", "forecast_action", "confidence", "llm_action", "llm_confidence").join(
        outcomes.select("ticker", "date", "realised_return_horizon"), on=["ticker", "date"])
    frames = [
        joined.select("ticker", "date", pl.lit(caller).alias("caller"), pl.col(action).alias("call"),
                      pl.col(probability).alias("probability"),
                      call_hit(pl.col(action), pl.col("realised_return_horizon")).alias("hit"))
        for caller, action, probability in (("forecast", "forecast_action", "confidence"),
                                            ("llm", "llm_action", "llm_confidence"))
    ]
    return pl.concat(frames).filter(pl.col("call").is_in(["BUY", "SELL"]) & pl.col("hit").is_not_null())
