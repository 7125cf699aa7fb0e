"""`llm_signals`: BUY/SELL/HOLD per ticker and trading day, time-series first, the LLM confirming
or vetoing, checked by the five validation layers."""

import json
import time
from typing import Literal

import polars as pl
from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    asset,
)
from dagster_duckdb import DuckDBResource
from pydantic import Field, field_validator

from pm_assets import llm_stage
from pm_assets.inputs import require_partitions
from pm_assets.metadata import check_results, run_metadata
from pm_assets.partitions import decode_partition_keys, lookback_mapping
from pm_domain import calendar
from pm_domain.forecasting.engine import ForecastConfig, price_histories
from pm_domain.llm.records import TELEMETRY_SCHEMA, telemetry_columns
from pm_domain.llm.schemas import SignalOpinion
from pm_domain.llm.stages import opinion_columns, signal_requests
from pm_domain.signal_validation import LAYER_DESCRIPTIONS, LAYERS, layer_outcomes, validate_signals
from pm_domain import risk
from pm_domain.signals import (
    SignalRules,
    decide,
    describe_gates,
    describe_stops_and_size,
    describe_veto,
    directional_hit_rates,
    forecast_signals,
    trading_calls,
    unchanged_sessions,
)
from pm_resources.ollama import OllamaResource
from pm_resources.store import read_rows

DEFAULT_RULES = SignalRules()
HIT_WINDOW = DEFAULT_RULES.hit_window
FORECAST_HORIZONS = ForecastConfig().horizons
MAX_HORIZON = max(FORECAST_HORIZONS)
RISK_LOOKBACK_SESSIONS = risk.LOOKBACK_SESSIONS  # the risk gate's metrics (llm_stage.risk_metrics)
# Hit rates read forecasts whose outcome is known by the date: up to hit_window + horizon back.
FORECAST_LOOKBACK_SESSIONS = HIT_WINDOW + MAX_HORIZON + 1
PRICE_LOOKBACK_SESSIONS = max(RISK_LOOKBACK_SESSIONS, FORECAST_LOOKBACK_SESSIONS)
OUTPUT_COLUMNS = [
    "ticker", "date", "action", "confidence", "reasoning", "entry_price", "stop_price", "target_price",
    "position_size", "decided_by", "llm_role", "horizon", "forecast_action", "forecast_confidence",
    "hold_reason", "expected_log_return", "expected_return", "expected_return_net", "sigma",
    "stop_distance", "target_distance", "reward_risk", "kelly_fraction", "hit_rate", "payoff_ratio",
    "hit_observations", "sizing_basis", "risk_score", "llm_action", "llm_confidence", "llm_reasoning",
    "close", "atr_14", "rsi_14", "sma_20", "sma_50", "realised_vol_20d", "unchanged_sessions", "price_date",
]


class LlmSignalsConfig(Config):
    """The run config of llm_signals: its defaults are SignalRules' (pm_domain/signals.py)."""

    llm_role: Literal["veto", "confirm", "off"] = Field(default=DEFAULT_RULES.llm_role, description=(
        f"veto: the LLM can hold back a forecast trade it disagrees with ({describe_veto(DEFAULT_RULES)}); "
        "confirm: a trade needs the LLM's agreement; off: the LLM's call is stored, not used"))
    horizon: int = Field(default=DEFAULT_RULES.horizon, description=(
        f"forecast horizon the signal trades: {', '.join(map(str, FORECAST_HORIZONS[:-1]))} or "
        f"{FORECAST_HORIZONS[-1]} sessions"))
    min_confidence: float = Field(default=DEFAULT_RULES.min_confidence, ge=0.5, le=1.0)
    min_net_return: float = Field(default=DEFAULT_RULES.min_net_return, ge=0.0,
                                  description="expected return net of costs to act")
    max_risk_score: float = Field(default=DEFAULT_RULES.max_risk_score, ge=0.0, le=1.0)
    round_trip_cost: float = Field(default=DEFAULT_RULES.round_trip_cost, ge=0.0, le=0.05,
                                   description="commission + spread, both ways")
    ask_llm_on_hold: bool = Field(default=False, description=(
        "ask the signal model about HOLD proposals too; its answer cannot change a HOLD (the LLM "
        "only holds trades back), so by default those rows are written as llm_source 'skipped'"))

    @field_validator("horizon")
    @classmethod
    def _forecast_horizon(cls, value: int) -> int:
        if value not in FORECAST_HORIZONS:
            raise ValueError(f"horizon {value}: ts_forecasts has horizons {', '.join(map(str, FORECAST_HORIZONS))}")
        return value

    def rules(self) -> SignalRules:
        return SignalRules(horizon=self.horizon, min_confidence=self.min_confidence,
                           min_net_return=self.min_net_return, max_risk_score=self.max_risk_score,
                           round_trip_cost=self.round_trip_cost, llm_role=self.llm_role)


