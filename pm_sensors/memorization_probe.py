"""memorization_probe: when new prices land, probe the configured models again, on the evaluation
sensor's cadence (the same interval as signal_validation and the same trigger, new `prices`).

New prices give new (ticker, session) pairs a known outcome, so the probe's sample can change;
nothing else can (a new model or prompt misses the cache on its own next run). One run per
latest new price date (the run key), however many ticks or runs brought that date's prices. The
probe draws each pair by a hash, so a re-run keeps all but the few new pairs that rank into the
sample, and the cache answers the rest: after the first run, a night costs a handful of calls.

Its own sensor rather than a branch of signal_validation: that one requests partitioned runs by
rectangles of tickers x dates, the probe is one unpartitioned run; and the probe holds the
`ollama` pool while it asks, so it can be stopped alone (Automation in the UI) and run on demand.
"""

from __future__ import annotations

import json

from dagster import AssetKey, AssetRecordsFilter, DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from pm_jobs.jobs import memorization_job
from pm_resources.ollama import OllamaResource
from pm_sensors.signal_validation import MAX_EVENTS_PER_TICK, TRIGGER_TAG, parse_key, signal_validation_sensor

WATCHED = "prices"


@sensor(
    name="memorization_probe",
    job=memorization_job,
    minimum_interval_seconds=signal_validation_sensor.minimum_interval_seconds,
    default_status=DefaultSensorStatus.RUNNING,
    description="When new prices land, runs memorization_probe: each configured model asked the direction of "
    "past moves from the ticker and date alone (once per latest price date; cached replies are not asked again).",
)
def memorization_probe_sensor(context: SensorEvaluationContext, ollama: OllamaResource):
    if ollama.mode == "fallback":
        return SkipReason("PM_LLM_MODE=fallback: no model answers, so there is nothing to probe")
    instance = context.instance
    if context.cursor is None:
        # Start from now, as signal_validation does: the history is probed by the first new prices.
        records = instance.fetch_materializations(AssetKey(WATCHED), limit=1).records
        start = records[0].storage_id if records else 0
        return SensorResult(skip_reason=SkipReason(f"started; watching {WATCHED} events after storage id {start}"),
                            cursor=json.dumps({WATCHED: start}))
    after = json.loads(context.cursor)[WATCHED]
    result = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(WATCHED), after_storage_id=after),
                                             limit=MAX_EVENTS_PER_TICK, ascending=True)
    cursor = json.dumps({WATCHED: result.records[-1].storage_id if result.records else after})
    new_dates = {parse_key(r.partition_key)[0] for r in result.records if r.partition_key}
    if not new_dates:
        return SensorResult(skip_reason=SkipReason(f"no new {WATCHED}"), cursor=cursor)
    latest = max(new_dates)
    context.log.info(f"new prices up to {latest}: probing the configured models again")
    return SensorResult(run_requests=[RunRequest(run_key=f"memorization_probe:{latest}", job_name=memorization_job.name,
                                                 tags={TRIGGER_TAG: "memorization_probe"})], cursor=cursor)
