"""`pm ui [--port PORT]`: the Dagster UI and daemon on 127.0.0.1 (what `make ui` runs)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from pm_jobs.cli.instance import PROJECT_ROOT


def add_parser(commands) -> None:
    ui = commands.add_parser("ui", help="the Dagster UI and daemon on 127.0.0.1 (what make ui runs)")
    ui.add_argument("--port", type=int, default=3000, help="default 3000")
    ui.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_ui(args.port)


def run_ui(port: int) -> int:
    """Start `dagster dev` (webserver and daemon) on 127.0.0.1:port, refusing a busy port before
    either starts (otherwise the daemon runs on without a webserver)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            print(f"pm: port {port} on 127.0.0.1 is in use (another `make ui`?): make ui PORT={port + 1}",
                  file=sys.stderr)
            return 2
    from pm_jobs.backfill import remember_ui_url  # imports pm_domain.calendar (pandas): not for `pm --help`

    remember_ui_url(f"http://127.0.0.1:{port}")
    dagster = Path(sys.executable).with_name("dagster")
    os.chdir(PROJECT_ROOT)
    os.execv(str(dagster), [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)])
    return 0  # not reached: exec replaces this process
