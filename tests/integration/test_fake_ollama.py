"""Tests for the fake Ollama server, driven through the real ``ollama.Client``."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import pytest

try:
    from tests.support.fake_ollama import (
        DEFAULT_COUNTERS,
        DEFAULT_MODELS,
        GARBAGE_REPLY,
        INVALID_SCHEMA_REPLY,
        FakeOllama,
        unused_port_host,
    )
except ImportError:  # tests/ on sys.path (pytest rootdir-less "prepend" import mode)
    from fake_ollama import (  # type: ignore[no-redef]
        DEFAULT_COUNTERS,
        DEFAULT_MODELS,
        GARBAGE_REPLY,
        INVALID_SCHEMA_REPLY,
        FakeOllama,
        unused_port_host,
    )

pytestmark = pytest.mark.timeout(10)

MODEL = "qwen:14b-chat-q4_K_M"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"signal": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["signal", "confidence"],
}
REPLY: dict[str, Any] = {"signal": "buy", "confidence": 0.72}
MESSAGES = [{"role": "system", "content": "You are an analyst."}, {"role": "user", "content": "Analyse AAPL"}]


@pytest.fixture()
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as f:
        f.reply_json = dict(REPLY)
        yield f


@pytest.fixture()
def client(fake: FakeOllama) -> Iterator[ollama.Client]:
    c = ollama.Client(host=fake.host, timeout=5)
    yield c
    c.close()


def chat(client: ollama.Client, model: str = MODEL, **kw: Any) -> ollama.ChatResponse:
    kw.setdefault("format", SCHEMA)
    kw.setdefault("options", {"temperature": 0, "num_predict": 256})
    return client.chat(model, MESSAGES, stream=False, **kw)


def test_valid_parses_and_reports_counters(fake: FakeOllama, client: ollama.Client) -> None:
    resp = chat(client, keep_alive="10m")
    assert isinstance(resp, ollama.ChatResponse)
    assert json.loads(resp.message.content) == REPLY
    assert resp.message.role == "assistant"
    assert resp.model == MODEL
    assert resp.done is True and resp.done_reason == "stop"
    assert resp.created_at and resp.created_at.endswith("Z")
    assert resp.prompt_eval_count == 120 and resp.eval_count == 60
    assert resp.eval_duration == 1_500_000_000 and resp.total_duration == 2_000_000_000
    assert resp.load_duration is not None and resp.prompt_eval_duration is not None
    assert {k: getattr(resp, k) for k in DEFAULT_COUNTERS} == DEFAULT_COUNTERS
    # what the client sent is recorded verbatim
    sent = fake.requests[-1]
    assert sent["method"] == "POST" and sent["path"] == "/api/chat"
    assert sent["body"]["stream"] is False
    assert sent["body"]["format"] == SCHEMA
    assert sent["body"]["options"] == {"temperature": 0, "num_predict": 256}
    assert sent["body"]["keep_alive"] == "10m"
    assert sent["body"]["messages"] == MESSAGES


def test_counters_can_be_overridden(fake: FakeOllama, client: ollama.Client) -> None:
    fake.counters = {**fake.counters, "eval_count": 7, "eval_duration": 350_000_000}
    resp = chat(client)
    assert resp.eval_count == 7 and resp.eval_duration == 350_000_000
    assert resp.prompt_eval_count == 120


def test_model_without_tag_means_latest(client: ollama.Client) -> None:
    with FakeOllama(models={"llama3:latest": "ab" * 32}) as f, ollama.Client(host=f.host, timeout=5) as c:
        assert chat(c, model="llama3").model == "llama3"


def test_reply_json_callable_answers_per_request(fake: FakeOllama, client: ollama.Client) -> None:
    seen: list[dict[str, Any]] = []

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        return {"echo": body["messages"][-1]["content"], "has_format": "format" in body}

    fake.reply_json = answer
    resp = client.chat(MODEL, [{"role": "user", "content": "ping"}], format=SCHEMA, stream=False)
    assert json.loads(resp.message.content) == {"echo": "ping", "has_format": True}
    assert seen[0]["model"] == MODEL


def test_reply_json_callable_error_becomes_http_500(fake: FakeOllama, client: ollama.Client) -> None:
    fake.reply_json = lambda body: 1 / 0  # type: ignore[assignment,return-value]
    with pytest.raises(ollama.ResponseError) as ei:
        chat(client)
    assert ei.value.status_code == 500 and "ZeroDivisionError" in ei.value.error


def test_fenced(fake: FakeOllama, client: ollama.Client) -> None:
    fake.behaviour = "fenced"
    content = chat(client).message.content
    prefix = "Here is the analysis:\n```json\n"
    assert content.startswith(prefix) and content.endswith("\n```")
    assert json.loads(content[len(prefix) : -len("\n```")]) == REPLY


def test_prose(fake: FakeOllama, client: ollama.Client) -> None:
    fake.behaviour = "prose"
    content = chat(client).message.content
    start, end = content.index("{"), content.rindex("}") + 1
    assert content[:start].strip() and content[end:].strip()  # chatter on both sides
    assert "```" not in content
    assert json.loads(content[start:end]) == REPLY
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)


def test_garbage(fake: FakeOllama, client: ollama.Client) -> None:
    fake.behaviour = "garbage"
    resp = chat(client)
    assert resp.message.content == GARBAGE_REPLY
    assert "{" not in resp.message.content and "[" not in resp.message.content
    assert resp.done_reason == "stop"


def test_truncated(fake: FakeOllama, client: ollama.Client) -> None:
    fake.behaviour = "truncated"
    resp = chat(client, options={"num_predict": 16})
    full = json.dumps(REPLY)
    assert resp.done_reason == "length"
    assert 0 < len(resp.message.content) < len(full) and full.startswith(resp.message.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.message.content)
    assert resp.eval_count == 16  # ran out of num_predict


def test_invalid_schema(fake: FakeOllama, client: ollama.Client) -> None:
    fake.behaviour = "invalid_schema"
    data = json.loads(chat(client).message.content)
    assert data == INVALID_SCHEMA_REPLY
    assert not set(SCHEMA["required"]) & set(data)


def test_http_500_raises_response_error(fake: FakeOllama, client: ollama.Client) -> None:
    fake.behaviour = "http_500"
    with pytest.raises(ollama.ResponseError) as ei:
        chat(client)
    assert ei.value.status_code == 500
    assert ei.value.error  # the {"error": ...} text, unwrapped by the client


def test_fail_first_then_recovers(fake: FakeOllama, client: ollama.Client) -> None:
    fake.fail_first = 2
    for _ in range(2):
        with pytest.raises(ollama.ResponseError) as ei:
            chat(client)
        assert ei.value.status_code == 500
    assert json.loads(chat(client).message.content) == REPLY
    assert fake.fail_first == 0
    assert fake.count("/api/chat") == 3


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as ei:
        chat(client, model="nope:1b")
    assert ei.value.status_code == 404 and ei.value.error == "model 'nope:1b' not found"
    with pytest.raises(ollama.ResponseError) as ei:
        client.show("nope:1b")
    assert ei.value.status_code == 404


def test_streaming_is_rejected_with_400(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as ei:
        next(iter(client.chat(MODEL, MESSAGES, stream=True)))
    assert ei.value.status_code == 400


def test_slow_answers_after_delay(fake: FakeOllama, client: ollama.Client) -> None:
    fake.behaviour = "slow"
    fake.delay_seconds = 0.2
    t0 = time.monotonic()
    resp = chat(client)
    assert time.monotonic() - t0 >= 0.2
    assert json.loads(resp.message.content) == REPLY


def test_slow_with_client_timeout_raises_read_timeout_and_stop_is_fast() -> None:
    t0 = time.monotonic()
    fake = FakeOllama().start()
    try:
        fake.behaviour = "slow"
        fake.delay_seconds = 60.0
        with ollama.Client(host=fake.host, timeout=0.3) as c:
            # the client does not wrap timeouts: the raw httpx exception escapes
            with pytest.raises(httpx.ReadTimeout):
                chat(c)
            fake.delay_seconds = 60.0
            # a request still sleeping on the server while we stop
            worker = threading.Thread(target=lambda: _swallow(chat, c), daemon=True)
            worker.start()
            _wait_until(lambda: fake.count("/api/chat") == 2)
    finally:
        t_stop = time.monotonic()
        fake.stop()
        assert time.monotonic() - t_stop < 2.0
    assert time.monotonic() - t0 < 4.0


def test_refused_connection_raises_connection_error() -> None:
    with ollama.Client(host=unused_port_host(), timeout=2) as c:
        with pytest.raises(ConnectionError) as ei:
            chat(c)
        with pytest.raises(ConnectionError):
            c.list()
    assert not isinstance(ei.value, httpx.HTTPError)  # builtin ConnectionError, httpx error hidden


def test_list_returns_models_and_digests(client: ollama.Client) -> None:
    listed = client.list()
    assert {m.model: m.digest for m in listed.models} == DEFAULT_MODELS
    for m in listed.models:
        assert m.modified_at is not None and m.size and m.size > 0
        assert m.details is not None and m.details.format == "gguf"
    by_name = {m.model: m for m in listed.models}
    assert by_name["deepseek-coder:6.7b-instruct-q4_K_M"].details.parameter_size == "6.7B"
    assert by_name["codellama:13b-instruct-q4_K_M"].details.quantization_level == "Q4_K_M"


def test_custom_models() -> None:
    models = {"mistral:7b-instruct-q5_K_M": "cd" * 32}
    with FakeOllama(models=models) as f, ollama.Client(host=f.host, timeout=5) as c:
        assert [(m.model, m.digest) for m in c.list().models] == list(models.items())
        with pytest.raises(ollama.ResponseError):
            chat(c)  # MODEL is not installed here


def test_show(client: ollama.Client) -> None:
    info = client.show(MODEL)
    assert info.details is not None and info.details.quantization_level == "Q4_K_M"
    assert info.details.parameter_size == "14B"
    assert info.modelinfo and "general.architecture" in info.modelinfo
    assert info.capabilities == ["completion"]
    assert info.modified_at is not None


def test_version_ps_and_root(fake: FakeOllama, client: ollama.Client) -> None:
    # ollama 0.6.x has no Client.version(); talk HTTP directly
    with httpx.Client(base_url=fake.host, timeout=5) as h:
        assert h.get("/api/version").json() == {"version": fake.version}
        assert h.get("/").text == "Ollama is running"
        assert h.get("/api/nothing").status_code == 404
        assert h.get("/api/chat").status_code == 405
        r = h.post("/api/chat", json={"model": MODEL, "messages": []})  # stream defaults to true
        assert r.status_code == 400 and "error" in r.json()
    assert client.ps().models == []


def test_requests_are_recorded_and_counted(fake: FakeOllama, client: ollama.Client) -> None:
    chat(client)
    chat(client)
    client.list()
    client.show(MODEL)
    assert fake.count() == 4
    assert fake.count("/api/chat") == 2
    assert fake.count("/api/tags") == 1 and fake.count("/api/show") == 1
    assert [(r["method"], r["path"]) for r in fake.requests] == [
        ("POST", "/api/chat"),
        ("POST", "/api/chat"),
        ("GET", "/api/tags"),
        ("POST", "/api/show"),
    ]
    assert fake.requests[2]["body"] is None
    assert fake.requests[3]["body"] == {"model": MODEL}


def test_keep_alive_connection_is_reused_without_nagle_stalls(fake: FakeOllama, client: ollama.Client) -> None:
    t0 = time.monotonic()
    for _ in range(20):
        chat(client)
    client.list()
    assert fake.connection_count == 1
    # ~1 ms per request; Nagle + delayed ACK would make it ~40 ms each (> 0.8 s)
    assert time.monotonic() - t0 < 0.5


def test_concurrent_requests(fake: FakeOllama) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with ollama.Client(host=fake.host, timeout=5) as c:
                for _ in range(5):
                    assert json.loads(chat(c).message.content) == REPLY
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(8)
    assert not errors
    assert fake.count("/api/chat") == 40


def test_behaviour_is_validated(fake: FakeOllama) -> None:
    with pytest.raises(ValueError):
        fake.behaviour = "refuse"
    assert fake.behaviour == "valid"


def test_stop_frees_port_and_is_idempotent() -> None:
    fake = FakeOllama().start()
    host, port = fake.host, fake.port
    with ollama.Client(host=host, timeout=2) as c:
        chat(c)  # leaves an idle keep-alive connection open during stop()
        t0 = time.monotonic()
        fake.stop()
        assert time.monotonic() - t0 < 2.0
        assert not fake.running
        fake.stop()
        with pytest.raises(RuntimeError):
            _ = fake.host
        with pytest.raises((ConnectionError, httpx.TransportError)):
            c.list()  # pooled connection is gone, reconnect is refused
    with ollama.Client(host=host, timeout=2) as c, pytest.raises(ConnectionError):
        c.list()
    # the port can be listened on again (SO_REUSEADDR, as any HTTP server would do)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_restart_gets_a_working_server() -> None:
    fake = FakeOllama()
    with fake:
        first = fake.host
    with fake, ollama.Client(host=fake.host, timeout=5) as c:
        assert json.loads(chat(c).message.content) == {"answer": "ok"}  # default reply_json
    assert first.startswith("http://127.0.0.1:")


def _swallow(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        pass


def _wait_until(cond: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
