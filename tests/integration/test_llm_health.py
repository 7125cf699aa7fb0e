"""The LLM health probe and sensor against the fake Ollama server on 127.0.0.1: healthy, slow
(latency, throughput, no reply), a missing model, down, and the backoff that spares a down server."""

from __future__ import annotations

import pytest
from dagster import build_sensor_context, instance_for_test
from dagster_duckdb import DuckDBResource

from pm_domain.llm.health import HealthThresholds, judge, probe, probe_delay_seconds
from pm_resources.connections import connect as store_connect
from pm_resources.ollama import DEFAULT_MODELS, OllamaResource
from pm_resources.store import query
from pm_sensors.llm_health import llm_health_sensor
from tests.support.fake_ollama import DEFAULT_COUNTERS, FakeOllama, unused_port_host

MODELS = list(DEFAULT_MODELS.values())
PROBE_MODEL = DEFAULT_MODELS["signal"]
LIMITS = HealthThresholds(max_latency_seconds=5.0, min_tokens_per_second=5.0)


@pytest.fixture()
def fake():
    with FakeOllama() as server:
        server.reply_json = {"answer": "OK"}
        yield server


def counters(total_s: float, tokens: int, generation_s: float) -> dict[str, int]:
    return {**DEFAULT_COUNTERS, "total_duration": int(total_s * 1e9), "eval_count": tokens,
            "eval_duration": int(generation_s * 1e9), "load_duration": 50_000_000}


def test_a_fast_server_with_every_model_is_healthy_and_measured_from_its_counters(fake):
    fake.counters = counters(total_s=1.2, tokens=8, generation_s=0.4)
    report = probe(fake.host, MODELS, PROBE_MODEL, LIMITS)
    assert (report.status, report.alert, report.reachable) == ("healthy", False, True)
    assert report.latency_ms == pytest.approx(1200.0) and report.tokens_per_second == pytest.approx(20.0)
    assert report.load_ms == pytest.approx(50.0) and report.eval_count == 8
    assert fake.count("/api/chat") == 1


@pytest.mark.parametrize("total_s, tokens, generation_s, reason", [
    (7.5, 8, 0.4, "latency 7.50 s > 5 s"),
    (2.0, 8, 4.0, "throughput 2.0 tokens/s < 5"),
])
def test_slow_latency_or_throughput_is_an_alert_naming_the_measure(fake, total_s, tokens, generation_s, reason):
    fake.counters = counters(total_s, tokens, generation_s)
    report = probe(fake.host, MODELS, PROBE_MODEL, LIMITS)
    assert (report.status, report.alert) == ("slow", True) and reason in report.detail


def test_thresholds_are_configurable(fake):
    fake.counters = counters(total_s=7.5, tokens=8, generation_s=0.4)
    assert probe(fake.host, MODELS, PROBE_MODEL, HealthThresholds(10.0, 5.0)).status == "healthy"


def test_no_reply_within_the_probe_timeout_is_slow(fake):
    fake.behaviour, fake.delay_seconds = "slow", 5.0
    report = probe(fake.host, MODELS, PROBE_MODEL, LIMITS, generate_timeout_seconds=0.5)
    assert report.status == "slow" and "no reply" in report.detail and report.wall_ms >= 400


def test_a_missing_model_is_reported_by_name():
    with FakeOllama(models={PROBE_MODEL: "a" * 64}) as server:
        server.reply_json = {"answer": "OK"}
        server.counters = counters(1.0, 8, 0.4)
        report = probe(server.host, MODELS, PROBE_MODEL, LIMITS)
        assert report.status == "model_missing" and DEFAULT_MODELS["analysis"] in report.models_missing
        assert report.latency_ms == pytest.approx(1000.0)  # the present model was still measured
    with FakeOllama(models={DEFAULT_MODELS["analysis"]: "b" * 64}) as server:
        report = probe(server.host, MODELS, PROBE_MODEL, LIMITS)
        assert report.status == "model_missing" and server.count("/api/chat") == 0


def test_a_refused_connection_is_down():
    report = probe(unused_port_host(), MODELS, PROBE_MODEL, LIMITS)
    assert (report.status, report.reachable, report.alert) == ("down", False, True)


def test_judge_flags_a_reply_without_counters():
    assert judge(None, None, LIMITS)[0] == "slow"


def test_probe_delay_doubles_per_failure_and_is_capped():
    assert [probe_delay_seconds(300, n) for n in range(5)] == [300, 300, 600, 1200, 2400]
    assert probe_delay_seconds(300, 20) == 3600


def _context(instance, fake_host, db_path, cursor=None):
    return build_sensor_context(instance=instance, cursor=cursor, resources={
        "ollama": OllamaResource(host=fake_host, mode="auto"),
        "duckdb": DuckDBResource(database=db_path)})


def test_sensor_stores_each_probe_and_alerts_on_slow(fake, db_path):
    with instance_for_test() as instance:
        fake.counters = counters(1.0, 8, 0.4)
        healthy = llm_health_sensor.evaluate_tick(_context(instance, fake.host, db_path))
        assert healthy.skip_message.startswith("healthy")
        fake.counters = counters(9.0, 8, 0.4)
        slow = llm_health_sensor.evaluate_tick(_context(instance, fake.host, db_path, healthy.cursor))
        assert slow.skip_message.startswith("ALERT slow") and "latency 9.00 s > 5 s" in slow.skip_message
        assert not slow.run_requests
    with store_connect(db_path) as conn:
        rows = query(conn, "SELECT status, alert, latency_ms, tokens_per_second FROM llm_health ORDER BY checked_at")
    assert rows.rows() == [("healthy", False, 1000.0, 20.0), ("slow", True, 9000.0, 20.0)]


def test_sensor_backs_off_a_server_that_does_not_answer(fake, db_path):
    fake.behaviour = "hang_up"  # lists its models, then drops every generation: no answer
    with instance_for_test() as instance:
        first = llm_health_sensor.evaluate_tick(_context(instance, fake.host, db_path))
        assert first.skip_message.startswith("ALERT down")
        second = llm_health_sensor.evaluate_tick(_context(instance, fake.host, db_path, first.cursor))
        assert second.skip_message.startswith("ALERT down")
        probes = fake.count("/api/tags")
        third = llm_health_sensor.evaluate_tick(_context(instance, fake.host, db_path, second.cursor))
        assert "next probe in" in third.skip_message and fake.count("/api/tags") == probes  # not contacted


def test_sensor_leaves_ollama_alone_in_fallback_mode(fake, db_path):
    with instance_for_test() as instance:
        context = build_sensor_context(instance=instance, resources={
            "ollama": OllamaResource(host=fake.host, mode="fallback"), "duckdb": DuckDBResource(database=db_path)})
        assert "not probed" in llm_health_sensor.evaluate_tick(context).skip_message
    assert fake.count() == 0
