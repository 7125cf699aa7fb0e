import datetime as dt

import pytest
from dagster import MultiPartitionKey

from pm_assets.partitions import (
    daily_ticker_partitions,
    decode_partition_keys,
    lookback_mapping,
    trading_day_partitions,
)
from pm_domain import calendar, settings


def test_date_dimension_is_nyse_sessions_without_weekends_or_holidays():
    keys = set(trading_day_partitions.get_partition_keys())
    assert "2018-12-31" in keys and "2018-12-24" in keys
    for closed in ["2018-12-25", "2018-12-05", "2018-11-22", "2018-12-29", "2018-07-04"]:
        assert closed not in keys  # Christmas, Bush's day of mourning, Thanksgiving, Saturday
    in_2018 = sorted(k for k in keys if k.startswith("2018"))
    assert len(in_2018) == len(calendar.trading_days(dt.date(2018, 1, 1), dt.date(2018, 12, 31))) == 251


def test_multi_partition_keys_read_date_then_ticker():
    key = MultiPartitionKey({"date": "2018-12-31", "ticker": "^GSPC"})
    assert str(key) == "2018-12-31|^GSPC"
    assert daily_ticker_partitions.partitions_defs[0].name == "date"


def test_lookback_mapping_counts_trading_days_not_calendar_days(instance):
    instance.add_dynamic_partitions("tickers", ["^GSPC", "^IXIC"])
    mapping = lookback_mapping(5)
    downstream = daily_ticker_partitions.subset_with_partition_keys(["2018-12-26|^GSPC"])
    from dagster import partition_loading_context

    with partition_loading_context(dynamic_partitions_store=instance):
        upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(
            downstream, daily_ticker_partitions, daily_ticker_partitions
        ).partitions_subset.get_partition_keys()
    assert sorted(upstream) == [
        f"{day}|^GSPC" for day in ["2018-12-19", "2018-12-20", "2018-12-21", "2018-12-24", "2018-12-26"]
    ]


def test_decode_partition_keys_returns_the_rectangle():
    keys = [f"{d}|{t}" for t in ["^IXIC", "^GSPC"] for d in ["2018-12-27", "2018-12-28"]]
    selection = decode_partition_keys(keys)
    assert selection.tickers == ("^GSPC", "^IXIC")
    assert selection.dates == (dt.date(2018, 12, 27), dt.date(2018, 12, 28))
    with pytest.raises(ValueError, match="rectangle"):
        decode_partition_keys(keys[:3])


def test_start_date_setting_is_validated(monkeypatch):
    monkeypatch.setenv("PM_START_DATE", "2016-13-01")
    with pytest.raises(settings.SettingsError, match="PM_START_DATE"):
        settings.start_date()
    monkeypatch.setenv("PM_START_DATE", "1980-01-02")
    with pytest.raises(settings.SettingsError, match="between"):
        settings.start_date()
    monkeypatch.setenv("PM_START_DATE", "2017-01-03")
    assert settings.start_date() == dt.date(2017, 1, 3)


def test_calendar_helpers():
    assert calendar.shift_trading_days(dt.date(2018, 12, 26), -1) == dt.date(2018, 12, 24)
    with pytest.raises(calendar.CalendarError, match="not a XNYS trading day"):
        calendar.shift_trading_days(dt.date(2018, 12, 25), 1)
    friday_evening = dt.datetime(2018, 12, 28, 22, 0, tzinfo=dt.UTC)
    friday_noon = dt.datetime(2018, 12, 28, 17, 0, tzinfo=dt.UTC)
    assert calendar.last_closed_session(friday_evening) == dt.date(2018, 12, 28)
    assert calendar.last_closed_session(friday_noon) == dt.date(2018, 12, 27)
