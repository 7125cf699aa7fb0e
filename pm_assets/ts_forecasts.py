"""`ts_forecasts`: the time-series ensemble per ticker, trading day and horizon (ForecastConfig.horizons)."""

import datetime as dt
import time

import polars as pl
from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dagster_duckdb import DuckDBResource
from pydantic import Field

from pm_assets.inputs import MissingInputsError, require_partitions
from pm_assets.metadata import add_plot, check_results, last_date_keys, preview_markdown, run_metadata
from pm_assets.partitions import STAGE_ASSET_ARGS, PartitionSelection, decode_partition_keys, lookback_mapping
from pm_domain import calendar, settings
from pm_domain.forecasting.engine import (
    FITS_SCHEMA,
    MEAN_MODELS,
    ForecastConfig,
    default_workers,
    forecast_tickers,
    price_histories,
)
from pm_domain.forecasting.kept_fits import KeptFit
from pm_domain.plots import forecast_fan_png, png_markdown
from pm_domain.quality import RULE_DESCRIPTIONS, forecast_rules
from pm_resources.store import PartitionRows, RecentRows, query, read_rows, table_exists, write_partitions

FIT_WINDOW = settings.forecast_fit_window()
DEFAULT_FORECAST = ForecastConfig()
HORIZONS_TEXT = f"{', '.join(map(str, DEFAULT_FORECAST.horizons[:-1]))} and {DEFAULT_FORECAST.horizons[-1]}"
MAX_REFIT_EVERY = 60
# Declared with the largest refit interval the run config allows, so the lineage covers every read.
LOOKBACK_SESSIONS = ForecastConfig(fit_window=FIT_WINDOW, refit_every=MAX_REFIT_EVERY).lookback_sessions
KEY_COLUMNS = ("ticker", "date", "horizon")
FITS_TABLE = "ts_forecast_fits"
# Fits a later night can reuse lie within warm-up + refit interval sessions of the newest; in
# calendar days, with weekends and holidays, that is at most about 1.5 times as many.
KEEP_FITS_DAYS = round(1.5 * (DEFAULT_FORECAST.warmup_origins + MAX_REFIT_EVERY)) + 10
PLOT_HORIZON = 5
PLOTTED_TICKERS = 2  # the fan draws the run's first tickers, one panel each


class TsForecastsConfig(Config):
    refit_every: int = Field(default=DEFAULT_FORECAST.refit_every, ge=1, le=MAX_REFIT_EVERY, description=(
        "Refit model parameters every N sessions of a fixed calendar grid; in between, models "
        "only update their state. 1 refits every model on every date (the slow, naive path)."))
    sarimax_order: list[int] = Field(default=list(DEFAULT_FORECAST.sarimax_order), min_length=3, max_length=3,
                                     description="SARIMAX (p, d, q) on log prices, with a drift.")
    workers: int = Field(default=0, ge=0, le=64,
                         description="Processes over tickers; 0 uses every core (at most 8).")
    allow_short_history: bool = Field(default=False, description=(
        "Forecast tickers whose stored prices start later than the lookback needs (a new "
        "listing): their rows say how many sessions were used. Off, such a run fails and names "
        "the prices to backfill, so a date never silently gets a different forecast."))


@asset(
    **STAGE_ASSET_ARGS,
    group_name="forecasting",
    deps=[
        AssetDep("prices", partition_mapping=lookback_mapping(LOOKBACK_SESSIONS)),
        AssetDep("features"),
    ],
    check_specs=[
        AssetCheckSpec("ensemble_complete", asset="ts_forecasts", blocking=True,
                       description=RULE_DESCRIPTIONS["ensemble_complete"]),
        AssetCheckSpec("all_models_fitted", asset="ts_forecasts", description=RULE_DESCRIPTIONS["all_models_fitted"]),
    ],
    description=f"Forecast of the {HORIZONS_TEXT}-session log return per ticker and date: SARIMAX, "
    "SAMOSSA- and MSSA-RL-style SSA, random walk and drift, combined with weights from their "
    f"recent out-of-sample errors; {DEFAULT_FORECAST.interval_level:.0%} interval from GARCH(1,1)-t volatility "
    "(EWMA fallback, "
    f"labelled). Reads prices up to the date only ({LOOKBACK_SESSIONS} sessions back).",
)
def ts_forecasts(
    context: AssetExecutionContext, config: TsForecastsConfig, duckdb: DuckDBResource
) -> MaterializeResult:
    began = time.perf_counter()
    selection = decode_partition_keys(context.partition_keys)
    forecast_config = ForecastConfig(fit_window=FIT_WINDOW, refit_every=config.refit_every,
                                     sarimax_order=tuple(config.sarimax_order))
    first_needed = calendar.shift_trading_days(selection.start, -(forecast_config.lookback_sessions - 1))
    with duckdb.get_connection() as conn:
        prices = read_rows(conn, "prices", selection.tickers, selection.end, first_needed)
        features = read_rows(conn, "features", selection.tickers, selection.end, selection.start)
    require_partitions(prices, "prices", selection)
    require_partitions(features, "features", selection)
    if not config.allow_short_history:
        _require_lookback(prices, first_needed)

    with duckdb.get_connection() as conn:
        kept = read_kept_fits(conn, selection.tickers, first_needed, selection.end)
    context.log.info(
        f"forecasting {selection.describe()} from {prices.height} price rows "
        f"(refit every {forecast_config.refit_every} sessions, {sum(map(len, kept.values()))} kept fits)"
    )
    histories = price_histories(prices)
    forecasts = forecast_tickers(histories, selection.dates, calendar.session_numbers(selection.end), forecast_config,
                                 config.workers or default_workers(), progress=context.log.info, kept=kept)
    rows = forecasts.rows.join(
        features.select("ticker", "date", "realised_vol_20d"), on=["ticker", "date"], how="left"
    )
    with duckdb.get_connection() as conn:
        write_partitions(conn, selection.tickers, selection.dates,
                         [PartitionRows("ts_forecasts", rows, KEY_COLUMNS)],
                         recent_rows=[RecentRows(FITS_TABLE, forecasts.fits, ("ticker", "fit_date"), "fit_date",
                                                 KEEP_FITS_DAYS)])
    context.log.info(f"wrote {rows.height} forecast rows; fitted {forecasts.fits_made} windows, reused "
                     f"{forecasts.fits_reused} kept fits, kept {forecasts.fits.height} for later nights")

    metadata = run_metadata(context, selection, rows, ["ticker", "date", "horizon", "expected_log_return",
                                              "lower_90", "upper_90", "volatility_model"], began=began)
    metadata["weights"] = MetadataValue.md(weights_markdown(rows))
    metadata["fits_made"] = forecasts.fits_made
    metadata["fits_reused"] = forecasts.fits_reused
    metadata["volatility_fallback_share"] = float(rows["volatility_model"].ne("garch_t").mean())
    shown = list(selection.tickers[:PLOTTED_TICKERS])
    metadata |= add_plot(context, "plot", _plot_markdown(histories, rows, selection, shown),
                         last_date_keys(selection, shown))
    outcomes = {outcome.name: outcome for outcome in forecast_rules(rows)}
    return MaterializeResult(
        metadata=metadata,
        check_results=check_results([outcomes["ensemble_complete"]], AssetCheckSeverity.ERROR)
        + check_results([outcomes["all_models_fitted"]], AssetCheckSeverity.WARN),
    )


