"""Turn a model's reply text into a validated pydantic object, or say why it could not.

Structured output (`format=` with the schema) makes a plain JSON reply the norm, but models still
wrap JSON in code fences or prose, or stop mid-object when the token cap is hit. The parser tries,
in order: the whole text as JSON, the first fenced ```json block, the first balanced {...} object;
the first candidate that validates wins. Control characters inside strings (a raw newline in a
summary) are accepted, as Python's non-strict JSON reader does: some engines' grammars let them
through, and they change no value. Nothing else is repaired or guessed: a reply that none of
these turn into a valid object is refused, and the caller writes the labelled fallback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class ParsedReply(Generic[Model]):
    value: Model | None
    method: str | None  # "json", "fenced", "balanced", or None when refused
    error: str | None


def first_balanced_object(text: str) -> str | None:
    """The first `{...}` whose braces balance, ignoring braces inside JSON strings."""
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped = 0, False, False
        for index in range(start, len(text)):
            char = text[index]
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return text[start:index + 1]
        start = text.find("{", start + 1)  # unbalanced from here: try a later opening brace
    return None


def _candidates(text: str) -> list[tuple[str, str]]:
    candidates = [("json", text.strip())]
    fenced = _FENCE.search(text)
    if fenced:
        candidates.append(("fenced", fenced.group(1).strip()))
    balanced = first_balanced_object(text)
    if balanced is not None:
        candidates.append(("balanced", balanced))
    return candidates


def parse_reply(text: str, schema: type[Model]) -> ParsedReply[Model]:
    """Validate `text` against `schema` by the first method that yields a valid object."""
    errors = []
    for method, candidate in _candidates(text or ""):
        try:
            data = json.loads(candidate, strict=False)
        except json.JSONDecodeError as exc:
            errors.append(f"{method}: not JSON ({exc.msg} at {exc.pos})")
            continue
        try:
            return ParsedReply(schema.model_validate(data), method, None)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "reply"
            errors.append(f"{method}: {where}: {first['msg']}")
    if not text or not text.strip():
        errors = ["empty reply"]
    return ParsedReply(None, None, "; ".join(errors)[:500])
