"""The rows of a run that failed outside its steps (pm_sensors/run_failures.py)."""

from __future__ import annotations

import datetime as dt

from pm_sensors.run_failures import failure_rows, steps_lost_by_workers

# A run whose ts_forecasts step's Celery pool process was SIGKILLed, as dagster-celery reports it.
LOST = ("dagster._core.errors.DagsterSubprocessError: During celery execution errors occurred in workers:\n"
        "[ts_forecasts]: billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL) Job: 0.\n"
        "\nStack Trace:\n  File \"/x/dagster_celery/core_execution_loop.py\", line 1, in loop\n")


def test_a_step_lost_with_its_worker_is_named_with_the_workers_error():
    assert steps_lost_by_workers(LOST) == [
        ("ts_forecasts", "WorkerLostError", "Worker exited prematurely: signal 9 (SIGKILL) Job: 0.")]
    rows = failure_rows("r1", "__ASSET_JOB", {}, dt.datetime(2026, 12, 7), [], LOST, {"ts_forecasts"})
    assert rows.select("step", "asset", "error_class").row(0) == ("ts_forecasts", "ts_forecasts", "WorkerLostError")


def test_a_run_error_without_lost_steps_stays_one_run_row():
    rows = failure_rows("r1", "job", {}, dt.datetime(2026, 12, 7), [], "Execution of run failed.", set())
    assert rows.select("step", "error").row(0) == ("(run)", "Execution of run failed.")
