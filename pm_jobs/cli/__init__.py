"""`pm`: the research platform's command line, on the project's Dagster instance.

    pm demo
    pm materialize --assets A,B [--tickers T,U] [--from DATE] [--to DATE] [--config-json JSON]
    pm backfill --assets A,B [--tickers T,U] --from DATE [--to DATE] [--url URL] [--wait SECONDS]
    pm tickers list | add TICKER... | remove TICKER... | sync [--file PATH]
    pm partitions [ASSET...]
    pm failures [--last N]
    pm runs slots | release RUN_ID
    pm ui [--port PORT]
    pm summary
    pm postgres start | stop | status [--home PATH]
    pm cluster start [--workers N] | stop | status [--home PATH]
    pm book [--date DATE] [--amendments N]

With DAGSTER_HOME unset, `pm` uses the project's own instance, `.dagster_home/` beside
`workspace.yaml`, and says so. Each command is a module of this package that registers its parser
(`add_parser`) with the function that runs it (`set_defaults(func=...)`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import duckdb

from pm_domain import settings
from pm_jobs.cli import book, cluster, demo, instance, materialize, postgres, reports, runs, tickers, ui
from pm_jobs.cluster import ClusterError
from pm_jobs.large_instance import LargeInstanceError

COMMANDS = (demo, materialize, tickers, reports, runs, ui, book, postgres, cluster)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pm", description=__doc__.splitlines()[0],
        epilog="With DAGSTER_HOME unset, pm uses the project's instance (.dagster_home). Docs: docs/operations.md")
    parser.set_defaults(instance=instance.ANNOUNCE)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


# The mistakes `pm` answers in one line with exit code 2: a bad ticker (TickerError), setting
# (settings.SettingsError), date (pm_domain.calendar.CalendarError) or selection
# (pm_jobs.selection.SelectionError), all ValueErrors; no instance; a missing file; a cluster
# without its broker or workers.
REFUSALS = (ValueError, FileNotFoundError, instance.InstanceError, LargeInstanceError, ClusterError)


def dagster_errors() -> type[Exception]:
    """An `except` evaluates this only when an exception gets there: `pm postgres` never imports dagster."""
    from dagster import DagsterError  # dagster takes seconds to import

    return DagsterError


def lake_errors() -> type[Exception]:
    """The shared store's attach failure, whose message names the store already (imports dagster)."""
    from pm_resources.connections import LakeError

    return LakeError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.instance != instance.NO_INSTANCE:
            instance.quiet_dagster_notices()
            home = instance.use_project_instance()
            if args.instance == instance.ANNOUNCE:
                print(f"pm: Dagster instance {home}", file=sys.stderr)
        return args.func(args)
    except REFUSALS as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return 2
    except dagster_errors() as exc:  # an instance or definitions problem: its first line, not the traceback
        print(f"pm: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except lake_errors() as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:  # the store is missing, locked by another writer, or unreadable
        from pm_resources.connections import redact

        print(f"pm: the store {redact(settings.duckdb_path())}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
