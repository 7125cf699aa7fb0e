"""The JSON each LLM task must answer with, as pydantic models, and the longest reply each allows.

Their JSON schema is sent to Ollama as `format=` (structured output): Ollama turns it into a
decoding grammar, so the model cannot write a field, a string or a list the schema does not
allow. Every reply is validated against the same model, so a row never holds one either.

Every string and list is bounded, and the bounds are ones the grammar enforces: `maxLength`
inside a `pattern` of plain characters, `maxItems`, integers with `minimum`/`maximum`
(confidence is a whole percent, converted to a fraction on the way in, because a grammar cannot
bound a float's digits). So each schema has a worst-case reply, and `max_reply_tokens` turns it
into the stage's `num_predict`: a reply can end early, but the token cap can never cut one off.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# What a reply's free text may contain: letters, digits, space and the punctuation numbers and
# prose need. No quote or backslash (so no JSON escape doubles a character), no control
# character (no raw newline), nothing outside ASCII (no character costs several byte tokens).
# Every token of such text is at least one character long, which is what makes the worst case
# in characters a bound on tokens.
TEXT_CHARACTERS = r"[A-Za-z0-9 .,;:%()+/<>=!?'&*#$~^_@|-]"


def text(min_chars: int, max_chars: int):
    """A bounded string of TEXT_CHARACTERS, as the grammar enforces it (the pattern carries the
    length, because llama.cpp's converter reads a pattern and ignores minLength/maxLength)."""
    return Annotated[str, Field(min_length=min_chars, max_length=max_chars,
                                pattern=f"^{TEXT_CHARACTERS}{{{min_chars},{max_chars}}}$")]


# Sized after a real model's replies (docs/llm.md): the hard bound, a token per character as a
# run of digits costs in Gemma, is each stage's num_predict.
Observation = text(3, 48)
Summary = text(10, 100)


class MarketAnalysis(BaseModel):
    """llm_analysis: the model's reading of one ticker on one date."""

    model_config = ConfigDict(extra="forbid")

    trend: Literal["bullish", "bearish", "sideways"]
    strength: int = Field(ge=1, le=10, description="1 = barely, 10 = very strong")
    regime: Literal["trending", "ranging", "volatile"]
    key_observations: list[Observation] = Field(min_length=1, max_length=2)
    summary: Summary


class SignalOpinion(BaseModel):
    """llm_signals: the model's own call, used to confirm or veto the forecast's signal."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["BUY", "SELL", "HOLD"]
    confidence: int = Field(ge=0, le=100, description="whole percent that the action is right")
    reasoning: Summary

    @property
    def confidence_fraction(self) -> float:
        """The confidence as stored and used by the rules: 0..1."""
        return self.confidence / 100


class RiskNarrative(BaseModel):
    """risk_assessments: the model's concerns about holding the ticker now."""

    model_config = ConfigDict(extra="forbid")

    concerns: list[Observation] = Field(min_length=1, max_length=2)
    summary: Summary


SCHEMAS: dict[str, type[BaseModel]] = {
    "analysis": MarketAnalysis,
    "signal": SignalOpinion,
    "risk": RiskNarrative,
}

# Ollama's grammar (llama.cpp's json-schema-to-grammar) lets the model put whitespace after every
# brace, bracket, colon and comma: " " or up to two newlines and 20 spaces or tabs. A run of
# whitespace is one or two tokens in the tokenizers of the models this project runs, so each such
# place is budgeted two tokens.
WHITESPACE_TOKENS_PER_SLOT = 2


def max_reply_chars(schema: type[BaseModel]) -> int:
    """Characters of the longest compact JSON reply the schema allows (no whitespace)."""
    return _longest(schema.model_json_schema(), schema.model_json_schema().get("$defs", {}))[0]


def max_reply_tokens(schema: type[BaseModel]) -> int:
    """The stage's num_predict: the longest reply at one token per character, plus whitespace.

    Every token of a reply is at least one character (the grammar admits only ASCII), so no
    reply the grammar allows needs more, and the cap never cuts one off."""
    chars, slots = _longest(schema.model_json_schema(), schema.model_json_schema().get("$defs", {}))
    return chars + WHITESPACE_TOKENS_PER_SLOT * slots


def _longest(node: dict, defs: dict) -> tuple[int, int]:
    """(characters, whitespace slots) of the longest value the JSON-schema node allows."""
    if "$ref" in node:
        return _longest(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        return max(len(json.dumps(v)) for v in values), 0
    kind = node.get("type")
    if kind == "object":
        properties = node["properties"]
        chars = 2 + (len(properties) - 1)  # braces and commas
        slots = 1 + len(properties)  # after "{" and after each comma, and before nothing else
        for name, child in properties.items():
            child_chars, child_slots = _longest(child, defs)
            chars += len(json.dumps(name)) + 1 + child_chars
            slots += 2 + child_slots  # after the key and after the colon
        return chars, slots + 1  # after "}"
    if kind == "array":
        if "maxItems" not in node:
            raise ValueError(f"unbounded list in schema: {node}")
        item_chars, item_slots = _longest(node["items"], defs)
        items = node["maxItems"]
        return 2 + items * item_chars + (items - 1), 1 + items * (item_slots + 1)
    if kind == "string":
        if "maxLength" not in node:
            raise ValueError(f"unbounded string in schema: {node}")
        return 2 + node["maxLength"], 0
    if kind == "integer":
        if "minimum" not in node or "maximum" not in node:
            raise ValueError(f"unbounded integer in schema: {node}")
        return max(len(str(node["minimum"])), len(str(node["maximum"]))), 0
    raise ValueError(f"schema node without a worst case: {node}")
