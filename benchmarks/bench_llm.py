"""LLM stages benchmark: client overhead, and the three stages against a real model.

1. Client-side overhead per call. Against the fake Ollama server on 127.0.0.1 (it answers at
   once), `LLMClient.ask` (prompt, schema, retries wrapper, official client, parsing, pydantic
   validation, cache entry) is timed against a baseline in the same process: the same request
   posted with a bare httpx client and its body decoded, nothing else. The difference is what
   this project adds to every call; the target is under 5 ms.
2. The demo's LLM stages against a real model: Gemma 3 270M (Q4_K_M) run by llama.cpp behind
   Ollama's API on a loopback port (tests/support/llama_ollama.py; the `llm` extra), or any Ollama given
   with --ollama-host (its models from PM_LLM_*_MODEL). llm_analysis, llm_signals and
   risk_assessments over the demo's 2 tickers x 60 sessions, as the demo runs them (HOLD
   proposals not asked). Per stage, from the llm_calls rows of that run: requests, valid share,
   replies cut at the cap, prompt and completion tokens, p50/p95 latency (Ollama's
   total_duration), decode and prefill tokens/s, and the p95 projected at 15 tokens/s of decode
   (the old system's 7-14B models on CPU) with prefill as measured.
3. Cache: the same run again; the requests that reached the server are counted by the server
   (our own server) or, for another Ollama, by the client (llm_calls.attempts). Target: 0.

Run: make bench-llm   (or .venv/bin/python benchmarks/bench_llm.py [--sessions N] [--ollama-host URL])
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from pm_domain.llm.client import LLMClient, OllamaSettings  # noqa: E402
from pm_domain.llm.prompts import render  # noqa: E402
from pm_domain.llm.schemas import MarketAnalysis  # noqa: E402
from pm_resources.ollama import DEFAULT_MODELS  # noqa: E402
from tests.support.fake_ollama import FakeOllama, schema_answer  # noqa: E402

TICKERS = ["^GSPC", "^IXIC"]


def _prompt():
    values = {name: 0.0123 for name in (
        "close", "return_1d", "return_5d", "return_20d", "sma_20", "sma_50", "macd", "macd_signal",
        "rsi_14", "bb_percent_b", "realised_vol_20d", "volume_ratio_20d", "atr_pct",
        "f1", "f1_lo", "f1_hi", "f5", "f5_lo", "f5_hi", "f20", "f20_lo", "f20_hi")}
    return render("analysis", "^GSPC", dt.date(2018, 12, 31), values | {"volatility_model": "garch_t"})


def client_overhead(calls: int) -> dict:
    with FakeOllama() as fake:
        fake.reply_json = schema_answer
        prompt = _prompt()
        client = LLMClient(OllamaSettings(host=fake.host, models=DEFAULT_MODELS))
        payload = {"model": DEFAULT_MODELS["analysis"], "stream": False,
                   "messages": [{"role": "system", "content": prompt.system}, {"role": "user", "content": prompt.user}],
                   "format": MarketAnalysis.model_json_schema(), "options": client.settings.options(MarketAnalysis),
                   "keep_alive": "10m"}
        client.ask("analysis", "^GSPC", dt.date(2018, 12, 31), prompt, MarketAnalysis, {})  # probe + warm-up
        with httpx.Client(base_url=fake.host, timeout=10) as raw:
            raw.post("/api/chat", json=payload).json()
            baseline, ours = [], []
            for _ in range(calls):  # interleaved, so drift on a shared machine hits both alike
                began = time.perf_counter()
                json.loads(raw.post("/api/chat", json=payload).content)
                baseline.append(time.perf_counter() - began)
                began = time.perf_counter()
                call = client.ask("analysis", "^GSPC", dt.date(2018, 12, 31), prompt, MarketAnalysis, {})
                ours.append(time.perf_counter() - began)
                assert call.source == "ollama", call.error
    base_ms, ours_ms = statistics.median(baseline) * 1e3, statistics.median(ours) * 1e3
    return {"baseline_ms": base_ms, "client_ms": ours_ms, "overhead_ms": ours_ms - base_ms, "ratio": ours_ms / base_ms}


DEMO_END = "2018-12-31"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
OLD_DECODE_TOKENS_PER_SECOND = 15.0  # the old system's 7-14B models on CPU
STAGE_SQL = """
SELECT stage,
       count(*) AS rows,
       count(*) FILTER (WHERE attempts > 0) AS requests,
       count(*) FILTER (WHERE attempts > 0 AND llm_outcome = 'ok') AS valid,
       count(*) FILTER (WHERE done_reason = 'length') AS truncated,
       count(*) FILTER (WHERE llm_source = 'skipped') AS skipped,
       median(prompt_tokens) AS prompt_median, max(prompt_tokens) AS prompt_max,
       median(completion_tokens) AS completion_median, max(completion_tokens) AS completion_max,
       max(num_predict) AS cap,
       quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms, max(latency_ms) AS max_ms,
       median(tokens_per_second) AS decode_tps, median(prompt_tokens_per_second) AS prefill_tps,
       quantile_cont(latency_ms - eval_duration_ms + 1000.0 * completion_tokens / $old, 0.95) AS projected_p95_ms
