"""What the three LLM stages share: asking through the cache, writing rows with their calls,
reporting sources, latency and invalid replies in the UI, and the risk metrics of the run."""

import datetime as dt
import functools
import statistics
from collections.abc import Callable, Sequence

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, MetadataValue
from dagster_duckdb import DuckDBResource
from duckdb import DuckDBPyConnection
from pydantic import BaseModel

from pm_assets.dagster_compat import tag_run
from pm_assets.partitions import STAGE_ASSET_ARGS, PartitionSelection
from pm_domain import calendar, risk, settings
from pm_domain.llm.client import CachedReply, LLMCall
from pm_domain.llm.content import agreement_rate
from pm_domain.llm.records import (
    Request,
    answer_all,
    cache_frame,
    cached_replies,
    calls_frame,
    invalid_replies,
    source_counts,
)
from pm_resources.ollama import FallbackNotice, OllamaResource
from pm_resources.store import KeyedRows, PartitionRows, query, read_keyed, read_rows, table_exists, write_partitions

# The LLM stages queue on the `ollama` pool (limit 1 in dagster.yaml), so one stage at a time asks
# the servers however many runs a backfill starts, and its client alone decides how many requests
# are in flight (PM_LLM_PARALLEL_PER_HOST per server). Their DuckDB writes are short, and
# DuckDBResource retries opening the file while another process holds the write lock.
LLM_STAGE_ASSET_ARGS = {**STAGE_ASSET_ARGS, "pool": "ollama", "kinds": {"duckdb", "polars", "ollama"}}
REPLIES_VALID_HELP = ("warn: every request the model answered gave a reply that validates against the "
                      "stage's schema; rows still stand, written from the labelled fallback")
TELEMETRY_PREVIEW = ["llm_source", "llm_outcome", "latency_ms", "completion_tokens", "tokens_per_second"]
CACHE_TABLE = "llm_cache"
CALLS_TABLE = "llm_calls"


def anonymize_sessions(ollama: OllamaResource, stage: str) -> Callable[[dt.date], bool]:
    """Per session, whether the stage's prompt is anonymized (PM_LLM_ANONYMIZE, decided by the
    cutoff of the stage's first model)."""
    return functools.partial(ollama.settings().anonymizes, stage)


def ask(context: AssetExecutionContext, duckdb: DuckDBResource, ollama: OllamaResource, stage: str,
        requests: Sequence[Request], schema: type[BaseModel]) -> list[LLMCall]:
    """Answer every request (mode=ollama fails here, before anything is written)."""
    with duckdb.get_connection() as conn:
        slow = slow_at_last_probe(conn)
    client = ollama.client(slow_models=slow)
    client.require_available()
    availability = client.availability()
    settings = client.settings
    asked = sum(r.skip is None for r in requests)
    if availability.reachable:
        missing = client.missing_models()
        context.log.info(f"{stage}: asking {', '.join(settings.route(stage))} at {settings.host} for "
                         f"{asked} of {len(requests)} row(s), cached replies first, up to "
                         f"{client.concurrency()} at once; "
                         f"{sum(r.prompt.anonymized for r in requests)} anonymized prompt(s) "
                         f"(PM_LLM_ANONYMIZE={settings.anonymize})"
                         + (f"; not on the server: {', '.join(missing)}" if missing else "")
                         + (f"; slow at the last health probe: {', '.join(slow)}" if slow else "")
                         + "".join(f"; {note}" for note in availability.notes))
    elif asked:
        tell_fallback(context, ollama.fallback_notice(
            stage, availability.error, f"writing {asked} rule-based fallback row(s), labelled llm_source='fallback'"))

    calls = answer_all(client, stage, requests, schema, cache_reader(duckdb), progress=context.log.info)
    context.log.info(f"{stage}: {source_counts(calls)}")
    return calls


def tell_fallback(context: AssetExecutionContext, notice: FallbackNotice) -> None:
    """A chosen fallback at INFO; an unreachable server under `auto` as one WARNING a run."""
    if notice.warn:
        warn_unreachable_once(context, notice.message)
    else:
        context.log.info(notice.message)


def cache_reader(duckdb: DuckDBResource) -> Callable[[list[str]], dict[str, CachedReply]]:
    """The stored replies under the given cache keys, one read per call (answer_all reads once a run)."""
    def read_cache(keys: list[str]) -> dict[str, CachedReply]:
        with duckdb.get_connection() as conn:
            return cached_replies(read_keyed(conn, CACHE_TABLE, "cache_key", keys))

    return read_cache


OLLAMA_UNREACHABLE_TAG = "pm/ollama_unreachable"


def warn_unreachable_once(context: AssetExecutionContext, message: str) -> None:
    """A WARNING for the first LLM stage of a run that finds Ollama unreachable, INFO for the
    later ones: a run tag carries the fact across steps (each may be its own process)."""
    run = context.instance.get_run_by_id(context.run_id)
    if run is not None and OLLAMA_UNREACHABLE_TAG in run.tags:
        context.log.info(f"{message} (warned once this run)")
        return
    tag_run(context.instance, context.run_id, {OLLAMA_UNREACHABLE_TAG: "fallback rows written"})
    context.log.warning(message)


