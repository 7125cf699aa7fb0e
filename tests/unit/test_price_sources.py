import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest

from pm_domain.calendar import trading_days
from pm_domain.price_sources import (
    PriceSourceError,
    fetch_prices,
    fetch_synthetic,
    yfinance_frame_to_long,
)
from tests.support.runs import yfinance_like_frame

DEC_2018 = trading_days(dt.date(2018, 12, 24), dt.date(2018, 12, 31))


def test_sample_serves_real_index_closes():
    rows = fetch_prices("sample", ["^GSPC", "^IXIC"], DEC_2018)
    assert rows.height == 2 * len(DEC_2018) == 10
    last = {r["ticker"]: r["close"] for r in rows.filter(pl.col("date") == dt.date(2018, 12, 31)).iter_rows(named=True)}
    assert last["^GSPC"] == pytest.approx(2506.85, abs=0.01)  # S&P 500 close on 2018-12-31
    assert last["^IXIC"] == pytest.approx(6635.28, abs=0.01)
    assert set(rows["source"]) == {"sample"}


def test_sample_refuses_unknown_ticker_and_dates_it_does_not_hold():
    with pytest.raises(PriceSourceError, match="no ticker AAPL"):
        fetch_prices("sample", ["AAPL"], DEC_2018)
    jan_2019 = trading_days(dt.date(2018, 12, 28), dt.date(2019, 1, 3))
    with pytest.raises(PriceSourceError, match=r"'sample' has no prices for \^GSPC on 2019-01-02.*holds \^GSPC from 1999-01-04 to 2018-12-31"):
        fetch_prices("sample", ["^GSPC"], jan_2019)


def test_unknown_source_is_named():
    with pytest.raises(PriceSourceError, match="unknown price source 'bloomberg'"):
        fetch_prices("bloomberg", ["^GSPC"], DEC_2018)


def test_yfinance_frames_are_reshaped_in_one_batched_call():
    calls = []

    def download(**kwargs):
        calls.append(kwargs)
        return yfinance_like_frame(kwargs["tickers"], DEC_2018)

    rows = fetch_prices("yfinance", ["AAPL", "MSFT"], DEC_2018, download=download)
    assert len(calls) == 1 and calls[0]["tickers"] == ["AAPL", "MSFT"]
    assert calls[0]["auto_adjust"] is False and calls[0]["end"] == "2019-01-01"  # end is exclusive
    assert rows.height == 10 and rows.filter(pl.col("adj_close") >= pl.col("close")).height == 0


def test_yfinance_empty_frame_is_a_clear_error():
    with pytest.raises(PriceSourceError, match="yfinance' returned an empty frame for AAPL.*PM_PRICE_SOURCE=sample serves .GSPC and .IXIC offline"):
        fetch_prices("yfinance", ["AAPL"], DEC_2018, download=lambda **_: pd.DataFrame())


def test_yfinance_failed_ticker_is_named_and_never_filled():
    frame = yfinance_like_frame(["AAPL", "ZZZZ"], DEC_2018, failed={"ZZZZ"})
    with pytest.raises(PriceSourceError, match="no prices for ZZZZ"):
        fetch_prices("yfinance", ["AAPL", "ZZZZ"], DEC_2018, download=lambda **_: frame)


def test_yfinance_nan_cell_is_refused_with_ticker_and_date():
    frame = yfinance_like_frame(["AAPL"], DEC_2018)
    frame.loc[frame.index[2], ("Close", "AAPL")] = np.nan
    with pytest.raises(PriceSourceError, match="no valid 'close' for AAPL on 2018-12-27"):
        fetch_prices("yfinance", ["AAPL"], DEC_2018, download=lambda **_: frame)


def test_yfinance_flat_single_ticker_frame():
    frame = yfinance_like_frame(["AAPL"], DEC_2018)
    frame.columns = frame.columns.droplevel("Ticker")
    assert yfinance_frame_to_long(frame, ["AAPL"]).height == len(DEC_2018)


