"""Prompt templates: versioned text files under prompts/, rendered from validated values only.

A template's version is its file name (`analysis_v2`) and its hash covers the system prompt and
the template, so a stored row says exactly which wording produced it; editing a file changes the
hash (and with it the cache key). Only three kinds of value are interpolated: a validated ticker,
a date, and numbers we format ourselves, plus a closed set of enum words. Free text (an earlier
reply, a news headline) never reaches a prompt, so nothing can inject instructions.

Latency on local models is dominated by tokens, so each stage has a token budget, measured with a
real tokenizer on worst-case values, and a character budget that render() enforces.

An anonymized prompt (PM_LLM_ANONYMIZE) hides what would let a model recall the row's outcome
from its training text: the ticker, the benchmark's name, the date and the price level. It is the
same template with other substitutions, so a named and an anonymized prompt differ only in what
anonymization hides (a change of wording reaches both, and the template hash stays the stage's);
the prompt hash covers the text, and `Prompt.anonymized` says which variant a row was asked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

from pm_domain.llm.cutoffs import KnowledgeCutoff
from pm_domain.settings import LLM_ANONYMIZE_POLICIES
from pm_domain.tickers import validate_ticker

SYSTEM_TEMPLATE = "system_v1"
TEMPLATES = {"analysis": "analysis_v2", "signal": "signal_v2", "risk": "risk_v2"}
# Prompt tokens (system + user, in the chat template) a stage may send: under a second of prefill
# at the 435-890 tokens/s measured on two cores. Numbers are most of a prompt and a tokenizer
# may spend a token per digit (Gemma does: 2.0-2.8 characters per token here), so this is checked
# with a real tokenizer on the worst-case values (tests/e2e/test_real_llm.py), not derived from characters.
BUDGET_TOKENS = {"analysis": 480, "signal": 380, "risk": 320}
# What render() checks without a tokenizer: characters of the rendered user prompt.
BUDGET_CHARS = {"analysis": 1000, "signal": 900, "risk": 700}
ENUM_WORDS = frozenset({
    "bullish", "bearish", "sideways", "trending", "ranging", "volatile", "BUY", "SELL", "HOLD",
    "garch_t", "ewma_0.94", "low", "medium", "high", "extreme", "unknown",
})

TICKER_VALUES = frozenset({"benchmark"})  # values that are tickers, validated as such

# What an anonymized prompt says instead of the ticker, a ticker value and the date. The templates
# name one date, the prompt's own session, so it is session 0 (earlier ones would be negative).
ANONYMOUS_TICKER = "asset A"
ANONYMOUS_TICKER_VALUE = "the market index"
ANONYMOUS_SESSION = "session 0"
# Values in the asset's price units, which an anonymized prompt rescales so that the close at the
# start of the 20-session window is PRICE_INDEX_BASE: a price level (AAPL near 171 in March 2018)
# names the asset and the year as surely as the ticker. MACD and its signal line are differences
# of price averages, so price units too. Returns, ratios, RSI, %B and volatilities are scale-free.
PRICE_VALUES = frozenset({"close", "sma_20", "sma_50", "macd", "macd_signal"})
PRICE_INDEX_BASE = 100.0


class PromptError(ValueError):
    """A value that may not be interpolated, a missing value, or a prompt over its budget."""


@dataclass(frozen=True)
class Prompt:
    stage: str
    version: str
    template_hash: str
    system: str
    user: str
    anonymized: bool = False  # no ticker, date or price level in the text (PM_LLM_ANONYMIZE)

    @property
    def prompt_hash(self) -> str:
        """sha256 of exactly what is sent (system and user text), the cache key's first part."""
        return hashlib.sha256(f"{self.system}\n\n{self.user}".encode()).hexdigest()


@cache
def _read(name: str) -> str:
    return resources.files("pm_domain.llm").joinpath("prompts", f"{name}.txt").read_text("utf-8").strip()


