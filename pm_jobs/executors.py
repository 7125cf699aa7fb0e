"""Where a run's steps execute, chosen in one place from the settings.

- One machine (PM_CELERY_BROKER unset): the automated jobs run their steps in the run's own process
  (their stages form a chain that the `duckdb` pool serialises anyway, and a process per step cost
  3-5 s of imports each, measured by benchmarks/bench_scale.py's nightly part, more than a night's
  own work for a small universe); a run from the UI or `dagster asset materialize` keeps Dagster's
  default, a process per step.
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


def automated_jobs_executor(config: Settings) -> ExecutorDefinition:
    return celery_steps(config.celery_broker) if config.celery_broker else in_process_executor


def asset_jobs_executor(config: Settings) -> ExecutorDefinition | None:
    """None: Dagster's default (a process per step) for the UI's and the CLI's asset runs."""
    return celery_steps(config.celery_broker) if config.celery_broker else None