FROM llm_calls GROUP BY stage ORDER BY CASE stage WHEN 'analysis' THEN 1 WHEN 'signal' THEN 2 ELSE 3 END
"""


def real_model_run(host: str | None, sessions: int) -> dict:
    """The demo's LLM stages twice against a real model; the first run's llm_calls and the second's requests."""
    import os

    from dagster import AssetKey, DagsterInstance

    import duckdb
    from pm_assets.partitions import range_tags
    from pm_domain import calendar, settings
    from pm_resources.store import query
    from tests.support.real_ollama import MODEL, engine_installed, real_ollama

    if host is None and not engine_installed():
        raise SystemExit("the real model needs the llm extra: make install-llm (compiles llama.cpp once), "
                         "or pass --ollama-host URL")
    end = dt.date.fromisoformat(DEMO_END)
    first_llm = calendar.shift_trading_days(end, -(sessions - 1)).isoformat()
    first_features = calendar.shift_trading_days(end, -(sessions + 59)).isoformat()
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        if host is None:
            server = stack.enter_context(real_ollama())
            host = server.host
            os.environ.update({"PM_LLM_ANALYSIS_MODEL": MODEL, "PM_LLM_SIGNAL_MODEL": MODEL, "PM_LLM_RISK_MODEL": MODEL})
            count = server.requests
        else:
            count = None
        os.environ.update({"PM_PRICE_SOURCE": "sample", "PM_DUCKDB_PATH": str(Path(folder) / "bench.duckdb"),
                           "OLLAMA_HOST": host, "PM_LLM_MODE": "ollama"})
        from pm_jobs.definitions import defs  # its resources read the environment set just above

        instance = stack.enter_context(DagsterInstance.ephemeral())
        instance.add_dynamic_partitions("tickers", TICKERS)
        job = defs.resolve_implicit_global_asset_job_def()

        def run(assets, start, config=None):
            began = time.perf_counter()
            result = job.execute_in_process(instance=instance, asset_selection=[AssetKey(a) for a in assets],
                                            tags=range_tags(TICKERS, start, DEMO_END), run_config=QUIET | (config or {}))
            assert result.success
            return time.perf_counter() - began

        run(["prices"], settings.start_date().isoformat())
        run(["features", "ts_forecasts"], first_features)
        stages = ["llm_analysis", "llm_signals", "risk_assessments"]
        before = count() if count else None
        first_seconds = run(stages, first_llm)
        first_requests = count() - before if count else None
        with duckdb.connect(os.environ["PM_DUCKDB_PATH"], read_only=True) as conn:
            table = query(conn, STAGE_SQL.replace("$old", str(OLD_DECODE_TOKENS_PER_SECOND)))
        before = count() if count else None
        second_seconds = run(stages, first_llm)
        with duckdb.connect(os.environ["PM_DUCKDB_PATH"], read_only=True) as conn:
            client_requests = query(conn, "SELECT coalesce(sum(attempts), 0) AS n FROM llm_calls")["n"][0]
        second_requests = count() - before if count else client_requests
        # The signal schema on every session, as if HOLD proposals were asked: what skipping saves.
        hold_seconds = run(["llm_signals"], first_llm, {"ops": {"llm_signals": {"config": {"ask_llm_on_hold": True}}}})
        with duckdb.connect(os.environ["PM_DUCKDB_PATH"], read_only=True) as conn:
            asked_on_hold = query(conn, STAGE_SQL.replace("$old", str(OLD_DECODE_TOKENS_PER_SECOND)))
        asked_on_hold = asked_on_hold.filter(asked_on_hold["stage"] == "signal").with_columns(
            stage=pl.lit("signal, HOLD asked too"))
        table = pl.concat([table, asked_on_hold])
    return {"hold_seconds": hold_seconds, "host": host, "table": table, "first_seconds": first_seconds, "first_requests": first_requests,
            "second_seconds": second_seconds, "second_requests": second_requests, "counted_by": "server" if count else "client",
            "sessions": sessions}


