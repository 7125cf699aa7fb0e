"""Metadata every partitioned asset reports, so the UI shows the same facts for each stage."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, MetadataValue

from pm_assets.partitions import PartitionSelection
from pm_domain.quality import RuleOutcome


def preview_markdown(frame: pl.DataFrame, columns: Sequence[str], rows: int = 10) -> str:
    """The last `rows` rows as a markdown table, floats to 4 significant digits."""
    shown = frame.select(columns).tail(rows)
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))

    body = "\n".join("| " + " | ".join(cell(v) for v in row) + " |" for row in shown.iter_rows())
    return f"{header}\n{body}"


# Above this many partitions in one run, a partition's metadata is its row count alone: the
# markdown of every partition's values would cost more than the step's own work.
PARTITION_VALUES_LIMIT = 10_000


def run_metadata(context: AssetExecutionContext, selection: PartitionSelection, written: pl.DataFrame,
                 preview_columns: Sequence[str]) -> dict:
    """Metadata for every partition of the run: the run's facts under `run_` names (a ranged run's
    metadata reaches each partition), and each partition's own rows added to it alone."""
    add_partition_metadata(context, written, preview_columns)
    return {
        "run_rows_written": written.height,
        "run_tickers": ", ".join(selection.tickers),
        "run_date_range": f"{selection.start} .. {selection.end}",
        "run_trading_days": len(selection.dates),
        "run_preview": MetadataValue.md(preview_markdown(written, preview_columns)),
    }


def add_plot(context: AssetExecutionContext, name: str, markdown: str, partition_keys: Sequence[str]) -> dict:
    """Put a plot on the partitions it draws (the run's last date of the tickers shown), not on
    every partition of the run: Dagster would store a copy of the image in each one's event.
    Returns the run-wide note of where it is."""
    for key in partition_keys:
        context.add_asset_metadata({name: MetadataValue.md(markdown)}, partition_key=key)
    return {f"run_{name}": f"on partition {', '.join(partition_keys)}"}


def last_date_keys(selection: PartitionSelection, tickers: Sequence[str]) -> list[str]:
    """The run's last-date partition keys of `tickers`."""
    return [f"{selection.end}|{ticker}" for ticker in tickers]


def add_partition_metadata(context: AssetExecutionContext, written: pl.DataFrame, columns: Sequence[str]) -> None:
    """`dagster/row_count`, `partition_rows` and (up to PARTITION_VALUES_LIMIT partitions) the
    partition's own values, on each partition the run materialized."""
    keyed = [c for c in ("date", "ticker") if c in written.columns]
    shown = [c for c in columns if c not in keyed]
    partitions = list(context.partition_keys)
    groups = {}
    if written.height:
        frame = written.with_columns(pl.col("date").cast(pl.String))
        key = (pl.col("date") + "|" + pl.col("ticker")) if "ticker" in keyed else pl.col("date")
        groups = frame.with_columns(key.alias("_key")).partition_by("_key", as_dict=True)
    for partition in partitions:
        rows = groups.get((partition,), written.clear())
        metadata = {"dagster/row_count": rows.height, "partition_rows": rows.height}
        if len(partitions) <= PARTITION_VALUES_LIMIT and rows.height and shown:
            metadata["partition_values"] = MetadataValue.md(preview_markdown(rows, shown))
        context.add_asset_metadata(metadata, partition_key=partition)


def check_results(outcomes: Sequence[RuleOutcome], severity: AssetCheckSeverity) -> list[AssetCheckResult]:
    return [
        AssetCheckResult(
            check_name=outcome.name,
            passed=outcome.passed,
            severity=severity,
            description=outcome.description,
            metadata={"failing_rows": outcome.failing_rows,
                      "examples": ", ".join(outcome.examples) or "none"},
        )
        for outcome in outcomes
    ]