def _write_csv(folder, ticker, text):
    (folder / f"{ticker}.csv").write_text(text)


def test_csv_source_reads_yahoo_style_headers(tmp_path):
    lines = ["Date,Open,High,Low,Close,Adj Close,Volume"]
    lines += [f"{d},10,12,9,11,10.5,1000" for d in DEC_2018]
    _write_csv(tmp_path, "MYCO", "\n".join(lines))
    rows = fetch_prices("csv", ["MYCO"], DEC_2018, csv_dir=tmp_path)
    assert rows.height == 5 and rows["adj_close"].to_list() == [10.5] * 5


def test_csv_without_adj_close_stores_null_not_a_copy(tmp_path):
    _write_csv(tmp_path, "MYCO", "date,open,high,low,close,volume\n" + "\n".join(f"{d},10,12,9,11,5" for d in DEC_2018))
    rows = fetch_prices("csv", ["MYCO"], DEC_2018, csv_dir=tmp_path)
    assert rows["adj_close"].null_count() == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("date,open,high,close,volume\n2018-12-24,1,2,1,1\n", r"lacks column\(s\) \['low'\]"),
        ("date,open,high,low,close,volume\n24/12/2018,1,2,1,1,1\n", "unparseable date '24/12/2018'"),
        ("date,open,high,low,close,volume\n" + "\n".join(f"{d},1,2,1,x,1" for d in DEC_2018), "no valid 'close' for MYCO on 2018-12-24"),
        ("date,open,high,low,close,volume\n2018-12-24,1,2,1,1,1\n", r"no prices for MYCO on 2018-12-26"),
    ],
)
def test_bad_csv_files_fail_with_file_ticker_and_problem(tmp_path, text, message):
    _write_csv(tmp_path, "MYCO", text)
    with pytest.raises(PriceSourceError, match=message):
        fetch_prices("csv", ["MYCO"], DEC_2018, csv_dir=tmp_path)


def test_csv_missing_file_names_the_expected_path(tmp_path):
    with pytest.raises(PriceSourceError, match=r"no file for NOPE: expected .*NOPE\.csv"):
        fetch_prices("csv", ["NOPE"], DEC_2018, csv_dir=tmp_path)


def test_malformed_ticker_never_reaches_a_source(tmp_path):
    from pm_domain.tickers import TickerError

    with pytest.raises(TickerError):
        fetch_prices("csv", ["../secrets"], DEC_2018, csv_dir=tmp_path)


def test_synthetic_is_deterministic_and_independent_of_the_requested_range():
    wide = fetch_synthetic(["AAA", "BBB"], dt.date(2018, 1, 2), dt.date(2018, 12, 31))
    narrow = fetch_synthetic(["BBB"], dt.date(2018, 6, 1), dt.date(2018, 6, 29))
    overlap = wide.filter(pl.col("ticker") == "BBB", pl.col("date").is_between(dt.date(2018, 6, 1), dt.date(2018, 6, 29)))
    assert narrow.equals(overlap)
    assert wide.filter((pl.col("high") < pl.max_horizontal("open", "close")) | (pl.col("low") > pl.min_horizontal("open", "close"))).is_empty()
    returns = wide.filter(pl.col("ticker") == "AAA")["close"].pct_change().drop_nulls()
    # volatility clustering: squared returns are autocorrelated
    squared = (returns**2).to_numpy()
    assert np.corrcoef(squared[:-1], squared[1:])[0, 1] > 0.02


def _yahoo_csv(folder, ticker, days, skip=()):
    lines = ["Date,Open,High,Low,Close,Adj Close,Volume"]
    lines += [f"{d},10,12,9,11,10.5,1000" for d in days if d not in skip]
    _write_csv(folder, ticker, "\n".join(lines) + "\n")


TWO_YEARS = trading_days(dt.date(2017, 1, 3), dt.date(2018, 12, 31))


