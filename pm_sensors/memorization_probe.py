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

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from pm_jobs.jobs import memorization_job
from pm_resources.ollama import OllamaResource
from pm_sensors.signal_validation import TRIGGER_TAG, new_dates_of, signal_validation_sensor

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
    watched = new_dates_of(context, WATCHED)
    if isinstance(watched, SensorResult):
        return watched
    new_dates, cursor = watched
    latest = max(new_dates)
    context.log.info(f"new prices up to {latest}: probing the configured models again")
    return SensorResult(run_requests=[RunRequest(run_key=f"memorization_probe:{latest}", job_name=memorization_job.name,
                                                 tags={TRIGGER_TAG: "memorization_probe"})], cursor=cursor)
