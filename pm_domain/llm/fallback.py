"""Deterministic, rule-based answers for when no valid LLM reply exists.

They answer in the same schema as the model so a row always has the same shape, and every row
built from them says `source = 'fallback'` with the reason: they are a labelled stand-in, not a
second opinion. The signal stage has no fallback opinion at all: without a valid reply the
time-series rule decides alone (see pm_domain.signals).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pm_domain import risk
from pm_domain.llm.schemas import MarketAnalysis, RiskNarrative

VOLATILE_ABOVE = 0.35  # annualised 20-day volatility treated as a volatile regime
TRENDING_SMA_GAP = 0.02  # |SMA20 / SMA50 - 1| beyond which a directional market is trending


def _sign(value: float | None) -> int:
    if value is None or math.isnan(value):
        return 0
    return (value > 0) - (value < 0)


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.2%}"


def trend_votes(row: Mapping[str, float | None]) -> tuple[str, int, str]:
    """The indicators' own trend: three votes (close vs SMA50, SMA20 vs SMA50, MACD histogram),
    bullish at +2 or more, bearish at -2 or less, else sideways; and the votes in words."""
    close, sma_20, sma_50 = row["close"], row["sma_20"], row["sma_50"]
    signs = [_sign(close - sma_50) if sma_50 else 0, _sign(sma_20 - sma_50) if sma_20 and sma_50 else 0,
             _sign(row.get("macd_hist"))]
    votes = sum(signs)
    trend = "bullish" if votes >= 2 else "bearish" if votes <= -2 else "sideways"
    words = ", ".join(f"{name} {'above' if sign > 0 else 'below' if sign < 0 else 'level with'} {ref}"
                      for (name, ref), sign in zip((("close", "SMA50"), ("SMA20", "SMA50"), ("MACD", "its signal")),
                                                   signs, strict=True))
    return trend, votes, words


def analysis_fallback(row: Mapping[str, float | None]) -> MarketAnalysis:
    """Trend from three votes (close vs SMA50, SMA20 vs SMA50, MACD histogram); strength from the
    distance of the close to SMA50 (10% or more = 10); regime from volatility and the SMA gap."""
    close, sma_20, sma_50 = row["close"], row["sma_20"], row["sma_50"]
    trend, votes, _ = trend_votes(row)
    gap = abs(close / sma_50 - 1) if sma_50 else 0.0
    strength = max(1, min(10, 1 + round(9 * min(1.0, gap / 0.10))))
    volatility = row.get("realised_vol_20d")
    sma_gap = abs(sma_20 / sma_50 - 1) if sma_20 and sma_50 else 0.0
    if volatility is not None and not math.isnan(volatility) and volatility > VOLATILE_ABOVE:
        regime = "volatile"
    elif trend != "sideways" and sma_gap > TRENDING_SMA_GAP:
        regime = "trending"
    else:
        regime = "ranging"
    # Two observations within the schema's 48 characters each, as the model must give.
    rsi = row.get("rsi_14")
    rsi_text = f", RSI14 {rsi:.0f}" if rsi is not None and not math.isnan(rsi) else ""
    volatility_text = "n/a" if volatility is None or math.isnan(volatility) else f"{volatility:.1%}"
    observations = [
        f"Close {_pct(close / sma_50 - 1 if sma_50 else None)} vs SMA50{rsi_text}",
        f"20d ret {_pct(row.get('return_20d'))}, vol {volatility_text}, "
        f"5d fcst {_pct(row.get('expected_log_return_5d'))}",
    ]
    summary = (f"Rule-based fallback: {trend} ({votes:+d} of 3 trend votes), strength {strength}/10, "
               f"{regime} regime.")
    return MarketAnalysis(trend=trend, strength=strength, regime=regime,
                          key_observations=observations, summary=summary)


def risk_flags(row: Mapping[str, object]) -> list[tuple[str, str]]:
    """The metrics past their alert thresholds, in order of the risk score's weights, as
    (metric, concern): volatility, drawdown, var, beta, stop."""
    flags = []
    volatility = row.get("volatility_20d")
    if isinstance(volatility, float) and volatility > risk.ALERT_VOLATILITY:
        flags.append(("volatility", f"20-day volatility {volatility:.1%} annualised is elevated"))
    drawdown = row.get("max_drawdown_252d")
    if isinstance(drawdown, float) and drawdown < risk.ALERT_DRAWDOWN:
        flags.append(("drawdown", f"max drawdown over 252 sessions {drawdown:.1%}"))
    var = row.get("var_95_hist")
    if isinstance(var, float) and var > risk.ALERT_VAR:
        flags.append(("var", f"daily historical VaR95 {var:.2%}"))
    beta = row.get("beta")
    if isinstance(beta, float) and abs(beta) > risk.ALERT_ABS_BETA:
        flags.append(("beta", f"beta {beta:.2f} amplifies the benchmark's moves"))
    if row.get("action") in ("BUY", "SELL") and isinstance(row.get("stop_distance"), float) \
            and isinstance(var, float) and row["stop_distance"] < risk.ALERT_STOP_VAR_DAYS * var:
        flags.append(("stop", f"stop {row['stop_distance']:.2%} is under two days of VaR95"))
    return flags


def risk_fallback(row: Mapping[str, object]) -> RiskNarrative:
    """Concerns are the metrics past fixed thresholds, in order of the risk score's weights (the
    first two)."""
    concerns = [concern for _, concern in risk_flags(row)]
    if not concerns:
        concerns.append("no metric past its alert threshold")
    score = row.get("risk_score")
    summary = (f"Rule-based fallback: risk level {row.get('risk_level')} "
               f"(score {'n/a' if score is None else f'{score:.2f}'}), {len(concerns)} concern(s)"
               + (", the first two listed." if len(concerns) > 2 else "."))
    # The schema allows two, as for the model; they are in order of the risk score's weights, and
    # every metric stays in risk_observations.
    return RiskNarrative(concerns=concerns[:2], summary=summary)
