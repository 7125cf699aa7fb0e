"""`pm tickers list | add | remove | sync`: the universe (Dagster's dynamic partitions `tickers`),
kept in step with the watchlist file (PM_WATCHLIST, default data/watchlist.txt) that the
watchlist_sync sensor reads into it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pm_domain import settings
from pm_domain.tickers import TickerError, read_watchlist, validate_tickers
from pm_jobs.cli.instance import dagster_instance


def add_parser(commands) -> None:
    tickers = commands.add_parser("tickers", help="list, add, remove or sync the tickers (partitions)")
    actions = tickers.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", help="the universe, in the order tickers were added").set_defaults(func=run_list)
    add = actions.add_parser("add", help="add tickers to the universe and the watchlist file")
    add.add_argument("symbols", nargs="*", metavar="TICKER")
    add.add_argument("--from-file", type=Path, default=None, metavar="FILE",
                     help="also every ticker of FILE, one a line, `#` comments (e.g. data/universes/sp500.txt)")
    add.set_defaults(func=run_add)
    remove = actions.add_parser("remove", help="take tickers out of the universe and the watchlist file "
                                               "(stored rows stay)")
    remove.add_argument("symbols", nargs="+", metavar="TICKER")
    remove.set_defaults(func=run_remove)
    sync = actions.add_parser("sync", help="add every ticker of the watchlist file")
    sync.add_argument("--file", default=None, help="watchlist path (default PM_WATCHLIST, data/watchlist.txt)")
    sync.set_defaults(func=run_sync)


def _dimension() -> str:
    """The name of the dynamic partitions that hold the universe."""
    from pm_assets.partitions import TICKERS_PARTITIONS_NAME  # pm_assets imports dagster: not for `pm --help`

    return TICKERS_PARTITIONS_NAME


def run_list(args: argparse.Namespace) -> int:
    print("\n".join(dagster_instance().get_dynamic_partitions(_dimension())))
    return 0


def run_add(args: argparse.Namespace) -> int:
    tickers = validate_tickers([*args.symbols, *tickers_in(args.from_file)])
    if not tickers:
        raise TickerError("name the tickers to add (pm tickers add AAPL MSFT), or a file of them (--from-file FILE)")
    refuse_lower_case(tickers)
    print(f"added: {listed(add_tickers(dagster_instance(), tickers)) or 'nothing new'}")
    path = settings.watchlist_path()
    appended = append_to_watchlist(path, tickers)
    print(f"watchlist {path}: " + (f"updated, appended {listed(appended)}" if appended else "already lists them"))
    return 0


def listed(tickers: Sequence[str], shown: int = 12) -> str:
    """Tickers for one line: a list of 500 is its count and its first few."""
    if len(tickers) <= shown:
        return ", ".join(tickers)
    return f"{len(tickers)} tickers ({', '.join(tickers[:shown])} and {len(tickers) - shown} more)"


def run_remove(args: argparse.Namespace) -> int:
    removed = remove_tickers(dagster_instance(), args.symbols)
    print(f"removed: {', '.join(removed) or 'none of them was in the universe'} (their stored rows stay in DuckDB)")
    path = settings.watchlist_path()
    dropped = remove_from_watchlist(path, validate_tickers(args.symbols))
    print(f"watchlist {path}: " + (f"updated, removed {', '.join(dropped)}" if dropped else "did not list them"))
    return 0


def run_sync(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else settings.watchlist_path()
    print(f"added: {', '.join(add_tickers(dagster_instance(), read_watchlist(path))) or 'nothing new'}")
    return 0


def tickers_in(path: Path | None) -> list[str]:
    """The tickers a file lists (none without a file); a missing file is one line, not a traceback."""
    if path is None:
        return []
    if not path.is_file():
        raise TickerError(f"{path}: no such file (--from-file takes a text file, one ticker a line)")
    return read_watchlist(path)


def refuse_lower_case(tickers: Sequence[str]) -> None:
    """Symbols are upper case (the sources' and the stored rows'): `aapl` would become a ticker of
    its own that no price source knows. One line, with the spelling meant."""
    lower = [t for t in tickers if t != t.upper()]
    if lower:
        meant = " ".join(t.upper() for t in lower)
        raise TickerError(f"{', '.join(lower)}: tickers are upper case: did you mean {meant}? (pm tickers add {meant})")


def add_tickers(instance, tickers: Sequence[str]) -> list[str]:
    """Add validated tickers to the `tickers` dimension; returns the ones that were new."""
    valid = validate_tickers(tickers)
    known = set(instance.get_dynamic_partitions(_dimension()))
    new = [t for t in valid if t not in known]
    if new:
        instance.add_dynamic_partitions(_dimension(), new)
    return new


def remove_tickers(instance, tickers: Sequence[str]) -> list[str]:
    """Take tickers out of the `tickers` dimension; their stored rows in DuckDB stay. Returns the
    ones that were there."""
    valid = validate_tickers(tickers)
    known = set(instance.get_dynamic_partitions(_dimension()))
    removed = [t for t in valid if t in known]
    for ticker in removed:
        instance.delete_dynamic_partition(_dimension(), ticker)
    return removed


def _entry(line: str) -> str:
    """The ticker a watchlist line names ('' for a comment or a blank), as read_watchlist reads it."""
    return line.split("#", 1)[0].strip()


def append_to_watchlist(path: Path, tickers: Sequence[str]) -> list[str]:
    """Append the tickers the file does not list yet, one a line, keeping its comments and order
    (the file is created when there is none). Returns the ones appended."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    listed = {_entry(line) for line in text.splitlines()}
    new = [t for t in tickers if t not in listed]
    if new:
        path.parent.mkdir(parents=True, exist_ok=True)
        separator = "\n" if text and not text.endswith("\n") else ""
        path.write_text(text + separator + "".join(f"{t}\n" for t in new), encoding="utf-8")
    return new


def remove_from_watchlist(path: Path, tickers: Sequence[str]) -> list[str]:
    """Delete the lines naming these tickers (the rest stays as it was). Returns the ones removed."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if _entry(line) not in tickers]
    if len(kept) == len(lines):
        return []
    path.write_text("".join(kept), encoding="utf-8")
    return [t for t in tickers if any(_entry(line) == t for line in lines)]
