"""Is the Ollama server fit to serve the LLM stages? One probe, judged against thresholds.

A probe lists the server's models (reachable? are the configured models there?) and asks one
model for a tiny, fixed generation. Latency is Ollama's own `total_duration` of that request
(model load included: a model that had to be loaded again is slow once, and `load_ms` says so);
throughput is `eval_count / eval_duration`, generated tokens per second of generation. Both come
from the server's counters, never from wall time, which would also count the network and Python.

Statuses: `healthy`; `slow` (latency over the limit, throughput under it, or no reply within the
probe timeout); `model_missing` (a configured model is not on the server); `error` (the server
answered the generation with an HTTP error or something that is not Ollama's reply); `down` (no
connection). Anything but `healthy` is an alert.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import httpx
import ollama
import polars as pl

STATUSES = ("healthy", "slow", "model_missing", "error", "down")
PROBE_PROMPT = "Reply with the single word OK."
PROBE_TOKENS = 8  # enough to measure throughput, cheap enough to run every few minutes

HEALTH_SCHEMA = {
    "checked_at": pl.Datetime("us"), "host": pl.String, "probe_model": pl.String, "status": pl.String,
    "alert": pl.Boolean, "reachable": pl.Boolean, "models_missing": pl.String, "latency_ms": pl.Float64,
    "load_ms": pl.Float64, "tokens_per_second": pl.Float64, "eval_count": pl.Int64, "wall_ms": pl.Float64,
    "max_latency_seconds": pl.Float64, "min_tokens_per_second": pl.Float64, "detail": pl.String,
}


@dataclass(frozen=True)
class HealthThresholds:
    max_latency_seconds: float = 5.0
    min_tokens_per_second: float = 5.0

    def __post_init__(self) -> None:
        if self.max_latency_seconds <= 0 or self.min_tokens_per_second < 0:
            raise ValueError(f"health thresholds must be positive, got {self}")


@dataclass(frozen=True)
class HealthReport:
    checked_at: dt.datetime
    host: str
    probe_model: str
    status: str
    reachable: bool
    models_missing: str | None
    latency_ms: float | None
    load_ms: float | None
    tokens_per_second: float | None
    eval_count: int | None
    wall_ms: float | None
    max_latency_seconds: float
    min_tokens_per_second: float
    detail: str

    @property
    def alert(self) -> bool:
        return self.status != "healthy"


def judge(latency_ms: float | None, tokens_per_second: float | None, thresholds: HealthThresholds) -> tuple[str, str]:
    """`healthy` or `slow`, and the measured values against the limits."""
    problems = []
    if latency_ms is not None and latency_ms > thresholds.max_latency_seconds * 1e3:
        problems.append(f"latency {latency_ms / 1e3:.2f} s > {thresholds.max_latency_seconds:g} s")
    if tokens_per_second is not None and tokens_per_second < thresholds.min_tokens_per_second:
        problems.append(f"throughput {tokens_per_second:.1f} tokens/s < {thresholds.min_tokens_per_second:g}")
    if latency_ms is None or tokens_per_second is None:
        problems.append("the reply carried no timing counters")
    measured = (f"latency {latency_ms / 1e3:.2f} s, {tokens_per_second:.1f} tokens/s"
                if latency_ms is not None and tokens_per_second is not None else "")
    return ("slow", "; ".join(problems)) if problems else ("healthy", measured)


def probe(host: str, models: Sequence[str], probe_model: str, thresholds: HealthThresholds, *,
          list_timeout_seconds: float = 3.0, generate_timeout_seconds: float = 30.0,
          keep_alive: str = "10m") -> HealthReport:
    """Probe the server once: list models, then one tiny generation on `probe_model`."""
    checked_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)

    def report(status: str, detail: str, **measured) -> HealthReport:
        values = {"reachable": True, "models_missing": None, "latency_ms": None, "load_ms": None,
                  "tokens_per_second": None, "eval_count": None, "wall_ms": None, **measured}
        return HealthReport(checked_at, host, probe_model, status, max_latency_seconds=thresholds.max_latency_seconds,
                            min_tokens_per_second=thresholds.min_tokens_per_second, detail=detail[:500], **values)

    try:
        listing = ollama.Client(host=host, timeout=list_timeout_seconds).list()
    except (ConnectionError, httpx.HTTPError, ollama.ResponseError, ValueError) as exc:
        return report("down", f"no answer from {host}: {type(exc).__name__}: {exc}", reachable=False)
    present = {m.model for m in listing.models if m.model}
    missing = sorted({m for m in models if m not in present})
    if probe_model in missing:
        return report("model_missing", f"model(s) {', '.join(missing)} not on {host} (ollama pull {missing[0]})",
                      models_missing=", ".join(missing))
    began = time.perf_counter()
    try:
        reply = ollama.Client(host=host, timeout=generate_timeout_seconds).chat(
            model=probe_model, messages=[{"role": "user", "content": PROBE_PROMPT}],
            options={"temperature": 0.0, "seed": 42, "num_predict": PROBE_TOKENS},
            keep_alive=keep_alive, stream=False)
    except httpx.TimeoutException:
        return report("slow", f"no reply from {probe_model} within {generate_timeout_seconds:g} s",
                      wall_ms=(time.perf_counter() - began) * 1e3, models_missing=", ".join(missing) or None)
    except (ConnectionError, httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        return report("down", f"connection lost during the generation: {type(exc).__name__}: {exc}", reachable=False)
    except ollama.ResponseError as exc:
        return report("error", f"HTTP {exc.status_code} from {probe_model}: {exc.error}",
                      models_missing=", ".join(missing) or None)
    except (ValueError, httpx.HTTPError) as exc:
        return report("error", f"not an Ollama reply: {type(exc).__name__}: {exc}")
    wall_ms = (time.perf_counter() - began) * 1e3
    latency_ms = reply.total_duration / 1e6 if reply.total_duration else None
    tokens_per_second = reply.eval_count / (reply.eval_duration / 1e9) if reply.eval_count and reply.eval_duration else None
    status, detail = judge(latency_ms, tokens_per_second, thresholds)
    if missing:  # the probe model answered, but another configured model is not there
        status, detail = "model_missing", f"model(s) {', '.join(missing)} not on {host}; {detail}"
    return report(status, detail, models_missing=", ".join(missing) or None, latency_ms=latency_ms,
                  load_ms=reply.load_duration / 1e6 if reply.load_duration else None,
                  tokens_per_second=tokens_per_second, eval_count=reply.eval_count, wall_ms=wall_ms)


def health_rows(reports: Sequence[HealthReport]) -> pl.DataFrame:
    return pl.DataFrame([{**asdict(r), "alert": r.alert} for r in reports], schema=HEALTH_SCHEMA)


def probe_delay_seconds(interval_seconds: float, failures_in_a_row: int, max_delay_seconds: float = 3600.0) -> float:
    """Seconds until the next probe: the interval while the server answers, then doubling with
    each failed probe in a row (capped), so a down server is not hammered."""
    if failures_in_a_row <= 0:
        return interval_seconds
    return min(interval_seconds * 2 ** (failures_in_a_row - 1), max(max_delay_seconds, interval_seconds))
