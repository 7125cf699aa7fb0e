"""The one `Definitions` object that workspace.yaml loads."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions

from pm_assets import ALL_ASSETS, SQL_ASSETS
from pm_domain import settings
from pm_jobs.jobs import memorization_job, paper_job, portfolio_job, research_job, signal_evaluation_job
from pm_jobs.schedules import nightly_research_schedule
from pm_resources.broker import broker_from_env
from pm_resources.database import ClosingDuckDBResource
from pm_resources.ollama import ollama_from_env
from pm_resources.price_source import PriceSourceResource
from pm_sensors import ALL_SENSORS


def build_resources() -> dict:
    database = settings.duckdb_path()
    if database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return {
        "duckdb": ClosingDuckDBResource(database=database),
        "price_source": PriceSourceResource(
            source=os.environ.get("PM_PRICE_SOURCE", "yfinance"),
            csv_dir=os.environ.get("PM_CSV_DIR"),
        ),
        "ollama": ollama_from_env(),
        "broker": broker_from_env(),
    }


defs = Definitions(
    assets=[*ALL_ASSETS, *SQL_ASSETS],
    resources=build_resources(),
    jobs=[research_job, signal_evaluation_job, portfolio_job, paper_job, memorization_job],
    schedules=[nightly_research_schedule],
    sensors=ALL_SENSORS,
)
