"""llm_analysis, llm_signals and risk_assessments materialized in-process against a temporary
store, with the real ollama client talking to the fake server (or to nothing)."""

import datetime as dt
import logging

import polars as pl
import pytest
from dagster import DagsterInstance, materialize
from dagster_duckdb import DuckDBResource

from pm_assets import features, llm_analysis, llm_signals, prices, risk_assessments, ts_forecasts
from pm_domain import risk
from pm_domain.calendar import trading_days
from pm_resources.connections import connect as store_connect
from pm_resources.ollama import OllamaResource
from pm_resources.price_source import PriceSourceResource
from pm_resources.store import table_exists
from tests.support.runs import range_tags
from tests.support.stores import copy_of
from tests.support.fake_ollama import FakeOllama, schema_answer, unused_port_host
from tests.support.runs import failure_message, table

pytestmark = pytest.mark.timeout(120)

TICKERS = ["^GSPC", "^IXIC"]
START, END = "2018-12-21", "2018-12-31"
LLM_ASSETS = [llm_analysis, llm_signals, risk_assessments]
LLM_TABLES = ["llm_analysis", "llm_signals", "risk_assessments"]
PARTITIONS = len(TICKERS) * len(trading_days(dt.date.fromisoformat(START), dt.date.fromisoformat(END)))


# December 2018's forecasts propose HOLD on every row, which the signal model is not asked about
# by default; these tests exercise the call path on every row, so they ask (one test checks the default).
ASK_ON_HOLD = {"ops": {"llm_signals": {"config": {"ask_llm_on_hold": True}}}}


def _materialize(instance, db_path, assets, ollama, start=START, end=END, tickers=TICKERS, run_config=None):
    instance.add_dynamic_partitions("tickers", [t for t in tickers if not instance.has_dynamic_partition("tickers", t)])
    if run_config is None:
        run_config = ASK_ON_HOLD if llm_signals in assets else {}
    return materialize(
        assets, instance=instance, raise_on_error=False, tags=range_tags(tickers, start, end), run_config=run_config,
        resources={"duckdb": DuckDBResource(database=db_path),
                   "price_source": PriceSourceResource(source="sample"), "ollama": ollama},
    )


@pytest.fixture(scope="module")
def upstream_store(tmp_path_factory):
    """prices since 2016 and features + forecasts for December 2018, built once per module."""
    path = str(tmp_path_factory.mktemp("llm") / "upstream.duckdb")
    with DagsterInstance.ephemeral() as instance:
        no_llm = OllamaResource(mode="fallback")
        assert _materialize(instance, path, [prices], no_llm, "2016-01-04", "2018-12-31").success
        result = _materialize(instance, path, [features, ts_forecasts], no_llm, "2018-11-01", "2018-12-31")
        assert result.success, failure_message(result)
    return path


@pytest.fixture()
def store(upstream_store, tmp_path):
    return copy_of(upstream_store, tmp_path)


@pytest.fixture()
def fake():
    with FakeOllama() as server:
        server.reply_json = schema_answer
        yield server


def _ollama(host, mode="auto", **overrides):
    return OllamaResource(host=host, mode=mode, **({"timeout_seconds": 2.0, "backoff_seconds": 0.01} | overrides))


