"""llm_health: probe each configured Ollama server on an interval, store what it measured in the
`llm_health` table, and alert when it is slow, incomplete or down.

It replaces the old monitoring script. The alert is a WARNING in the sensor's tick log and a
tick reason starting with "ALERT" (Automation -> llm_health in the UI), and the row's `alert`
column. A server that does not answer is probed again after 2, 4, 8 ... intervals (at most an
hour), never more often: the cursor remembers the failures in a row and the next probe time.
"""

from __future__ import annotations

import json
import time

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor
from dagster_duckdb import DuckDBResource

from pm_domain import settings
from pm_domain.llm.health import HealthThresholds, health_rows, probe, probe_delay_seconds
from pm_resources.ollama import OllamaResource
from pm_resources.store import KeyedRows, upsert_rows

UNANSWERED = ("down", "error")


@sensor(
    name="llm_health",
    minimum_interval_seconds=settings.llm_health_interval_seconds(),
    default_status=DefaultSensorStatus.RUNNING,
    description="Probes Ollama (reachable, configured models present, one tiny timed generation), "
    "stores latency and tokens/s in llm_health, and alerts past the thresholds.",
)
def llm_health_sensor(context: SensorEvaluationContext, ollama: OllamaResource, duckdb: DuckDBResource):
    if ollama.mode == "fallback":
        return SkipReason("PM_LLM_MODE=fallback: Ollama is not used, so not probed")
    state = json.loads(context.cursor) if context.cursor else {"failures": 0, "next_probe_at": 0.0}
    now = time.time()
    if now < state["next_probe_at"]:
        return SkipReason(f"Ollama did not answer the last {state['failures']} probe(s); next probe in "
                          f"{state['next_probe_at'] - now:.0f} s")
    thresholds = HealthThresholds(ollama.max_latency_seconds, ollama.health_min_tokens_per_second)
    hosts = ollama.settings().hosts
    reports = [probe(host, ollama.models(), ollama.probe_model(), thresholds, keep_alive=ollama.keep_alive)
               for host in hosts]
    with duckdb.get_connection() as conn:
        upsert_rows(conn, KeyedRows("llm_health", health_rows(reports), ("checked_at", "host")))
    # Backing off is for when nothing answers; one live server of several is still probed every interval.
    failures = state["failures"] + 1 if all(r.status in UNANSWERED for r in reports) else 0
    interval = settings.llm_health_interval_seconds()
    # The sensor ticks every interval; the next probe waits out the rest of the backoff.
    cursor = json.dumps({"failures": failures, "next_probe_at": now + probe_delay_seconds(interval, failures) - interval})
    summary = "; ".join(f"{r.status} at {r.host} ({r.probe_model}): {r.detail}" for r in reports)
    if any(r.alert for r in reports):
        context.log.warning(f"ALERT llm_health {summary}")
        summary = f"ALERT {summary}"
    else:
        context.log.info(summary)
    return SensorResult(skip_reason=SkipReason(summary), cursor=cursor)
