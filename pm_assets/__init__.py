"""Assets and asset checks, one module per stage, plus the partitions definition."""

import warnings

from dagster import BetaWarning, PreviewWarning

# Single-run backfill policies and multi-partition mappings are beta in dagster 1.13; they are the
# documented way to run ranges in one run, chosen deliberately, so their notice is not repeated
# on every CLI call.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

from pm_assets.features import features
from pm_assets.prices import prices
from pm_assets.ts_forecasts import ts_forecasts

ALL_ASSETS = [prices, features, ts_forecasts]

__all__ = ["ALL_ASSETS", "features", "prices", "ts_forecasts"]
