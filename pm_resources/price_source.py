"""The price source as a Dagster resource; the fetching itself lives in pm_domain.price_sources."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from dagster import ConfigurableResource
from pydantic import Field, field_validator

from pm_domain.price_sources import SOURCES, fetch_prices


class PriceSourceResource(ConfigurableResource):
    """Where daily prices come from: yfinance, sample, csv or synthetic."""

    source: str = Field(
        default="yfinance",
        description="yfinance (online), sample (S&P 500 and NASDAQ 1999-2018 from arch), csv "
        "(a folder of <TICKER>.csv files) or synthetic (deterministic, for scale tests)",
    )
    csv_dir: str | None = Field(default=None, description="folder of <TICKER>.csv files")

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in SOURCES:
            raise ValueError(f"unknown price source {value!r}; choose one of {SOURCES}")
        return value

    def fetch(self, tickers: Sequence[str], dates: Sequence[dt.date]) -> pl.DataFrame:
        return fetch_prices(
            self.source, tickers, dates, csv_dir=Path(self.csv_dir) if self.csv_dir else None
        )
