"""The check every stage makes before working: its upstream rows cover the run's partitions."""

import polars as pl

from pm_assets.partitions import PartitionSelection
from pm_domain.quality import missing_keys


class MissingInputsError(RuntimeError):
    """A stage was asked for partitions whose upstream rows are not in the store."""


def require_partitions(frame: pl.DataFrame, table: str, selection: PartitionSelection) -> None:
    """Raise MissingInputsError naming the first missing (ticker, date) of `table` in the run."""
    keys = frame.select("ticker", "date") if frame.width else pl.DataFrame(
        schema={"ticker": pl.String, "date": pl.Date})
    missing = missing_keys(keys, selection.tickers, selection.dates)
    if missing.height:
        expected = len(selection.tickers) * len(selection.dates)
        ticker, day = missing.row(0)
        raise MissingInputsError(
            f"{table} cover {expected - missing.height} of the {expected} partitions of "
            f"{selection.describe()}, first missing {ticker} on {day}: materialize {table} for "
            "the range first"
        )
