"""Per-stage glue without Dagster: which numbers go into each prompt, and how replies (or the
fallback) become rows. The assets call these and only read, ask and write."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import polars as pl

from pm_domain.forecasting.engine import ForecastConfig
from pm_domain.llm.client import LLMCall
from pm_domain.llm.fallback import analysis_fallback, risk_fallback
from pm_domain.llm.prompts import Prompt, render
from pm_domain.llm.records import Request, telemetry_columns
from pm_domain.llm.schemas import MarketAnalysis, RiskNarrative, SignalOpinion

HORIZONS = ForecastConfig().horizons
# Per session: whether its prompt is anonymized (OllamaSettings.anonymizes, for the stage).
Anonymize = Callable[[dt.date], bool]


def forecasts_wide(forecasts: pl.DataFrame) -> pl.DataFrame:
    """One row per (ticker, date) with expected_log_return_<h>d, lower_90_<h>d, upper_90_<h>d,
    sigma_<h>d for each horizon, and the volatility model and its Student-t nu."""
    values = ["expected_log_return", "lower_90", "upper_90", "sigma"]
    wide = forecasts.pivot(on="horizon", index=["ticker", "date"], values=values)
    wide = wide.rename({f"{v}_{h}": f"{v}_{h}d" for v in values for h in HORIZONS if f"{v}_{h}" in wide.columns})
    extra = forecasts.filter(pl.col("horizon") == 1).select("ticker", "date", "volatility_model", "garch_nu")
    return wide.join(extra, on=["ticker", "date"], how="left")


def analysis_prompt(row: dict, anonymized: bool = False) -> Prompt:
    values = {name: row[name] for name in (
        "close", "return_1d", "return_5d", "return_20d", "sma_20", "sma_50", "macd", "macd_signal",
        "rsi_14", "bb_percent_b", "realised_vol_20d", "volume_ratio_20d", "volatility_model")}
    values["atr_pct"] = row["atr_14"] / row["close"] if row["atr_14"] is not None else None
    for h in HORIZONS:
        values[f"f{h}"] = row[f"expected_log_return_{h}d"]
        values[f"f{h}_lo"] = row[f"lower_90_{h}d"]
        values[f"f{h}_hi"] = row[f"upper_90_{h}d"]
    return render("analysis", row["ticker"], row["date"], values, anonymized)


def analysis_requests(inputs: pl.DataFrame, anonymize: Anonymize) -> list[Request]:
    return [Request(row["ticker"], row["date"], analysis_prompt(row, anonymize(row["date"])))
            for row in inputs.iter_rows(named=True)]


def analysis_rows(inputs: pl.DataFrame, calls: Sequence[LLMCall]) -> pl.DataFrame:
    """The reply of each call, or the rule-based analysis where there is none."""
    answers = []
    for row, call in zip(inputs.iter_rows(named=True), calls, strict=True):
        answer = call.value if isinstance(call.value, MarketAnalysis) else analysis_fallback(row)
        answers.append({"ticker": row["ticker"], "date": row["date"], **answer.model_dump()})
    frame = pl.DataFrame(answers, schema={"ticker": pl.String, "date": pl.Date, "trend": pl.String,
                                          "strength": pl.Int64, "regime": pl.String,
                                          "key_observations": pl.List(pl.String), "summary": pl.String})
    return frame.join(telemetry_columns(calls), on=["ticker", "date"])


def signal_prompt(row: dict, anonymized: bool = False) -> Prompt:
    values = {name: row[name] for name in (
        "expected_return", "expected_return_net", "forecast_confidence", "stop_distance",
        "target_distance", "risk_score", "rsi_14", "close", "sma_20", "sma_50", "realised_vol_20d",
        "trend", "strength", "regime")}
    values["proposed_action"] = row["forecast_action"]
    values["sigma_h"] = row["sigma"]
    values["horizon"] = row["horizon"]
    if anonymized:  # not in the text: what the close, SMA20 and SMA50 are indexed by
        values["return_20d"] = row["return_20d"]
    return render("signal", row["ticker"], row["date"], values, anonymized)


HOLD_NOT_ASKED = "the forecast proposes HOLD, which the LLM cannot change (ask_llm_on_hold is off)"


def signal_requests(proposals: pl.DataFrame, ask_on_hold: bool, anonymize: Anonymize) -> list[Request]:
    """One request per proposal. The LLM can hold a trade back but never open one, so on a HOLD
    proposal its answer cannot change the signal: unless asked to, it is not asked."""
    return [Request(row["ticker"], row["date"], signal_prompt(row, anonymize(row["date"])),
                    None if ask_on_hold or row["forecast_action"] != "HOLD" else HOLD_NOT_ASKED)
            for row in proposals.iter_rows(named=True)]


def opinion_columns(calls: Sequence[LLMCall]) -> pl.DataFrame:
    """The LLM's own call per row: null when the reply came from nowhere valid."""
    return pl.DataFrame([{
        "ticker": c.ticker, "date": c.date,
        "llm_action": c.value.action if isinstance(c.value, SignalOpinion) else None,
        "llm_confidence": c.value.confidence_fraction if isinstance(c.value, SignalOpinion) else None,
        "llm_reasoning": c.value.reasoning if isinstance(c.value, SignalOpinion) else None,
    } for c in calls], schema={"ticker": pl.String, "date": pl.Date, "llm_action": pl.String,
                               "llm_confidence": pl.Float64, "llm_reasoning": pl.String})


def risk_prompt(row: dict, benchmark: str, anonymized: bool = False) -> Prompt:
    values = {name: row[name] for name in (
        "var_95_hist", "cvar_95_hist", "var_95_model_log", "volatility_model", "volatility_20d",
        "max_drawdown_252d", "beta", "risk_score", "risk_level", "action", "position_size", "stop_distance")}
    return render("risk", row["ticker"], row["date"], values | {"benchmark": benchmark}, anonymized)


def risk_requests(inputs: pl.DataFrame, benchmark: str, anonymize: Anonymize) -> list[Request]:
    return [Request(row["ticker"], row["date"], risk_prompt(row, benchmark, anonymize(row["date"])))
            for row in inputs.iter_rows(named=True)]


def risk_rows(inputs: pl.DataFrame, calls: Sequence[LLMCall]) -> pl.DataFrame:
    narratives = []
    for row, call in zip(inputs.iter_rows(named=True), calls, strict=True):
        answer = call.value if isinstance(call.value, RiskNarrative) else risk_fallback(row)
        narratives.append({"ticker": row["ticker"], "date": row["date"], "concerns": answer.concerns,
                           "narrative": answer.summary})
    frame = pl.DataFrame(narratives, schema={"ticker": pl.String, "date": pl.Date,
                                             "concerns": pl.List(pl.String), "narrative": pl.String})
    return inputs.join(frame, on=["ticker", "date"]).join(telemetry_columns(calls), on=["ticker", "date"])
