"""What the LLM adds to a backtest: the same signals with the LLM's veto or confirmation turned
off (the forecast-only twin), traded over the same windows, and the difference.

The twin of a signal is its forecast's proposal: action = `forecast_action`, and under "signal"
sizing the half-Kelly size the rule gives that proposal (clip(kelly_share x kelly_fraction, 0,
max_position), from the row's own rules). The LLM can only hold a trade back, so the twin differs
from the final signal exactly on the rows the LLM vetoed or did not confirm.

For each backtest window: the twin's total and annual return, Sharpe, hit rate, trades and
exposure, the final signal's minus the twin's (`llm_delta_*`), and a paired stationary-bootstrap
interval of the Sharpe difference: both strategies resampled on the same days (the same index
draws), Sharpe(final) - Sharpe(twin) per resample, the percentile interval at the backtest's
`interval`. The verdict: `llm_adds` when the interval lies above 0, `llm_removes` below 0,
`no_difference` when it contains 0, `insufficient_data` when the window has no metrics. For the
difference, a strategy that held no position has Sharpe 0 (no return, no risk): an LLM that vetoes
every trade is compared, not left undefined.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from pm_domain import performance as perf

ATTRIBUTION_METRICS = ("total_return", "annual_return", "sharpe", "hit_rate", "trades", "exposure")
LLM_VERDICTS = ("llm_adds", "llm_removes", "no_difference", "insufficient_data")
ATTRIBUTION_SCHEMA = {
    **{f"forecast_only_{m}": (pl.Int64 if m == "trades" else pl.Float64) for m in ATTRIBUTION_METRICS},
    **{f"llm_delta_{m}": (pl.Int64 if m == "trades" else pl.Float64) for m in ATTRIBUTION_METRICS},
    "llm_sharpe_delta_ci_lower": pl.Float64, "llm_sharpe_delta_ci_upper": pl.Float64,
    "llm_held_back": pl.Int64, "llm_verdict": pl.String,
}


def forecast_only_signals(signals: pl.DataFrame) -> pl.DataFrame:
    """The signals as the forecast proposed them (needs action, forecast_action, position_size,
    kelly_fraction and rules): the LLM's veto and confirmation turned off."""
    held = (pl.col("action") != pl.col("forecast_action")) & (pl.col("forecast_action") != "HOLD")
    rule = {name: pl.col("rules").str.json_path_match(f"$.{name}").cast(pl.Float64).fill_null(default)
            for name, default in (("kelly_share", 0.5), ("max_position", 0.25))}
    rule_size = (rule["kelly_share"] * pl.col("kelly_fraction")).clip(0.0, rule["max_position"]).fill_null(0.0)
    return signals.with_columns(
        pl.when(held).then(rule_size).otherwise(pl.col("position_size")).alias("position_size"),
        pl.col("forecast_action").alias("action"),
    )


def paired_sharpe_difference_interval(final: np.ndarray, twin: np.ndarray, counts: np.ndarray,
                                      confidence: float, risk_free: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of Sharpe(final) - Sharpe(twin) over stationary-bootstrap resamples of
    the same days (`counts`, replications x N, from performance.stationary_bootstrap_counts), for
    (windows x N) arrays without NaN. A resample's Sharpe is mean / std(ddof=1) * sqrt(252); one
    with no return and no dispersion (a flat strategy) has Sharpe 0. NaN bounds when fewer than
    half the resamples have a defined difference."""
    n = final.shape[1]
    if n < 2:
        nan = np.full(final.shape[0], np.nan)
        return nan, nan
    difference = (perf.resampled_sharpe(final - risk_free, counts, flat_is_zero=True)
                  - perf.resampled_sharpe(twin - risk_free, counts, flat_is_zero=True))
    return perf.percentile_interval(difference, confidence)


def llm_verdict(lower: float | None, upper: float | None, usable: bool) -> str:
    """llm_adds (interval above 0), llm_removes (below 0), no_difference (contains 0)."""
    if not usable or lower is None or upper is None or math.isnan(lower) or math.isnan(upper):
        return "insufficient_data"
    if lower > 0:
        return "llm_adds"
    if upper < 0:
        return "llm_removes"
    return "no_difference"
