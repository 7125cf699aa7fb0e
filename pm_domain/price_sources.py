"""Daily OHLCV from four sources, conformed to one schema and never invented.

Each `fetch_*` function returns the rows the source holds for the requested tickers and dates
(possibly fewer); `conform_prices` then turns any gap, NaN or duplicate into a PriceSourceError that
names the source, ticker and date, so nothing partial or fabricated reaches the store.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from pm_domain import calendar
from pm_domain.quality import missing_keys
from pm_domain.tickers import validate_ticker

PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
REQUIRED_VALUE_COLUMNS = ["open", "high", "low", "close", "volume"]
PRICES_SCHEMA = {
    "ticker": pl.String,
    "date": pl.Date,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "adj_close": pl.Float64,
    "volume": pl.Float64,
}
SOURCES = ("yfinance", "sample", "csv", "synthetic")


# What a person without Yahoo (offline, firewalled, rate-limited) can do instead.
OFFLINE_HINT = "PM_PRICE_SOURCE=sample serves ^GSPC and ^IXIC offline (PM_PRICE_SOURCE=csv reads your own files)"


class PriceSourceError(RuntimeError):
    """A source could not serve what was asked: the message names source, ticker and dates."""


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=PRICES_SCHEMA)


def _describe_dates(dates: Sequence[dt.date], limit: int = 3) -> str:
    shown = ", ".join(str(day) for day in dates[:limit])
    more = f" and {len(dates) - limit} more" if len(dates) > limit else ""
    return f"{shown}{more}"


# ---------------------------------------------------------------------------------------------
# Conforming: the single gate between any source and the store.


def conform_prices(
    raw: pl.DataFrame,
    tickers: Sequence[str],
    dates: Sequence[dt.date],
    source: str,
    holdings_hint: Callable[[str], str] | None = None,
) -> pl.DataFrame:
    """Rows for exactly `tickers` x `dates`, or a PriceSourceError saying what is missing or bad.

    Rows outside the request are dropped; a requested (ticker, date) without a row, a duplicate
    row, or a NaN/null in a required column is an error, never filled in.
    """
    missing_columns = [c for c in ["ticker", "date", *REQUIRED_VALUE_COLUMNS] if c not in raw.columns]
    if missing_columns:
        raise PriceSourceError(f"source {source!r} returned no column(s) {missing_columns}")
    if "adj_close" not in raw.columns:
        raw = raw.with_columns(pl.lit(None, dtype=pl.Float64).alias("adj_close"))
    frame = raw.select(
        [pl.col(name).cast(dtype, strict=False) for name, dtype in PRICES_SCHEMA.items()]
    ).filter(pl.col("ticker").is_in(list(tickers)) & pl.col("date").is_in(list(dates)))

    duplicated = frame.filter(pl.struct("ticker", "date").is_duplicated())
    if duplicated.height:
        first = duplicated.row(0, named=True)
        raise PriceSourceError(
            f"source {source!r} returned {duplicated.height} duplicate rows, first {first['ticker']} "
            f"on {first['date']}"
        )

    for column in REQUIRED_VALUE_COLUMNS:
        bad = frame.filter(pl.col(column).is_null() | pl.col(column).is_nan())
        if bad.height:
            first = bad.row(0, named=True)
            raise PriceSourceError(
                f"source {source!r} has no valid {column!r} for {first['ticker']} on "
                f"{first['date']} ({bad.height} such rows): NaN or unparseable values are not stored"
            )

    missing = missing_keys(frame, tickers, dates)
    if missing.height:
        ticker = missing["ticker"][0]
        missing_days = missing.filter(pl.col("ticker") == ticker)["date"].to_list()
        hint = f"; {holdings_hint(ticker)}" if holdings_hint else ""
        raise PriceSourceError(
            f"source {source!r} has no prices for {ticker} on {_describe_dates(missing_days)} "
            f"({len(missing_days)} of {len(dates)} requested trading days){hint}"
        )
    return frame.sort("ticker", "date").with_columns(pl.lit(source).alias("source"))


# ---------------------------------------------------------------------------------------------
# yfinance


def yfinance_frame_to_long(frame: pd.DataFrame, tickers: Sequence[str]) -> pl.DataFrame:
    """Reshape what `yfinance.download(..., auto_adjust=False)` returns into long rows.

    yfinance returns a wide frame indexed by date, with (Price, Ticker) column levels such as
    ('Adj Close', '^GSPC'); a failed ticker appears as all-NaN columns, an offline call as an
    empty frame. Flat columns (one ticker, multi_level_index=False) are accepted too.
    """
    if frame is None or frame.empty:
        return _empty()
    names = {"Open": "open", "High": "high", "Low": "low", "Close": "close",
             "Adj Close": "adj_close", "Volume": "volume"}
    parts = []
    for ticker in tickers:
        if isinstance(frame.columns, pd.MultiIndex):
            level = "Ticker" if "Ticker" in frame.columns.names else 1
            if ticker not in frame.columns.get_level_values(level):
                continue
            wide = frame.xs(ticker, axis=1, level=level)
        elif len(tickers) == 1:
            wide = frame
        else:
            raise PriceSourceError("yfinance returned flat columns for a multi-ticker download")
        wide = wide.rename(columns=names)
        present = [c for c in PRICE_COLUMNS if c in wide.columns]
        part = pd.DataFrame({c: pd.to_numeric(wide[c], errors="coerce") for c in present})
        part["date"] = pd.to_datetime(frame.index).tz_localize(None).normalize()
        part["ticker"] = ticker
        # all-NaN rows are how yfinance marks "no data for this ticker/day": drop, never fill
        part = part.dropna(how="all", subset=present)
        if not part.empty:
            parts.append(pl.from_pandas(part.reset_index(drop=True)).with_columns(
                pl.col("date").cast(pl.Date)))
    if not parts:
        return _empty()
    return pl.concat(parts, how="diagonal_relaxed")


def fetch_yfinance(
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    download: Callable[..., pd.DataFrame] | None = None,
) -> pl.DataFrame:
    """One batched yfinance download for all tickers over [start, end]."""
    if download is None:
        import yfinance

        download = yfinance.download
    try:
        frame = download(
            tickers=list(tickers),
            start=start.isoformat(),
            end=(end + dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
            interval="1d",
            auto_adjust=False,
            actions=False,
            group_by="column",
            progress=False,
            threads=True,
            multi_level_index=True,
        )
    except Exception as exc:  # a dropped connection, a rate limit, a bug in yfinance: say which request failed
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise PriceSourceError(
            f"source 'yfinance' failed while downloading {', '.join(tickers)} {start}..{end} ({cause}); "
            f"{OFFLINE_HINT}"
        ) from exc
    if frame is None or frame.empty:
        raise PriceSourceError(
            f"source 'yfinance' returned an empty frame for {', '.join(tickers)} {start}..{end}: "
            f"Yahoo could not be reached, rate-limited the download, or does not know the tickers; {OFFLINE_HINT}"
        )
    return yfinance_frame_to_long(frame, tickers)


# ---------------------------------------------------------------------------------------------
# sample: real daily index data shipped inside the `arch` package


SAMPLE_DATASETS = {"^GSPC": "sp500", "^IXIC": "nasdaq"}


def _load_sample(ticker: str) -> pl.DataFrame:
    import importlib

    module = importlib.import_module(f"arch.data.{SAMPLE_DATASETS[ticker]}")
    wide = module.load()
    part = pl.from_pandas(
        wide.rename(
            columns={"Open": "open", "High": "high", "Low": "low", "Close": "close",
                     "Adj Close": "adj_close", "Volume": "volume"}
        ).reset_index(names="date")
    )
    return part.with_columns(pl.col("date").cast(pl.Date), pl.lit(ticker).alias("ticker"))


def sample_holdings(ticker: str) -> str:
    if ticker not in SAMPLE_DATASETS:
        return f"the sample source serves only {', '.join(SAMPLE_DATASETS)}"
    frame = _load_sample(ticker)
    return f"the sample source holds {ticker} from {frame['date'].min()} to {frame['date'].max()}"


def fetch_sample(tickers: Sequence[str], start: dt.date, end: dt.date) -> pl.DataFrame:
    unknown = [t for t in tickers if t not in SAMPLE_DATASETS]
    if unknown:
        raise PriceSourceError(
            f"source 'sample' has no ticker {', '.join(unknown)}: it serves only "
            f"{', '.join(SAMPLE_DATASETS)} (real S&P 500 and NASDAQ daily data, 1999-2018)"
        )
    frames = [_load_sample(t).filter(pl.col("date").is_between(start, end)) for t in tickers]
    return pl.concat(frames, how="diagonal_relaxed") if frames else _empty()


# ---------------------------------------------------------------------------------------------
# csv: a folder of the user's files, one per ticker

CSV_REQUIRED = ["date", "open", "high", "low", "close", "volume"]


def csv_path(folder: Path, ticker: str) -> Path:
    return Path(folder) / f"{validate_ticker(ticker)}.csv"


def read_price_csv(path: Path, ticker: str) -> pl.DataFrame:
    """Read `<folder>/<TICKER>.csv`: columns date, open, high, low, close, volume, optional adj_close.

    Header names are matched case-insensitively, spaces read as underscores (so a Yahoo export's
    `Adj Close` works). Dates must be ISO `YYYY-MM-DD`.
    """
    if not path.is_file():
        raise PriceSourceError(f"source 'csv' has no file for {ticker}: expected {path}")
    try:
        frame = pl.read_csv(path, infer_schema=False)
    except Exception as exc:
        raise PriceSourceError(f"source 'csv' cannot read {path} for {ticker}: {exc}") from exc
    frame = frame.rename({c: c.strip().lower().replace(" ", "_") for c in frame.columns})
    missing = [c for c in CSV_REQUIRED if c not in frame.columns]
    if missing:
        raise PriceSourceError(
            f"source 'csv' file {path} for {ticker} lacks column(s) {missing}; "
            f"required: {CSV_REQUIRED} (adj_close optional)"
        )
    parsed = frame.with_columns(pl.col("date").str.strip_chars().str.to_date("%Y-%m-%d", strict=False).alias("_date"))
    bad = parsed.filter(pl.col("_date").is_null())
    if bad.height:
        raise PriceSourceError(
            f"source 'csv' file {path} for {ticker} has unparseable date {bad['date'][0]!r} "
            f"({bad.height} rows); use YYYY-MM-DD"
        )
    value_columns = [c for c in PRICE_COLUMNS if c in parsed.columns]
    return parsed.select(
        pl.lit(ticker).alias("ticker"),
        pl.col("_date").alias("date"),
        *[pl.col(c).str.strip_chars().cast(pl.Float64, strict=False) for c in value_columns],
    )


@dataclass(frozen=True)
class CsvCoverage:
    """What one ticker's file holds: its first and last date and how many NYSE sessions it has a
    row for, so an error can say what the file covers next to what was asked."""

    path: Path
    ticker: str
    first: dt.date | None
    last: dt.date | None
    sessions: int
    dates: frozenset[dt.date] = field(default=frozenset(), repr=False, compare=False)

    def describe(self) -> str:
        if self.first is None or self.last is None:
            return f"{self.path} has no rows"
        return f"{self.path} covers {self.first}..{self.last} ({self.sessions} session{'s' * (self.sessions != 1)})"

    def first_session(self) -> dt.date | None:
        """The file's first date if it is a session, else the session after it."""
        if self.first is None:
            return None
        return self.first if calendar.is_trading_day(self.first) else calendar.shift_trading_days(self.first, 1)

    def last_session(self) -> dt.date | None:
        if self.last is None:
            return None
        return self.last if calendar.is_trading_day(self.last) else calendar.shift_trading_days(self.last, -1)


