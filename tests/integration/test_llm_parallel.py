"""Several Ollama servers and requests in flight at once (OLLAMA_HOST as a list,
PM_LLM_PARALLEL_PER_HOST): the project's client against two fake servers on their own ports.
The same requests asked one at a time of one server and in parallel of two give the same rows and
the same cache entries; a server that dies mid-run has its requests moved to the other, and none
is asked twice; mode=ollama fails only when no server is left."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading

import polars as pl
import pytest

from pm_domain.llm.client import LLMClient, OllamaSettings, OllamaUnavailableError
from pm_domain.llm.prompts import render
from pm_domain.llm.records import Request, answer_all, cache_frame, calls_frame
from pm_domain.llm.schemas import SignalOpinion
from tests.support.fake_ollama import DEFAULT_MODELS, FakeOllama, unused_port_host

pytestmark = pytest.mark.timeout(60)

MODELS = {"analysis": "qwen:14b-chat-q4_K_M", "signal": "deepseek-coder:6.7b-instruct-q4_K_M",
          "risk": "codellama:13b-instruct-q4_K_M"}
DAY = dt.date(2018, 12, 31)
TICKERS = [f"T{i:02d}" for i in range(16)]
# Columns that say when, how fast and where a reply came, not what it was.
TIMING = ["latency_ms", "wall_ms", "host", "called_at", "tokens_per_second", "prompt_tokens_per_second",
          "eval_duration_ms", "prompt_eval_duration_ms", "load_duration_ms", "completion_tokens", "prompt_tokens",
          "attempts", "llm_error"]


def opinion(body: dict) -> dict:
    """A reply that depends on the prompt, as a model's does: a different one per ticker."""
    digest = int(hashlib.sha256(body["messages"][1]["content"].encode()).hexdigest(), 16)
    return {"action": ("BUY", "SELL", "HOLD")[digest % 3], "confidence": 40 + digest % 50,
            "reasoning": f"Reply {digest % 997} for this prompt."}


def requests() -> list[Request]:
    values = {"expected_return": 0.01, "expected_return_net": 0.009, "forecast_confidence": 0.6,
              "stop_distance": 0.05, "target_distance": 0.08, "risk_score": 40.0, "rsi_14": 55.0,
              "sma_20": 100.0, "sma_50": 98.0, "realised_vol_20d": 0.2, "sigma_h": 0.03,
              "proposed_action": "BUY", "trend": "bullish", "regime": "trending", "strength": 6, "horizon": 5}
    return [Request(t, DAY, render("signal", t, DAY, values | {"close": 100.0 + i}))
            for i, t in enumerate(TICKERS)]


def settings(*hosts: str, parallel: int = 1, **overrides) -> OllamaSettings:
    return OllamaSettings(host=",".join(hosts), models=MODELS, parallel_per_host=parallel, **overrides)


def answer(client: LLMClient) -> list:
    return answer_all(client, "signal", requests(), SignalOpinion, lambda keys: {})


def fake(delay: float = 0.2, models: dict[str, str] | None = None) -> FakeOllama:
    server = FakeOllama(models).start()
    server.behaviour, server.delay_seconds, server.reply_json = "slow", delay, opinion
    return server


def what_was_said(calls) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = calls_frame(calls, dt.datetime(2019, 1, 1)).drop(TIMING)
    return rows, cache_frame(calls).drop("created_at").sort("cache_key")


