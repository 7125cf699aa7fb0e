"""Start `pm ui` (`dagster dev`: webserver + daemon, as `make ui` does) on a loopback port for the
end-to-end tests, and stop its whole process group afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_server import free_port, stop_process_group, wait_until_answering

ROOT = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 180


def wait_for_webserver(url: str, process: subprocess.Popen, log: Path) -> None:
    try:
        wait_until_answering(f"{url}/server_info", process, log, STARTUP_SECONDS, "dagster dev", 1.0)
    except RuntimeError as exc:
        pytest.fail(str(exc))


@contextlib.contextmanager
def dagster_dev(home: Path, workdir: Path, tickers: list[str], env_extra: dict[str, str] | None = None) -> Iterator[str]:
    """`dagster dev` on the instance at `home`, the sample source, fallback LLM mode and a DuckDB
    file and watchlist in `workdir`; yields the webserver's URL. The log is `workdir/dagster_dev.log`."""
    watchlist = workdir / "watchlist.txt"
    watchlist.write_text("\n".join(tickers) + "\n")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": str(workdir / "pm.duckdb"),
           "PM_PRICE_SOURCE": "sample", "PM_LLM_MODE": "fallback", "PM_WATCHLIST": str(watchlist),
           "PYTHONPATH": str(ROOT), "DAGSTER_DISABLE_TELEMETRY": "1", **(env_extra or {})}
    log = workdir / "dagster_dev.log"
    with open(log, "w") as out:
        # `pm ui` is what `make ui` runs: it checks the port, notes the URL for `pm backfill`, then
        # becomes `dagster dev` (same process, so the group is still ours to stop).
        process = subprocess.Popen(
            [sys.executable, "-m", "pm_jobs.cli", "ui", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_webserver(url, process, log)
        yield url
    finally:
        stop_process_group(process)