def print_real_model(result: dict) -> bool:
    table = result["table"]
    print(f"\nthe demo's LLM stages against a real model at {result['host']} ({len(TICKERS)} tickers x "
          f"{result['sessions']} sessions, HOLD proposals not asked), first run {result['first_seconds']:.0f} s:")
    print("| stage | rows | requests | valid | cut at cap | not asked (HOLD) | prompt tokens median / max | "
          "completion tokens median / max (cap) | latency p50 / p95 / max ms | decode tok/s | prefill tok/s | "
          "p95 at 15 tok/s decode |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for r in table.iter_rows(named=True):
        share = r["valid"] / r["requests"] if r["requests"] else float("nan")
        ok &= r["requests"] == 0 or (share >= 0.95 and r["truncated"] == 0 and r["p95_ms"] < 5000)

        def n(value, digits=0):
            return "-" if value is None else f"{value:,.{digits}f}"
        print(f"| {r['stage']} | {r['rows']} | {r['requests']} | {r['valid']}/{r['requests']} ({share:.0%}) | "
              f"{r['truncated']} | {r['skipped']} | {n(r['prompt_median'])} / {n(r['prompt_max'])} | "
              f"{n(r['completion_median'])} / {n(r['completion_max'])} ({r['cap']}) | "
              f"{n(r['p50_ms'])} / {n(r['p95_ms'])} / {n(r['max_ms'])} | {n(r['decode_tps'], 1)} | "
              f"{n(r['prefill_tps'])} | {n(r['projected_p95_ms'])} ms |")
    print(f"(the last row asks the signal model about HOLD proposals too, {result['hold_seconds']:.0f} s: "
          "the requests the default saves, and the signal schema measured on every session)")
    print(f"targets: >= 95% valid, no reply cut at its cap, p95 < 5,000 ms per call: {'met' if ok else 'NOT MET'}")
    first = f"; the server counted {result['first_requests']} in the first run" if result["first_requests"] is not None else ""
    print(f"cache: the same run again made {result['second_requests']} request(s) (counted by the "
          f"{result['counted_by']}{first}) in {result['second_seconds']:.1f} s (target 0)")
    return ok and result["second_requests"] == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="timed calls for the overhead measure")
    parser.add_argument("--sessions", type=int, default=60, help="sessions per ticker for the real-model run")
    parser.add_argument("--ollama-host", default=None,
                        help="a real Ollama instead of the bundled Gemma 3 270M server (models from PM_LLM_*_MODEL)")
    args = parser.parse_args()

    overhead = client_overhead(args.calls)
    print(f"client overhead, median of {args.calls} calls against the instant fake server:")
    print(f"  bare httpx POST + JSON decode   {overhead['baseline_ms']:.2f} ms")
    print(f"  LLMClient.ask (full path)       {overhead['client_ms']:.2f} ms   "
          f"ratio {overhead['ratio']:.2f}x, overhead {overhead['overhead_ms']:.2f} ms per call "
          f"({'within' if overhead['overhead_ms'] < 5 else 'OVER'} the 5 ms target)")
    real = print_real_model(real_model_run(args.ollama_host, args.sessions))
    return 0 if real and overhead["overhead_ms"] < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
