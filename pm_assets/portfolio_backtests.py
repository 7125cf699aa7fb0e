"""`portfolio_backtests`: every ticker's signals as one book, per trading day, twice: equal weight
(each ticker's +1/-1/0 position at 1/N) and by the signals' position sizes."""

import time

import polars as pl
from dagster import AssetDep, AssetExecutionContext, AssetCheckSpec, MaterializeResult, MultiToSingleDimensionPartitionMapping, asset
from dagster_duckdb import DuckDBResource

from pm_assets.backtests import (
    INPUTS_COMPLETE_HELP,
    BacktestsConfig,
    backtest_metadata,
    insufficient_check,
    read_backtest_inputs,
)
from pm_assets.metadata import run_metadata
from pm_assets.partitions import TICKERS_PARTITIONS_NAME, UNIVERSE_ASSET_ARGS, universe_selection
from pm_domain.attribution import forecast_only_signals
from pm_domain.backtest import (
    PORTFOLIO_WEIGHTINGS,
    STRESS_EXTRA_DELAYS,
    backtest_with_attribution,
    clean_from_index,
    cutoff_note,
    portfolio_ledger,
    scored_calls,
    ticker_ledger,
    window_series,
    with_robust_verdicts,
)
from pm_domain.outcomes import signal_outcomes
from pm_domain.signals import SignalRules, kelly_name
from pm_resources.store import PartitionRows, write_partitions

SIZING_BY_WEIGHTING = {"equal": "unit", "position_size": "signal"}


@asset(
    **UNIVERSE_ASSET_ARGS,
    group_name="evaluation",
    # Computed after every ticker's backtest of the day, from the same signals and prices over
    # the trailing window (the per-ticker lookback is declared on `backtests`).
    deps=[AssetDep("backtests", partition_mapping=MultiToSingleDimensionPartitionMapping(partition_dimension_name="date"))],
    check_specs=[AssetCheckSpec("backtest_inputs_complete", asset="portfolio_backtests",
                                description=INPUTS_COMPLETE_HELP)],
    description="Per trading day: all tickers' signals as one book over the trailing window, "
    "weighting 'equal' (each ticker's unit position at 1/N of the book) and 'position_size' (the "
    f"signals' {kelly_name(SignalRules().kelly_share)} sizes, scaled down when they sum above 100%), against the "
    "equal-weight "
    "buy-and-hold of the same tickers; the same metrics, verdict, robust_verdict and LLM attribution "
    "as backtests.",
)
def portfolio_backtests(context: AssetExecutionContext, config: BacktestsConfig,
                        duckdb: DuckDBResource) -> MaterializeResult:
    began = time.perf_counter()
    selection = universe_selection(context.partition_keys, context.instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME))
    tickers, dates = selection.tickers, selection.dates
    rules = config.rules()
    grid, signals, prices = read_backtest_inputs(duckdb, list(tickers), selection, rules)
    frames, series = [], {}
    # The calls and their outcomes do not depend on the weighting: scored once, pooled in both books.
    twin_signals = forecast_only_signals(signals)
    calls = scored_calls(signal_outcomes(signals, prices), grid, rules.delay_sessions)
    twin_calls = scored_calls(signal_outcomes(twin_signals, prices), grid, rules.delay_sessions)
    for weighting in PORTFOLIO_WEIGHTINGS:
        sizing = SIZING_BY_WEIGHTING[weighting]
        # The book with the rules' delay (0) and with each stress's delay beyond it.
        books = {extra: portfolio_ledger(ticker_ledger(signals, prices, grid, sizing, rules.delay_sessions + extra),
                                         weighting) for extra in STRESS_EXTRA_DELAYS}
        book = books[0]
        twin_book = portfolio_ledger(ticker_ledger(twin_signals, prices, grid, sizing, rules.delay_sessions), weighting)
        rows = backtest_with_attribution(book, twin_book, calls, twin_calls, dates, rules,
                                         clean_from_index(signals, book["date"].to_list(), rules), cutoff_note(signals))
        frames.append(with_robust_verdicts(rows, books, dates, rules).with_columns(pl.lit(weighting).alias("weighting")))
        series[f"portfolio ({weighting})"] = window_series(book, selection.end, rules, twin_book)
    used = sorted(set(signals["ticker"].to_list()))
    rows = pl.concat(frames).with_columns(
        pl.lit(used, pl.List(pl.String)).alias("tickers"), pl.lit(rules.cost_bps).alias("cost_bps"),
        pl.lit(rules.as_json()).alias("rules"),
    ).select("date", "weighting", pl.exclude("date", "weighting"))
    with duckdb.get_connection() as conn:
        write_partitions(conn, tickers, dates, [PartitionRows("portfolio_backtests", rows, ("date", "weighting"))])
    context.log.info(f"wrote {rows.height} portfolio backtests over {len(dates)} date(s) and {len(used)} ticker(s) "
                     f"with signals: {', '.join(used) or 'none'}")
    return MaterializeResult(
        metadata=run_metadata(context, selection, rows, ["date", "weighting", "total_return", "sharpe", "max_drawdown", "verdict"], began=began)
        | backtest_metadata(context, rows, series, "weighting", [str(selection.end)]),
        check_results=[insufficient_check(rows, "portfolio_backtests", "weighting")],
    )