@asset(
    **llm_stage.LLM_STAGE_ASSET_ARGS,
    group_name="llm",
    deps=[
        AssetDep("prices", partition_mapping=lookback_mapping(PRICE_LOOKBACK_SESSIONS)),
        AssetDep("features"),
        AssetDep("ts_forecasts", partition_mapping=lookback_mapping(FORECAST_LOOKBACK_SESSIONS)),
        AssetDep("llm_analysis"),
    ],
    check_specs=[
        AssetCheckSpec(f"validation_{layer}", asset="llm_signals", blocking=layer == "structure",
                       description=LAYER_DESCRIPTIONS[layer])
        for layer in LAYERS
    ] + [AssetCheckSpec("llm_replies_valid", asset="llm_signals", description=llm_stage.REPLIES_VALID_HELP)],
    description=f"BUY/SELL/HOLD per ticker and date: {describe_gates(DEFAULT_RULES)}, the signal model "
    f"confirms or vetoes; {describe_stops_and_size(DEFAULT_RULES)}. Trades at the next session. {len(LAYERS)} "
    "validation checks; structure blocks.",
)
def llm_signals(context: AssetExecutionContext, config: LlmSignalsConfig, duckdb: DuckDBResource,
                ollama: OllamaResource) -> MaterializeResult:
    began = time.perf_counter()
    selection = decode_partition_keys(context.partition_keys)
    rules = config.rules()
    first_forecast = calendar.shift_trading_days(selection.start, -(FORECAST_LOOKBACK_SESSIONS - 1))
    with duckdb.get_connection() as conn:
        prices, benchmark = llm_stage.read_prices_with_benchmark(conn, selection, PRICE_LOOKBACK_SESSIONS)
        features = read_rows(conn, "features", selection.tickers, selection.end, selection.start)
        forecasts = read_rows(conn, "ts_forecasts", selection.tickers, selection.end, first_forecast)
        analysis = read_rows(conn, "llm_analysis", selection.tickers, selection.end, selection.start)
    for frame, table in [(prices, "prices"), (features, "features"), (analysis, "llm_analysis")]:
        require_partitions(frame, table, selection)
    forecasts = forecasts.filter(pl.col("horizon") == rules.horizon)
    require_partitions(forecasts.filter(pl.col("date") >= selection.start), "ts_forecasts", selection)

    histories = price_histories(prices)
    risk_frame = llm_stage.risk_metrics(context, histories, benchmark, selection)
    hit_rates = directional_hit_rates(trading_calls(forecasts, rules).select("ticker", "date", "expected_log_return"),
                                      pl.concat([h for t, h in histories.items() if t in selection.tickers]),
                                      selection.dates, rules.horizon, rules.hit_window)
    inputs = (
        # return_20d (the session's own, no later price) indexes an anonymized prompt's prices
        features.select("ticker", "date", "close", "atr_14", "rsi_14", "sma_20", "sma_50", "realised_vol_20d",
                        "return_20d")
        .join(forecasts.select("ticker", "date", "expected_log_return", "sigma"), on=["ticker", "date"])
        .join(risk_frame.select("ticker", "date", "risk_score"), on=["ticker", "date"], how="left")
        .join(hit_rates, on=["ticker", "date"], how="left")
        .join(unchanged_sessions(prices), on=["ticker", "date"], how="left")
        .join(analysis.select("ticker", "date", "trend", "strength", "regime"), on=["ticker", "date"])
        .with_columns(pl.col("hit_observations").fill_null(0))
        .sort("date")
        .join_asof(prices.select("ticker", "date", pl.col("date").alias("price_date")).sort("date"),
                   on="date", by="ticker", strategy="backward", check_sortedness=False)  # sorted just above
        .sort("ticker", "date")
    )
    proposals = forecast_signals(inputs, rules).with_columns(pl.lit(rules.horizon, pl.Int64).alias("horizon"))
    requests = signal_requests(proposals, config.ask_llm_on_hold, llm_stage.anonymize_sessions(ollama, "signal"))
    calls = llm_stage.ask(context, duckdb, ollama, "signal", requests, SignalOpinion)

    decided = decide(proposals.join(opinion_columns(calls), on=["ticker", "date"])
                     .join(telemetry_columns(calls), on=["ticker", "date"]), rules)
    decided = decided.with_columns(pl.lit(rules.llm_role).alias("llm_role"))
    validated = validate_signals(decided, rules)
    validation = [c for c in validated.columns if c.startswith("validation_")]
    rows = validated.select(*OUTPUT_COLUMNS, *TELEMETRY_SCHEMA, *validation).with_columns(
        pl.lit(json.dumps(vars(rules), sort_keys=True)).alias("rules"))
    llm_stage.write(duckdb, selection, "llm_signals", rows, calls, "signal")

    counts = dict(rows.group_by("action").len().iter_rows())
    context.log.info(f"wrote {rows.height} signals: {counts}")
    outcomes = {o.name: o for o in layer_outcomes(rows)}
    metadata = run_metadata(context, selection, rows, ["ticker", "date", "action", "confidence", "position_size",
                                              "decided_by", "validation_score", "llm_source", "latency_ms"], began=began)
    metadata |= {f"signals_{action.lower()}": counts.get(action, 0) for action in ("BUY", "SELL", "HOLD")}
    return MaterializeResult(
        metadata=metadata | llm_stage.llm_metadata(calls),
        check_results=check_results([outcomes["validation_structure"]], AssetCheckSeverity.ERROR)
        + check_results([outcomes[f"validation_{layer}"] for layer in LAYERS[1:]], AssetCheckSeverity.WARN)
        + [llm_stage.replies_check(calls)],
    )
