"""A small fake Ollama HTTP server for tests and benchmarks (standard library only).

It speaks the subset of the Ollama REST API that the official ``ollama`` Python
client uses for ``Client.chat`` (non-streaming), ``Client.list``, ``Client.show``
and ``Client.ps``, plus ``GET /api/version`` and ``GET /`` ("Ollama is running").
Replies are shaped like real Ollama's, so the real client parses them into its
pydantic response types.

Usage::

    from tests.support.fake_ollama import FakeOllama   # or: from fake_ollama import FakeOllama

    with FakeOllama() as fake:
        fake.reply_json = {"summary": "ok"}
        fake.behaviour = "fenced"
        client = ollama.Client(host=fake.host, timeout=5)
        resp = client.chat("qwen:14b-chat-q4_K_M", [{"role": "user", "content": "hi"}],
                           format={"type": "object"}, stream=False)

``/api/chat`` behaviours (``FakeOllama.behaviour``):

``valid``           content is ``json.dumps(reply_json)``
``fenced``          ``"Here is the analysis:\\n```json\\n<json>\\n```"``
``prose``           raw JSON object with chatter before and after it, no fence
``garbage``         text with no JSON in it at all
``truncated``       the JSON text cut in the middle, ``done_reason == "length"``
``http_500``        HTTP 500 with ``{"error": "..."}``
``slow``            waits ``delay_seconds`` (interrupted by ``stop()``), then ``valid``
``invalid_schema``  valid JSON that does not match any sensible schema: ``{"unexpected": 1}``
``not_json``        HTTP 200 with an HTML body (a proxy or another service at that address)
``hang_up``         the connection is closed without a response

Refused connections are modelled by :func:`unused_port_host`.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "BEHAVIOURS",
    "DEFAULT_COUNTERS",
    "DEFAULT_MODELS",
    "FakeOllama",
    "GARBAGE_REPLY",
    "INVALID_SCHEMA_REPLY",
    "unused_port_host",
]

#: Model name -> digest (64 hex chars, as ``/api/tags`` reports it).
DEFAULT_MODELS: Final[dict[str, str]] = {
    "qwen:14b-chat-q4_K_M": "bd6d92341a1d90e83948768c3e2d0338cefb0d0d9b6e1547fd8af60b76a5dc87",
    "deepseek-coder:6.7b-instruct-q4_K_M": "3af6ffde0e03801dfecc87349d2801ac27c406c9207bfc1cd9c5da2d0bfbc8b1",
    "codellama:13b-instruct-q4_K_M": "c3cf8f064120fdeca2abd45d70d7a7bbd038957963df7543f65e10019ab5ae8d",
}

#: Token counts and durations (nanoseconds) reported by a chat reply.
DEFAULT_COUNTERS: Final[dict[str, int]] = {
    "total_duration": 2_000_000_000,
    "load_duration": 100_000_000,
    "prompt_eval_count": 120,
    "prompt_eval_duration": 300_000_000,
    "eval_count": 60,
    "eval_duration": 1_500_000_000,
}

BEHAVIOURS: Final[frozenset[str]] = frozenset(
    {"valid", "fenced", "prose", "garbage", "truncated", "http_500", "slow", "invalid_schema",
     "not_json", "hang_up"}
)

#: What the "invalid_schema" behaviour answers with.
INVALID_SCHEMA_REPLY: Final[dict[str, Any]] = {"unexpected": 1}

GARBAGE_REPLY: Final[str] = "I'm sorry, but I can't produce an analysis for this request right now."

#: Fixed modification time reported by /api/tags and /api/show (Ollama's format, ns precision).
MODIFIED_AT: Final[str] = "2024-05-01T10:00:00.123456789+00:00"

_STOP_JOIN_SECONDS: Final[float] = 5.0


def unused_port_host() -> str:
    """Return ``"http://127.0.0.1:<port>"`` for a port nothing is listening on.

    Binds a socket to port 0, reads the port the OS chose and closes the socket,
    so connecting to it is refused (used to model "Ollama is not running").
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _now_rfc3339() -> str:
    """Current UTC time formatted like Ollama's ``created_at`` (nanoseconds, ``Z``)."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}000Z"


def _canonical(name: str) -> str:
    """Ollama treats a model name without tag as ``<name>:latest``."""
    return name if ":" in name else f"{name}:latest"


def _details(name: str) -> dict[str, Any]:
    """Plausible ``details`` block derived from a model name like ``qwen:14b-chat-q4_K_M``."""
    base, _, tag = _canonical(name).partition(":")
    family = re.sub(r"[^a-z]+$", "", base.split("/")[-1].lower()) or "llama"
    size = re.search(r"(\d+(?:\.\d+)?)b\b", tag, re.IGNORECASE)
    quant = re.search(r"\b(q\d\w*|f16|fp16|f32)$", tag, re.IGNORECASE)
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": f"{size.group(1)}B" if size else "7B",
        "quantization_level": quant.group(1).upper() if quant else "Q4_0",
    }


def _size_bytes(name: str) -> int:
    """Deterministic, plausible on-disk size (about 0.6 bytes per parameter)."""
    params = float(_details(name)["parameter_size"][:-1])
    return int(params * 0.6e9) + 12_345


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks live connections so ``stop()`` can close them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeOllama) -> None:
        self.fake = fake
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self.connections_accepted = 0
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"fake-ollama-conn-{client_address[1]}",
            daemon=True,
        )
        with self._conn_lock:
            self._conns[request] = t
            self.connections_accepted += 1
        t.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conn_lock:
                self._conns.pop(request, None)

    def live_connections(self) -> list[tuple[socket.socket, threading.Thread]]:
        with self._conn_lock:
            return list(self._conns.items())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, stop()) are expected; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
        # client's delayed ACK add ~40 ms to every keep-alive request.
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, payload: Any, content_type: str = "application/json; charset=utf-8") -> None:
        if isinstance(payload, (bytes, str)):
            data = payload.encode() if isinstance(payload, str) else payload
        else:
            data = json.dumps(payload, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _dispatch(self) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path
        raw = self._read_body()
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        fake._record(self.command, path, body)

        routes: dict[tuple[str, str], Callable[[Any], None]] = {
            ("POST", "/api/chat"): self._chat,
            ("GET", "/api/tags"): self._tags,
            ("POST", "/api/show"): self._show,
            ("GET", "/api/version"): self._version,
            ("GET", "/api/ps"): self._ps,
            ("GET", "/"): self._root,
        }
        handler = routes.get((self.command, path))
        if handler is None:
            if any(p == path for _, p in routes):
                self._send(405, "405 method not allowed", "text/plain")
            else:
                self._send(404, "404 page not found", "text/plain")
            return
        if bad_json or (self.command == "POST" and not isinstance(body, dict)):
            self._error(400, "invalid JSON request body")
            return
        handler(body)

    do_GET = do_POST = do_DELETE = do_PUT = _dispatch

    # -- endpoints --------------------------------------------------------------------------

    def _root(self, _body: Any) -> None:
        self._send(200, "Ollama is running", "text/plain; charset=utf-8")

    def _version(self, _body: Any) -> None:
        self._send(200, {"version": self.server.fake.version})

    def _ps(self, _body: Any) -> None:
        self._send(200, {"models": []})

    def _tags(self, _body: Any) -> None:
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": MODIFIED_AT,
                "size": _size_bytes(name),
                "digest": digest,
                "details": _details(name),
            }
            for name, digest in dict(self.server.fake.models).items()
        ]
        self._send(200, {"models": models})

    def _show(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        name = body.get("model") or body.get("name") or ""
        if not name:
            self._error(400, "model is required")
            return
        found = fake._lookup(name)
        if found is None:
            self._error(404, f"model '{name}' not found")
            return
        details = _details(found)
        self._send(
            200,
            {
                "license": "",
                "modelfile": f"# Modelfile generated by FakeOllama\nFROM {found}\n",
                "parameters": 'stop                           "<|im_end|>"',
                "template": "{{ .System }}\n{{ .Prompt }}",
                "details": details,
                "model_info": {
                    "general.architecture": details["family"],
                    "general.parameter_count": int(float(details["parameter_size"][:-1]) * 1e9),
                    f"{details['family']}.context_length": 32768,
                },
                "capabilities": ["completion"],
                "modified_at": MODIFIED_AT,
            },
        )

    def _chat(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        with fake._lock:
            fake.chats_in_flight += 1
            fake.peak_chats_in_flight = max(fake.peak_chats_in_flight, fake.chats_in_flight)
        try:
            self._answer_chat(body)
        finally:
            with fake._lock:
                fake.chats_in_flight -= 1

    def _answer_chat(self, body: dict[str, Any]) -> None:
        fake = self.server.fake
        behaviour, reply, counters, delay, fail = fake._snapshot_for_chat()
        if fail:
            self._error(500, "llama runner process has terminated: exit status 2 (fail_first)")
            return
        name = body.get("model") or ""
        if not name:
            self._error(400, "model is required")
            return
        if body.get("stream", True):  # real Ollama streams unless told otherwise
            self._error(400, 'FakeOllama supports only non-streaming chat; send "stream": false')
            return
        model = fake._lookup(name)
        if model is None:
            self._error(404, f"model '{name}' not found")
            return
        if model in fake.total_duration_by_model:
            counters["total_duration"] = fake.total_duration_by_model[model]

        if behaviour == "http_500":
            self._error(500, "llama runner process has terminated: exit status 2")
            return
        if behaviour == "not_json":  # a proxy's or another service's page at OLLAMA_HOST
            self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            return
        if behaviour == "hang_up":  # the connection closes before any response
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if behaviour == "slow":
            if fake._stop_event.wait(delay):
                self.close_connection = True  # server stopping: drop the request
                return

        if callable(reply):
            try:
                reply = reply(body)
            except Exception as exc:  # surface test bugs as an HTTP error, not a dropped socket
                self._error(500, f"FakeOllama reply_json callable raised {exc!r}")
                return
        done_reason = "stop"
        text = json.dumps(reply)
        if behaviour in ("valid", "slow"):
            content = text
        elif behaviour == "fenced":
            content = "Here is the analysis:\n```json\n" + json.dumps(reply, indent=2) + "\n```"
        elif behaviour == "prose":
            content = "Sure! Here is the JSON you asked for: " + text + " Hope this helps."
        elif behaviour == "garbage":
            content = GARBAGE_REPLY
        elif behaviour == "truncated":
            content = text[: max(1, len(text) // 2)]
            done_reason = "length"
            num_predict = (body.get("options") or {}).get("num_predict")
            if isinstance(num_predict, int) and num_predict > 0:
                counters["eval_count"] = num_predict
        elif behaviour == "invalid_schema":
            content = json.dumps(INVALID_SCHEMA_REPLY)
        else:  # pragma: no cover - guarded by the behaviour setter
            self._error(500, f"unknown FakeOllama behaviour {behaviour!r}")
            return

        self._send(
            200,
            {
                "model": name,
                "created_at": _now_rfc3339(),
                "message": {"role": "assistant", "content": content},
                "done_reason": done_reason,
                "done": True,
                **{k: int(v) for k, v in counters.items()},
            },
        )


class FakeOllama:
    """A fake Ollama server on ``127.0.0.1:<OS-chosen port>``, served from a daemon thread.

    All public attributes may be changed at any time, also while the server runs;
    each request reads them once when it arrives.

    Attributes:
        models: model name -> digest served by ``/api/tags``; chat/show on other names -> 404.
        behaviour: what ``/api/chat`` answers (see :data:`BEHAVIOURS`); default ``"valid"``.
        reply_json: the JSON object the "model" answers with, or a callable receiving the
            parsed request body and returning that object (to answer per prompt/format).
        delay_seconds: how long ``"slow"`` waits before answering (interrupted by ``stop()``).
        counters: token counts / durations (ns) put on every chat reply (see
            :data:`DEFAULT_COUNTERS`); ``"truncated"`` reports ``options.num_predict`` as
            ``eval_count`` when the request sets it.
        total_duration_by_model: model name -> ``total_duration`` (ns) reported for that
            model instead of the counters' (a slow model beside a fast one, for routing).
        fail_first: the next N ``/api/chat`` requests get HTTP 500, then behaviour applies;
            decremented per failed request.
        requests: every request received, ``{"method", "path", "body"}`` (body: parsed JSON
            or None), in arrival order.
        version: what ``GET /api/version`` reports.
    """

    def __init__(self, models: dict[str, str] | None = None) -> None:
        """Create a (not yet started) fake; ``models`` defaults to :data:`DEFAULT_MODELS`."""
        self.models: dict[str, str] = dict(DEFAULT_MODELS if models is None else models)
        self._behaviour = "valid"
        self.reply_json: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] = {"answer": "ok"}
        self.delay_seconds: float = 5.0
        self.counters: dict[str, int] = dict(DEFAULT_COUNTERS)
        self.total_duration_by_model: dict[str, int] = {}
        self.fail_first: int = 0
        self.version: str = "0.5.7"
        self.requests: list[dict[str, Any]] = []
        self.chats_in_flight = 0
        self.peak_chats_in_flight = 0  # the most /api/chat requests it was answering at once
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- configuration ------------------------------------------------------------------------

    @property
    def behaviour(self) -> str:
        """What ``/api/chat`` answers; one of :data:`BEHAVIOURS` (ValueError otherwise)."""
        return self._behaviour

    @behaviour.setter
    def behaviour(self, value: str) -> None:
        if value not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {value!r}; expected one of {sorted(BEHAVIOURS)}")
        self._behaviour = value

    @property
    def host(self) -> str:
        """``"http://127.0.0.1:<port>"``; only valid while started (RuntimeError otherwise)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        """The OS-chosen port; only valid while started (RuntimeError otherwise)."""
        if self._server is None:
            raise RuntimeError("FakeOllama is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._server is not None

    @property
    def connection_count(self) -> int:
        """TCP connections accepted since ``start()`` (to check keep-alive reuse)."""
        return self._server.connections_accepted if self._server is not None else 0

    def count(self, path: str | None = None) -> int:
        """Number of requests received, optionally only those for ``path`` (e.g. ``"/api/chat"``)."""
        with self._lock:
            if path is None:
                return len(self.requests)
            return sum(1 for r in self.requests if r["path"] == path)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeOllama:
        """Bind 127.0.0.1:0 and serve in a daemon thread; returns self. No-op if running."""
        if self._server is not None:
            return self
        self._stop_event.clear()
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-ollama-{server.server_address[1]}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and open connections, join threads (<= 5 s).

        Interrupts ``"slow"`` requests in flight (their connections are dropped). Idempotent.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        deadline = time.monotonic() + _STOP_JOIN_SECONDS
        self._stop_event.set()
        server.shutdown()
        server.server_close()
        thread.join(max(0.0, deadline - time.monotonic()))
        live = server.live_connections()
        for conn, _ in live:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, t in live:
            t.join(max(0.0, deadline - time.monotonic()))
        self._server = self._thread = None

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.host if self._server is not None else "stopped"
        return f"FakeOllama({where}, behaviour={self._behaviour!r})"

    # -- used by the handler ------------------------------------------------------------------

    def _record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "body": body})

    def _lookup(self, name: str) -> str | None:
        models = self.models
        if name in models:
            return name
        canonical = _canonical(name)
        return canonical if canonical in models else None

    def _snapshot_for_chat(self) -> tuple[str, Any, dict[str, int], float, bool]:
        """Read the configuration once per chat request (and consume one ``fail_first``)."""
        with self._lock:
            fail = self.fail_first > 0
            if fail:
                self.fail_first -= 1
        return self._behaviour, self.reply_json, dict(self.counters), float(self.delay_seconds), fail


def schema_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A valid answer for whichever of the project's schemas the request's `format` asks for
    (pm_domain.llm.schemas), so one fake can serve all three LLM stages."""
    properties = (body.get("format") or {}).get("properties", {})
    if "trend" in properties:
        return {"trend": "bullish", "strength": 6, "regime": "trending",
                "key_observations": ["close above SMA50", "RSI14 near 55"],
                "summary": "A steady uptrend with moderate volatility."}
    if "action" in properties:
        return {"action": "HOLD", "confidence": 70, "reasoning": "The forecast edge is too small to trade."}
    if "concerns" in properties:
        return {"concerns": ["volatility is elevated"], "summary": "Risk is moderate for this date."}
    return {"answer": "ok"}
