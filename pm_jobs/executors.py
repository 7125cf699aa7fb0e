"""Where a run's steps execute, chosen in one place from the settings.

- One machine (PM_CELERY_BROKER unset): every run executes its steps in the run's own process, the
  automated jobs' and the UI's and `dagster asset materialize`'s asset runs alike. Every stage
  writes DuckDB under the `duckdb` pool (one step at a time), so Dagster's default of a process
  per step bought no parallelism and cost each step a process start that imports the project:
  a one-partition prices+features run through `dagster asset materialize` took 24.1 s that way and
  11.9 s in the run's process (docs/scale.md "Process start"); a 5-ticker night, 38 s against 20 s.
- The cluster (PM_CELERY_BROKER set, as `pm cluster start` writes it): every job's steps are Celery
  tasks that the cluster's workers execute (dagster-celery's `celery_executor`, docs/deploy.md). The
  run's own process only plans and waits; the pools still bound what computes at once, since
  dagster-celery takes a pool's slot before it submits a step.
"""

from __future__ import annotations

from dagster import ExecutorDefinition, in_process_executor

from pm_domain.settings import Settings


def celery_steps(broker: str) -> ExecutorDefinition:
    """dagster-celery's executor on `broker`, which is also the results backend (one Redis)."""
    from dagster_celery import celery_executor  # celery and kombu: only on a cluster

    return celery_executor.configured({"broker": broker, "backend": broker}, name="celery_steps")


def executor_for(config: Settings) -> ExecutorDefinition:
    return celery_steps(config.celery_broker) if config.celery_broker else in_process_executor
