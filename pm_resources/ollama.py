"""Ollama as a Dagster resource: configuration only; the client itself is pm_domain.llm.client."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from dagster import ConfigurableResource
from pydantic import Field

from pm_domain import settings as pm_settings
from pm_domain.llm.client import LLMClient, OllamaSettings
from pm_domain.llm.cutoffs import parse_cutoffs

DEFAULT_HOST = pm_settings.DEFAULT_OLLAMA_HOST
# The models the previous system ran, one per task; any model `ollama list` shows works.
DEFAULT_MODELS = pm_settings.DEFAULT_LLM_MODELS


ROUTE_HELP = ("a model name, or several separated by commas in order of preference: the next "
              "answers when one is missing or slower than max_latency_seconds")


class OllamaResource(ConfigurableResource):
    """A local Ollama server, one model per task, and what to do when it cannot answer."""

    host: str = Field(default=DEFAULT_HOST, description=(
        "Ollama base URL, or several separated by commas (env OLLAMA_HOST)"))
    parallel_per_host: int = Field(default=1, ge=1, le=32, description=(
        "requests in flight at once on each server (env PM_LLM_PARALLEL_PER_HOST): its OLLAMA_NUM_PARALLEL"))
    mode: Literal["auto", "ollama", "fallback"] = Field(default="auto", description=(
        "auto: Ollama when reachable, else labelled rule-based fallback rows; ollama: fail the run "
        "when Ollama or a model is missing; fallback: never call Ollama (rows say so)"))
    analysis_model: str = Field(default=DEFAULT_MODELS["analysis"], description=ROUTE_HELP)
    signal_model: str = Field(default=DEFAULT_MODELS["signal"], description=ROUTE_HELP)
    risk_model: str = Field(default=DEFAULT_MODELS["risk"], description=ROUTE_HELP)
    timeout_seconds: float = Field(default=120.0, gt=0, description="per request; local 13-14B models took 15-38 s")
    retries: int = Field(default=2, ge=0, le=10, description="further attempts on connection errors and HTTP 5xx only")
    backoff_seconds: float = Field(default=1.0, ge=0, description="wait before the first retry, doubled each time")
    keep_alive: str = Field(default="10m", description="how long Ollama keeps the model loaded")
    seed: int = Field(default=42)
    max_latency_seconds: float = Field(default=5.0, gt=0, description=(
        "a model whose replies in a run take longer than this (median of 3 or more, Ollama's "
        "total_duration) is passed over for the next of its task; llm_health alerts when the "
        "probe's latency exceeds it"))
    retry_invalid: bool = Field(default=False, description=(
        "ask again for prompts whose cached reply did not validate (replies are deterministic, "
        "so by default an unchanged re-run reuses them and makes no call)"))
    health_min_tokens_per_second: float = Field(default=5.0, ge=0, description=(
        "llm_health alerts when the probe generates fewer tokens per second than this"))
    knowledge_cutoffs: str = Field(default="", description=(
        "model=YYYY-MM-DD pairs, comma-separated (env PM_LLM_KNOWLEDGE_CUTOFFS): each model's training "
        "cutoff, by full name or name without the tag; documented defaults cover gemma3 and llama3.x, "
        "and a model with none is treated as having seen every session"))
    anonymize: Literal["auto", "always", "never"] = Field(default="auto", description=(
        "env PM_LLM_ANONYMIZE. auto: prompts about sessions not after the knowledge cutoff of the "
        "task's first model (history it may remember) say 'asset A', 'session 0' and prices indexed "
        "to 100, later sessions stay named; always; never"))

    def settings(self) -> OllamaSettings:
        return OllamaSettings(
            host=self.host, mode=self.mode,
            models={"analysis": _route(self.analysis_model), "signal": _route(self.signal_model),
                    "risk": _route(self.risk_model)},
            timeout_seconds=self.timeout_seconds, retries=self.retries,
            backoff_seconds=self.backoff_seconds, keep_alive=self.keep_alive, seed=self.seed,
            max_latency_seconds=self.max_latency_seconds, retry_invalid=self.retry_invalid,
            knowledge_cutoffs=parse_cutoffs(self.knowledge_cutoffs), anonymize=self.anonymize,
            parallel_per_host=self.parallel_per_host,
        )

    def client(self, slow_models: Iterable[str] = ()) -> LLMClient:
        """A fresh client for one run: it probes the server once and then serves every call.
        `slow_models` start the run passed over (the health probe found them slow)."""
        return LLMClient(self.settings(), slow_models=slow_models)

    def models(self) -> list[str]:
        """Every configured model, each once, in task order."""
        names = [m for field in (self.analysis_model, self.signal_model, self.risk_model) for m in _route(field)]
        return list(dict.fromkeys(names))

    def probe_model(self) -> str:
        """The model the health probe times: the signal task's first choice."""
        return _route(self.signal_model)[0]

    def fallback_notice(self, stage: str, error: str | None, consequence: str) -> FallbackNotice:
        """What a stage says when it writes fallback rows instead of asking Ollama. PM_LLM_MODE=fallback
        is a choice, told at INFO (no hint to set what is already set); under `auto` an unreachable
        server is a WARNING with the hint. `consequence` says what the stage writes instead."""
        if self.mode == "fallback":
            return FallbackNotice(False, f"{stage}: PM_LLM_MODE=fallback was chosen, Ollama is not called; {consequence}")
        return FallbackNotice(True, f"{stage}: {error}; {consequence} (mode={self.mode}; "
                                    "PM_LLM_MODE=fallback skips the attempt)")


@dataclass(frozen=True)
class FallbackNotice:
    """One log line: a WARNING (once a run, pm_assets.llm_stage.warn_unreachable_once) when `warn`, else INFO."""

    warn: bool
    message: str


def _route(names: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in names.split(",") if name.strip())


def ollama_from(config: pm_settings.Settings) -> OllamaResource:
    """The resource as the settings configure it: OLLAMA_HOST, PM_LLM_MODE, PM_LLM_*."""
    return OllamaResource(
        host=config.ollama_host, mode=config.llm_mode,
        analysis_model=config.llm_analysis_model, signal_model=config.llm_signal_model,
        risk_model=config.llm_risk_model, max_latency_seconds=config.llm_max_latency_seconds,
        retry_invalid=config.llm_retry_invalid, health_min_tokens_per_second=config.llm_min_tokens_per_second,
        knowledge_cutoffs=config.llm_knowledge_cutoffs, anonymize=config.llm_anonymize,
        parallel_per_host=config.llm_parallel_per_host,
    )


def ollama_from_env() -> OllamaResource:
    """The resource as this process's environment configures it."""
    return ollama_from(pm_settings.current())
