"""Jobs: the research stages every night, and the evaluation the signal_validation sensor runs."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from pm_assets.partitions import daily_ticker_partitions, trading_day_partitions

# No executor here: each job executes where the Definitions' executor says (pm_jobs/executors.py).
EVALUATION_GROUP = "evaluation"
MARTS_GROUP = "marts"
PAPER_GROUP = "paper"

research_job = define_asset_job(
    "daily_research",
    selection=AssetSelection.all() - AssetSelection.groups(EVALUATION_GROUP, MARTS_GROUP, PAPER_GROUP),
    partitions_def=daily_ticker_partitions,
    description="prices -> features -> ts_forecasts -> llm_analysis -> llm_signals -> risk_assessments "
    "for a tickers x dates range in one run (what the nightly schedule launches). signal_outcomes, "
    "backtests and portfolio_backtests follow from the signal_validation sensor as their windows complete; "
    "the SQL marts refresh after them (marts_refresh); the paper book follows once every ticker's "
    "risk_assessments of the date is in (paper_trading sensor).",
)

signal_evaluation_job = define_asset_job(
    "signal_evaluation",
    selection=AssetSelection.assets("signal_outcomes", "backtests"),
    partitions_def=daily_ticker_partitions,
    description="signal_outcomes and backtests for a tickers x dates range (the signal_validation sensor "
    "launches it for the windows that just completed).",
)

# Not partitioned, so not part of signal_evaluation: the probe samples the whole price history.
memorization_job = define_asset_job(
    "memorization_evaluation",
    selection=AssetSelection.assets("memorization_probe"),
    description="memorization_probe: each configured model asked the direction of past moves from the ticker and "
    "date alone (the memorization_probe sensor launches it when new prices land; launch it here on demand).",
)

portfolio_job = define_asset_job(
    "portfolio_book",
    selection=AssetSelection.assets("portfolio_backtests"),
    partitions_def=trading_day_partitions,
    description="portfolio_backtests for a range of dates (the signal_validation sensor launches it once "
    "every ticker's backtest of a date is in).",
)

paper_job = define_asset_job(
    "nightly_paper",
    selection=AssetSelection.groups(PAPER_GROUP),
    partitions_def=trading_day_partitions,
    description="target_weights, then the paper book's step (paper_fills -> paper_book -> paper_orders) for a range "
    "of dates: the fills at each date's open of the orders placed the session before, the book at its close, and "
    "the orders for the next open (the paper_trading sensor launches it each night after the research run).",
)
