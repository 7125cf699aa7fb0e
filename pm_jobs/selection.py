"""What `pm materialize` and `pm backfill` were asked for, checked before Dagster sees it.

Dagster answers a holiday, a future date, a ticker never added and a missing instance alike, with
one `DagsterInvalidSubsetError` traceback. Here each mistake gets its own one-line diagnosis,
naming the value and the fix.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Sequence
from dataclasses import dataclass

from pm_assets.partitions import adjacent_blocks
from pm_domain import calendar, settings
from pm_domain.price_sources import PriceSourceError, check_csv_files
from pm_domain.tickers import TickerError, validate_tickers


class SelectionError(ValueError):
    """A one-line diagnosis of what was asked: the value that was wrong and how to fix it."""


# How an asset is partitioned: by trading day and ticker, by trading day alone (the portfolio
# book), or not at all (the SQL marts).
BY_DATE_AND_TICKER, BY_DATE, UNPARTITIONED = "date x ticker", "date", "none"


@dataclass(frozen=True)
class Selection:
    """A checked request: assets of one partitioning, and one block of tickers per run (tickers
    adjacent in the universe's order, since a ranged run covers every ticker between its ends)."""

    assets: tuple[str, ...]
    partitioning: str
    ticker_blocks: tuple[tuple[str, ...], ...]
    start: dt.date | None
    end: dt.date | None

    @property
    def sessions(self) -> int:
        return len(calendar.trading_days(self.start, self.end)) if self.start else 0

    @property
    def tickers(self) -> list[str]:
        return [t for block in self.ticker_blocks for t in block]

    def shares(self, parts: int) -> list[list[str]]:
        """The tickers cut into at most `parts` shares of adjacent tickers, as even as they allow
        (a share that spans two blocks still runs as two ranged runs)."""
        tickers = self.tickers
        parts = max(1, min(parts, len(tickers)))
        return [tickers[len(tickers) * k // parts : len(tickers) * (k + 1) // parts] for k in range(parts)]

    def share_blocks(self, parts: int) -> list[tuple[str, ...]]:
        """The ticker blocks, each cut where a share of `shares(parts)` ends: one ranged run each."""
        ends = {share[-1] for share in self.shares(parts)}
        cut: list[tuple[str, ...]] = []
        for block in self.ticker_blocks:
            current: list[str] = []
            for ticker in block:
                current.append(ticker)
                if ticker in ends:
                    cut.append(tuple(current))
                    current = []
            if current:
                cut.append(tuple(current))
        return cut

    def describe(self) -> str:
        if self.start is None:
            return ", ".join(self.assets)
        tickers = self.tickers
        scope = f" for {', '.join(tickers)}" if tickers else ""
        sessions = self.sessions
        return f"{', '.join(self.assets)}{scope} {self.start}..{self.end} ({sessions} session{'s' * (sessions != 1)})"


def check_assets(names: Sequence[str], partitioning_of: dict[str, str]) -> tuple[tuple[str, ...], str]:
    """Known asset names, all partitioned alike; returns them and their partitioning."""
    if not names:
        raise SelectionError(f"no asset named: --assets takes a comma-separated list of {', '.join(partitioning_of)}")
    for name in names:
        if name not in partitioning_of:
            close = difflib.get_close_matches(name, list(partitioning_of), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SelectionError(f"unknown asset {name!r}{hint}: the assets are {', '.join(partitioning_of)}")
    kinds = {partitioning_of[name] for name in names}
    if len(kinds) > 1:
        by_kind = "; ".join(f"{', '.join(n for n in names if partitioning_of[n] == kind)} by {kind}"
                            for kind in (BY_DATE_AND_TICKER, BY_DATE, UNPARTITIONED) if kind in kinds)
        raise SelectionError(f"these assets are partitioned differently ({by_kind}): materialize each kind "
                             "in its own command")
    return tuple(dict.fromkeys(names)), kinds.pop()


def parse_date(flag: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SelectionError(f"{flag} {value!r} is not a date: use YYYY-MM-DD") from None


def check_dates(start: dt.date, end: dt.date, first: dt.date, last: dt.date) -> None:
    """The range is the right way round, both ends are sessions, and both are partitions
    (`first`..`last`: PM_START_DATE to today's session)."""
    if start > end:
        raise SelectionError(f"--from {start} is after --to {end}")
    for flag, day in (("--from", start), ("--to", end)):
        problem = calendar.session_problem(day)
        if problem:
            raise SelectionError(f"{flag} {problem}")
        if day < first:
            raise SelectionError(f"{flag} {day} is before the first partition, {first} (PM_START_DATE): "
                                 f"set PM_START_DATE={day} to reach it")
        if day > last:
            raise SelectionError(f"{flag} {day} is after the last partition, {last}: a session becomes a "
                                 "partition on its own day")


def check_tickers(requested: Sequence[str], universe: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Known tickers, split into blocks adjacent in the universe's order (one run each)."""
    if not universe:
        raise SelectionError("the universe has no tickers: pm tickers add ^GSPC ^IXIC (or run make demo)")
    try:
        tickers = validate_tickers(requested) if requested else list(universe)
    except TickerError as exc:
        raise SelectionError(str(exc)) from None
    missing = [t for t in tickers if t not in universe]
    meant = {t: t.upper() for t in missing if t != t.upper() and t.upper() in universe}
    if meant:  # `aapl` for AAPL: the fix is the spelling, not adding a second, unknown ticker
        said = ", ".join(meant)
        raise SelectionError(f"{said}: tickers are upper case: did you mean {', '.join(meant.values())}? "
                             f"(--tickers {','.join(t.upper() if t in meant else t for t in tickers)})")
    if missing:
        are = "is" if len(missing) == 1 else "are"
        raise SelectionError(f"{', '.join(missing)} {are} not in the universe: pm tickers add {' '.join(missing)}")
    return tuple(adjacent_blocks(tickers, {t: i for i, t in enumerate(universe)}))


def plan(assets: Sequence[str], tickers: Sequence[str], start: str | None, end: str | None,
         partitioning_of: dict[str, str], universe: Sequence[str], bounds: tuple[dt.date, dt.date]) -> Selection:
    """Check a request in the order a person reads it: assets, dates, tickers. `bounds` are the
    first and last trading-day partitions."""
    names, partitioning = check_assets(assets, partitioning_of)
    if partitioning == UNPARTITIONED:
        if start or end or tickers:
            raise SelectionError(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not partitioned: "
                                 "drop --from, --to and --tickers")
        return Selection(names, partitioning, (), None, None)
    if not start:
        raise SelectionError(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} partitioned by {partitioning}: "
                             "--from YYYY-MM-DD is required (--to defaults to it)")
    first_day, last_day = parse_date("--from", start), parse_date("--to", end or start)
    check_dates(first_day, last_day, *bounds)
    if partitioning == BY_DATE:
        if tickers:
            raise SelectionError(f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} partitioned by date "
                                 "alone (the whole universe as one book): drop --tickers")
        return Selection(names, partitioning, ((),), first_day, last_day)
    return Selection(names, partitioning, check_tickers(tickers, universe), first_day, last_day)


def check_price_files(selection: Selection, config: settings.Settings | None = None) -> Selection:
    """Before any run: when `prices` is asked from the csv source (`config`, default the
    environment's settings), each ticker's file exists, has the columns, and has a valid row for
    every session of --from..--to; else one line naming the file, what it covers and the fix
    (`data/csv/AAA.csv covers 2017-01-03..2018-12-31 (502 sessions); --from 2016-01-04 is before
    it: ...`). Other sources answer only when asked (a download), so they are not checked here."""
    config = config or settings.current()
    if config.price_source != "csv" or "prices" not in selection.assets or selection.start is None:
        return selection
    tickers = selection.tickers
    try:
        check_csv_files(config.csv_dir, tickers, selection.start, selection.end, "--from", "--to")
    except PriceSourceError as exc:
        raise SelectionError(str(exc)) from None
    return selection
