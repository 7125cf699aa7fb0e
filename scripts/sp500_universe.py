"""Write the S&P 500 constituents on a date as a ticker file for `pm tickers add --from-file`.

The list comes from `pitindex` (PyPI, MIT), which ships point-in-time constituents of the S&P
indices rebuilt from Wikipedia's "List of S&P 500 companies" and its revision history; nothing is
fetched at run time. Symbols are written in Yahoo's form (BRK.B -> BRK-B), the price sources'.

Refresh:  .venv/bin/pip install -U pitindex && .venv/bin/python scripts/sp500_universe.py
          [--as-of YYYY-MM-DD] [--out data/universes/sp500.txt]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "data" / "universes" / "sp500.txt"


def yahoo_symbol(ticker: str) -> str:
    """Yahoo writes a share class with a dash: BRK.B is BRK-B."""
    return ticker.replace(".", "-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=None,
                        help="the constituents on this date (default: the last date pitindex covers)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    try:
        import pitindex
    except ImportError:
        print("this script reads pitindex's bundled data: .venv/bin/pip install pitindex", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=pitindex.StaleDataWarning)  # its age is written in the header
    about = pitindex.info("sp500")
    covered = dt.date.fromisoformat(about["start_date"]), dt.date.fromisoformat(about["end_date"])
    as_of = args.as_of or covered[1]
    if not covered[0] <= as_of <= covered[1]:
        print(f"--as-of {as_of}: pitindex {pitindex.__version__} covers {covered[0]}..{covered[1]}", file=sys.stderr)
        return 2
    tickers = sorted({yahoo_symbol(t) for t in pitindex.get_constituents(as_of, "sp500")["ticker"]})
    header = [
        f"# S&P 500 constituents on {as_of}: {len(tickers)} symbols (Yahoo's form: BRK.B is BRK-B).",
        f"# From pitindex {pitindex.__version__} (PyPI, MIT), built {about['build_timestamp_utc'][:10]} from "
        "Wikipedia's List of S&P 500 companies",
        f"# ({about['wikipedia_source']}) and its revision history; seed {about['seed_source']}.",
        "# Members on that date only: a backtest of earlier years on this list has survivorship bias.",
        "# Refresh: .venv/bin/pip install -U pitindex && .venv/bin/python scripts/sp500_universe.py [--as-of DATE]",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + tickers) + "\n", encoding="utf-8")
    print(f"wrote {len(tickers)} tickers of the S&P 500 on {as_of} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
