"""The JSON each LLM task must answer with, as pydantic models.

Their JSON schema is sent to Ollama as `format=` (structured output) and every reply is validated
against the same model, so a row never holds a field the schema does not allow.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Observation = Field(min_length=3, max_length=200)


class MarketAnalysis(BaseModel):
    """llm_analysis: the model's reading of one ticker on one date."""

    model_config = ConfigDict(extra="forbid")

    trend: Literal["bullish", "bearish", "sideways"]
    strength: int = Field(ge=1, le=10, description="1 = barely, 10 = very strong")
    regime: Literal["trending", "ranging", "volatile"]
    key_observations: list[str] = Field(min_length=1, max_length=5)
    summary: str = Field(min_length=10, max_length=600)


class SignalOpinion(BaseModel):
    """llm_signals: the model's own call, used to confirm or veto the forecast's signal."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["BUY", "SELL", "HOLD"]
    confidence: float = Field(ge=0.0, le=1.0)
    reasoning: str = Field(min_length=10, max_length=800)


class RiskNarrative(BaseModel):
    """risk_assessments: the model's concerns about holding the ticker now."""

    model_config = ConfigDict(extra="forbid")

    concerns: list[str] = Field(min_length=1, max_length=5)
    summary: str = Field(min_length=10, max_length=600)


SCHEMAS: dict[str, type[BaseModel]] = {
    "analysis": MarketAnalysis,
    "signal": SignalOpinion,
    "risk": RiskNarrative,
}
