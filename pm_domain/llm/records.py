"""LLM calls as rows: the per-row telemetry columns, the `llm_calls` table and the cache table."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
from pydantic import BaseModel

from pm_domain.llm.client import CachedReply, LLMCall, LLMClient
from pm_domain.llm.prompts import Prompt

TELEMETRY_SCHEMA = {
    "llm_source": pl.String, "llm_outcome": pl.String, "llm_error": pl.String,
    "llm_model": pl.String, "prompt_version": pl.String, "prompt_template_hash": pl.String,
    "prompt_hash": pl.String, "prompt_anonymized": pl.Boolean, "prompt_chars": pl.Int64, "latency_ms": pl.Float64,
    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "tokens_per_second": pl.Float64,
    "knowledge_cutoff": pl.Date, "after_cutoff": pl.Boolean,
}
# Every reply the server gave, valid or not (`valid`), with the counters of the call behind it.
CACHE_SCHEMA = {
    "cache_key": pl.String, "model": pl.String, "model_digest": pl.String, "prompt_hash": pl.String,
    "content": pl.String, "total_duration_ns": pl.Int64, "prompt_eval_count": pl.Int64,
    "eval_count": pl.Int64, "eval_duration_ns": pl.Int64, "created_at": pl.Datetime("us"),
    "valid": pl.Boolean, "done_reason": pl.String, "prompt_eval_duration_ns": pl.Int64,
    "load_duration_ns": pl.Int64,
}


@dataclass(frozen=True)
class Request:
    """One row to answer; `skip` says why the LLM is not asked for it (None: ask)."""

    ticker: str
    date: dt.date
    prompt: Prompt
    skip: str | None = None


def answer_all(
    client: LLMClient,
    stage: str,
    requests: Sequence[Request],
    schema: type[BaseModel],
    read_cache: Callable[[list[str]], Mapping[str, CachedReply]],
    progress: Callable[[str], None] | None = None,
) -> list[LLMCall]:
    """Answer every request, serving what the cache holds, with up to `client.concurrency()`
    requests in flight; the calls come back in the requests' order, whatever order they finish in."""
    cache: Mapping[str, CachedReply] = {}
    asked = [r for r in requests if r.skip is None]
    if asked and client.availability().reachable:
        keys = [key for r in asked for key in client.cache_keys_for(stage, r.prompt, schema)]
        cache = read_cache(keys)  # one read for the run
    tally = _Progress(stage, len(asked), progress)

    def answer(request: Request) -> LLMCall:
        if request.skip is not None:
            return client.skip(stage, request.ticker, request.date, request.prompt, request.skip)
        return tally.seen(client.ask(stage, request.ticker, request.date, request.prompt, schema, cache))

    workers = min(client.concurrency(), len(asked))
    if workers <= 1:
        return [answer(r) for r in requests]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"llm-{stage}") as pool:
        futures = [pool.submit(answer, r) for r in requests]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for future in futures:  # mode=ollama lost its last server: ask nothing more
                future.cancel()
            raise


class _Progress:
    """Counts the fresh calls (the slow part, seconds each on a local model) and reports every tenth."""

    def __init__(self, stage: str, total: int, report: Callable[[str], None] | None) -> None:
        self.stage, self.total, self.report = stage, total, report
        self.done = self.fresh = 0
        self._lock = threading.Lock()

    def seen(self, call: LLMCall) -> LLMCall:
        with self._lock:
            self.done += 1
            if call.fresh:
                self.fresh += 1
                if self.report and self.fresh % 10 == 0:
                    self.report(f"{self.stage}: {self.done}/{self.total} rows to ask answered, {self.fresh} "
                                f"Ollama calls so far, last {call.wall_ms / 1e3:.1f} s")
        return call


