import datetime as dt

import numpy as np
import polars as pl
import pytest

from benchmarks.pandas_features import compute_features_pandas
from pm_domain.calendar import trading_days
from pm_domain.features import FEATURE_COLUMNS, compute_features
from pm_domain.price_sources import fetch_prices, fetch_synthetic

NUMERIC = [c for c in FEATURE_COLUMNS if c != "return_basis"]


@pytest.fixture(scope="module")
def sample_prices():
    days = trading_days(dt.date(2017, 1, 3), dt.date(2018, 12, 31))
    return fetch_prices("sample", ["^GSPC", "^IXIC"], days)


def test_matches_an_independent_pandas_implementation_on_real_data(sample_prices):
    ours = compute_features(sample_prices).sort("ticker", "date")
    reference = pl.from_pandas(compute_features_pandas(sample_prices.to_pandas())).sort("ticker", "date")
    for column in NUMERIC:
        a, b = ours[column].to_numpy(), reference[column].to_numpy().astype(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), column
        assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-9, atol=1e-9), column


def test_no_look_ahead_later_prices_leave_earlier_features_bit_identical(sample_prices):
    cutoff = dt.date(2018, 10, 1)
    changed = sample_prices.with_columns(
        [pl.when(pl.col("date") > cutoff).then(pl.col(c) * 1.5).otherwise(pl.col(c)).alias(c)
         for c in ["open", "high", "low", "close", "adj_close", "volume"]]
    )
    before = compute_features(sample_prices).filter(pl.col("date") <= cutoff)
    after = compute_features(changed).filter(pl.col("date") <= cutoff)
    assert before.equals(after)
    assert not compute_features(sample_prices).equals(compute_features(changed))


def test_known_values():
    days = trading_days(dt.date(2018, 1, 2), dt.date(2018, 6, 29))
    rising = pl.DataFrame({
        "ticker": "UP", "date": days, "open": [100.0 + i for i in range(len(days))],
        "high": [101.0 + i for i in range(len(days))], "low": [99.0 + i for i in range(len(days))],
        "close": [100.0 + i for i in range(len(days))], "adj_close": None, "volume": 1000.0,
    }, schema_overrides={"adj_close": pl.Float64})
    features = compute_features(rising)
    last = features.row(-1, named=True)
    assert last["rsi_14"] == 100.0  # only gains
    assert last["sma_20"] == pytest.approx(last["close"] - 9.5)  # mean of the last 20 closes
    assert last["atr_14"] == pytest.approx(2.0)  # true range is high - previous close = 2
    assert last["volume_ratio_20d"] == 1.0
    assert last["return_basis"] == "close"  # no adjusted close: returns on close, and said so
    assert features["sma_50"].null_count() == 49  # nothing before the window is full


def test_warmup_nulls_then_values_for_every_ticker():
    prices = fetch_synthetic(["AAA", "BBB"], dt.date(2018, 1, 2), dt.date(2018, 12, 31))
    features = compute_features(prices)
    for ticker in ["AAA", "BBB"]:
        rows = features.filter(pl.col("ticker") == ticker)
        assert rows.tail(150).select(NUMERIC).null_count().sum_horizontal().item() == 0
