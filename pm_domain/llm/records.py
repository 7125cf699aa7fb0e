"""LLM calls as rows: the per-row telemetry columns, the `llm_calls` table and the cache table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

import polars as pl
from pydantic import BaseModel

from pm_domain.llm.client import CachedReply, LLMCall, LLMClient
from pm_domain.llm.prompts import Prompt

TELEMETRY_SCHEMA = {
    "llm_source": pl.String, "llm_outcome": pl.String, "llm_error": pl.String,
    "llm_model": pl.String, "prompt_version": pl.String, "prompt_template_hash": pl.String,
    "prompt_hash": pl.String, "prompt_chars": pl.Int64, "latency_ms": pl.Float64,
    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "tokens_per_second": pl.Float64,
}
CACHE_SCHEMA = {
    "cache_key": pl.String, "model": pl.String, "model_digest": pl.String, "prompt_hash": pl.String,
    "content": pl.String, "total_duration_ns": pl.Int64, "prompt_eval_count": pl.Int64,
    "eval_count": pl.Int64, "eval_duration_ns": pl.Int64, "created_at": pl.Datetime("us"),
}


def answer_all(
    client: LLMClient,
    stage: str,
    requests: Sequence[tuple[str, dt.date, Prompt]],
    schema: type[BaseModel],
    read_cache: Callable[[list[str]], Mapping[str, CachedReply]],
    progress: Callable[[str], None] | None = None,
) -> list[LLMCall]:
    """Ask for every (ticker, date, prompt), one call at a time, serving what the cache holds."""
    cache: Mapping[str, CachedReply] = {}
    if client.availability().reachable:
        keys = [client.cache_key_for(stage, prompt, schema) for _, _, prompt in requests]
        cache = read_cache([key for key in keys if key is not None])  # one read for the run
    calls: list[LLMCall] = []
    fresh = 0
    for done, (ticker, day, prompt) in enumerate(requests, start=1):
        calls.append(client.ask(stage, ticker, day, prompt, schema, cache))
        # Fresh calls are the slow part (seconds each on a local model): report every tenth.
        if calls[-1].wall_ms is not None:
            fresh += 1
            if progress and fresh % 10 == 0:
                progress(f"{stage}: {done}/{len(requests)} rows, {fresh} Ollama calls so far, "
                         f"last {calls[-1].wall_ms / 1e3:.1f} s")
    return calls


def telemetry_columns(calls: Sequence[LLMCall]) -> pl.DataFrame:
    """ticker, date and the telemetry columns every LLM table carries, one row per call."""
    return pl.DataFrame([{
        "ticker": c.ticker, "date": c.date, "llm_source": c.source, "llm_outcome": c.outcome,
        "llm_error": c.error, "llm_model": c.model, "prompt_version": c.prompt.version,
        "prompt_template_hash": c.prompt.template_hash, "prompt_hash": c.prompt.prompt_hash,
        "prompt_chars": len(c.prompt.system) + len(c.prompt.user), "latency_ms": c.latency_ms,
        "prompt_tokens": c.prompt_eval_count, "completion_tokens": c.eval_count,
        "tokens_per_second": c.tokens_per_second,
    } for c in calls], schema={"ticker": pl.String, "date": pl.Date, **TELEMETRY_SCHEMA})


def calls_frame(calls: Sequence[LLMCall], called_at: dt.datetime) -> pl.DataFrame:
    """The `llm_calls` rows: one per (ticker, date, stage), replaced when the stage re-runs."""
    extra = pl.DataFrame([{
        "stage": c.stage, "model_digest": c.model_digest, "parse_method": c.parse_method,
        "attempts": c.attempts, "wall_ms": c.wall_ms,
        "eval_duration_ms": None if c.eval_duration_ns is None else c.eval_duration_ns / 1e6,
    } for c in calls], schema={"stage": pl.String, "model_digest": pl.String, "parse_method": pl.String,
                               "attempts": pl.Int64, "wall_ms": pl.Float64, "eval_duration_ms": pl.Float64})
    frame = pl.concat([telemetry_columns(calls), extra], how="horizontal")
    return frame.with_columns(pl.lit(called_at, pl.Datetime("us")).alias("called_at"))


def cache_frame(calls: Sequence[LLMCall]) -> pl.DataFrame:
    """New cache entries from this run's fresh, validated replies."""
    entries = {c.new_cache_entry.cache_key: c.new_cache_entry for c in calls if c.new_cache_entry}
    return pl.DataFrame([vars(e) for e in entries.values()], schema=CACHE_SCHEMA)


def cached_replies(frame: pl.DataFrame) -> dict[str, CachedReply]:
    if not frame.height:
        return {}
    return {row["cache_key"]: CachedReply(**row) for row in frame.select(list(CACHE_SCHEMA)).iter_rows(named=True)}


def source_counts(calls: Sequence[LLMCall]) -> dict[str, int]:
    counts = {"ollama": 0, "cache": 0, "fallback": 0}
    for call in calls:
        counts[call.source] += 1
    return counts


def invalid_replies(calls: Sequence[LLMCall]) -> list[LLMCall]:
    """Calls where Ollama was used but gave no valid reply (not: fallback by mode or outage)."""
    return [c for c in calls if c.outcome in ("invalid_reply", "timeout", "http_error")]
