"""`risk_assessments`: VaR/CVaR (historical and from the fitted volatility model), volatility,
drawdown, beta and a risk score per ticker and trading day, with the LLM's narrative of concerns."""

import time

import polars as pl
from dagster import AssetCheckSeverity, AssetCheckSpec, AssetDep, AssetExecutionContext, MaterializeResult, asset
from dagster_duckdb import DuckDBResource

from pm_assets import llm_stage
from pm_assets.inputs import require_partitions
from pm_assets.metadata import check_results, run_metadata
from pm_assets.partitions import decode_partition_keys, lookback_mapping
from pm_domain import risk
from pm_domain.forecasting.engine import price_histories
from pm_domain.llm.schemas import RiskNarrative
from pm_domain.llm.content import risk_content
from pm_domain.llm.stages import risk_requests, risk_rows
from pm_domain.quality import RULE_DESCRIPTIONS, risk_rules
from pm_resources.ollama import OllamaResource
from pm_resources.store import read_rows

LOOKBACK_SESSIONS = risk.LOOKBACK_SESSIONS  # the longest window of pm_domain.risk.assess, in prices
VAR_LEVEL = f"{risk.VAR_LEVEL:.0%}"


@asset(
    **llm_stage.LLM_STAGE_ASSET_ARGS,
    group_name="llm",
    deps=[
        AssetDep("prices", partition_mapping=lookback_mapping(LOOKBACK_SESSIONS)),
        AssetDep("ts_forecasts"),
        AssetDep("llm_signals"),
    ],
    check_specs=[
        AssetCheckSpec("risk_complete", asset="risk_assessments",
                       description=f"warn: {RULE_DESCRIPTIONS['risk_complete']}, on every row"),
        AssetCheckSpec("llm_replies_valid", asset="risk_assessments", description=llm_stage.REPLIES_VALID_HELP),
        AssetCheckSpec("llm_concerns_cover_metrics", asset="risk_assessments", description=(
            f"warn: every model reply mentions each metric past its alert threshold ({risk.describe_alerts()}); "
            "the coverage rate is in the metadata and each row's content_check says what was missed")),
    ],
    description=f"Per ticker and date: historical VaR/CVaR {VAR_LEVEL} ({risk.VAR_WINDOW} daily returns), model "
    f"VaR/CVaR {VAR_LEVEL} from the 1-day forecast distribution (GARCH-t; normal under the EWMA fallback), "
    f"{risk.VOLATILITY_WINDOW}-day volatility, {risk.DRAWDOWN_WINDOW}-day max drawdown, beta to PM_BENCHMARK "
    f"(^GSPC) over {risk.BETA_WINDOW} sessions, a heuristic risk score and level ({risk.describe_levels()}; none under "
    f"{risk.MIN_RETURNS} returns), and the risk model's narrative of concerns about the day's signal.",
)
def risk_assessments(context: AssetExecutionContext, duckdb: DuckDBResource, ollama: OllamaResource) -> MaterializeResult:
    began = time.perf_counter()
    selection = decode_partition_keys(context.partition_keys)
    with duckdb.get_connection() as conn:
        prices, benchmark = llm_stage.read_prices_with_benchmark(conn, selection, LOOKBACK_SESSIONS)
        forecasts = read_rows(conn, "ts_forecasts", selection.tickers, selection.end, selection.start)
        signals = read_rows(conn, "llm_signals", selection.tickers, selection.end, selection.start)
    for frame, table in [(prices, "prices"), (forecasts, "ts_forecasts"), (signals, "llm_signals")]:
        require_partitions(frame, table, selection)

    one_day = forecasts.filter(pl.col("horizon") == 1)
    inputs = (
        llm_stage.risk_metrics(context, price_histories(prices), benchmark, selection)
        .join(model_var(one_day), on=["ticker", "date"], how="left")
        .join(signals.select("ticker", "date", "action", "position_size", "stop_distance"), on=["ticker", "date"])
        .with_columns(pl.lit(benchmark).alias("benchmark"))
        .sort("ticker", "date")
    )
    requests = risk_requests(inputs, benchmark, llm_stage.anonymize_sessions(ollama, "risk"))
    calls = llm_stage.ask(context, duckdb, ollama, "risk", requests, RiskNarrative)
    rows = risk_rows(inputs, calls)
    content = risk_content(rows)
    rows = rows.join(content, on=["ticker", "date"])
    llm_stage.write(duckdb, selection, "risk_assessments", rows, calls, "risk")
    coverage = llm_stage.content_check("llm_concerns_cover_metrics", content, "covers", "misses", "metric_coverage")

    levels = dict(rows.group_by("risk_level").len().iter_rows())
    context.log.info(f"wrote {rows.height} risk assessments: {levels}")
    metadata = run_metadata(context, selection, rows, ["ticker", "date", "risk_score", "risk_level", "var_95_hist",
                                              "var_95_model_log", "llm_source", "latency_ms"], began=began)
    return MaterializeResult(
        metadata=metadata | llm_stage.llm_metadata(calls) | {f"level_{k}": v for k, v in levels.items()}
        | {"metric_coverage_rate": coverage.metadata["metric_coverage_rate"]},
        check_results=check_results(risk_rules(rows), AssetCheckSeverity.WARN) + [llm_stage.replies_check(calls), coverage],
    )


def model_var(one_day: pl.DataFrame) -> pl.DataFrame:
    """VaR/CVaR 95% of the next day's log return from the forecast distribution of that row."""
    rows = []
    for row in one_day.iter_rows(named=True):
        mu, sigma, nu = row["expected_log_return"], row["sigma"], row.get("garch_nu")
        usable = mu is not None and sigma is not None and sigma > 0
        rows.append({
            "ticker": row["ticker"], "date": row["date"],
            "var_95_model_log": risk.garch_var(mu, sigma, nu) if usable else None,
            "cvar_95_model_log": risk.garch_cvar(mu, sigma, nu) if usable else None,
            "volatility_model": row["volatility_model"],
            "var_model_distribution": f"student_t(nu={nu:.2f})" if nu else "normal",
        })
    return pl.DataFrame(rows, schema={"ticker": pl.String, "date": pl.Date, "var_95_model_log": pl.Float64,
                                      "cvar_95_model_log": pl.Float64, "volatility_model": pl.String,
                                      "var_model_distribution": pl.String})
