"""Metadata every partitioned asset reports, so the UI shows the same facts for each stage."""

from __future__ import annotations

import time
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


def run_metadata(context: AssetExecutionContext, selection: PartitionSelection, written: pl.DataFrame,
                 preview_columns: Sequence[str], began: float) -> dict:
    """The run's facts, named `run_*`: a ranged run's metadata reaches each of its partitions, so
    a partition's page shows them as the run's, not as its own. (Per-partition metadata through
    `add_asset_metadata(partition_key=...)` costs far more than the step itself once a run has
    thousands of partitions, so each partition's values are in the store, not in its event.)
    `run_compute_seconds` is the stage's own work, from `began` (the body's first line, a
    time.perf_counter()) to its rows written: the rest of a run's time is Dagster's."""
    return {
        "run_partitions": len(context.partition_keys),
        "run_rows_written": written.height,
        "run_tickers": ", ".join(selection.tickers),
        "run_date_range": f"{selection.start} .. {selection.end}",
        "run_trading_days": len(selection.dates),
        "run_preview": MetadataValue.md(preview_markdown(written, preview_columns)),
        "run_compute_seconds": round(time.perf_counter() - began, 3),
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
