"""Technical indicators over daily prices, as polars expressions evaluated per ticker.

Every indicator is trailing: the value at date t reads rows up to t only. Recursive indicators
(EMA, Wilder's RSI and ATR) start at the first row they are given; the `features` asset always
gives them the ticker's whole stored history, so a value never depends on how a backfill was split.
Windows count trading days (rows), never calendar days.
"""

from __future__ import annotations

import math

import polars as pl

TRADING_DAYS_PER_YEAR = 252
# The longest window of any indicator (SMA 50). Recursive indicators carry weight further back:
# after 250 rows the weight left on older data is below 1e-8 for every smoothing used here.
LONGEST_WINDOW = 50
WARMUP_SESSIONS = 250

FEATURE_COLUMNS = [
    "close", "return_basis", "return_1d", "log_return_1d", "return_5d", "return_20d",
    "sma_20", "sma_50", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist",
    "rsi_14", "atr_14", "bb_middle", "bb_upper", "bb_lower", "bb_percent_b", "bb_width",
    "realised_vol_20d", "volume_ratio_20d",
]


def sma(column: str | pl.Expr, window: int) -> pl.Expr:
    """Simple moving average over the last `window` rows; null until `window` rows exist."""
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.rolling_mean(window_size=window, min_samples=window)


def ema(column: str | pl.Expr, span: int) -> pl.Expr:
    """Exponential moving average, alpha = 2 / (span + 1), recursive from the first row.

    EMA_t = alpha * x_t + (1 - alpha) * EMA_{t-1}, EMA_0 = x_0; null for the first span - 1 rows.
    """
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.ewm_mean(alpha=2 / (span + 1), adjust=False, min_samples=span)


def wilder(expr: pl.Expr, period: int) -> pl.Expr:
    """Wilder's smoothing: alpha = 1 / period, recursive, null for the first period - 1 values."""
    return expr.ewm_mean(alpha=1 / period, adjust=False, min_samples=period)


def rsi(column: str, period: int = 14) -> pl.Expr:
    """Relative strength index with Wilder smoothing: 100 - 100 / (1 + avg_gain / avg_loss).

    All-gain windows give 100 and all-loss windows 0; a flat window (no gain, no loss) is null.
    """
    change = pl.col(column).diff()
    average_gain = wilder(change.clip(lower_bound=0), period)
    average_loss = wilder((-change).clip(lower_bound=0), period)
    return (
        pl.when((average_gain == 0) & (average_loss == 0))
        .then(None)
        .otherwise(100 * average_gain / (average_gain + average_loss))
    )


def true_range() -> pl.Expr:
    """max(high - low, |high - previous close|, |low - previous close|); high - low on row one."""
    previous_close = pl.col("close").shift(1)
    return pl.max_horizontal(
        pl.col("high") - pl.col("low"),
        (pl.col("high") - previous_close).abs(),
        (pl.col("low") - previous_close).abs(),
    )


def atr(period: int = 14) -> pl.Expr:
    """Average true range with Wilder smoothing."""
    return wilder(true_range(), period)


def _adj_close_complete() -> pl.Expr:
    return pl.col("adj_close").is_not_null().all().over("ticker")


def return_price() -> pl.Expr:
    """The price returns are measured on: adj_close (dividends and splits) when the source gives
    it for every row of the ticker, else close. Every stage that uses returns uses this rule."""
    return pl.when(_adj_close_complete()).then(pl.col("adj_close")).otherwise(pl.col("close"))


def return_basis() -> pl.Expr:
    """Which column return_price() took: "adj_close" or "close"."""
    return pl.when(_adj_close_complete()).then(pl.lit("adj_close")).otherwise(pl.lit("close"))


def compute_features(prices: pl.DataFrame) -> pl.DataFrame:
    """Indicators for every row of `prices` (ticker, date, open, high, low, close, adj_close, volume).

    Returns ticker, date and FEATURE_COLUMNS. Returns use adj_close where the source provides it
    (dividends and splits), else close, and say which in `return_basis`.
    """
    if prices.is_empty():
        return pl.DataFrame(schema={"ticker": pl.String, "date": pl.Date})
    ordered = prices.sort("ticker", "date").with_columns(
        return_price().alias("_return_price"), return_basis().alias("return_basis")
    )
    per_ticker = lambda expr: expr.over("ticker")  # noqa: E731 - reads better inline below

    stage_one = ordered.with_columns(
        per_ticker(pl.col("_return_price").pct_change(1)).alias("return_1d"),
        per_ticker(pl.col("_return_price").log().diff()).alias("log_return_1d"),
        per_ticker(pl.col("_return_price").pct_change(5)).alias("return_5d"),
        per_ticker(pl.col("_return_price").pct_change(20)).alias("return_20d"),
        per_ticker(sma("close", 20)).alias("sma_20"),
        per_ticker(sma("close", 50)).alias("sma_50"),
        per_ticker(ema("close", 12)).alias("ema_12"),
        per_ticker(ema("close", 26)).alias("ema_26"),
        per_ticker(rsi("close", 14)).alias("rsi_14"),
        per_ticker(atr(14)).alias("atr_14"),
        per_ticker(pl.col("close").rolling_std(window_size=20, min_samples=20, ddof=0)).alias("_std_20"),
        per_ticker(sma("volume", 20)).alias("_volume_sma_20"),
    )
    stage_two = stage_one.with_columns(
        (pl.col("ema_12") - pl.col("ema_26")).alias("macd"),
        (pl.col("sma_20") + 2 * pl.col("_std_20")).alias("bb_upper"),
        (pl.col("sma_20") - 2 * pl.col("_std_20")).alias("bb_lower"),
        pl.col("sma_20").alias("bb_middle"),
        per_ticker(
            pl.col("log_return_1d").rolling_std(window_size=20, min_samples=20, ddof=1)
        ).mul(math.sqrt(TRADING_DAYS_PER_YEAR)).alias("realised_vol_20d"),
        pl.when(pl.col("_volume_sma_20") > 0)
        .then(pl.col("volume") / pl.col("_volume_sma_20"))
        .alias("volume_ratio_20d"),
    )
    stage_three = stage_two.with_columns(
        # the signal line is an EMA of MACD, started where MACD itself first exists
        per_ticker(ema(pl.col("macd"), 9)).alias("macd_signal"),
        pl.when(pl.col("bb_upper") > pl.col("bb_lower"))
        .then((pl.col("close") - pl.col("bb_lower")) / (pl.col("bb_upper") - pl.col("bb_lower")))
        .alias("bb_percent_b"),
        ((pl.col("bb_upper") - pl.col("bb_lower")) / pl.col("bb_middle")).alias("bb_width"),
    ).with_columns((pl.col("macd") - pl.col("macd_signal")).alias("macd_hist"))
    return stage_three.select("ticker", "date", *FEATURE_COLUMNS)
