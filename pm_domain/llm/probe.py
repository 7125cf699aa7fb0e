"""The memorization probe: can a model tell which way a past move went from the ticker and the
date alone?

The prompt carries no data, only "did ^GSPC's close 5 trading sessions after 2018-12-24 end above
or below its close on 2018-12-24?". A model can answer that better than a coin only from its
training text, so its hit rate on sessions before its training cutoff measures memory, and a
model that remembers the sample period makes every backtest of its calls there look better than
it could be live. The same questions after the cutoff, and an anonymized control ("asset A",
"session 0", which carries no information at all), are scored beside it.

- Pairs: (ticker, session) pairs whose close `horizon` exchange sessions later is stored, split
  at the model's cutoff (unknown cutoff: every pair is "before"), drawn with a seed and balanced
  by realised direction.
- Score: per (model, period, prompt variant), the hit rate of the answered pairs with its exact
  (Clopper-Pearson) 95% interval. Unanswered pairs (invalid reply, fallback) are counted, never
  scored as misses: a failure to answer is not a wrong memory.
- Verdict per model: `memorized` when the interval of the named prompts before the cutoff
  excludes 50%, `no_evidence` when it includes it, `insufficient_data` when no such pair was
  answered (the reason says why).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import statistics
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib import resources
from string import Template
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict

from pm_domain.llm.client import TASKS, CachedReply, LLMCall, LLMClient, OllamaSettings
from pm_domain.llm.cutoffs import KnowledgeCutoff
from pm_domain.llm.prompts import ANONYMOUS_SESSION, ANONYMOUS_TICKER, Prompt, PromptError
from pm_domain.llm.records import Request, answer_all, telemetry_columns
from pm_domain.outcomes import SessionGrid
from pm_domain.tickers import validate_ticker

PROBE_STAGE = "probe"
HORIZON_SESSIONS = 5
PERIODS = ("before_cutoff", "after_cutoff")
PROMPT_VARIANTS = ("named", "anonymized")
VERDICTS = ("memorized", "no_evidence", "insufficient_data")
CONFIDENCE_LEVEL = 0.95
CHANCE = 0.5
TEMPLATE = "probe_v1"
SYSTEM_TEMPLATE = "probe_system_v1"
BUDGET_CHARS = 200  # of the user prompt; the real tokenizer's count is checked in tests/e2e/test_real_llm.py
BUDGET_TOKENS = 90  # system + user in Gemma 3's chat template, at the longest ticker

PAIR_SCHEMA = {"ticker": pl.String, "date": pl.Date, "outcome_date": pl.Date,
               "realised_return": pl.Float64, "direction": pl.String}
SAMPLE_SCHEMA = {**PAIR_SCHEMA, "after_cutoff": pl.Boolean, "period": pl.String}
ROWS_SCHEMA = {"model": pl.String, "prompt_variant": pl.String, **SAMPLE_SCHEMA,
               "answer": pl.String, "hit": pl.Boolean}
SUMMARY_SCHEMA = {
    "model": pl.String, "period": pl.String, "prompt_variant": pl.String, "pairs": pl.Int64,
    "answered": pl.Int64, "unanswered": pl.Int64, "hits": pl.Int64, "hit_rate": pl.Float64,
    "ci_low": pl.Float64, "ci_high": pl.Float64, "interval_excludes_chance": pl.Boolean,
    "knowledge_cutoff": pl.Date, "cutoff_source": pl.String, "verdict": pl.String, "verdict_reason": pl.String,
}


class ProbeAnswer(BaseModel):
    """The probe's reply: the direction of the move, nothing else (two enum words, a few tokens)."""

    model_config = ConfigDict(extra="forbid")

    direction: Literal["up", "down"]


# --- the pairs --------------------------------------------------------------------------------

