import pytest

from pm_domain.tickers import TickerError, read_watchlist, validate_ticker, validate_tickers


@pytest.mark.parametrize("ticker", ["^GSPC", "^IXIC", "AAPL", "BRK.B", "BTC-USD", "EURUSD=X", "7203"])
def test_real_symbols_are_accepted(ticker):
    assert validate_ticker(ticker) == ticker


@pytest.mark.parametrize(
    "hostile",
    ["", "A B", "A'; DROP TABLE prices; --", "../etc/passwd", "..", ".hidden", "A|B", "A/B",
     "A" * 21, "TICKÉR", "A\nB", "A;B", "A--", "$(rm)", None, 42],
)
def test_hostile_strings_are_rejected_with_the_offending_value(hostile):
    with pytest.raises(TickerError, match="invalid ticker"):
        validate_ticker(hostile)


def test_validate_tickers_deduplicates_in_order():
    assert validate_tickers(["^IXIC", "^GSPC", "^IXIC"]) == ["^IXIC", "^GSPC"]


def test_watchlist_ignores_comments_and_blanks_and_names_the_file(tmp_path):
    path = tmp_path / "watchlist.txt"
    path.write_text("# mine\n^GSPC\n\nAAPL  # apple\n")
    assert read_watchlist(path) == ["^GSPC", "AAPL"]
    path.write_text("^GSPC\nbad ticker\n")
    with pytest.raises(TickerError, match="watchlist.txt"):
        read_watchlist(path)
