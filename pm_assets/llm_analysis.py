"""`llm_analysis`: the LLM's market analysis per ticker and trading day, from features and forecasts."""

import time

from dagster import AssetCheckSpec, AssetDep, AssetExecutionContext, MaterializeResult, asset
from dagster_duckdb import DuckDBResource

from pm_assets import llm_stage
from pm_assets.inputs import require_partitions
from pm_assets.metadata import run_metadata
from pm_assets.partitions import decode_partition_keys
from pm_domain.llm.content import analysis_content
from pm_domain.llm.schemas import MarketAnalysis
from pm_domain.llm.stages import analysis_requests, analysis_rows, forecasts_wide
from pm_resources.ollama import OllamaResource
from pm_resources.store import read_rows


@asset(
    **llm_stage.LLM_STAGE_ASSET_ARGS,
    group_name="llm",
    deps=[AssetDep("features"), AssetDep("ts_forecasts")],
    check_specs=[
        AssetCheckSpec("llm_replies_valid", asset="llm_analysis", description=llm_stage.REPLIES_VALID_HELP),
        AssetCheckSpec("llm_trend_agrees", asset="llm_analysis", description=(
            "warn: no model reply calls the trend bullish where the indicators' votes (close vs SMA50, "
            "SMA20 vs SMA50, MACD histogram) say bearish, or the reverse; the agreement rate is in the "
            "metadata and each row's content_check says why")),
    ],
    description="Market analysis per ticker and date as validated JSON (trend, strength, regime, "
    "key observations, summary) from the analysis model, given that date's indicators and "
    "forecasts. Each row says whether Ollama, the cache or the rule-based fallback wrote it, "
    "with Ollama's latency and token counts.",
)
def llm_analysis(context: AssetExecutionContext, duckdb: DuckDBResource, ollama: OllamaResource) -> MaterializeResult:
    began = time.perf_counter()
    selection = decode_partition_keys(context.partition_keys)
    with duckdb.get_connection() as conn:
        features = read_rows(conn, "features", selection.tickers, selection.end, selection.start)
        forecasts = read_rows(conn, "ts_forecasts", selection.tickers, selection.end, selection.start)
    require_partitions(features, "features", selection)
    require_partitions(forecasts, "ts_forecasts", selection)
    inputs = features.join(forecasts_wide(forecasts), on=["ticker", "date"]).sort("ticker", "date")
    calls = llm_stage.ask(context, duckdb, ollama, "analysis",
                          analysis_requests(inputs, llm_stage.anonymize_sessions(ollama, "analysis")), MarketAnalysis)
    rows = analysis_rows(inputs, calls)
    content = analysis_content(inputs, rows)
    rows = rows.join(content, on=["ticker", "date"])
    llm_stage.write(duckdb, selection, "llm_analysis", rows, calls, "analysis")
    check = llm_stage.content_check("llm_trend_agrees", content, "agrees", "contradicts", "trend_agreement")

    metadata = run_metadata(context, selection, rows, ["ticker", "date", "trend", "strength", "regime", "content_check",
                                              *llm_stage.TELEMETRY_PREVIEW], began=began)
    return MaterializeResult(metadata=metadata | llm_stage.llm_metadata(calls)
                             | {"trend_agreement_rate": check.metadata["trend_agreement_rate"]},
                             check_results=[llm_stage.replies_check(calls), check])