def outcome_pairs(prices: pl.DataFrame, horizon: int = HORIZON_SESSIONS) -> pl.DataFrame:
    """Every stored (ticker, session) whose price `horizon` exchange sessions later is stored too,
    with the realised return and its direction. `prices`: ticker, date, price (the price every
    stage measures returns on, so a split inside the window is not read as a crash).

    Sessions are counted on the exchange calendar, not in price rows: a gap in prices drops the
    pair rather than moving its outcome to a later day. A return of exactly 0 has no right answer
    to "above or below", so such a pair is left out."""
    if horizon < 1:
        raise ValueError(f"horizon {horizon}: at least 1 session")
    prices = prices.filter(pl.col("price").is_not_null() & (pl.col("price") > 0))
    if not prices.height:
        return pl.DataFrame(schema=PAIR_SCHEMA)
    grid = SessionGrid(prices["date"].min(), prices["date"].max())
    numbered = prices.with_columns(grid.number("date", "session")).drop_nulls("session")
    later = numbered.select("ticker", (pl.col("session") - horizon).alias("session"),
                            pl.col("date").alias("outcome_date"), pl.col("price").alias("outcome_price"))
    return (numbered.join(later, on=["ticker", "session"], how="inner")
            .with_columns((pl.col("outcome_price") / pl.col("price") - 1).alias("realised_return"))
            .filter(pl.col("realised_return") != 0)
            .with_columns(pl.when(pl.col("realised_return") > 0).then(pl.lit("up")).otherwise(pl.lit("down"))
                          .alias("direction"))
            .select(list(PAIR_SCHEMA)).sort("ticker", "date"))


def _draw(seed: int, ticker: str, date: dt.date) -> int:
    # A hash of (seed, pair) rather than a random permutation: a pair keeps its place in the order
    # when later prices add new pairs, so tomorrow's sample is today's but for the few new pairs
    # that rank in, and the cache answers the rest of a re-run.
    return int.from_bytes(hashlib.blake2b(f"{seed}|{ticker}|{date.isoformat()}".encode(), digest_size=8).digest(), "big")


