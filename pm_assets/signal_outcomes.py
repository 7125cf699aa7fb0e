"""`signal_outcomes`: what became of each day's signal, pm_domain.outcomes.OUTCOME_HORIZONS
sessions after its entry at the next close; pending until the longest window has closed, then
validated or failed."""

import time

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource

from pm_assets.inputs import require_partitions
from pm_assets.metadata import add_plot, last_date_keys, run_metadata
from pm_assets.partitions import STAGE_ASSET_ARGS, decode_partition_keys, forward_mapping
from pm_domain import calendar, plots
from pm_domain import performance as perf
from pm_domain.forecasting.engine import price_rows
from pm_domain import outcomes
from pm_domain.outcomes import ENTRY_LAG_SESSIONS, OUTCOME_HORIZONS, STATUSES, TRACKING_SESSIONS
from pm_resources.store import read_rows, replace_partitions

LAST_SESSION = ENTRY_LAG_SESSIONS + TRACKING_SESSIONS
HORIZONS_TEXT = f"{', '.join(map(str, OUTCOME_HORIZONS[:-1]))} and {OUTCOME_HORIZONS[-1]}"  # "1, 5 and 30"


def calibration_metadata(signals: pl.DataFrame, rows: pl.DataFrame) -> dict:
    """The forecast's and the LLM's own calls of the run, scored: count, hit rate, Brier score,
    and the reliability diagram of both."""
    if "llm_action" not in signals.columns:
        return {}
    calls = outcomes.directional_calls(signals, rows)
    metadata, points = {}, {}
    for caller in ("forecast", "llm"):
        own = calls.filter(pl.col("caller") == caller)
        hits = own["hit"].cast(pl.Float64).to_numpy()
        metadata[f"{caller}_calls_scored"] = own.height
        if own.height:
            metadata[f"{caller}_hit_rate"] = float(hits.mean())
            metadata[f"{caller}_brier_score"] = float(perf.brier_score(own["probability"].to_numpy(), hits))
        points[caller if caller == "forecast" else "LLM"] = perf.reliability(own["probability"].to_numpy(), hits)
    if calls.height:
        metadata["reliability"] = MetadataValue.md(plots.png_markdown(
            plots.reliability_png(points, "Reliability of this run's scored calls: forecast and LLM"),
            "reliability diagram"))
    return metadata


@asset(
    **STAGE_ASSET_ARGS,
    group_name="evaluation",
    deps=[
        AssetDep("llm_signals"),
        # The prices an outcome waits for: the entry close (t+1) through the last horizon's.
        AssetDep("prices", partition_mapping=forward_mapping(ENTRY_LAG_SESSIONS, LAST_SESSION)),
    ],
    check_specs=[AssetCheckSpec("outcome_prices_complete", asset="signal_outcomes", description=(
        f"warn: every outcome whose {HORIZONS_TEXT}-session window has closed has its price (no gap in prices)"))],
    description=f"Per ticker and signal date: entry at the next close, realised return after {HORIZONS_TEXT} "
    "sessions (exchange sessions, not price rows), hit or miss of BUY/SELL at the signal's "
    f"horizon, and a status: pending until the {TRACKING_SESSIONS}-session window has closed, then validated or "
    "failed (HOLD: not_traded). Re-materialize as prices arrive; the signal-validation sensor does.",
)
def signal_outcomes(context: AssetExecutionContext, duckdb: DuckDBResource) -> MaterializeResult:
    began = time.perf_counter()
    selection = decode_partition_keys(context.partition_keys)
    first_entry = calendar.shift_trading_days(selection.start, ENTRY_LAG_SESSIONS)
    last_needed = calendar.shift_trading_days(selection.end, LAST_SESSION)
    with duckdb.get_connection() as conn:
        signals = read_rows(conn, "llm_signals", selection.tickers, selection.end, selection.start)
        prices = read_rows(conn, "prices", selection.tickers, last_needed, first_entry)
    require_partitions(signals, "llm_signals", selection)
    rows = outcomes.signal_outcomes(signals, price_rows(prices))
    with duckdb.get_connection() as conn:
        replace_partitions(conn, "signal_outcomes", rows, selection.tickers, selection.dates)

    statuses = dict(rows.group_by("status").len().iter_rows())
    resolved = rows.filter(pl.col("status").is_in(["validated", "failed"]))
    context.log.info(f"wrote {rows.height} signal outcomes: {statuses}")
    gaps = rows.filter((pl.col("status") == "pending") & pl.col("status_reason").str.starts_with("a price is missing"))
    metadata = run_metadata(context, selection, rows, ["ticker", "date", "action", "realised_return_1d", "realised_return_5d",
                                              "realised_return_30d", "hit", "status"], began=began)
    metadata |= {f"status_{status}": statuses.get(status, 0) for status in STATUSES}
    metadata["hit_rate_resolved"] = (float(resolved["hit"].cast(pl.Float64).mean()) if resolved.height
                                     else MetadataValue.text("no resolved call"))
    metadata |= calibration_metadata(signals, rows)
    if "reliability" in metadata:  # the run's calls over every ticker: on its first ticker's last date
        metadata |= add_plot(context, "reliability", metadata.pop("reliability").value,
                             last_date_keys(selection, selection.tickers[:1]))
    return MaterializeResult(
        metadata=metadata,
        check_results=[AssetCheckResult(
            check_name="outcome_prices_complete",
            passed=gaps.height == 0,
            severity=AssetCheckSeverity.WARN,
            description=f"{gaps.height} outcome(s) whose window has closed but lack a price (a gap in prices)",
            metadata={"examples": ", ".join(f"{t} {d}" for t, d in gaps.select("ticker", "date").head(3).iter_rows())
                      or "none"},
        )],
    )
