"""Schema-valid is not sensible: does a reply agree with the numbers it was given?

- llm_analysis: the model's trend against the indicators' own trend votes (the rule the fallback
  uses: close vs SMA50, SMA20 vs SMA50, MACD histogram). `contradicts` when one says bullish and
  the other bearish; `differs` when one of them says sideways; `agrees` when they match.
- risk_assessments: the model's concerns and summary against the metrics past their alert
  thresholds (volatility, drawdown, VaR, beta, a stop inside two days of VaR): `misses` when a
  metric past its threshold is not mentioned, `covers` when every one is, `nothing_past` when
  none is past.

Rows the model did not write (fallback, skipped) are `not_llm`: there is nothing to judge. Every
verdict comes with its reason, stored on the row, so a reply that contradicts the numbers is
flagged where it is used, never silently taken as analysis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from pm_domain.llm.fallback import risk_flags, trend_votes

CONTENT_SCHEMA = {"ticker": pl.String, "date": pl.Date, "content_check": pl.String, "content_reason": pl.String}
# How a concern names each metric: a word stem, case-insensitive.
METRIC_WORDS = {
    "volatility": r"volatil|\bvol\b|sigma|standard deviation",
    "drawdown": r"drawdown|draw-down|\bdd\b|peak",
    "var": r"\bvar\b|\bvar95|value at risk|cvar",
    "beta": r"\bbeta\b",
    "stop": r"\bstop",
}
LLM_SOURCES = ("ollama", "cache")


def analysis_content(inputs: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """Per row of llm_analysis (`rows`: ticker, date, trend, llm_source), judged against the
    indicators of `inputs` (ticker, date, close, sma_20, sma_50, macd_hist)."""
    joined = rows.select("ticker", "date", "trend", "llm_source").join(inputs, on=["ticker", "date"])
    verdicts = []
    for row in joined.iter_rows(named=True):
        rule, votes, words = trend_votes(row)
        if row["llm_source"] not in LLM_SOURCES:
            verdict, reason = "not_llm", f"written by {row['llm_source']}, not the model"
        elif row["trend"] == rule:
            verdict, reason = "agrees", f"{row['trend']}, as the indicators vote ({votes:+d} of 3: {words})"
        elif "sideways" in (row["trend"], rule):
            verdict, reason = "differs", f"model says {row['trend']}, indicators vote {rule} ({votes:+d} of 3: {words})"
        else:
            verdict, reason = "contradicts", (f"model says {row['trend']}, indicators vote {rule} "
                                              f"({votes:+d} of 3: {words})")
        verdicts.append({"ticker": row["ticker"], "date": row["date"], "content_check": verdict, "content_reason": reason})
    return pl.DataFrame(verdicts, schema=CONTENT_SCHEMA)


def mentioned(metric: str, texts: Sequence[str]) -> bool:
    return any(re.search(METRIC_WORDS[metric], text, re.IGNORECASE) for text in texts)


def risk_content(rows: pl.DataFrame) -> pl.DataFrame:
    """Per row of risk_assessments (its metrics, concerns, narrative, llm_source)."""
    verdicts = []
    for row in rows.iter_rows(named=True):
        past = [metric for metric, _ in risk_flags(row)]
        texts = [*(row["concerns"] or []), row["narrative"] or ""]
        missing = [metric for metric in past if not mentioned(metric, texts)]
        if row["llm_source"] not in LLM_SOURCES:
            verdict, reason = "not_llm", f"written by {row['llm_source']}, not the model"
        elif not past:
            verdict, reason = "nothing_past", "no metric is past its alert threshold"
        elif missing:
            verdict, reason = "misses", (f"past their thresholds but not mentioned: {', '.join(missing)} "
                                         f"(past: {', '.join(past)})")
        else:
            verdict, reason = "covers", f"mentions every metric past its threshold: {', '.join(past)}"
        verdicts.append({"ticker": row["ticker"], "date": row["date"], "content_check": verdict, "content_reason": reason})
    return pl.DataFrame(verdicts, schema=CONTENT_SCHEMA)


def agreement_rate(content: pl.DataFrame, good: str) -> float | None:
    """Share of the model's rows whose verdict is `good` (agrees / covers); None without any."""
    judged = content.filter(~pl.col("content_check").is_in(["not_llm", "nothing_past"]))
    return None if judged.is_empty() else float((judged["content_check"] == good).mean())