def telemetry_columns(calls: Sequence[LLMCall]) -> pl.DataFrame:
    """ticker, date and the telemetry columns every LLM table carries, one row per call."""
    return pl.DataFrame([{
        "ticker": c.ticker, "date": c.date, "llm_source": c.source, "llm_outcome": c.outcome,
        "llm_error": c.error, "llm_model": c.model, "prompt_version": c.prompt.version,
        "prompt_template_hash": c.prompt.template_hash, "prompt_hash": c.prompt.prompt_hash,
        "prompt_anonymized": c.prompt.anonymized,
        "prompt_chars": len(c.prompt.system) + len(c.prompt.user), "latency_ms": c.latency_ms,
        "prompt_tokens": c.prompt_eval_count, "completion_tokens": c.eval_count,
        "tokens_per_second": c.tokens_per_second,
        "knowledge_cutoff": c.knowledge_cutoff, "after_cutoff": c.after_cutoff,
    } for c in calls], schema={"ticker": pl.String, "date": pl.Date, **TELEMETRY_SCHEMA})


CALLS_EXTRA_SCHEMA = {
    "stage": pl.String, "model_digest": pl.String, "parse_method": pl.String, "attempts": pl.Int64,
    "wall_ms": pl.Float64, "eval_duration_ms": pl.Float64, "prompt_eval_duration_ms": pl.Float64,
    "load_duration_ms": pl.Float64, "prompt_tokens_per_second": pl.Float64, "done_reason": pl.String,
    "num_predict": pl.Int64, "routed_from": pl.String, "host": pl.String,
}


def _ms(nanoseconds: int | None) -> float | None:
    return None if nanoseconds is None else nanoseconds / 1e6


def calls_frame(calls: Sequence[LLMCall], called_at: dt.datetime) -> pl.DataFrame:
    """The `llm_calls` rows: one per (ticker, date, stage), replaced when the stage re-runs."""
    extra = pl.DataFrame([{
        "stage": c.stage, "model_digest": c.model_digest, "parse_method": c.parse_method,
        "attempts": c.attempts, "wall_ms": c.wall_ms, "eval_duration_ms": _ms(c.eval_duration_ns),
        "prompt_eval_duration_ms": _ms(c.prompt_eval_duration_ns), "load_duration_ms": _ms(c.load_duration_ns),
        "prompt_tokens_per_second": (c.prompt_eval_count / (c.prompt_eval_duration_ns / 1e9)
                                     if c.prompt_eval_count and c.prompt_eval_duration_ns else None),
        "done_reason": c.done_reason, "num_predict": c.num_predict, "routed_from": c.routed_from,
        "host": c.host,
    } for c in calls], schema=CALLS_EXTRA_SCHEMA)
    frame = pl.concat([telemetry_columns(calls), extra], how="horizontal")
    return frame.with_columns(pl.lit(called_at, pl.Datetime("us")).alias("called_at"))


def cache_frame(calls: Sequence[LLMCall]) -> pl.DataFrame:
    """New cache entries: every reply this run received, valid or not."""
    entries = {c.new_cache_entry.cache_key: c.new_cache_entry for c in calls if c.new_cache_entry}
    return pl.DataFrame([vars(e) for e in entries.values()], schema=CACHE_SCHEMA)


def cached_replies(frame: pl.DataFrame) -> dict[str, CachedReply]:
    if not frame.height:
        return {}
    # A store written before a column existed lacks it; CachedReply's defaults stand in.
    columns = [c for c in CACHE_SCHEMA if c in frame.columns]
    return {row["cache_key"]: CachedReply(**row) for row in frame.select(columns).iter_rows(named=True)}


def source_counts(calls: Sequence[LLMCall]) -> dict[str, int]:
    counts = {"ollama": 0, "cache": 0, "fallback": 0, "skipped": 0}
    for call in calls:
        counts[call.source] += 1
    return counts


def invalid_replies(calls: Sequence[LLMCall]) -> list[LLMCall]:
    """Calls where Ollama was used but gave no valid reply (not: fallback by mode or outage)."""
    return [c for c in calls if c.outcome in ("invalid_reply", "timeout", "http_error")]