def test_csv_coverage_says_what_a_file_covers(tmp_path):
    from pm_domain.price_sources import csv_coverage

    _yahoo_csv(tmp_path, "AAA", TWO_YEARS)
    coverage = csv_coverage(tmp_path / "AAA.csv", "AAA")
    assert (coverage.first, coverage.last, coverage.sessions) == (dt.date(2017, 1, 3), dt.date(2018, 12, 31), 502)
    assert coverage.describe() == f"{tmp_path / 'AAA.csv'} covers 2017-01-03..2018-12-31 (502 sessions)"


@pytest.mark.parametrize(
    ("start", "end", "skip", "message"),
    [
        ("2016-01-04", "2018-12-31", (), r"AAA\.csv covers 2017-01-03\.\.2018-12-31 \(502 sessions\); --from 2016-01-04 "
         r"is before it: start at 2017-01-03, or use a file that reaches back to 2016-01-04$"),
        ("2018-12-03", "2019-01-02", (), r"\(502 sessions\); --to 2019-01-02 is after it: end at 2018-12-31"),
        ("2018-12-03", "2018-12-31", (dt.date(2018, 12, 6), dt.date(2018, 12, 7)),
         r"covers 2017-01-03\.\.2018-12-31 \(500 sessions\) but has no row for 2 session\(s\) of "
         r"2018-12-03\.\.2018-12-31: 2018-12-06, 2018-12-07$"),
    ],
)
def test_check_csv_files_refuses_a_range_the_file_does_not_cover_in_one_line(tmp_path, start, end, skip, message):
    from pm_domain.price_sources import check_csv_files

    _yahoo_csv(tmp_path, "AAA", TWO_YEARS, skip)
    with pytest.raises(PriceSourceError, match=message) as caught:
        check_csv_files(tmp_path, ["AAA"], dt.date.fromisoformat(start), dt.date.fromisoformat(end), "--from", "--to")
    assert "\n" not in str(caught.value)


def test_check_csv_files_finds_a_missing_column_a_bad_value_and_a_missing_folder(tmp_path):
    from pm_domain.price_sources import check_csv_files

    _write_csv(tmp_path, "AAA", "Date,Open,High,Close,Volume\n2018-12-24,1,2,1,1\n")
    with pytest.raises(PriceSourceError, match=r"AAA\.csv for AAA lacks column\(s\) \['low'\]"):
        check_csv_files(tmp_path, ["AAA"], DEC_2018[0], DEC_2018[-1])
    _write_csv(tmp_path, "AAA", "Date,Open,High,Low,Close,Volume\n" + "\n".join(
        f"{d},1,2,1,{'null' if d == DEC_2018[2] else 1},1" for d in DEC_2018))
    with pytest.raises(PriceSourceError, match=f"no valid 'close' for AAA on {DEC_2018[2]}"):
        check_csv_files(tmp_path, ["AAA"], DEC_2018[0], DEC_2018[-1])
    with pytest.raises(PriceSourceError, match="PM_CSV_DIR"):
        check_csv_files(None, ["AAA"], DEC_2018[0], DEC_2018[-1])
    with pytest.raises(PriceSourceError, match=r"no file for BBB: expected .*BBB\.csv"):
        check_csv_files(tmp_path, ["BBB"], DEC_2018[0], DEC_2018[-1])


def test_a_run_past_the_files_dates_says_what_the_file_covers(tmp_path):
    _yahoo_csv(tmp_path, "AAA", TWO_YEARS)
    asked = trading_days(dt.date(2016, 1, 4), dt.date(2018, 12, 31))
    with pytest.raises(PriceSourceError) as caught:
        fetch_prices("csv", ["AAA"], asked, csv_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith("source 'csv' has no prices for AAA on 2016-01-04")
    assert "AAA.csv covers 2017-01-03..2018-12-31 (502 sessions); the run's first date 2016-01-04 is before it: " \
           "start at 2017-01-03" in message