def test_two_servers_in_parallel_give_the_rows_and_cache_of_one_server_one_at_a_time():
    with fake() as one, fake() as two:
        sequential = answer(LLMClient(settings(one.host)))
        assert one.peak_chats_in_flight == 1
        asked_before = one.count("/api/chat")
        parallel_client = LLMClient(settings(one.host, two.host, parallel=2))
        assert parallel_client.concurrency() == 4
        parallel = answer(parallel_client)
        # Each request asked once across both servers, both used, never more than 2 at a time on either.
        assert one.count("/api/chat") - asked_before + two.count("/api/chat") == len(TICKERS)
        assert {c.host for c in parallel} == {one.host, two.host}
        assert max(one.peak_chats_in_flight, two.peak_chats_in_flight) == 2
    assert [c.source for c in parallel] == ["ollama"] * len(TICKERS)
    assert [c.ticker for c in parallel] == TICKERS  # the requests' order, not the finishing order
    seq_rows, seq_cache = what_was_said(sequential)
    par_rows, par_cache = what_was_said(parallel)
    assert par_rows.equals(seq_rows) and par_cache.equals(seq_cache)
    assert par_cache.height == len(TICKERS) and par_rows["llm_outcome"].unique().to_list() == ["ok"]


def test_a_server_that_dies_mid_run_has_its_requests_moved_and_none_is_lost_or_asked_twice():
    with fake() as one, fake() as two:
        reference = answer(LLMClient(settings(one.host)))
        answered_by_one, one_host, two_host = one.count("/api/chat"), one.host, two.host
        client = LLMClient(settings(one.host, two_host), sleep=lambda seconds: None)

        def kill_two_after_its_third_request():
            while two.count("/api/chat") < 3:
                threading.Event().wait(0.01)
            two.stop()

        killer = threading.Thread(target=kill_two_after_its_third_request)
        killer.start()
        calls = answer(client)
        killer.join(10)
        moved = one.count("/api/chat") - answered_by_one
    assert [c.source for c in calls] == ["ollama"] * len(TICKERS)
    assert [c.outcome for c in calls] == ["ok"] * len(TICKERS)
    on_two = [c for c in calls if c.host == two_host]
    assert 1 <= len(on_two) <= 3 and moved == len(TICKERS) - len(on_two)  # each answered exactly once
    assert any(c.attempts > 1 for c in calls if c.host == one_host)  # the one in flight when two died
    assert what_was_said(calls)[0].equals(what_was_said(reference)[0])


def test_mode_ollama_fails_only_when_no_server_is_left():
    refused = unused_port_host()
    with fake(delay=0.01) as live:
        client = LLMClient(settings(refused, live.host, mode="ollama"))
        client.require_available()
        assert client.concurrency() == 1
        assert [c.host for c in answer(client)] == [live.host] * len(TICKERS)
        (note,) = client.availability().notes
        assert note.startswith(f"Ollama unreachable at {refused}: ")
    with pytest.raises(OllamaUnavailableError, match=f"Ollama unreachable at {refused}.*; Ollama unreachable at"):
        LLMClient(settings(refused, unused_port_host(), mode="ollama")).require_available()


def test_under_auto_the_last_server_going_down_leaves_labelled_fallback_rows():
    with fake(delay=0.3) as only:
        host = only.host
        client = LLMClient(settings(host), sleep=lambda seconds: None)
        threading.Timer(0.5, only.stop).start()
        calls = answer(client)
    assert {c.outcome for c in calls[2:]} == {"unreachable"}
    assert all(c.value is None and c.source == "fallback" for c in calls[2:])
    assert f"Ollama stopped answering at {host}" in calls[-1].error


def test_a_server_with_another_build_of_a_model_is_not_asked_for_it():
    other_build = DEFAULT_MODELS | {MODELS["signal"]: "0" * 64}
    with fake(delay=0.01) as one, fake(delay=0.01, models=other_build) as two:
        client = LLMClient(settings(one.host, two.host, parallel=2))
        calls = answer(client)
        assert two.count("/api/chat") == 0 and {c.host for c in calls} == {one.host}
        (note,) = client.availability().notes
        assert note.startswith(f"{two.host} has another build of {MODELS['signal']}")


@pytest.mark.parametrize("hosts, expected", [
    ("http://127.0.0.1:1, http://127.0.0.1:2,", ("http://127.0.0.1:1", "http://127.0.0.1:2")),
    ("http://a:1,http://a:1", ("http://a:1",)),
])
def test_the_host_setting_is_a_comma_separated_list(hosts, expected):
    assert OllamaSettings(host=hosts, models=MODELS).hosts == expected
