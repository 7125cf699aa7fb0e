"""Prompt templates: versioned text files under prompts/, rendered from validated values only.

A template's version is its file name (`analysis_v2`) and its hash covers the system prompt and
the template, so a stored row says exactly which wording produced it; editing a file changes the
hash (and with it the cache key). Only three kinds of value are interpolated: a validated ticker,
a date, and numbers we format ourselves, plus a closed set of enum words. Free text (an earlier
reply, a news headline) never reaches a prompt, so nothing can inject instructions.

Latency on local models is dominated by tokens, so each stage has a token budget, measured with a
real tokenizer on worst-case values, and a character budget that render() enforces.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template

from pm_domain.tickers import validate_ticker

SYSTEM_TEMPLATE = "system_v1"
TEMPLATES = {"analysis": "analysis_v2", "signal": "signal_v2", "risk": "risk_v2"}
# Prompt tokens (system + user, in the chat template) a stage may send: under a second of prefill
# at the 435-890 tokens/s measured on two cores. Numbers are most of a prompt and a tokenizer
# may spend a token per digit (Gemma does: 2.0-2.8 characters per token here), so this is checked
# with a real tokenizer on the worst-case values (tests/test_real_llm.py), not derived from characters.
BUDGET_TOKENS = {"analysis": 480, "signal": 380, "risk": 320}
# What render() checks without a tokenizer: characters of the rendered user prompt.
BUDGET_CHARS = {"analysis": 1000, "signal": 900, "risk": 700}
ENUM_WORDS = frozenset({
    "bullish", "bearish", "sideways", "trending", "ranging", "volatile", "BUY", "SELL", "HOLD",
    "garch_t", "ewma_0.94", "low", "medium", "high", "extreme", "unknown",
})

TICKER_VALUES = frozenset({"benchmark"})  # values that are tickers, validated as such


class PromptError(ValueError):
    """A value that may not be interpolated, a missing value, or a prompt over its budget."""


@dataclass(frozen=True)
class Prompt:
    stage: str
    version: str
    template_hash: str
    system: str
    user: str

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


def render(stage: str, ticker: str, date: dt.date, values: dict[str, object]) -> Prompt:
    """Render the stage's template; raises PromptError on a bad value, a gap or an overlong prompt."""
    version = TEMPLATES[stage]
    fields = {name: format_value(name, value) for name, value in values.items()}
    fields["ticker"] = validate_ticker(ticker)
    fields["date"] = format_value("date", date)
    try:
        user = Template(_read(version)).substitute(fields)
    except KeyError as exc:
        raise PromptError(f"{version}: no value for ${exc.args[0]}") from None
    if len(user) > BUDGET_CHARS[stage]:
        raise PromptError(f"{version}: {len(user)} characters, over the budget of {BUDGET_CHARS[stage]}")
    return Prompt(stage, version, template_hash(stage), _read(SYSTEM_TEMPLATE), user)
