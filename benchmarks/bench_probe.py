"""What the memorization probe costs per 100 (ticker, session) pairs against a real model.

Gemma 3 270M (Q4_K_M) run by llama.cpp behind Ollama's API on a loopback port (tests/support/llama_ollama.py,
the `llm` extra), asked through the project's client as the `memorization_probe` asset asks: a
seeded, direction-balanced sample of the sample prices (^GSPC, ^IXIC, 1999-2018, all before Gemma
3's documented cutoff), each pair's named question plus the one anonymized question, no cache.
Printed: pairs measured, wall seconds, requests, latency p50/p95 (Ollama's total_duration), prompt
and completion tokens, each also per 100 pairs; then the same probe again from the cache.

Run: make bench-probe   (or .venv/bin/python benchmarks/bench_probe.py [--pairs 100] [--seed 24])
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from pm_domain.forecasting.engine import price_rows  # noqa: E402
from pm_domain.llm.client import LLMClient, OllamaSettings  # noqa: E402
from pm_domain.llm.probe import (  # noqa: E402
    ask_probe,
    model_verdicts,
    outcome_pairs,
    probe_cost,
    probe_settings,
    sample_pairs,
    score_probe,
)
from pm_domain.llm.records import cached_replies, cache_frame  # noqa: E402
from pm_domain.price_sources import fetch_sample  # noqa: E402

TICKERS = ["^GSPC", "^IXIC"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100, help="named (ticker, session) pairs to probe (even)")
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    from tests.support.real_ollama import INSTALL_HINT, MODEL, engine_installed, real_ollama

    if not engine_installed():
        print(INSTALL_HINT)
        return 1
    pairs = outcome_pairs(price_rows(fetch_sample(TICKERS, dt.date(1999, 1, 4), dt.date(2018, 12, 31))))
    with real_ollama() as server:
        settings = probe_settings(OllamaSettings(host=server.host, models=dict.fromkeys(("analysis", "signal", "risk"), MODEL),
                                                 mode="ollama"), MODEL)
        cutoff = settings.cutoff(MODEL)
        sample = sample_pairs(pairs, cutoff.cutoff, args.pairs, args.seed)
        client = LLMClient(settings)
        client.availability()  # the server's model list, once, outside the timing
        before = server.requests()
        began = time.perf_counter()
        rows, calls = ask_probe(client, MODEL, sample, lambda keys: {})
        wall = time.perf_counter() - began
        requests = server.requests() - before
        cost = probe_cost(calls)
        cache = cached_replies(cache_frame(calls))
        again_began = time.perf_counter()
        _, again_calls = ask_probe(LLMClient(settings), MODEL, sample, lambda keys: {k: cache[k] for k in keys if k in cache})
        again_wall = time.perf_counter() - again_began
        again_requests = server.requests() - before - requests
    verdict, reason = model_verdicts(score_probe(rows, {MODEL: cutoff}))[MODEL]

    measured = sample.height
    scale = 100 / measured
    print(f"memorization probe of {MODEL} against {server.host} (llama.cpp, 2 threads); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end")
    print(f"pairs measured: {measured} (balanced: {(sample['direction'] == 'up').sum()} up, "
          f"{(sample['direction'] == 'down').sum()} down), all before the cutoff {cutoff.cutoff}")
    print("| measure | measured | per 100 pairs |")
    print("|---|---|---|")
    print(f"| wall seconds | {wall:.1f} | {wall * scale:.1f} |")
    print(f"| requests (counted by the server) | {requests} | {requests * scale:.0f} |")
    print(f"| replies without a valid answer | {cost['unanswered_calls']} | {cost['unanswered_calls'] * scale:.0f} |")
    print(f"| prompt tokens | {cost['prompt_tokens']} | {cost['prompt_tokens'] * scale:.0f} |")
    print(f"| completion tokens | {cost['completion_tokens']} | {cost['completion_tokens'] * scale:.0f} |")
    print(f"| latency per request p50 / p95 ms | {cost['median_latency_ms']:,.0f} / {cost['p95_latency_ms']:,.0f} | (same) |")
    print(f"the same probe again from the cache: {again_requests} request(s), {again_wall:.2f} s "
          f"({sum(c.source == 'cache' for c in again_calls)} replies from the cache)")
    print(f"verdict on this sample: {verdict}: {reason}")
    return 0 if requests == measured + 1 and again_requests == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