def _checks(result):
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def test_auto_mode_with_ollama_writes_every_stage_with_source_latency_and_checks(instance, store, fake):
    result = _materialize(instance, store, LLM_ASSETS, _ollama(fake.host))
    assert result.success, failure_message(result)
    for name in LLM_TABLES:
        rows = table(store, name)
        assert rows.height == PARTITIONS
        assert set(rows["llm_source"]) == {"ollama"} and set(rows["llm_outcome"]) == {"ok"}
        assert set(rows["latency_ms"]) == {2000.0} and set(rows["tokens_per_second"]) == {40.0}
        assert rows["prompt_template_hash"].n_unique() == 1 and rows["prompt_hash"].n_unique() == PARTITIONS
    assert fake.count("/api/chat") == 3 * PARTITIONS
    calls = table(store, "llm_calls")
    assert calls.group_by("stage").len().sort("stage").rows() == [("analysis", PARTITIONS), ("risk", PARTITIONS), ("signal", PARTITIONS)]

    checks = _checks(result)
    assert all(checks[(name, "llm_replies_valid")] for name in LLM_TABLES)
    assert {name for (asset, name) in checks if asset == "llm_signals"} == {
        "validation_structure", "validation_market_context", "validation_risk_return",
        "validation_technical", "validation_calibration", "llm_replies_valid"}
    assert checks[("llm_signals", "validation_structure")]
    metadata = result.asset_materializations_for_node("llm_analysis")[0].metadata
    assert metadata["rows_from_ollama"].value == PARTITIONS and metadata["median_latency_ms"].value == 2000.0
    assert "llm_source" in metadata["run_preview"].value and "latency_ms" in metadata["run_preview"].value

    analysis = table(store, "llm_analysis")
    assert analysis["trend"].to_list() == ["bullish"] * PARTITIONS  # the model's answer, not the rules'
    # December 2018 fell: the indicators vote bearish, so "bullish" is flagged on every such row
    contradictions = analysis.filter(pl.col("content_check") == "contradicts")
    assert contradictions.height > 0 and contradictions["content_reason"].str.contains("indicators vote bearish").all()
    assert checks[("llm_analysis", "llm_trend_agrees")] is False
    rate = result.asset_materializations_for_node("llm_analysis")[0].metadata["trend_agreement_rate"].value
    assert rate == pytest.approx((analysis["content_check"] == "agrees").sum() / PARTITIONS)
    risk_rows = table(store, "risk_assessments")
    assert risk_rows["content_check"].is_in(["covers", "misses", "nothing_past"]).all()
    assert checks[("risk_assessments", "llm_concerns_cover_metrics")] == (risk_rows["content_check"] != "misses").all()
    signals = table(store, "llm_signals")
    assert signals["llm_action"].to_list() == ["HOLD"] * PARTITIONS
    # the fake always says HOLD at 0.7: a forecast trade is vetoed, a forecast HOLD stays HOLD
    assert signals.filter(pl.col("forecast_action") != "HOLD")["decided_by"].eq("llm_veto").all()
    assert signals["action"].eq("HOLD").all() and signals["position_size"].eq(0.0).all()

    # December 2018, asked of models with no known cutoff: PM_LLM_ANONYMIZE=auto anonymizes
    # every prompt, and nothing that names the index or the date reached the server
    for name in LLM_TABLES:
        assert set(table(store, name)["prompt_anonymized"]) == {True}
    assert set(calls["prompt_anonymized"]) == {True}
    sent = _sent_prompts(fake)
    assert len(sent) == 3 * PARTITIONS and all("asset A" in text and "session 0" in text for text in sent)
    assert not [text for text in sent if any(leak in text for leak in ("^GSPC", "^IXIC", "GSPC", "2018"))]


def _sent_prompts(fake) -> list[str]:
    return [m["content"] for r in fake.requests if r["path"] == "/api/chat"
            for m in r["body"]["messages"] if m["role"] == "user"]


def test_named_prompts_when_anonymizing_is_off(instance, store, fake):
    result = _materialize(instance, store, [llm_analysis], _ollama(fake.host, anonymize="never"))
    assert result.success, failure_message(result)
    assert set(table(store, "llm_analysis")["prompt_anonymized"]) == {False}
    sent = _sent_prompts(fake)
    assert sum("Market analysis for ^GSPC at the close of 2018-12-" in text for text in sent) == PARTITIONS // 2


def test_by_default_the_signal_model_is_not_asked_about_a_hold_it_cannot_change(instance, store, fake):
    result = _materialize(instance, store, LLM_ASSETS, _ollama(fake.host), run_config={})
    assert result.success, failure_message(result)
    signals = table(store, "llm_signals")
    holds = signals.filter(pl.col("forecast_action") == "HOLD")
    assert holds.height == PARTITIONS  # every proposal in this window is a HOLD
    assert set(holds["llm_source"]) == {"skipped"} and set(holds["llm_outcome"]) == {"not_asked"}
    assert holds["llm_action"].is_null().all() and holds["action"].eq("HOLD").all()
    assert "ask_llm_on_hold is off" in holds["llm_error"][0]
    # analysis and risk are asked for every row; the signal stage for none
    assert fake.count("/api/chat") == 2 * PARTITIONS
    assert result.asset_materializations_for_node("llm_signals")[0].metadata["rows_from_skipped"].value == PARTITIONS
    assert _checks(result)[("llm_signals", "llm_replies_valid")]


def test_rematerializing_unchanged_partitions_is_served_from_the_cache(instance, store, fake):
    assert _materialize(instance, store, LLM_ASSETS, _ollama(fake.host)).success
    first = {name: table(store, name) for name in LLM_TABLES}
    requests = fake.count("/api/chat")

    again = _materialize(instance, store, LLM_ASSETS, _ollama(fake.host))
    assert again.success
    assert fake.count("/api/chat") == requests  # not one new call
    telemetry = ["llm_source", "llm_outcome", "called_at", "latency_ms", "prompt_tokens",
                 "completion_tokens", "tokens_per_second"]
    for name in LLM_TABLES:
        rows = table(store, name)
        assert set(rows["llm_source"]) == {"cache"} and rows["latency_ms"].is_null().all()
        assert rows.height == PARTITIONS  # replaced, not appended
        assert rows.drop([c for c in telemetry if c in rows.columns]).equals(
            first[name].drop([c for c in telemetry if c in rows.columns]))
    assert table(store, "llm_calls").height == 3 * PARTITIONS


