"""The one `Definitions` object that workspace.yaml loads: the assets, jobs, schedules and sensors,
with the resources of the environment's settings (pm_jobs/resources.py chooses them)."""

from __future__ import annotations

from dagster import Definitions

from pm_assets import ALL_ASSETS, SQL_ASSETS
from pm_domain import settings
from pm_jobs.executors import executor_for
from pm_jobs.jobs import memorization_job, paper_job, portfolio_job, research_job, signal_evaluation_job
from pm_jobs.resources import resources_for
from pm_jobs.schedules import nightly_research_schedule
from pm_sensors import ALL_SENSORS


def definitions_for(config: settings.Settings) -> Definitions:
    """The code location with the resources `config` chooses. What shapes the graph itself (PM_START_DATE,
    PM_FORECAST_FIT_WINDOW, PM_NIGHTLY_*, PM_PAPER_WEIGHTS) was read from the environment when pm_assets,
    pm_jobs.schedules and pm_sensors were imported."""
    return Definitions(
        assets=[*ALL_ASSETS, *SQL_ASSETS],
        resources=resources_for(config),
        jobs=[research_job, signal_evaluation_job, portfolio_job, paper_job, memorization_job],
        schedules=[nightly_research_schedule],
        sensors=ALL_SENSORS,
        executor=executor_for(config),
    )


defs = definitions_for(settings.current())

