"""`prices`: daily OHLCV plus adjusted close from the configured price source."""

import datetime as dt
import time

import polars as pl
from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    FreshnessPolicy,
    MaterializeResult,
    asset,
)
from dagster_duckdb import DuckDBResource

from pm_assets.metadata import check_results, run_metadata
from pm_assets.partitions import STAGE_ASSET_ARGS, decode_partition_keys
from pm_domain import calendar, settings
from pm_domain.quality import RULE_DESCRIPTIONS, price_rules
from pm_resources.price_source import PriceSourceResource
from pm_resources.store import read_rows, replace_partitions

PRICE_CHECKS = [
    "positive_prices", "high_is_highest", "low_is_lowest", "non_negative_volume",
    "unique_keys", "no_missing_trading_days",
]


class SessionNotClosedError(RuntimeError):
    """Prices were asked for a session that has not closed yet."""


# The nightly run starts at PM_NIGHTLY_TIME; prices is its first step, so two hours later the
# day's prices should be in. Dagster's cron policy knows weekdays, not exchange holidays: on a
# holiday evening prices show as late until the next session's nightly run.
FRESHNESS_GRACE = dt.timedelta(hours=2)


def prices_freshness_policy() -> FreshnessPolicy:
    """Materialized between the nightly time and two hours after it, every weekday."""
    nightly = dt.datetime.combine(dt.date(2024, 1, 1), settings.nightly_time())  # a Monday
    deadline = nightly + FRESHNESS_GRACE
    weekdays = "1-5" if deadline.date() == nightly.date() else "2-6"
    return FreshnessPolicy.cron(deadline_cron=f"{deadline.minute} {deadline.hour} * * {weekdays}",
                                lower_bound_delta=FRESHNESS_GRACE, timezone=settings.nightly_timezone())


@asset(
    **STAGE_ASSET_ARGS,
    group_name="market_data",
    freshness_policy=prices_freshness_policy(),
    check_specs=[AssetCheckSpec(name, asset="prices", blocking=True, description=RULE_DESCRIPTIONS[name])
                 for name in PRICE_CHECKS],
    description="Daily OHLCV and adjusted close per ticker and NYSE trading day, with the source "
    "name and ingestion time. One fetch and one write per run, whatever its range.",
)
def prices(
    context: AssetExecutionContext, duckdb: DuckDBResource, price_source: PriceSourceResource
) -> MaterializeResult:
    began = time.perf_counter()
    selection = decode_partition_keys(context.partition_keys)
    last_closed = calendar.last_closed_session(dt.datetime.now(dt.UTC))
    if selection.end > last_closed:
        raise SessionNotClosedError(
            f"prices for {selection.end} cannot be ingested before that session closes "
            f"(last closed session: {last_closed})"
        )
    context.log.info(f"fetching {selection.describe()} from source {price_source.source!r}")
    rows = price_source.fetch(selection.tickers, selection.dates).with_columns(
        pl.lit(dt.datetime.now(dt.UTC).replace(tzinfo=None)).alias("ingested_at")
    )
    with duckdb.get_connection() as conn:
        replace_partitions(conn, "prices", rows, selection.tickers, selection.dates)
        stored = read_rows(conn, "prices", selection.tickers, selection.end, selection.start)
    context.log.info(f"wrote {rows.height} price rows")
    metadata = run_metadata(
        context, selection, stored, ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"], began=began
    )
    metadata["source"] = price_source.source
    return MaterializeResult(
        metadata=metadata,
        check_results=check_results(
            price_rules(stored, selection.tickers, selection.dates), AssetCheckSeverity.ERROR
        ),
    )
