"""What the tests (and scripts/ui_screenshots.py) that start a server process share: a free
loopback port, waiting until the server answers (or its process has died), bounded, and stopping
its whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(url: str, process: subprocess.Popen, log: Path, seconds: float, name: str,
                         interval: float = 0.5) -> None:
    """Return once GET `url` answers 200; raise RuntimeError with the log's tail if the process
    exits first or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"{name} not up after {seconds:g} s:\n{log.read_text()[-3000:]}")


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the process's group (started with start_new_session=True), SIGKILL if it lingers:
    `dagster dev` runs the webserver, the daemon, a code server and the runs as children."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