def template_hash(stage: str) -> str:
    return hashlib.sha256(f"{_read(SYSTEM_TEMPLATE)}\n\n{_read(TEMPLATES[stage])}".encode()).hexdigest()[:16]


def format_value(name: str, value: object) -> str:
    """The text of one interpolated value; anything but a number, date, ticker or enum word is refused."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        raise PromptError(f"{name}: booleans are not interpolated")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PromptError(f"{name}: {value} is not a finite number")
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and name in TICKER_VALUES:
        return validate_ticker(value)
    if isinstance(value, str) and value in ENUM_WORDS:
        return value
    raise PromptError(f"{name}: {value!r} is not a number, date or known enum word")


def should_anonymize(policy: str, cutoff: KnowledgeCutoff, session: dt.date) -> bool:
    """Whether the prompt about `session` for a model with `cutoff` is anonymized under `policy`
    (PM_LLM_ANONYMIZE): always; never; auto when the session is not after the cutoff, history the
    model may remember. An unknown cutoff is after nothing, so auto anonymizes every session."""
    if policy not in LLM_ANONYMIZE_POLICIES:
        raise ValueError(f"anonymize policy {policy!r}: use one of {', '.join(LLM_ANONYMIZE_POLICIES)}")
    return policy == "always" or (policy == "auto" and not cutoff.after(session))


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def window_start_close(close: float, return_20d: object) -> float:
    """The level an anonymized prompt indexes to 100: the close at the start of the 20-session
    window, close / (1 + return_20d); the session's own close where that return is unknown (a
    ticker's first 20 sessions), so the level is hidden all the same."""
    growth = _number(return_20d)
    return close / (1 + growth) if growth is not None and 1 + growth > 0 else close


def price_indexed(values: Mapping[str, object]) -> dict[str, object]:
    """`values` with every price-level value (PRICE_VALUES) rescaled so the close at the start of
    the 20-session window is 100. Needs `close` (positive) and `return_20d` (None where unknown)
    among the values when any price value is there; PromptError otherwise."""
    if not PRICE_VALUES & values.keys():
        return dict(values)
    close = _number(values.get("close"))
    if close is None or close <= 0:
        raise PromptError(f"close: {values.get('close')!r}; an anonymized prompt indexes prices to a positive close")
    if "return_20d" not in values:
        raise PromptError("return_20d: an anonymized prompt needs it to index prices (None where unknown)")
    scale = PRICE_INDEX_BASE / window_start_close(close, values["return_20d"])
    return {name: value * scale if name in PRICE_VALUES and _number(value) is not None else value
            for name, value in values.items()}


def render(stage: str, ticker: str, date: dt.date, values: dict[str, object], anonymized: bool = False) -> Prompt:
    """Render the stage's template; raises PromptError on a bad value, a gap or an overlong prompt.

    `anonymized`: the ticker becomes "asset A", a ticker value "the market index", the date
    "session 0", and price values are indexed (price_indexed); the inputs are validated alike."""
    version = TEMPLATES[stage]
    if anonymized:
        values = price_indexed(values)
    fields = {name: format_value(name, value) for name, value in values.items()}
    fields["ticker"] = validate_ticker(ticker)
    fields["date"] = format_value("date", date)
    if anonymized:
        fields |= {name: ANONYMOUS_TICKER_VALUE for name in TICKER_VALUES & fields.keys()}
        fields |= {"ticker": ANONYMOUS_TICKER, "date": ANONYMOUS_SESSION}
    try:
        user = Template(_read(version)).substitute(fields)
    except KeyError as exc:
        raise PromptError(f"{version}: no value for ${exc.args[0]}") from None
    if len(user) > BUDGET_CHARS[stage]:
        raise PromptError(f"{version}: {len(user)} characters, over the budget of {BUDGET_CHARS[stage]}")
    return Prompt(stage, version, template_hash(stage), _read(SYSTEM_TEMPLATE), user, anonymized)
