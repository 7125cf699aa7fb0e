"""`pm postgres start | stop | status`: the large-backfill instance, Dagster's storage in a
project-local PostgreSQL (what `make large-instance` runs; docs/scale.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pm_jobs import large_instance
from pm_jobs.cli.instance import NO_INSTANCE
from pm_jobs.local_postgres import PostgresFailed, PostgresNotFound

ACTIONS = (("start", "build the instance if needed and start its PostgreSQL (idempotent)"),
           ("stop", "stop its PostgreSQL (the data stays)"),
           ("status", "is its PostgreSQL running, and where"))


def add_parser(commands) -> None:
    postgres = commands.add_parser(
        "postgres", help="the large-backfill instance: a project-local PostgreSQL (what make large-instance runs)",
        description="Build and start (or stop) the large-backfill instance: Dagster's storage in a PostgreSQL "
                    "on 127.0.0.1 with event batching and ranged planned events (docs/scale.md).")
    actions = postgres.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, why in ACTIONS:
        actions.add_parser(action, help=why).add_argument(
            "--home", default=None, help="the instance's folder (default .dagster_large)")
    postgres.set_defaults(func=run, instance=NO_INSTANCE)


def run(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else large_instance.default_home()
    try:
        if args.action == "start":
            print("\n".join(large_instance.start(home)))
        else:
            print(large_instance.stop(home) if args.action == "stop" else large_instance.status(home))
    except (PostgresNotFound, PostgresFailed) as exc:
        print(f"pm: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0
