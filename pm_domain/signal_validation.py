"""The five validation layers of a signal, as plain rules over llm_signals rows.

Each layer gives every row `pass`, `warn` or `fail` and the reason. They judge, they never edit:
the old validator turned HOLDs into SELLs and reported a score of 1.0 by construction; here the
action is read-only and the score is the mean of the layers' verdicts (pass 1, warn 0.5, fail 0),
so any warning shows in it.

1. structure: fields present and in range, levels on the right side of the entry, reasoning length.
2. market_context: stale prices (the close unchanged for several sessions), extreme volatility.
3. risk_return: reward/risk at least the minimum, stop not inside one forecast sigma.
4. technical: RSI and moving averages against the direction of a trade.
5. calibration: high confidence on few measured outcomes or in high volatility.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from pm_domain.quality import RuleOutcome
from pm_domain.signals import SignalRules

LAYERS = ("structure", "market_context", "risk_return", "technical", "calibration")
# What fails (and, after the semicolon, what only warns) in each layer: its check's description.
LAYER_DESCRIPTIONS = {
    "structure": "fails: an action outside BUY/SELL/HOLD, confidence outside [0, 1], reasoning under 20 or over "
                 "2,000 characters, size outside [0, 25%], a BUY without stop < entry < target (SELL mirrored)",
    "market_context": "fails: no price on the date, or a close unchanged 3+ sessions (stale feed); "
                      "warns: 20-day volatility above 50% or missing",
    "risk_return": "fails: reward/risk under 2 on a trade; warns: expected move under a quarter of the stop "
                   "distance, or a stop inside one forecast sigma",
    "technical": "fails: RSI and the SMA 20/50 trend both against the trade; warns: BUY with RSI > 70 or in a "
                 "downtrend, SELL with RSI < 30 or in an uptrend",
    "calibration": "warns: confidence >= 0.7 on fewer than 30 measured outcomes or in volatility above 40%",
}
SCORES = {"pass": 1.0, "warn": 0.5, "fail": 0.0}
MIN_REASONING_CHARS = 20
MAX_REASONING_CHARS = 2000
STALE_SESSIONS = 3  # this many sessions with an unchanged close in a row: a stale feed
EXTREME_VOLATILITY = 0.50  # annualised
HIGH_CONFIDENCE = 0.70
FEW_OUTCOMES = 30
CALIBRATION_VOLATILITY = 0.40
OVERBOUGHT, OVERSOLD = 70.0, 30.0
EXPECTED_MOVE_SHARE = 0.25  # of the stop distance, below which the trade rests on the target alone

_trade = pl.col("action").is_in(["BUY", "SELL"])
_buy, _sell = pl.col("action") == "BUY", pl.col("action") == "SELL"


def _verdict(fail: list[tuple[pl.Expr, str]], warn: list[tuple[pl.Expr, str]]) -> tuple[pl.Expr, pl.Expr]:
    """Status and reason: every failing condition's reason if any fails, else every warning's."""
    def reasons(conditions: list[tuple[pl.Expr, str]]) -> pl.Expr:
        parts = [pl.when(cond.fill_null(False)).then(pl.lit(text)) for cond, text in conditions]
        return pl.concat_str(parts, separator="; ", ignore_nulls=True).replace("", None) if parts else pl.lit(None, pl.String)

    fail_reason, warn_reason = reasons(fail), reasons(warn)
    status = pl.when(fail_reason.is_not_null()).then(pl.lit("fail")) \
        .when(warn_reason.is_not_null()).then(pl.lit("warn")).otherwise(pl.lit("pass"))
    return status, pl.coalesce(fail_reason, warn_reason)


def _structure(rules: SignalRules) -> tuple[pl.Expr, pl.Expr]:
    reasoning_chars = pl.col("reasoning").str.len_chars().fill_null(0)
    size = pl.col("position_size")
    return _verdict([
        (~pl.col("action").is_in(["BUY", "SELL", "HOLD"]) | pl.col("action").is_null(), "action not BUY/SELL/HOLD"),
        (~pl.col("confidence").is_between(0.0, 1.0), "confidence outside [0, 1]"),
        (_trade & pl.col("confidence").is_null(), "trade without a confidence"),
        (reasoning_chars < MIN_REASONING_CHARS, f"reasoning under {MIN_REASONING_CHARS} characters"),
        (reasoning_chars > MAX_REASONING_CHARS, f"reasoning over {MAX_REASONING_CHARS} characters"),
        (size.is_null() | ~size.is_between(0.0, rules.max_position), "position size missing or outside [0, cap]"),
        (_buy & ~((pl.col("stop_price") < pl.col("entry_price")) & (pl.col("entry_price") < pl.col("target_price"))).fill_null(False),
         "BUY needs stop < entry < target"),
        (_sell & ~((pl.col("target_price") < pl.col("entry_price")) & (pl.col("entry_price") < pl.col("stop_price"))).fill_null(False),
         "SELL needs target < entry < stop"),
        ((pl.col("action") == "HOLD") & (size > 0), "HOLD with a position size"),
    ], [])


def _market_context(rules: SignalRules) -> tuple[pl.Expr, pl.Expr]:
    return _verdict([
        (pl.col("price_date").is_null() | (pl.col("price_date") < pl.col("date")), "latest price older than the signal date"),
        (pl.col("unchanged_sessions") >= STALE_SESSIONS, f"close unchanged for {STALE_SESSIONS}+ sessions: stale prices"),
    ], [
        (pl.col("realised_vol_20d") > EXTREME_VOLATILITY, f"20-day volatility above {EXTREME_VOLATILITY:.0%} annualised"),
        (pl.col("realised_vol_20d").is_null(), "no 20-day volatility"),
    ])


def _risk_return(rules: SignalRules) -> tuple[pl.Expr, pl.Expr]:
    return _verdict([
        (_trade & (pl.col("reward_risk") < rules.min_reward_risk), "reward/risk under the minimum"),
    ], [
        (_trade & (pl.col("expected_return").abs() < EXPECTED_MOVE_SHARE * pl.col("stop_distance")),
         "expected move under a quarter of the stop distance: the target needs a move the forecast does not expect"),
        (_trade & (pl.col("stop_distance") < pl.col("sigma").exp() - 1), "stop inside one forecast sigma: noise can stop it out"),
    ])


def _technical(rules: SignalRules) -> tuple[pl.Expr, pl.Expr]:
    downtrend = (pl.col("close") < pl.col("sma_50")) & (pl.col("sma_20") < pl.col("sma_50"))
    uptrend = (pl.col("close") > pl.col("sma_50")) & (pl.col("sma_20") > pl.col("sma_50"))
    against_rsi = (_buy & (pl.col("rsi_14") > OVERBOUGHT)) | (_sell & (pl.col("rsi_14") < OVERSOLD))
    against_trend = (_buy & downtrend) | (_sell & uptrend)
    return _verdict([
        (against_rsi & against_trend, "RSI and moving averages both against the trade"),
    ], [
        (against_rsi, "RSI14 against the trade (BUY overbought > 70 / SELL oversold < 30)"),
        (against_trend, "trade against the SMA20/SMA50 trend"),
    ])


def _calibration(rules: SignalRules) -> tuple[pl.Expr, pl.Expr]:
    confident = _trade & (pl.col("confidence") >= HIGH_CONFIDENCE)
    return _verdict([], [
        (confident & (pl.col("hit_observations") < FEW_OUTCOMES), f"confidence >= {HIGH_CONFIDENCE} on under {FEW_OUTCOMES} measured outcomes"),
        (confident & (pl.col("realised_vol_20d") > CALIBRATION_VOLATILITY), f"confidence >= {HIGH_CONFIDENCE} in volatility above {CALIBRATION_VOLATILITY:.0%}"),
    ])


_RULES = {"structure": _structure, "market_context": _market_context, "risk_return": _risk_return,
          "technical": _technical, "calibration": _calibration}


def validate_signals(signals: pl.DataFrame, rules: SignalRules) -> pl.DataFrame:
    """Add `validation_<layer>` (pass/warn/fail), `validation_<layer>_reason` and
    `validation_score` to the rows; every other column is returned unchanged."""
    columns = []
    for layer in LAYERS:
        status, reason = _RULES[layer](rules)
        columns += [status.alias(f"validation_{layer}"), reason.alias(f"validation_{layer}_reason")]
    validated = signals.with_columns(columns)
    score = pl.mean_horizontal([pl.col(f"validation_{layer}").replace_strict(SCORES, return_dtype=pl.Float64)
                                for layer in LAYERS])
    return validated.with_columns(score.alias("validation_score"))


def layer_outcomes(validated: pl.DataFrame, layers: Sequence[str] = LAYERS) -> list[RuleOutcome]:
    """One verdict per layer over the rows: failed when any row fails; warnings are counted."""
    outcomes = []
    for layer in layers:
        status = pl.col(f"validation_{layer}")
        failing = validated.filter(status == "fail")
        warned = validated.filter(status == "warn").height
        examples = [f"{r['ticker']} {r['date']}: {r[f'validation_{layer}_reason']}"
                    for r in (failing if failing.height else validated.filter(status == "warn")).head(3).iter_rows(named=True)]
        outcomes.append(RuleOutcome(
            f"validation_{layer}", failing.height == 0,
            f"{validated.height - failing.height - warned} pass, {warned} warn, {failing.height} fail",
            failing.height, examples,
        ))
    return outcomes
