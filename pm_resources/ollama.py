"""Ollama as a Dagster resource: configuration only; the client itself is pm_domain.llm.client."""

from __future__ import annotations

import os
from typing import Literal

from dagster import ConfigurableResource
from pydantic import Field

from pm_domain.llm.client import MODES, LLMClient, OllamaSettings
from pm_domain.settings import SettingsError

DEFAULT_HOST = "http://127.0.0.1:11434"
# The models the previous system ran, one per task; any model `ollama list` shows works.
DEFAULT_MODELS = {
    "analysis": "qwen:14b-chat-q4_K_M",
    "signal": "deepseek-coder:6.7b-instruct-q4_K_M",
    "risk": "codellama:13b-instruct-q4_K_M",
}


class OllamaResource(ConfigurableResource):
    """A local Ollama server, one model per task, and what to do when it cannot answer."""

    host: str = Field(default=DEFAULT_HOST, description="Ollama base URL (env OLLAMA_HOST)")
    mode: Literal["auto", "ollama", "fallback"] = Field(default="auto", description=(
        "auto: Ollama when reachable, else labelled rule-based fallback rows; ollama: fail the run "
        "when Ollama or a model is missing; fallback: never call Ollama (rows say so)"))
    analysis_model: str = Field(default=DEFAULT_MODELS["analysis"])
    signal_model: str = Field(default=DEFAULT_MODELS["signal"])
    risk_model: str = Field(default=DEFAULT_MODELS["risk"])
    timeout_seconds: float = Field(default=120.0, gt=0, description="per request; local 13-14B models took 15-38 s")
    retries: int = Field(default=2, ge=0, le=10, description="further attempts on connection errors and HTTP 5xx only")
    backoff_seconds: float = Field(default=1.0, ge=0, description="wait before the first retry, doubled each time")
    keep_alive: str = Field(default="10m", description="how long Ollama keeps the model loaded")
    seed: int = Field(default=42)
    max_tokens: int = Field(default=400, ge=32, le=4096, description="num_predict: cap on generated tokens")
    health_max_latency_seconds: float = Field(default=5.0, gt=0, description=(
        "llm_health alerts when the probe's latency (Ollama's total_duration) exceeds this"))
    health_min_tokens_per_second: float = Field(default=5.0, ge=0, description=(
        "llm_health alerts when the probe generates fewer tokens per second than this"))

    def settings(self) -> OllamaSettings:
        return OllamaSettings(
            host=self.host, mode=self.mode,
            models={"analysis": self.analysis_model, "signal": self.signal_model, "risk": self.risk_model},
            timeout_seconds=self.timeout_seconds, retries=self.retries,
            backoff_seconds=self.backoff_seconds, keep_alive=self.keep_alive, seed=self.seed,
            max_tokens=self.max_tokens,
        )

    def client(self) -> LLMClient:
        """A fresh client for one run: it probes the server once and then serves every call."""
        return LLMClient(self.settings())


def ollama_from_env() -> OllamaResource:
    """The resource as the environment configures it: OLLAMA_HOST, PM_LLM_MODE, PM_LLM_*_MODEL."""
    mode = os.environ.get("PM_LLM_MODE", "auto")
    if mode not in MODES:
        raise SettingsError(f"PM_LLM_MODE={mode!r}: use one of {', '.join(MODES)}")
    return OllamaResource(
        host=os.environ.get("OLLAMA_HOST", DEFAULT_HOST),
        mode=mode,
        analysis_model=os.environ.get("PM_LLM_ANALYSIS_MODEL", DEFAULT_MODELS["analysis"]),
        signal_model=os.environ.get("PM_LLM_SIGNAL_MODEL", DEFAULT_MODELS["signal"]),
        risk_model=os.environ.get("PM_LLM_RISK_MODEL", DEFAULT_MODELS["risk"]),
        health_max_latency_seconds=_positive_float("PM_LLM_MAX_LATENCY_SECONDS", 5.0),
        health_min_tokens_per_second=_positive_float("PM_LLM_MIN_TOKENS_PER_SECOND", 5.0),
    )


def _positive_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SettingsError(f"{name}={raw!r} must be a positive number")
    return value
