"""The one place that defines how assets are partitioned: NYSE trading days x tickers.

Keys read `2018-12-31|^GSPC` (Dagster orders dimensions by name: `date`, then `ticker`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dagster import (
    BackfillPolicy,
    DimensionPartitionMapping,
    DynamicPartitionsDefinition,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
)

from pm_assets.dagster_compat import GroupedLookbackMapping
from pm_domain import calendar, settings
from pm_domain.tickers import validate_ticker

DATE_FORMAT = "%Y-%m-%d"
EXCHANGE_TIMEZONE = "America/New_York"
TICKERS_PARTITIONS_NAME = "tickers"


def _trading_day_partitions() -> TimeWindowPartitionsDefinition:
    start = settings.start_date()
    # end_offset=1 makes today's session a partition during the day, so the nightly run after the
    # close can materialize it; the prices asset refuses sessions that have not closed yet.
    horizon = dt.date.today() + dt.timedelta(days=14)
    holidays = [
        dt.datetime.combine(day, dt.time()) for day in calendar.non_trading_weekdays(start, horizon)
    ]
    return TimeWindowPartitionsDefinition(
        start=dt.datetime.combine(start, dt.time()),
        cron_schedule="0 0 * * 1-5",
        fmt=DATE_FORMAT,
        timezone=EXCHANGE_TIMEZONE,
        end_offset=1,
        exclusions=holidays,
    )


trading_day_partitions = _trading_day_partitions()
ticker_partitions = DynamicPartitionsDefinition(name=TICKERS_PARTITIONS_NAME)
daily_ticker_partitions = MultiPartitionsDefinition(
    {"date": trading_day_partitions, "ticker": ticker_partitions}
)


# How every (date, ticker) stage runs: a backfill of any range is one run, and every stage writes
# to DuckDB, which takes one writer at a time (the `duckdb` pool, limit 1 in dagster.yaml).
STAGE_ASSET_ARGS = {
    "partitions_def": daily_ticker_partitions,
    "backfill_policy": BackfillPolicy.single_run(),
    "pool": "duckdb",
    "kinds": {"duckdb", "polars"},
}


def date_window_mapping(start_offset: int, end_offset: int) -> GroupedLookbackMapping:
    """Depend on the same ticker's trading days from `start_offset` to `end_offset` sessions
    around the date (both inclusive; negative is earlier). Sessions that do not exist yet are
    allowed: the UI shows them as missing upstream data. The mapping is Dagster's
    MultiPartitionMapping, computed faster at step start (pm_assets/dagster_compat.py)."""
    return GroupedLookbackMapping(
        {
            "date": DimensionPartitionMapping(
                "date",
                TimeWindowPartitionMapping(
                    start_offset=start_offset,
                    end_offset=end_offset,
                    allow_nonexistent_upstream_partitions=True,
                ),
            ),
            "ticker": DimensionPartitionMapping("ticker", IdentityPartitionMapping()),
        }
    )


def lookback_mapping(sessions: int) -> GroupedLookbackMapping:
    """Depend on the previous `sessions - 1` trading days and the same day, same ticker."""
    return date_window_mapping(-(sessions - 1), 0)


def forward_mapping(first_session: int, last_session: int) -> GroupedLookbackMapping:
    """Depend on the sessions `first_session`..`last_session` AFTER the date, same ticker (what
    an outcome waits for)."""
    return date_window_mapping(first_session, last_session)


# Assets of the whole universe, one partition per trading day (portfolio_backtests).
UNIVERSE_ASSET_ARGS = {
    "partitions_def": trading_day_partitions,
    "backfill_policy": BackfillPolicy.single_run(),
    "pool": "duckdb",
    "kinds": {"duckdb", "polars"},
}


@dataclass(frozen=True)
class PartitionSelection:
    """The (ticker, date) rectangle a run covers, decoded from its partition keys."""

    tickers: tuple[str, ...]
    dates: tuple[dt.date, ...]

    @property
    def start(self) -> dt.date:
        return self.dates[0]

    @property
    def end(self) -> dt.date:
        return self.dates[-1]

    def keys(self) -> list[tuple[str, dt.date]]:
        return [(ticker, day) for ticker in self.tickers for day in self.dates]

    def describe(self) -> str:
        return f"{len(self.tickers)} ticker(s) {', '.join(self.tickers[:5])}{'...' if len(self.tickers) > 5 else ''} x {len(self.dates)} date(s) {self.start}..{self.end}"


def universe_selection(partition_keys: Sequence[str], universe: Iterable[str]) -> PartitionSelection:
    """An asset partitioned by date alone works on every ticker of the universe over its dates."""
    tickers = tuple(sorted(universe))
    if not tickers:
        raise ValueError("no tickers: add some with `pm tickers add` or the watchlist first")
    return PartitionSelection(tickers, tuple(sorted(dt.date.fromisoformat(key) for key in partition_keys)))


def decode_partition_keys(partition_keys: list[str]) -> PartitionSelection:
    """Split multi-partition keys into validated tickers and dates.

    A ranged run in a multi-partitioned asset is a rectangle (every ticker x every date of the
    range), so the selection is rebuilt as a cross product and checked to be exactly that.
    """
    tickers: dict[str, None] = {}
    dates: set[dt.date] = set()
    for key in partition_keys:
        by_dimension = (
            key.keys_by_dimension
            if isinstance(key, MultiPartitionKey)
            else dict(zip(("date", "ticker"), key.split("|", 1), strict=True))
        )
        tickers[validate_ticker(by_dimension["ticker"])] = None
        dates.add(dt.date.fromisoformat(by_dimension["date"]))
    selection = PartitionSelection(tuple(sorted(tickers)), tuple(sorted(dates)))
    if len(selection.tickers) * len(selection.dates) != len(set(partition_keys)):
        raise ValueError(
            f"run partitions are not a tickers x dates rectangle: {len(partition_keys)} keys over "
            f"{selection.describe()}"
        )
    return selection


RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(tickers: Sequence[str] | None, start: dt.date | str, end: dt.date | str) -> dict[str, str]:
    """Run tags that make one run cover dates start..end for every ticker from `tickers[0]` to
    `tickers[-1]` in the universe's order (a rectangle); tickers None for an asset partitioned by
    date alone."""
    if tickers is None:
        return {RANGE_START_TAG: str(start), RANGE_END_TAG: str(end)}
    return {RANGE_START_TAG: f"{start}|{tickers[0]}", RANGE_END_TAG: f"{end}|{tickers[-1]}"}


@dataclass(frozen=True)
class PartitionRectangle:
    """Consecutive trading days x tickers adjacent in the universe's order: what one run covers."""

    tickers: tuple[str, ...]
    start: dt.date
    end: dt.date

    def tags(self) -> dict[str, str]:
        return range_tags(self.tickers, self.start, self.end)

    def describe(self) -> str:
        tickers = self.tickers[0] if len(self.tickers) == 1 else f"{self.tickers[0]}..{self.tickers[-1]} ({len(self.tickers)})"
        return f"{self.start}..{self.end} x {tickers}"