def coverage_of(frame: pl.DataFrame, path: Path, ticker: str) -> CsvCoverage:
    """The coverage of rows `read_price_csv` returned."""
    if not frame.height:
        return CsvCoverage(Path(path), ticker, None, None, 0)
    dates = frozenset(frame["date"].to_list())
    first, last = min(dates), max(dates)
    sessions = len(dates & set(calendar.trading_days(first, last)))
    return CsvCoverage(Path(path), ticker, first, last, sessions, dates)


def csv_coverage(path: Path, ticker: str) -> CsvCoverage:
    """Read `path` as the csv source does and say what it covers; PriceSourceError, one line naming
    the file, when it is missing, lacks a column or has a date that is not YYYY-MM-DD."""
    return coverage_of(read_price_csv(Path(path), ticker), Path(path), ticker)


def check_csv_coverage(coverage: CsvCoverage, start: dt.date, end: dt.date,
                       start_name: str = "the first date asked", end_name: str = "the last date asked") -> None:
    """PriceSourceError unless the file has a row for every session of start..end: one line with
    what the file covers, what was asked (`start_name`, `end_name` say how, e.g. "--from") and the fix."""
    where = coverage.describe()
    first, last = coverage.first_session(), coverage.last_session()
    if first is None or last is None:
        raise PriceSourceError(f"{where}: nothing to store for {start}..{end}")
    if start < first:
        raise PriceSourceError(f"{where}; {start_name} {start} is before it: start at {first}, "
                               f"or use a file that reaches back to {start}")
    if end > last:
        raise PriceSourceError(f"{where}; {end_name} {end} is after it: end at {last}, or use a file "
                               f"that reaches {end}")
    missing = [day for day in calendar.trading_days(start, end) if day not in coverage.dates]
    if missing:
        raise PriceSourceError(f"{where} but has no row for {len(missing)} session(s) of {start}..{end}: "
                               f"{_describe_dates(missing)}")


