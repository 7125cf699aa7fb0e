"""Start `dagster dev` (webserver + daemon, as `make ui` does) on a loopback port for the
end-to-end tests, and stop its whole process group afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_webserver(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"webserver not up after {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def stop_process_group(process: subprocess.Popen) -> None:
    # dagster dev runs the webserver, the daemon, a code server and the runs as children: stop them all.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


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
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_webserver(url, process, log)
        yield url
    finally:
        stop_process_group(process)