def read_kept_fits(conn, tickers: list[str], first: dt.date, last: dt.date) -> dict[str, dict[dt.date, KeptFit]]:
    """The kept fits of `tickers` anchored in [first, last], per ticker and fit date."""
    if not table_exists(conn, FITS_TABLE):
        return {}
    rows = query(conn, f"SELECT {', '.join(FITS_SCHEMA)} FROM {FITS_TABLE} WHERE ticker IN "
                       "(SELECT unnest(?::VARCHAR[])) AND fit_date BETWEEN ? AND ?", [list(tickers), first, last])
    kept: dict[str, dict[dt.date, KeptFit]] = {}
    for ticker, day, key, models in rows.iter_rows():
        kept.setdefault(ticker, {})[day] = KeptFit(key, models)
    return kept


def _require_lookback(prices: pl.DataFrame, first_needed: dt.date) -> None:
    """Fail when a ticker's stored prices start after the lookback although the partition set
    reaches further back: the earlier prices exist as partitions but were not materialized."""
    reachable = max(first_needed, settings.start_date())
    starts = prices.group_by("ticker").agg(pl.col("date").min().alias("first")).sort("ticker")
    late = starts.filter(pl.col("first") > reachable)
    if late.height:
        ticker, first = late.row(0)
        raise MissingInputsError(
            f"prices for {ticker} start on {first}, but these forecasts read from {reachable}: "
            f"materialize prices for {reachable}..{first} first, or, for a ticker whose history starts "
            "later, forecast from the shorter window with pm materialize --config-json "
            """'{"ops": {"ts_forecasts": {"config": {"allow_short_history": true}}}}' (the UI's launchpad: """
            "allow_short_history: true under ops: ts_forecasts: config:; its rows record fit_sessions)"
        )


def weights_markdown(rows: pl.DataFrame) -> str:
    """Mean ensemble weight of each model per horizon over the run, and on its last date."""
    columns = [f"weight_{m}" for m in MEAN_MODELS]
    last = rows.filter(pl.col("date") == pl.col("date").max())
    table = pl.concat([
        rows.group_by("horizon").agg(pl.col(columns).mean()).with_columns(pl.lit("run mean").alias("over")),
        last.group_by("horizon").agg(pl.col(columns).mean()).with_columns(pl.lit(str(last["date"][0])).alias("over")),
    ]).sort("over", "horizon")
    table = table.rename({c: c.removeprefix("weight_") for c in columns})
    return preview_markdown(table, ["over", "horizon", *MEAN_MODELS], rows=table.height)


def _plot_markdown(histories: dict[str, pl.DataFrame], rows: pl.DataFrame, selection: PartitionSelection,
                   tickers: list[str]) -> str:
    recent = pl.concat([h.tail(120) for h in histories.values()])
    sessions = calendar.trading_days(selection.start, selection.end + dt.timedelta(days=30))
    target = {day: sessions[i + PLOT_HORIZON] for i, day in enumerate(sessions[:-PLOT_HORIZON])}
    fan = (
        rows.filter(pl.col("horizon") == PLOT_HORIZON)
        .join(recent.rename({"price": "origin_price"}), on=["ticker", "date"])
        .with_columns(
            pl.col("date").replace_strict(target).alias("target_date"),
            (pl.col("origin_price") * pl.col("expected_log_return").exp()).alias("expected_price"),
            (pl.col("origin_price") * pl.col("lower_90").exp()).alias("lower_price"),
            (pl.col("origin_price") * pl.col("upper_90").exp()).alias("upper_price"),
        )
    )
    png = forecast_fan_png(recent, fan, tickers, PLOT_HORIZON)
    return png_markdown(png, f"price with the {PLOT_HORIZON}-session forecast fan")
