"""What a model could have known: its training-data cutoff, and whether a session falls after it.

A reply about session d is `after_cutoff` when d is later than the cutoff of the model that
answered: the sessions it forecasts were not in its training text. Anything else counts as
contaminated, and so does a model whose cutoff nobody has stated (unknown means contaminated
until the user says otherwise).

Where a cutoff comes from, in order:
1. the user's setting (`PM_LLM_KNOWLEDGE_CUTOFFS`, `model=YYYY-MM-DD` pairs), by exact model name
   or by its name without the tag (`gemma3` covers `gemma3:270m`);
2. DOCUMENTED_CUTOFFS, for Ollama library names whose vendor states a cutoff in the model card
   (a month is taken at its last day, the later reading);
3. none: unknown.

Ollama's `show` was read for a date and has none to give: a GGUF file's `general.*` metadata
(name, basename, size label, license, architecture) carries no training date. Its `family`
(`gemma3`) is not used to borrow a cutoff either: a fine-tune of a family may have read later
text than the family's card says.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class DocumentedCutoff:
    cutoff: dt.date
    source: str


DOCUMENTED_CUTOFFS: dict[str, DocumentedCutoff] = {
    "gemma3": DocumentedCutoff(dt.date(2024, 8, 31), "Gemma 3 model card (Training Dataset): knowledge cutoff August 2024"),
    "llama3.1": DocumentedCutoff(dt.date(2023, 12, 31), "Llama 3.1 model card: pretraining data cutoff December 2023"),
    "llama3.2": DocumentedCutoff(dt.date(2023, 12, 31), "Llama 3.2 model card: pretraining data cutoff December 2023"),
    # The card gives March 2023 for 8B and December 2023 for 70B; one tag covers both sizes.
    "llama3": DocumentedCutoff(dt.date(2023, 12, 31), "Llama 3 model card: data cutoff March 2023 (8B), December 2023 (70B)"),
}


@dataclass(frozen=True)
class KnowledgeCutoff:
    model: str
    cutoff: dt.date | None  # None: unknown, every session contaminated
    source: str

    def after(self, session: dt.date) -> bool:
        """The session falls after what the model could have read."""
        return self.cutoff is not None and session > self.cutoff

    def describe(self) -> str:
        if self.cutoff is None:
            return f"{self.model}: cutoff unknown ({self.source})"
        return f"{self.model}: cutoff {self.cutoff.isoformat()} ({self.source})"


UNKNOWN_SOURCE = "not documented: set PM_LLM_KNOWLEDGE_CUTOFFS"


def knowledge_cutoff(model: str, configured: Mapping[str, dt.date] | None = None) -> KnowledgeCutoff:
    """The cutoff of `model`: configured (exact name, then the name without its tag), documented,
    or unknown."""
    configured = configured or {}
    family = model.split(":", 1)[0]
    for name in (model, family):
        if name in configured:
            return KnowledgeCutoff(model, configured[name], f"PM_LLM_KNOWLEDGE_CUTOFFS {name}")
    if family in DOCUMENTED_CUTOFFS:
        documented = DOCUMENTED_CUTOFFS[family]
        return KnowledgeCutoff(model, documented.cutoff, documented.source)
    return KnowledgeCutoff(model, None, UNKNOWN_SOURCE)


def parse_cutoffs(text: str, name: str = "PM_LLM_KNOWLEDGE_CUTOFFS") -> dict[str, dt.date]:
    """`model=YYYY-MM-DD` pairs separated by commas; ValueError naming the setting and the pair."""
    cutoffs: dict[str, dt.date] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        model, _, date = pair.partition("=")
        try:
            if not model.strip():
                raise ValueError
            cutoffs[model.strip()] = dt.date.fromisoformat(date.strip())
        except ValueError:
            raise ValueError(f"{name}: {pair!r} is not model=YYYY-MM-DD") from None
    return cutoffs