def sample_pairs(pairs: pl.DataFrame, cutoff: dt.date | None, per_period: int, seed: int) -> pl.DataFrame:
    """Up to `per_period` pairs before the cutoff and as many after it, drawn by `seed`, each period
    with as many up pairs as down pairs (fewer when one direction runs short).

    Balanced by realised direction because markets drift up: on a raw sample of a rising index a
    model that always answers "up" would beat 50% without remembering anything. On a balanced
    sample it scores exactly 50%, so the 50% line tests memory, not the market's drift."""
    if per_period < 2:
        raise ValueError(f"pairs per period {per_period}: at least 2 (one up, one down)")
    if not pairs.height:
        return pl.DataFrame(schema=SAMPLE_SCHEMA)
    after = pl.lit(False) if cutoff is None else pl.col("date") > pl.lit(cutoff)
    ranked = pairs.with_columns(
        pl.Series("draw", [_draw(seed, t, d) for t, d in zip(pairs["ticker"], pairs["date"], strict=True)],
                  pl.UInt64),
        after.alias("after_cutoff"))
    chosen = []
    for after_cutoff, period in zip((False, True), PERIODS, strict=True):
        pool = ranked.filter(pl.col("after_cutoff") == after_cutoff)
        ups = pool.filter(pl.col("direction") == "up").sort("draw")
        downs = pool.filter(pl.col("direction") == "down").sort("draw")
        each = min(per_period // 2, ups.height, downs.height)
        chosen.append(pl.concat([ups.head(each), downs.head(each)]).with_columns(pl.lit(period).alias("period")))
    return pl.concat(chosen).sort("after_cutoff", "draw").select(list(SAMPLE_SCHEMA))


# --- the prompt -------------------------------------------------------------------------------

@cache
def _read(name: str) -> str:
    return resources.files("pm_domain.llm").joinpath("prompts", f"{name}.txt").read_text("utf-8").strip()


def template_hash() -> str:
    return hashlib.sha256(f"{_read(SYSTEM_TEMPLATE)}\n\n{_read(TEMPLATE)}".encode()).hexdigest()[:16]


def probe_prompt(ticker: str, date: dt.date, variant: str, horizon: int = HORIZON_SESSIONS) -> Prompt:
    """The question about (ticker, date), named; or its anonymized control, which says "asset A" and
    "session 0" as the stages' anonymized prompts do, and so is the same text for every pair."""
    if variant not in PROMPT_VARIANTS:
        raise PromptError(f"prompt variant {variant!r}: use one of {', '.join(PROMPT_VARIANTS)}")
    if variant == "named":
        fields = {"ticker": validate_ticker(ticker), "date": date.isoformat(), "horizon": str(int(horizon))}
    else:
        fields = {"ticker": ANONYMOUS_TICKER, "date": ANONYMOUS_SESSION, "horizon": str(int(horizon))}
    user = Template(_read(TEMPLATE)).substitute(fields)
    if len(user) > BUDGET_CHARS:
        raise PromptError(f"{TEMPLATE}: {len(user)} characters, over the budget of {BUDGET_CHARS}")
    version = TEMPLATE if variant == "named" else f"{TEMPLATE}:anonymized"
    return Prompt(PROBE_STAGE, version, template_hash(), _read(SYSTEM_TEMPLATE), user, anonymized=variant == "anonymized")


# --- asking -----------------------------------------------------------------------------------

def probe_settings(settings: OllamaSettings, model: str) -> OllamaSettings:
    """`settings` with every route set to `model` alone: the probe measures one named model, so
    routing must not hand a question to another one."""
    return dataclasses.replace(settings, models={**dict.fromkeys(TASKS, model), PROBE_STAGE: model})


def pair_rows(sample: pl.DataFrame, model: str, variant: str, answers: Sequence[str | None]) -> pl.DataFrame:
    """The sample's pairs with one model's answers (None: unanswered) and whether each hit."""
    return sample.with_columns(
        pl.lit(model).alias("model"), pl.lit(variant).alias("prompt_variant"),
        pl.Series("answer", list(answers), pl.String),
    ).with_columns((pl.col("answer") == pl.col("direction")).alias("hit")).select(list(ROWS_SCHEMA))


def ask_probe(client: LLMClient, model: str, sample: pl.DataFrame,
              read_cache: Callable[[list[str]], Mapping[str, CachedReply]],
              horizon: int = HORIZON_SESSIONS, progress: Callable[[str], None] | None = None,
              ) -> tuple[pl.DataFrame, list[LLMCall]]:
    """Both variants of every sampled pair asked of `model` (a client from probe_settings): the
    per-pair rows with their call's telemetry, and the distinct calls made or served.

    A prompt is asked once however many pairs share it (the anonymized one is the same for all):
    the reply is deterministic, so asking again would only cost time. Its rows share that call."""
    keys = list(zip(sample["ticker"], sample["date"], strict=True))
    prompts = {(variant, t, d): probe_prompt(t, d, variant, horizon) for variant in PROMPT_VARIANTS for t, d in keys}
    unique: dict[str, Request] = {}
    for (_, ticker, date), prompt in prompts.items():
        unique.setdefault(prompt.prompt_hash, Request(ticker, date, prompt))
    calls = answer_all(client, PROBE_STAGE, list(unique.values()), ProbeAnswer, read_cache, progress)
    by_hash = {call.prompt.prompt_hash: call for call in calls}
    frames = []
    for variant in PROMPT_VARIANTS:
        answered = [by_hash[prompts[(variant, t, d)].prompt_hash] for t, d in keys]
        answers = [c.value.direction if isinstance(c.value, ProbeAnswer) else None for c in answered]
        telemetry = telemetry_columns(answered).drop("ticker", "date", "after_cutoff")
        frames.append(pl.concat([pair_rows(sample, model, variant, answers), telemetry], how="horizontal"))
    return pl.concat(frames), calls


# --- scoring ----------------------------------------------------------------------------------

def _cell(rows: pl.DataFrame) -> dict:
    answered = rows.filter(pl.col("answer").is_not_null())
    hits = int(answered["hit"].sum()) if answered.height else 0
    cell = {"pairs": rows.height, "answered": answered.height, "unanswered": rows.height - answered.height,
            "hits": hits, "hit_rate": None, "ci_low": None, "ci_high": None, "interval_excludes_chance": None}
    if answered.height:
        from scipy.stats import binomtest  # here, not at the top: docs/scale.md "Process start"

        interval = binomtest(hits, answered.height, CHANCE).proportion_ci(CONFIDENCE_LEVEL, method="exact")
        cell |= {"hit_rate": hits / answered.height, "ci_low": float(interval.low), "ci_high": float(interval.high),
                 "interval_excludes_chance": bool(interval.low > CHANCE or interval.high < CHANCE)}
    return cell


def _describe(cell: dict) -> str:
    return (f"{cell['hits']}/{cell['answered']} hits ({cell['hit_rate']:.0%}, {CONFIDENCE_LEVEL:.0%} interval "
            f"{cell['ci_low']:.0%}-{cell['ci_high']:.0%})")


def verdict(cells: Mapping[tuple[str, str], dict], cutoff: KnowledgeCutoff) -> tuple[str, str]:
    """A model's verdict and why, from its (period, variant) cells."""
    before, after = cells[("before_cutoff", "named")], cells[("after_cutoff", "named")]
    when = (f"before the cutoff {cutoff.cutoff}" if cutoff.cutoff is not None
            else "with no known cutoff (every session counts as before it)")
    if not before["pairs"]:
        return "insufficient_data", (f"no pair {when}: the stored prices hold no session there whose "
                                     "outcome is known, in both directions")
    if not before["answered"]:
        return "insufficient_data", (f"none of the {before['pairs']} pairs {when} was answered "
                                     "(invalid replies or fallback: see llm_outcome)")
    excluded = before["interval_excludes_chance"]
    reason = f"named prompts {when}: {_describe(before)} {'excludes' if excluded else 'includes'} 50%"
    if before["unanswered"]:
        reason += f"; {before['unanswered']} unanswered, not scored"
    if after["answered"] and after["interval_excludes_chance"]:
        reason += (f"; after the cutoff too, {_describe(after)}: the stated cutoff may be too early "
                   "(or chance, at most 1 time in 20)")
    control = cells[("before_cutoff", "anonymized")]
    if control["answered"] and control["interval_excludes_chance"]:
        reason += (f"; the anonymized control departs from 50% ({_describe(control)}): the answered pairs "
                   "are not balanced, so read the named rate with care")
    return ("memorized" if excluded else "no_evidence"), reason


def score_probe(rows: pl.DataFrame, cutoffs: Mapping[str, KnowledgeCutoff]) -> pl.DataFrame:
    """One row per (model, period, prompt variant) for every model of `cutoffs`, empty cells
    included, each carrying its model's verdict and reason."""
    out = []
    for model, cutoff in cutoffs.items():
        own = rows.filter(pl.col("model") == model)
        cells = {(period, variant): _cell(own.filter((pl.col("period") == period) & (pl.col("prompt_variant") == variant)))
                 for period in PERIODS for variant in PROMPT_VARIANTS}
        decided, reason = verdict(cells, cutoff)
        out += [{"model": model, "period": period, "prompt_variant": variant, **cell,
                 "knowledge_cutoff": cutoff.cutoff, "cutoff_source": cutoff.source,
                 "verdict": decided, "verdict_reason": reason}
                for (period, variant), cell in cells.items()]
    return pl.DataFrame(out, schema=SUMMARY_SCHEMA)


def model_verdicts(summary: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """model -> (verdict, reason), from score_probe's rows."""
    return {r["model"]: (r["verdict"], r["verdict_reason"])
            for r in summary.unique("model", keep="first", maintain_order=True).iter_rows(named=True)}


def probe_cost(calls: Sequence[LLMCall]) -> dict[str, float | int | None]:
    """What the distinct calls cost: requests that reached the server, replies from the cache,
    calls without a valid reply, and latency (Ollama's total_duration) and tokens of the fresh ones."""
    fresh = [c for c in calls if c.fresh]
    latencies = [c.latency_ms for c in fresh if c.latency_ms is not None]
    return {
        "calls": len(calls),
        "requests": sum(c.fresh for c in calls),
        "from_cache": sum(c.source == "cache" for c in calls),
        "unanswered_calls": sum(c.value is None for c in calls),
        "median_latency_ms": statistics.median(latencies) if latencies else None,
        "p95_latency_ms": float(np.percentile(latencies, 95)) if latencies else None,
        "prompt_tokens": sum(c.prompt_eval_count or 0 for c in fresh),
        "completion_tokens": sum(c.eval_count or 0 for c in fresh),
    }
