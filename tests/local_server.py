"""What the tests that start a server process share: a free loopback port, and waiting until the
server answers (or its process has died), bounded."""

from __future__ import annotations

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