def rectangles(keys: Iterable[tuple[dt.date, str]], ticker_order: Sequence[str]) -> list[PartitionRectangle]:
    """Cover exactly the (date, ticker) `keys` with as few rectangles as a simple greedy finds.

    A ranged run in a multi-partitioned asset is every ticker between the range's first and last
    (in the order tickers were added) times every date between, so tickers are split into blocks
    adjacent in `ticker_order`, and consecutive trading days with the same block are merged. Keys
    whose ticker is not in `ticker_order` (removed from the universe) are dropped.
    """
    from pm_domain import calendar

    position = {ticker: i for i, ticker in enumerate(ticker_order)}
    tickers_by_date: dict[dt.date, set[str]] = {}
    for day, ticker in keys:
        if ticker in position:
            tickers_by_date.setdefault(day, set()).add(ticker)
    blocks_by_date = {day: adjacent_blocks(tickers, position)
                      for day, tickers in tickers_by_date.items()}
    open_ranges: dict[tuple[str, ...], PartitionRectangle] = {}
    closed: list[PartitionRectangle] = []
    for day in sorted(blocks_by_date):
        blocks = set(blocks_by_date[day])
        for block, rectangle in list(open_ranges.items()):
            if block not in blocks or calendar.shift_trading_days(rectangle.end, 1) != day:
                closed.append(open_ranges.pop(block))
        for block in blocks_by_date[day]:
            current = open_ranges.get(block)
            open_ranges[block] = PartitionRectangle(block, current.start if current else day, day)
    closed.extend(open_ranges.values())
    return sorted(closed, key=lambda r: (r.start, position[r.tickers[0]]))


def adjacent_blocks(tickers: Iterable[str], position: dict[str, int]) -> list[tuple[str, ...]]:
    """`tickers` split into runs adjacent in the universe's order (`position`: ticker -> index)."""
    blocks: list[list[str]] = []
    for ticker in sorted(tickers, key=position.__getitem__):
        if blocks and position[ticker] == position[blocks[-1][-1]] + 1:
            blocks[-1].append(ticker)
        else:
            blocks.append([ticker])
    return [tuple(block) for block in blocks]