def coverage_hint(coverage: CsvCoverage, start: dt.date, end: dt.date) -> str:
    """What the file covers against what a run asked, and the fix, for a run's error message."""
    try:
        check_csv_coverage(coverage, start, end, "the run's first date", "its last date")
    except PriceSourceError as exc:
        return str(exc)
    return coverage.describe()


def check_csv_files(folder: Path | None, tickers: Sequence[str], start: dt.date, end: dt.date,
                    start_name: str = "the first date asked",
                    end_name: str = "the last date asked") -> list[CsvCoverage]:
    """Everything the csv source would refuse for tickers x start..end, found without a run: the
    folder, each file, its columns and dates, its coverage, then the values of the rows asked
    (NaN, duplicates) as `conform_prices` judges them. Returns what each file covers."""
    if csv_dir_problem := _csv_dir_problem(folder):
        raise PriceSourceError(csv_dir_problem)
    coverages = []
    for ticker in tickers:
        path = csv_path(Path(folder), ticker)
        frame = read_price_csv(path, ticker)
        coverage = coverage_of(frame, path, ticker)
        check_csv_coverage(coverage, start, end, start_name, end_name)
        conform_prices(frame, [ticker], calendar.trading_days(start, end), "csv",
                       holdings_hint=lambda _t, c=coverage: c.describe())
        coverages.append(coverage)
    return coverages


