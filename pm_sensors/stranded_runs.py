"""Frees the pool slots of runs whose processes are gone.

A run killed outright (SIGKILL, OOM killer, a closed terminal) keeps its slot in the `duckdb` or
`ollama` pool and still says STARTED: with a pool limit of 1 every later step of that pool waits
for ever. Dagster's run monitoring cannot see this for the runs this project makes (in-process
`pm materialize`, `dagster asset materialize`, the default run launcher: none reports worker
health), so this sensor looks for itself: a run that holds a slot is dead when no process that
wrote its events is alive on this machine. It is then marked failed, saying why, and its slots
are freed. Runs that already ended but still hold slots have them freed too.

It assumes the runs execute on the machine the daemon runs on, as they must here: every run
process opens the same local DuckDB file.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from pm_assets.dagster_compat import free_pool_slots, mark_run_failed, pool_slot_usage, run_events

CHECK_EVERY_SECONDS = 30
RELEASED_BY_SENSOR = "released by the stranded_runs sensor: none of its processes is alive (killed?)"


def release(instance: DagsterInstance, run_id: str, why: str) -> str:
    """Mark the run failed (when it still says it is running) and free its pool slots; its rows
    are untouched (a killed write never commits)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        free_pool_slots(instance, run_id)
        return f"run {run_id} (deleted): its pool slots freed"
    status = run.status.value
    if not run.is_finished:
        mark_run_failed(instance, run, why)
    free_pool_slots(instance, run_id)
    return (f"run {run_id} ({status}): its pool slots freed" if run.is_finished
            else f"run {run_id} ({status}) marked failed and its pool slots freed")


def slot_holders(instance: DagsterInstance) -> set[str]:
    return {run_id for usage in pool_slot_usage(instance) for run_id in usage.holders}


def run_processes(instance: DagsterInstance, run_id: str) -> dict[int, float]:
    """The processes that wrote the run's start events (the run's own and each step's): pid ->
    the earliest time it wrote one."""
    started: dict[int, float] = {}
    kinds = {DagsterEventType.RUN_START, DagsterEventType.STEP_WORKER_STARTED, DagsterEventType.STEP_START}
    for entry in run_events(instance, run_id, kinds):
        pid = entry.dagster_event.pid if entry.dagster_event else None
        if pid is not None:
            started[pid] = min(started.get(pid, entry.timestamp), entry.timestamp)
    return started


def process_alive(pid: int, wrote_at: float) -> bool:
    """Whether `pid` is alive and is the process that wrote an event at `wrote_at` (not a later
    process that reused the number: it would have started after the event)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    started = process_start_time(pid)
    return started is None or started <= wrote_at + 1.0


def process_start_time(pid: int) -> float | None:
    """When `pid` started (Unix time), from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError, StopIteration):
        return None


def release_stranded(instance: DagsterInstance) -> list[str]:
    """Free the slots of every slot-holding run that has ended or whose processes are all gone."""
    released = []
    for run_id in sorted(slot_holders(instance)):
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            processes = run_processes(instance, run_id)
            if not processes or any(process_alive(pid, at) for pid, at in processes.items()):
                continue  # still starting (no pid yet), or alive
        released.append(release(instance, run_id, RELEASED_BY_SENSOR))
    return released


@sensor(
    name="stranded_runs",
    minimum_interval_seconds=CHECK_EVERY_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description="Frees the pool slots (duckdb, ollama) of runs whose processes were killed, marking them failed, "
    "so later steps of the pool do not wait for ever.",
)
def stranded_runs_sensor(context: SensorEvaluationContext):
    released = release_stranded(context.instance)
    for line in released:
        context.log.warning(line)
    return SkipReason(f"released {len(released)} run(s): " + "; ".join(released) if released
                      else "no stranded run holds a pool slot")
