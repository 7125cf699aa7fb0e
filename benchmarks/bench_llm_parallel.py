"""LLM throughput with requests in parallel across Ollama servers, against the sequential client.

The real model (Gemma 3 270M, Q4_K_M, llama.cpp behind Ollama's API: tests/support/llama_ollama.py)
answers the same N analysis prompts (one per ticker, as the nightly asks them) through the
project's client (`answer_all`, cache empty) in three set-ups, each server warmed with one
request first so no model load is timed:

- baseline: one server with one llama.cpp thread, one request at a time (the sequential client);
- two servers with one thread each, one request in flight per server (OLLAMA_HOST=a,b);
- for reference, one server with both threads, one request at a time: what the second core buys
  inside one server.

It prints requests per second and the ratio to the baseline (target: two servers >= 1.6x), and
how many replies are byte-identical to the baseline's. The servers reuse the evaluated prompt
prefix as Ollama's runner does, so a reply can depend on which prompt that server evaluated
before it: requests spread over two servers meet other predecessors, and a near tie between two
tokens can fall the other way (the client asks the same prompts either way; `make test-llm`
checks that with prefix reuse off the stored replies are identical).

Run: make bench-llm-parallel   (or .venv/bin/python benchmarks/bench_llm_parallel.py [--requests N])
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from pm_domain.llm.client import LLMClient, OllamaSettings  # noqa: E402
from pm_domain.llm.prompts import render  # noqa: E402
from pm_domain.llm.records import Request, answer_all, cache_frame  # noqa: E402
from pm_domain.llm.schemas import MarketAnalysis  # noqa: E402
from tests.support.real_ollama import INSTALL_HINT, MODEL, engine_installed, real_ollama  # noqa: E402

DAY = dt.date(2018, 12, 31)
TARGET_RATIO = 1.6


def analysis_requests(count: int, offset: int = 0) -> list[Request]:
    """`count` distinct analysis prompts, a ticker each, with the numbers varying as tickers' do."""
    requests = []
    for i in range(offset, offset + count):
        wobble = (i % 7 - 3) / 100
        values = {"close": 100.0 + i, "return_1d": wobble / 5, "return_5d": wobble, "return_20d": 2 * wobble,
                  "sma_20": 99.0 + i, "sma_50": 97.0 + i, "macd": wobble, "macd_signal": wobble / 2,
                  "rsi_14": 50 + 30 * wobble, "bb_percent_b": 0.5 + wobble, "realised_vol_20d": 0.2,
                  "volume_ratio_20d": 1.0 + wobble, "atr_pct": 0.02, "f1": wobble / 10, "f1_lo": -0.02,
                  "f1_hi": 0.02, "f5": wobble / 4, "f5_lo": -0.05, "f5_hi": 0.05, "f20": wobble / 2,
                  "f20_lo": -0.1, "f20_hi": 0.1, "volatility_model": "garch_t"}
        requests.append(Request(f"T{i:03d}", DAY, render("analysis", f"T{i:03d}", DAY, values)))
    return requests


def run(hosts: list[str], parallel_per_host: int, requests: list[Request]) -> tuple[float, list]:
    settings = OllamaSettings(host=",".join(hosts), models=dict.fromkeys(("analysis", "signal", "risk"), MODEL),
                              mode="ollama", parallel_per_host=parallel_per_host)
    warm = LLMClient(settings)
    answer_all(warm, "analysis", analysis_requests(len(hosts), offset=10_000), MarketAnalysis, lambda keys: {})
    client = LLMClient(settings)
    began = time.perf_counter()
    calls = answer_all(client, "analysis", requests, MarketAnalysis, lambda keys: {})
    seconds = time.perf_counter() - began
    return seconds, calls


def replies(calls: list) -> list[tuple[str, str, bool]]:
    frame = cache_frame(calls).sort("cache_key")
    return list(zip(frame["cache_key"], frame["content"], frame["valid"], strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="analysis prompts per set-up")
    args = parser.parse_args()
    if not engine_installed():
        raise SystemExit(INSTALL_HINT)
    requests = analysis_requests(args.requests)
    results = {}
    with contextlib.ExitStack() as stack:
        one = stack.enter_context(real_ollama(threads=1))
        two = stack.enter_context(real_ollama(threads=1))
        results["one server, 1 thread, sequential (baseline)"] = run([one.host], 1, requests)
        results["two servers, 1 thread each, 1 in flight per server"] = run([one.host, two.host], 1, requests)
    with real_ollama(threads=2) as both_cores:
        results["one server, 2 threads, sequential"] = run([both_cores.host], 1, requests)

    baseline_seconds, baseline_calls = next(iter(results.values()))
    print(f"{args.requests} analysis prompts of {MODEL} (llama.cpp behind Ollama's API), cache empty, "
          "each server warmed first:")
    print("| set-up | seconds | requests/s | ratio to baseline | valid | replies identical to the baseline's |")
    print("|---|---|---|---|---|---|")
    for name, (seconds, calls) in results.items():
        valid = sum(c.outcome == "ok" for c in calls)
        same = sum(a == b for a, b in zip(replies(calls), replies(baseline_calls), strict=True))
        print(f"| {name} | {seconds:.1f} | {len(calls) / seconds:.2f} | {baseline_seconds / seconds:.2f}x | "
              f"{valid}/{len(calls)} | {same}/{len(calls)} |")
    two_servers = list(results.values())[1][0]
    ratio = baseline_seconds / two_servers
    print(f"target: two servers >= {TARGET_RATIO}x one server's throughput: {ratio:.2f}x, "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT MET'}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
