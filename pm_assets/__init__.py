"""Assets and asset checks, one module per stage, plus the partitions definition."""

import warnings

from dagster import BetaWarning, PreviewWarning

# Single-run backfill policies and multi-partition mappings are beta in dagster 1.13; they are the
# documented way to run ranges in one run, chosen deliberately, so their notice is not repeated
# on every CLI call.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)

from pm_assets.backtests import backtests
from pm_assets.features import features
from pm_assets.llm_analysis import llm_analysis
from pm_assets.llm_signals import llm_signals
from pm_assets.memorization_probe import memorization_probe
from pm_assets.paper_book import paper_trading
from pm_assets.portfolio_backtests import portfolio_backtests
from pm_assets.prices import prices
from pm_assets.risk_assessments import risk_assessments
from pm_assets.signal_outcomes import signal_outcomes
from pm_assets.sql_models import sql_model_assets
from pm_assets.target_weights import target_weights
from pm_assets.ts_forecasts import ts_forecasts

ALL_ASSETS = [prices, features, ts_forecasts, llm_analysis, llm_signals, risk_assessments, signal_outcomes,
              backtests, portfolio_backtests, target_weights, paper_trading, memorization_probe]
# One asset per SQL model of dbt_like_sql/models (group `marts`, not partitioned).
SQL_ASSETS = sql_model_assets()

__all__ = ["ALL_ASSETS", "SQL_ASSETS", "backtests", "features", "llm_analysis", "llm_signals", "memorization_probe", "paper_trading", "portfolio_backtests", "prices", "risk_assessments", "signal_outcomes", "target_weights", "ts_forecasts"]
