"""Metadata every partitioned asset reports, so the UI shows the same facts for each stage."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

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


def run_metadata(selection: PartitionSelection, written: pl.DataFrame, preview_columns: Sequence[str]) -> dict:
    return {
        "dagster/row_count": written.height,
        "rows_written": written.height,
        "tickers": ", ".join(selection.tickers),
        "date_range": f"{selection.start} .. {selection.end}",
        "trading_days": len(selection.dates),
        "preview": MetadataValue.md(preview_markdown(written, preview_columns)),
    }


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
