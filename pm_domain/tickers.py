"""Ticker strings are validated once, here, before they reach SQL, a file name or a prompt."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# Letters, digits and the punctuation real symbols use: ^GSPC (index), BRK.B (class), BTC-USD
# (pair), EURUSD=X (currency). Nothing that can quote, comment, separate or traverse a path.
TICKER_PATTERN = re.compile(r"^[A-Za-z0-9.^=-]{1,20}$")


class TickerError(ValueError):
    """A ticker string is malformed."""


def validate_ticker(ticker: str) -> str:
    """Return `ticker` unchanged if it is a well-formed symbol, else raise TickerError."""
    if not isinstance(ticker, str) or not TICKER_PATTERN.fullmatch(ticker):
        shown = repr(ticker)[:60]
        raise TickerError(
            f"invalid ticker {shown}: use 1-20 characters from letters, digits and . ^ = -"
        )
    if ticker.startswith(".") or "--" in ticker or ".." in ticker:
        raise TickerError(f"invalid ticker {ticker!r}: no leading '.', no '..' or '--'")
    return ticker


def validate_tickers(tickers: Iterable[str]) -> list[str]:
    """Validate every ticker and return them de-duplicated, in first-seen order."""
    seen: dict[str, None] = {}
    for ticker in tickers:
        seen[validate_ticker(ticker)] = None
    return list(seen)


def read_watchlist(path: Path) -> list[str]:
    """Tickers from a watchlist file: one per line, blank lines and `#` comments ignored. A bad
    line is refused with the file and its line number."""
    tickers: dict[str, None] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            tickers[validate_ticker(entry)] = None
        except TickerError as exc:
            raise TickerError(f"{path}:{number}: {exc}") from exc
    return list(tickers)
