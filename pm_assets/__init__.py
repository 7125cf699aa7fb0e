"""Assets and asset checks, one module per stage, plus the partitions definition."""

import warnings

from dagster import BetaWarning, PreviewWarning

# Single-run backfill policies and multi-partition mappings are beta in dagster 1.13; they are the
# documented way to run ranges in one run, chosen deliberately, so their notice is not repeated
# on every CLI call.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

from pm_assets.features import features
from pm_assets.llm_analysis import llm_analysis
from pm_assets.llm_signals import llm_signals
from pm_assets.prices import prices
from pm_assets.risk_assessments import risk_assessments
from pm_assets.ts_forecasts import ts_forecasts

ALL_ASSETS = [prices, features, ts_forecasts, llm_analysis, llm_signals, risk_assessments]

__all__ = ["ALL_ASSETS", "features", "llm_analysis", "llm_signals", "prices", "risk_assessments", "ts_forecasts"]
