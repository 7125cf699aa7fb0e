"""`pm cluster start | stop | status`: Dagster's storage in PostgreSQL, a Redis broker and N Celery
workers on loopback (what `make cluster` runs; pm_jobs/cluster.py, docs/deploy.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pm_jobs import cluster
from pm_jobs.cli.instance import NO_INSTANCE
from pm_jobs.local_postgres import PostgresFailed, PostgresNotFound


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "cluster", help="PostgreSQL, a Redis broker and Celery workers on loopback (what make cluster runs)",
        description="Stand up (or stop) the cluster: the large-backfill instance's PostgreSQL, a Redis broker "
                    "and N Celery workers, on 127.0.0.1. Runs on its instance execute their steps on the "
                    "workers (docs/deploy.md).")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start what is not running (idempotent)")
    start.add_argument("--workers", type=int, default=cluster.DEFAULT_WORKERS, metavar="N",
                       help=f"Celery workers, one step at a time each (default {cluster.DEFAULT_WORKERS})")
    for action in (start, actions.add_parser("stop", help="stop the workers, Redis and PostgreSQL (the data stays)"),
                   actions.add_parser("status", help="what is running, and where")):
        action.add_argument("--home", default=None, help=f"the cluster's folder (default {cluster.HOME_NAME})")
    parser.set_defaults(func=run, instance=NO_INSTANCE)


def run(args: argparse.Namespace) -> int:
    home = Path(args.home) if args.home else cluster.default_home()
    try:
        if args.action == "start":
            lines = cluster.start(home, args.workers)
        else:
            lines = cluster.stop(home) if args.action == "stop" else cluster.status(home)
    except (cluster.ClusterError, PostgresNotFound, PostgresFailed) as exc:
        print(f"pm: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
