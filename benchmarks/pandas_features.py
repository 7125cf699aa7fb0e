"""A straightforward pandas groupby implementation of the project's indicators.

It is the baseline of the features benchmark and, written independently of pm_domain.features,
the reference the tests compare the polars implementation against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _wilder(series: pd.Series, period: int) -> pd.Series:
    return series.ewm(alpha=1 / period, adjust=False, min_periods=period).mean()


def _one_ticker(group: pd.DataFrame) -> pd.DataFrame:
    close = group["close"]
    price = group["adj_close"] if group["adj_close"].notna().all() else close
    out = pd.DataFrame(index=group.index)
    out["return_1d"] = price.pct_change(1)
    out["log_return_1d"] = np.log(price).diff()
    out["return_5d"] = price.pct_change(5)
    out["return_20d"] = price.pct_change(20)
    out["sma_20"] = close.rolling(20).mean()
    out["sma_50"] = close.rolling(50).mean()
    out["ema_12"] = close.ewm(span=12, adjust=False, min_periods=12).mean()
    out["ema_26"] = close.ewm(span=26, adjust=False, min_periods=26).mean()
    out["macd"] = out["ema_12"] - out["ema_26"]
    out["macd_signal"] = out["macd"].ewm(span=9, adjust=False, min_periods=9).mean()
    out["macd_hist"] = out["macd"] - out["macd_signal"]
    change = close.diff()
    gain = _wilder(change.clip(lower=0), 14)
    loss = _wilder((-change).clip(lower=0), 14)
    out["rsi_14"] = (100 * gain / (gain + loss)).where(~((gain == 0) & (loss == 0)))
    previous = close.shift(1)
    true_range = pd.concat(
        [group["high"] - group["low"], (group["high"] - previous).abs(), (group["low"] - previous).abs()],
        axis=1,
    ).max(axis=1)
    out["atr_14"] = _wilder(true_range, 14)
    std_20 = close.rolling(20).std(ddof=0)
    out["bb_middle"] = out["sma_20"]
    out["bb_upper"] = out["sma_20"] + 2 * std_20
    out["bb_lower"] = out["sma_20"] - 2 * std_20
    out["bb_percent_b"] = (close - out["bb_lower"]) / (out["bb_upper"] - out["bb_lower"])
    out["bb_width"] = (out["bb_upper"] - out["bb_lower"]) / out["bb_middle"]
    out["realised_vol_20d"] = out["log_return_1d"].rolling(20).std(ddof=1) * np.sqrt(252)
    volume_sma = group["volume"].rolling(20).mean()
    out["volume_ratio_20d"] = group["volume"] / volume_sma
    return out


def compute_features_pandas(prices: pd.DataFrame) -> pd.DataFrame:
    """Same columns as pm_domain.features.compute_features, via groupby(...).apply per ticker."""
    ordered = prices.sort_values(["ticker", "date"]).reset_index(drop=True)
    indicators = ordered.groupby("ticker", group_keys=False)[list(ordered.columns)].apply(_one_ticker)
    return pd.concat([ordered[["ticker", "date", "close"]], indicators], axis=1)
