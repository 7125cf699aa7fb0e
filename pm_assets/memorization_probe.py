"""`memorization_probe`: does a configured model remember which way past prices moved?

Each model is asked, with no data in the prompt, the direction of the next sessions for a seeded,
direction-balanced sample of (ticker, session) pairs from the stored prices, before and after its
training cutoff, named and anonymized (pm_domain.llm.probe). Not partitioned: the sample spans
the whole history. Replies go through the project's client and the `llm_cache` table, so an
unchanged re-run makes no call and a re-run after new prices asks only the pairs new to the sample.
"""

import datetime as dt
import time

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource
from pydantic import Field

from pm_assets.llm_stage import CACHE_TABLE, cache_reader, tell_fallback
from pm_assets.metadata import preview_markdown
from pm_assets.partitions import TICKERS_PARTITIONS_NAME
from pm_domain.forecasting.engine import price_rows
from pm_domain.llm.client import LLMCall, LLMClient
from pm_domain.llm.probe import (
    CHANCE,
    CONFIDENCE_LEVEL,
    HORIZON_SESSIONS,
    PROBE_STAGE,
    ask_probe,
    model_verdicts,
    outcome_pairs,
    probe_cost,
    probe_settings,
    sample_pairs,
    score_probe,
)
from pm_domain.llm.records import cache_frame
from pm_resources.ollama import OllamaResource
from pm_resources.store import KeyedRows, ScopedRows, read_rows, write_partitions

SUMMARY_TABLE = "memorization_probe"
PAIRS_TABLE = "memorization_probe_pairs"
SUMMARY_COLUMNS = ["model", "period", "prompt_variant", "pairs", "answered", "hits", "hit_rate", "ci_low",
                   "ci_high", "verdict"]


class MemorizationProbeConfig(Config):
    pairs_per_period: int = Field(default=40, ge=2, le=2000, description=(
        "pairs drawn before the cutoff, and as many after it, half up and half down: 40 gives an "
        "interval about +-16 points wide around 50%: a model right 3 times in 4 is flagged 9 times in 10"))
    seed: int = Field(default=24, description="which pairs are drawn; a pair keeps its draw as new prices arrive")
    horizon: int = Field(default=HORIZON_SESSIONS, ge=1, le=60, description="sessions from the date to the outcome")
    models: list[str] = Field(default_factory=list, description="models to probe; empty: every configured model")


@asset(
    group_name="evaluation",
    deps=["prices"],
    pool="ollama",  # one LLM step at a time asks the servers, as for the LLM stages
    kinds={"duckdb", "polars", "ollama"},
    check_specs=[AssetCheckSpec("no_memorization", asset="memorization_probe", description=(
        "warn: no probed model answers the named probe before its training cutoff better (or worse) "
        f"than chance: its {CONFIDENCE_LEVEL:.0%} interval includes {CHANCE:.0%}"))],
    description="Per configured model: asked only a ticker and a date, does it know whether the close "
    f"{HORIZON_SESSIONS} sessions later was higher? Hit rates with exact {CONFIDENCE_LEVEL:.0%} intervals before "
    "and after the model's training cutoff, named and anonymized, on a direction-balanced sample of stored "
    f"prices; `memorized` when the named rate before the cutoff departs from {CHANCE:.0%}. Tables "
    "memorization_probe (summary) and "
    "memorization_probe_pairs (every pair's answer).",
)
def memorization_probe(context: AssetExecutionContext, config: MemorizationProbeConfig, duckdb: DuckDBResource,
                       ollama: OllamaResource) -> MaterializeResult:
    began = time.perf_counter()
    tickers = context.instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME)
    with duckdb.get_connection() as conn:
        prices = read_rows(conn, "prices", tickers, dt.date.max)
    pairs = outcome_pairs(price_rows(prices), config.horizon)
    settings = ollama.settings()
    models = list(dict.fromkeys(config.models or ollama.models()))
    context.log.info(f"{pairs.height} (ticker, session) pairs with a known {config.horizon}-session outcome "
                     f"over {len(tickers)} ticker(s); probing {', '.join(models)}")

    frames, calls, cutoffs = [], [], {}
    for model in models:
        cutoffs[model] = settings.cutoff(model)
        sample = sample_pairs(pairs, cutoffs[model].cutoff, config.pairs_per_period, config.seed)
        client = LLMClient(probe_settings(settings, model))
        client.require_available()  # mode=ollama: fails here, before anything is written
        if sample.height and not client.availability().reachable:
            tell_fallback(context, ollama.fallback_notice(PROBE_STAGE, client.availability().error,
                                                          "the probe's pairs are written unanswered"))
        rows, model_calls = ask_probe(client, model, sample, cache_reader(duckdb), config.horizon, context.log.info)
        frames.append(rows)
        calls += model_calls
    probed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stamp = [pl.lit(probed_at, pl.Datetime("us")).alias("probed_at"), pl.lit(config.seed).alias("seed"),
             pl.lit(config.horizon).alias("horizon")]
    rows = pl.concat(frames).with_columns(stamp)
    summary = score_probe(rows, cutoffs).with_columns(stamp)
    with duckdb.get_connection() as conn:
        write_partitions(
            conn, [], [], [], keyed_rows=[KeyedRows(CACHE_TABLE, cache_frame(calls), ("cache_key",))],
            scoped_rows=[ScopedRows(PAIRS_TABLE, rows, ("model", "prompt_variant", "ticker", "date"), "model", tuple(models)),
                         ScopedRows(SUMMARY_TABLE, summary, ("model", "period", "prompt_variant"), "model", tuple(models))])

    verdicts = model_verdicts(summary)
    for model, (decided, reason) in verdicts.items():
        (context.log.warning if decided == "memorized" else context.log.info)(f"{model}: {decided}: {reason}")
    return MaterializeResult(
        metadata={
            "summary": MetadataValue.md(preview_markdown(summary, SUMMARY_COLUMNS, rows=summary.height)),
            "verdicts": MetadataValue.md("\n".join(f"- `{m}`: **{v}**: {r}" for m, (v, r) in verdicts.items())),
            "pairs_per_model": {m: rows.filter((pl.col("model") == m) & (pl.col("prompt_variant") == "named")).height
                                for m in models},
            **_cost_metadata(calls),
            "compute_seconds": round(time.perf_counter() - began, 3),
        },
        check_results=[_no_memorization(verdicts)],
    )


def _cost_metadata(calls: list[LLMCall]) -> dict:
    cost = probe_cost(calls)
    return {name: (MetadataValue.text("no fresh Ollama call") if value is None else value) for name, value in cost.items()}


def _no_memorization(verdicts: dict[str, tuple[str, str]]) -> AssetCheckResult:
    memorized = [m for m, (v, _) in verdicts.items() if v == "memorized"]
    counts = {verdict: sum(v == verdict for v, _ in verdicts.values())
              for verdict in ("memorized", "no_evidence", "insufficient_data")}
    return AssetCheckResult(
        check_name="no_memorization",
        passed=not memorized,
        severity=AssetCheckSeverity.WARN,
        description=(f"memorized: {', '.join(memorized)}: their results on sessions before their cutoff "
                     "reflect what they read, not skill" if memorized else
                     f"no probed model departs from {CHANCE:.0%} before its cutoff"
                     + (f" ({counts['insufficient_data']} with too little data to tell)"
                        if counts["insufficient_data"] else "")),
        metadata={**{f"models_{verdict}": n for verdict, n in counts.items()},
                  "verdicts": "; ".join(f"{m}: {v}" for m, (v, _) in verdicts.items()) or "no model probed"},
    )
