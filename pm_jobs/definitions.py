"""The one `Definitions` object that workspace.yaml loads."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import AssetSelection, Definitions, define_asset_job
from dagster_duckdb import DuckDBResource

from pm_assets import ALL_ASSETS
from pm_assets.partitions import daily_ticker_partitions
from pm_domain import settings
from pm_resources.ollama import ollama_from_env
from pm_resources.price_source import PriceSourceResource


def build_resources() -> dict:
    database = settings.duckdb_path()
    if database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    return {
        "duckdb": DuckDBResource(database=database),
        "price_source": PriceSourceResource(
            source=os.environ.get("PM_PRICE_SOURCE", "yfinance"),
            csv_dir=os.environ.get("PM_CSV_DIR"),
        ),
        "ollama": ollama_from_env(),
    }


research_job = define_asset_job(
    "daily_research",
    selection=AssetSelection.all() - AssetSelection.assets("portfolio_backtests"),
    partitions_def=daily_ticker_partitions,
    description="Every (date, ticker) stage for a tickers x dates range, one run per range "
    "(portfolio_backtests, partitioned by date alone, runs on its own).",
)

defs = Definitions(assets=ALL_ASSETS, resources=build_resources(), jobs=[research_job])