@pytest.mark.parametrize("behaviour, outcome", [
    ("garbage", "invalid_reply"), ("truncated", "invalid_reply"), ("invalid_schema", "invalid_reply"),
    ("not_json", "invalid_reply"), ("http_500", "http_error"), ("slow", "timeout"),
])
def test_every_bad_reply_ends_in_labelled_fallback_rows_and_a_failed_check(instance, store, fake, behaviour, outcome):
    fake.behaviour, fake.delay_seconds = behaviour, 3.0
    result = _materialize(instance, store, LLM_ASSETS, _ollama(fake.host, timeout_seconds=0.2, retries=1))
    assert result.success, failure_message(result)
    checks = _checks(result)
    for name in LLM_TABLES:
        rows = table(store, name)
        assert rows.height == PARTITIONS  # no partition lost
        assert set(rows["llm_source"]) == {"fallback"}
        # a hung server is given up after two timeouts: the rest of the run says so
        assert set(rows["llm_outcome"]) == ({outcome} if behaviour != "slow" else {"timeout", "unreachable"}) \
            or (behaviour == "slow" and set(rows["llm_outcome"]) == {"unreachable"})
        assert rows["llm_error"].is_not_null().all()
        assert checks[(name, "llm_replies_valid")] is False
    assert table(store, "llm_analysis")["summary"].str.starts_with("Rule-based fallback").all()
    signals = table(store, "llm_signals")
    assert signals["llm_action"].is_null().all() and signals["decided_by"].eq("forecast").all()
    assert checks[("llm_signals", "validation_structure")]
    with store_connect(store, read_only=True) as conn:
        cached = conn.sql("SELECT count(*), count(*) FILTER (WHERE valid) FROM llm_cache").fetchall()[0]
    # A reply the server gave is cached, marked invalid, so a re-run does not ask again; an HTTP
    # error, a non-Ollama body or a timeout is no reply at all, and nothing is cached.
    assert cached == ((3 * PARTITIONS, 0) if behaviour in ("garbage", "truncated", "invalid_schema") else (0, 0))


def test_unreachable_ollama_in_auto_mode_writes_fallback_rows(instance, store):
    host = unused_port_host()
    result = _materialize(instance, store, LLM_ASSETS, _ollama(host))
    assert result.success, failure_message(result)
    rows = table(store, "llm_analysis")
    assert set(rows["llm_outcome"]) == {"unreachable"} and rows["llm_error"].str.contains(host).all()
    assert _checks(result)[("llm_analysis", "llm_replies_valid")]  # an outage is reported, not an invalid reply
    # one warning for the run, however many stages find the server gone; the run is tagged
    logs = [e for e in instance.all_logs(result.run_id) if e.user_message and "Ollama unreachable" in e.user_message]
    assert [e.level for e in logs].count(logging.WARNING) == 1 and len(logs) == 3, [(e.level, e.user_message) for e in logs]
    assert instance.get_run_by_id(result.run_id).tags["pm/ollama_unreachable"] == "fallback rows written"


def test_fallback_mode_needs_no_server_and_says_so_in_every_row(instance, store):
    result = _materialize(instance, store, LLM_ASSETS, OllamaResource(mode="fallback"))
    assert result.success, failure_message(result)
    for name in LLM_TABLES:
        rows = table(store, name)
        assert set(rows["llm_source"]) == {"fallback"} and set(rows["llm_outcome"]) == {"disabled"}
        assert rows["latency_ms"].is_null().all()  # no call, no invented latency
    told = [e for e in instance.all_logs(result.run_id) if e.user_message and "PM_LLM_MODE=fallback" in e.user_message]
    assert told and {e.level for e in told} == {logging.INFO}  # a choice, not a warning with a hint to choose it


def test_ollama_mode_fails_when_unreachable_and_keeps_the_previous_rows(instance, store):
    assert _materialize(instance, store, LLM_ASSETS, OllamaResource(mode="fallback")).success
    before = table(store, "llm_analysis")
    result = _materialize(instance, store, [llm_analysis], _ollama(unused_port_host(), mode="ollama"))
    assert not result.success
    assert "Ollama unreachable" in failure_message(result) and "mode=ollama" in failure_message(result)
    assert table(store, "llm_analysis").equals(before)


