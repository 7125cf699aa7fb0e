"""`features`: technical indicators per ticker and trading day, from stored prices."""

import time

import polars as pl
from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    MaterializeResult,
    asset,
)
from dagster_duckdb import DuckDBResource

from pm_assets.inputs import require_partitions
from pm_assets.metadata import add_plot, check_results, last_date_keys, run_metadata
from pm_assets.partitions import (
    STAGE_ASSET_ARGS,
    PartitionSelection,
    decode_partition_keys,
    lookback_mapping,
)
from pm_domain.features import WARMUP_SESSIONS, compute_features
from pm_domain.plots import png_markdown, price_bands_png
from pm_domain.quality import RULE_DESCRIPTIONS, feature_rules
from pm_resources.store import read_rows, replace_partitions


# A ranged run's metadata is copied into each partition's materialization event, so the chart
# (~25 KB) is attached only to runs small enough for those copies to stay cheap.
PLOTTED_TICKERS = 2  # the plot draws the run's first tickers, one panel each


@asset(
    **STAGE_ASSET_ARGS,
    group_name="market_data",
    deps=[AssetDep("prices", partition_mapping=lookback_mapping(WARMUP_SESSIONS))],
    check_specs=[
        AssetCheckSpec("indicators_in_range", asset="features", blocking=True,
                       description=RULE_DESCRIPTIONS["indicators_in_range"]),
        AssetCheckSpec("warmed_up", asset="features", description=RULE_DESCRIPTIONS["warmed_up"]),
    ],
    description="SMA 20/50, EMA 12/26, MACD, RSI 14 (Wilder), ATR 14, Bollinger 20/2, realised "
    "volatility, volume ratio and returns. A value at date t reads prices up to t only; recursive "
    f"indicators start at the ticker's first stored price (the {WARMUP_SESSIONS}-session lookback "
    "declared here carries all but 1e-8 of their weight).",
)
def features(context: AssetExecutionContext, duckdb: DuckDBResource) -> MaterializeResult:
    began = time.perf_counter()
    selection = decode_partition_keys(context.partition_keys)
    with duckdb.get_connection() as conn:
        history = read_rows(conn, "prices", selection.tickers, selection.end)
    require_partitions(history, "prices", selection)
    context.log.info(f"computing features for {selection.describe()} from {history.height} price rows")
    all_features = compute_features(history)
    rows = all_features.filter(pl.col("date").is_in(list(selection.dates)))
    with duckdb.get_connection() as conn:
        replace_partitions(conn, "features", rows, selection.tickers, selection.dates)

    metadata = run_metadata(
        context, selection, rows, ["ticker", "date", "close", "sma_20", "sma_50", "rsi_14", "macd", "atr_14"], began=began
    )
    shown = list(selection.tickers[:PLOTTED_TICKERS])
    metadata |= add_plot(context, "plot", _plot_markdown(all_features, selection, shown), last_date_keys(selection, shown))
    outcomes = {outcome.name: outcome for outcome in feature_rules(rows)}
    return MaterializeResult(
        metadata=metadata,
        check_results=check_results([outcomes["indicators_in_range"]], AssetCheckSeverity.ERROR)
        + check_results([outcomes["warmed_up"]], AssetCheckSeverity.WARN),
    )


def _plot_markdown(all_features: pl.DataFrame, selection: PartitionSelection, tickers: list[str]) -> str:
    window = all_features.filter(pl.col("date").is_between(selection.start, selection.end))
    if window["date"].n_unique() < 60:  # give short runs (a nightly date) some context
        window = all_features.filter(pl.col("date") <= selection.end).group_by("ticker").tail(120)
    return png_markdown(price_bands_png(window, tickers), "price with SMA and Bollinger")