def slow_at_last_probe(conn: DuckDBPyConnection) -> list[str]:
    """Models whose latest llm_health probe found them slow: routing passes over them from the start."""
    if not table_exists(conn, "llm_health"):
        return []
    latest = query(conn, "SELECT probe_model, status FROM llm_health "
                         "QUALIFY row_number() OVER (PARTITION BY probe_model ORDER BY checked_at DESC) = 1")
    return sorted(latest.filter(pl.col("status") == "slow")["probe_model"].to_list())


def write(duckdb: DuckDBResource, selection: PartitionSelection, table: str, rows: pl.DataFrame,
          calls: Sequence[LLMCall], stage: str) -> None:
    """The stage's rows, its calls and new cache entries, in one transaction."""
    with duckdb.get_connection() as conn:
        write_partitions(
            conn, selection.tickers, selection.dates,
            [PartitionRows(table, rows),
             PartitionRows(CALLS_TABLE, calls_frame(calls, dt.datetime.now(dt.UTC).replace(tzinfo=None)),
                           ("ticker", "date", "stage"), {"stage": stage})],
            [KeyedRows(CACHE_TABLE, cache_frame(calls), ("cache_key",))],
        )


def llm_metadata(calls: Sequence[LLMCall]) -> dict:
    counts = source_counts(calls)
    latencies = [c.latency_ms for c in calls if c.source == "ollama" and c.latency_ms is not None]
    speeds = [c.tokens_per_second for c in calls if c.source == "ollama" and c.tokens_per_second]
    return {
        **{f"rows_from_{source}": n for source, n in counts.items()},
        "invalid_replies": len(invalid_replies(calls)),
        "median_latency_ms": statistics.median(latencies) if latencies else MetadataValue.text("no fresh Ollama call"),
        "median_tokens_per_second": statistics.median(speeds) if speeds else MetadataValue.text("no fresh Ollama call"),
        "prompts_anonymized": sum(c.prompt.anonymized for c in calls),
        "prompt_chars_max": max(len(c.prompt.system) + len(c.prompt.user) for c in calls) if calls else 0,
    }


def replies_check(calls: Sequence[LLMCall]) -> AssetCheckResult:
    """llm_replies_valid (warn): every call Ollama was asked gave a valid reply. Rows still stand,
    written from the fallback and labelled; fallback by mode or outage is reported, not failed."""
    invalid = invalid_replies(calls)
    counts = source_counts(calls)
    return AssetCheckResult(
        check_name="llm_replies_valid",
        passed=not invalid,
        severity=AssetCheckSeverity.WARN,
        description=f"{len(invalid)} invalid or failed repl(ies); rows from ollama {counts['ollama']}, "
                    f"cache {counts['cache']}, fallback {counts['fallback']}",
        metadata={"invalid_replies": len(invalid),
                  "examples": "; ".join(f"{c.ticker} {c.date}: {c.outcome}: {c.error}" for c in invalid[:3]) or "none",
                  **{f"rows_from_{s}": n for s, n in counts.items()}},
    )


def read_prices_with_benchmark(conn: DuckDBPyConnection, selection: PartitionSelection, lookback_sessions: int) -> tuple[pl.DataFrame, str]:
    """Stored prices of the run's tickers and of the benchmark over the lookback, and the benchmark."""
    benchmark = settings.benchmark_ticker()
    first = calendar.shift_trading_days(selection.start, -(lookback_sessions - 1))
    return read_rows(conn, "prices", sorted({*selection.tickers, benchmark}), selection.end, first), benchmark


def risk_metrics(context: AssetExecutionContext, histories: dict[str, pl.DataFrame], benchmark: str,
                 selection: PartitionSelection) -> pl.DataFrame:
    """pm_domain.risk.assess for every ticker and date of the run: the one computation behind both
    llm_signals' risk gate and risk_assessments, so the two tables hold the same score."""
    if benchmark not in histories:
        context.log.warning(f"no prices for the benchmark {benchmark}: beta is null and the risk score "
                            f"leaves it out (materialize prices for {benchmark} or set PM_BENCHMARK)")
    return risk.assess_tickers({t: histories[t] for t in selection.tickers}, histories.get(benchmark),
                               selection.dates)


def content_check(name: str, content: pl.DataFrame, good: str, bad: str, what: str) -> AssetCheckResult:
    """A warn-level check that the model's replies agree with the numbers (pm_domain.llm.content):
    fails when any reply is `bad`; the agreement rate and examples with their reasons in metadata."""
    rate = agreement_rate(content, good)
    flagged = content.filter(pl.col("content_check") == bad)
    counts = dict(content.group_by("content_check").len().iter_rows())
    return AssetCheckResult(
        check_name=name,
        passed=flagged.is_empty(),
        severity=AssetCheckSeverity.WARN,
        description=(f"{flagged.height} repl(ies) {bad} the numbers; {what}: "
                     + ("no reply from the model to judge" if rate is None else f"{rate:.0%} {good}")),
        metadata={f"{what}_rate": rate if rate is not None else MetadataValue.text("no reply from the model"),
                  **{f"rows_{verdict}": n for verdict, n in counts.items()},
                  "examples": "; ".join(f"{r['ticker']} {r['date']}: {r['content_reason']}"
                                        for r in flagged.head(3).iter_rows(named=True)) or "none"},
    )