def test_signals_fail_clearly_without_the_analysis_and_write_nothing(instance, store):
    result = _materialize(instance, store, [llm_signals], OllamaResource(mode="fallback"))
    assert not result.success
    assert "llm_analysis cover 0 of the" in failure_message(result)
    with store_connect(store, read_only=True) as conn:
        assert not table_exists(conn, "llm_signals")


def test_risk_rows_use_the_forecast_distribution_and_the_benchmark(instance, store):
    assert _materialize(instance, store, LLM_ASSETS, OllamaResource(mode="fallback")).success
    rows = table(store, "risk_assessments")
    one_day = table(store, "ts_forecasts").filter(pl.col("horizon") == 1).select(
        "ticker", "date", "expected_log_return", "sigma", "garch_nu")
    joined = rows.join(one_day, on=["ticker", "date"])
    for row in joined.iter_rows(named=True):
        assert row["var_95_model_log"] == pytest.approx(risk.garch_var(row["expected_log_return"], row["sigma"], row["garch_nu"]), rel=1e-12)
        assert row["var_model_distribution"] == ("normal" if row["garch_nu"] is None else f"student_t(nu={row['garch_nu']:.2f})")
    assert rows.filter(pl.col("ticker") == "^GSPC")["beta"].to_list() == pytest.approx([1.0] * (PARTITIONS // 2))
    assert rows["risk_score"].is_between(0, 1).all() and rows["concerns"].list.len().min() >= 1
    signals = table(store, "llm_signals")
    assert rows.select("ticker", "date", "risk_score").equals(signals.select("ticker", "date", "risk_score"))


# --- faults under a 50-partition run ------------------------------------------------------------

FIFTY_START = "2018-11-23"  # 25 sessions to 2018-12-31 x 2 tickers = 50 partitions


def test_a_50_partition_run_against_a_failing_server_labels_every_row_and_stays_bounded(instance, store, fake):
    """Bad replies mixed with good ones, then the server dies mid-run: every partition still gets
    a row whose source and outcome say what happened, and the run ends within its timeouts."""
    import threading
    import time

    partitions = len(TICKERS) * len(trading_days(dt.date.fromisoformat(FIFTY_START), dt.date.fromisoformat(END)))
    assert partitions == 50
    served = {"n": 0}

    def reply(body):
        served["n"] += 1
        if served["n"] == 60:  # the server goes away in the middle of the signal stage
            threading.Thread(target=fake.stop, daemon=True).start()
        return {"unexpected": 1} if served["n"] % 7 == 0 else schema_answer(body)

    fake.reply_json = reply
    began = time.monotonic()
    result = _materialize(instance, store, LLM_ASSETS, _ollama(fake.host, timeout_seconds=2.0, retries=1),
                          start=FIFTY_START)
    elapsed = time.monotonic() - began
    assert result.success, failure_message(result)
    assert elapsed < 90, f"the run took {elapsed:.0f} s"
    outcomes = {}
    for name in LLM_TABLES:
        rows = table(store, name)
        assert rows.height == partitions  # no partition lost
        assert rows.filter(pl.col("llm_source") == "fallback")["llm_error"].is_not_null().all()
        assert set(rows["llm_source"]) <= {"ollama", "fallback"}
        outcomes[name] = rows.group_by("llm_outcome").len().sort("llm_outcome").rows()
    kinds = {outcome for counts in outcomes.values() for outcome, _ in counts}
    assert {"ok", "invalid_reply", "unreachable"} <= kinds, outcomes
    assert dict(outcomes["risk_assessments"]).get("unreachable") == partitions  # all after the server died


# Within the schema's characters (braces and quotes are refused by the grammar and the parser).
HOSTILE_TEXT = "'); DROP TABLE prices; -- os.system('touch PWNED') %s"


def test_llm_output_is_stored_as_data_and_never_run(instance, store, fake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def hostile(body):
        answer = schema_answer(body)
        for key in ("summary", "reasoning"):
            if key in answer:
                answer[key] = HOSTILE_TEXT
        for key in ("key_observations", "concerns"):
            if key in answer:
                answer[key] = [HOSTILE_TEXT[:48]]
        return answer

    fake.reply_json = hostile
    prices_before = table(store, "prices").height
    result = _materialize(instance, store, LLM_ASSETS, _ollama(fake.host))
    assert result.success, failure_message(result)
    assert set(table(store, "llm_analysis")["summary"]) == {HOSTILE_TEXT}
    assert set(table(store, "llm_signals")["llm_reasoning"]) == {HOSTILE_TEXT}
    assert set(table(store, "risk_assessments")["narrative"]) == {HOSTILE_TEXT}
    assert table(store, "prices").height == prices_before  # nothing in the text reached SQL
    assert not (tmp_path / "PWNED").exists()  # or a shell