def _csv_dir_problem(folder: Path | None) -> str | None:
    if folder is None:
        return "source 'csv' needs a folder: set PM_CSV_DIR=/path/to/csvs (one <TICKER>.csv per ticker)"
    if not Path(folder).is_dir():
        return f"source 'csv' reads PM_CSV_DIR={folder}, which is not a folder"
    return None


def fetch_csv(folder: Path, tickers: Sequence[str], start: dt.date, end: dt.date) -> pl.DataFrame:
    return _read_csvs(folder, tickers, start, end)[0]


def _read_csvs(folder: Path, tickers: Sequence[str], start: dt.date,
               end: dt.date) -> tuple[pl.DataFrame, dict[str, CsvCoverage]]:
    """Rows of start..end, and what each file covers as a whole (for the error's hint)."""
    frames, coverages = [], {}
    for ticker in tickers:
        path = csv_path(folder, ticker)
        frame = read_price_csv(path, ticker)
        coverages[ticker] = coverage_of(frame, path, ticker)
        frames.append(frame.filter(pl.col("date").is_between(start, end)))
    return (pl.concat(frames, how="diagonal_relaxed") if frames else _empty()), coverages


# ---------------------------------------------------------------------------------------------
# synthetic: deterministic GBM with GARCH(1,1) volatility clustering, for scale tests

SYNTHETIC_ORIGIN = dt.date(1990, 1, 2)


