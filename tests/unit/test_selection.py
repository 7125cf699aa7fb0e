"""The launch path's preflight of the csv source: a file that does not cover the range is refused
before any run, in one line naming the file and what it covers."""

import datetime as dt

import pytest

from pm_domain import settings
from pm_domain.calendar import trading_days
from pm_jobs.selection import BY_DATE_AND_TICKER, Selection, SelectionError, check_price_files


def selection(assets, start, end, tickers=("AAA", "BBB")):
    return Selection(tuple(assets), BY_DATE_AND_TICKER, (tuple(tickers),), dt.date.fromisoformat(start),
                     dt.date.fromisoformat(end))


@pytest.fixture()
def csvs(tmp_path):
    for ticker in ("AAA", "BBB"):
        rows = [f"{d},10,12,9,11,10.5,1000" for d in trading_days(dt.date(2017, 1, 3), dt.date(2018, 12, 31))]
        (tmp_path / f"{ticker}.csv").write_text("Date,Open,High,Low,Close,Adj Close,Volume\n" + "\n".join(rows) + "\n")
    return settings.current().model_copy(update={"price_source": "csv", "csv_dir": tmp_path})


def test_prices_before_the_files_first_date_are_refused_naming_the_file(csvs):
    with pytest.raises(SelectionError, match=r"AAA\.csv covers 2017-01-03\.\.2018-12-31 \(502 sessions\); "
                                             r"--from 2016-01-04 is before it: start at 2017-01-03"):
        check_price_files(selection(["prices"], "2016-01-04", "2018-12-31"), csvs)


def test_a_covered_range_passes_and_other_stages_and_sources_are_not_read(csvs, tmp_path):
    good = selection(["prices", "features"], "2017-01-03", "2018-12-31")
    assert check_price_files(good, csvs) is good
    early = selection(["features", "ts_forecasts"], "2016-01-04", "2018-12-31")
    assert check_price_files(early, csvs) is early  # reads the store, not the files
    (tmp_path / "AAA.csv").unlink()
    sample = settings.current().model_copy(update={"price_source": "sample"})
    assert check_price_files(selection(["prices"], "2016-01-04", "2018-12-31"), sample)
    with pytest.raises(SelectionError, match=r"no file for AAA: expected .*AAA\.csv"):
        check_price_files(good, csvs)


@pytest.mark.parametrize("requested, message", [
    (["aapl"], "aapl: tickers are upper case: did you mean AAPL? (--tickers AAPL)"),
    (["MSFT", "aapl"], "aapl: tickers are upper case: did you mean AAPL? (--tickers MSFT,AAPL)"),
    (["QQQ"], "QQQ is not in the universe: pm tickers add QQQ"),
])
def test_a_ticker_outside_the_universe_gets_the_fix_that_applies(requested, message):
    from pm_jobs.selection import SelectionError, check_tickers

    with pytest.raises(SelectionError) as refused:
        check_tickers(requested, ["AAPL", "MSFT"])
    assert str(refused.value) == message


def test_shares_cut_the_tickers_evenly_and_the_blocks_where_a_share_ends():
    blocks = Selection(("prices",), BY_DATE_AND_TICKER, (("A", "B", "C"), ("E", "F")), dt.date(2018, 12, 3),
                       dt.date(2018, 12, 31))
    assert blocks.shares(2) == [["A", "B"], ["C", "E", "F"]]
    assert blocks.share_blocks(2) == [("A", "B"), ("C",), ("E", "F")]  # C and E are not adjacent: two ranges
    assert blocks.shares(9) == [["A"], ["B"], ["C"], ["E"], ["F"]]  # never an empty share
    assert blocks.share_blocks(1) == [("A", "B", "C"), ("E", "F")]