def _synthetic_paths(tickers: Sequence[str], n_days: int) -> np.ndarray:
    """(n_tickers, n_days, 6) open/high/low/close/adj_close/volume from SYNTHETIC_ORIGIN.

    Each ticker's draws come from a generator seeded by its name alone, so a row never depends on
    the requested range or on which other tickers were asked for. The GARCH recursion runs over
    days with all tickers at once.
    """
    n = len(tickers)
    annual_vol, annual_drift, start_price = np.empty((3, n))
    shocks, gaps, wicks_up, wicks_down, volume_noise = np.empty((5, n, n_days))
    for i, ticker in enumerate(tickers):
        # one independent stream per quantity: the first k draws of a stream do not depend on how
        # many are drawn, so a date's row is the same whatever end date was requested
        streams = [np.random.default_rng(s) for s in
                   np.random.SeedSequence(zlib.crc32(ticker.encode())).spawn(6)]
        annual_vol[i], annual_drift[i], start_price[i] = streams[0].uniform(
            [0.15, 0.02, 20], [0.40, 0.10, 500])
        shocks[i] = streams[1].standard_t(df=6, size=n_days) / np.sqrt(6 / 4)  # unit variance
        gaps[i] = streams[2].normal(0, 1, n_days)
        wicks_up[i] = streams[3].normal(0, 1, n_days)
        wicks_down[i] = streams[4].normal(0, 1, n_days)
        volume_noise[i] = streams[5].normal(0, 0.3, n_days)

    daily_var = annual_vol**2 / 252
    alpha, beta = 0.08, 0.90
    omega = daily_var * (1 - alpha - beta)
    returns = np.empty((n, n_days))
    variance = daily_var.copy()
    for day in range(n_days):
        returns[:, day] = np.sqrt(variance) * shocks[:, day]
        variance = omega + alpha * returns[:, day] ** 2 + beta * variance
    drift = (annual_drift / 252 - 0.5 * daily_var)[:, None]
    close = start_price[:, None] * np.exp(np.cumsum(returns + drift, axis=1))
    previous_close = np.concatenate([start_price[:, None], close[:, :-1]], axis=1)
    sigma = np.sqrt(daily_var)[:, None]
    open_ = previous_close * np.exp(0.2 * sigma * gaps)
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(wicks_up))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(wicks_down))
    volume = np.round(1e6 * np.exp(volume_noise + 5 * np.abs(returns)))
    return np.stack([open_, high, low, close, close, volume], axis=2)


def fetch_synthetic(tickers: Sequence[str], start: dt.date, end: dt.date) -> pl.DataFrame:
    if start < SYNTHETIC_ORIGIN:
        raise PriceSourceError(f"source 'synthetic' starts on {SYNTHETIC_ORIGIN}; asked {start}")
    sessions = calendar.trading_days(SYNTHETIC_ORIGIN, end)
    first = next((i for i, day in enumerate(sessions) if day >= start), len(sessions))
    if not tickers or first == len(sessions):
        return _empty()
    values = _synthetic_paths(tickers, len(sessions))[:, first:, :]
    n_tickers, n_days, _ = values.shape
    flat = values.reshape(n_tickers * n_days, len(PRICE_COLUMNS))
    return pl.DataFrame(
        {"ticker": np.repeat(np.asarray(tickers, dtype=object), n_days),
         "date": sessions[first:] * n_tickers,
         **{name: flat[:, i] for i, name in enumerate(PRICE_COLUMNS)}},
        schema=PRICES_SCHEMA,
    )


# ---------------------------------------------------------------------------------------------
# One entry point for every source


def fetch_prices(
    source: str,
    tickers: Sequence[str],
    dates: Sequence[dt.date],
    csv_dir: Path | None = None,
    download: Callable[..., pd.DataFrame] | None = None,
) -> pl.DataFrame:
    """Exactly one row per requested (ticker, trading day) from `source`, or PriceSourceError.

    One fetch covers every ticker and the whole date range (yfinance: one batched download).
    """
    tickers = [validate_ticker(t) for t in tickers]
    if not tickers or not dates:
        return _empty().with_columns(pl.lit(source).alias("source"))
    start, end = min(dates), max(dates)
    hint: Callable[[str], str] | None = None
    if source == "yfinance":
        raw = fetch_yfinance(tickers, start, end, download=download)
        hint = lambda t: "the ticker may be unknown or delisted, or Yahoo may be unreachable"  # noqa: E731
    elif source == "sample":
        raw = fetch_sample(tickers, start, end)
        hint = sample_holdings
    elif source == "csv":
        if csv_dir is None:
            raise PriceSourceError("source 'csv' needs a folder (PM_CSV_DIR or csv_dir config)")
        raw, coverages = _read_csvs(Path(csv_dir), tickers, start, end)
        hint = lambda t: coverage_hint(coverages[t], start, end)  # noqa: E731
    elif source == "synthetic":
        raw = fetch_synthetic(tickers, start, end)
    else:
        raise PriceSourceError(f"unknown price source {source!r}; choose one of {SOURCES}")
    return conform_prices(raw, tickers, dates, source, holdings_hint=hint)
