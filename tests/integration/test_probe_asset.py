"""memorization_probe materialized in-process against a temporary store, with the real ollama
client talking to the scripted fake server (a model that remembers, one that always says up,
garbage replies) or to nothing; and the sensor that runs it when prices land."""

import datetime as dt
import re

import polars as pl
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, build_sensor_context, instance_for_test, materialize
from dagster_duckdb import DuckDBResource

from pm_assets import memorization_probe, prices
from pm_domain.forecasting.engine import price_rows
from pm_domain.llm.probe import outcome_pairs
from pm_resources.connections import connect as store_connect
from pm_resources.ollama import DEFAULT_MODELS, OllamaResource
from pm_resources.store import query, table_exists
from pm_sensors.memorization_probe import memorization_probe_sensor
from tests.support.stores import copy_of
from tests.support.fake_ollama import FakeOllama, unused_port_host
from tests.support.runs import failure_message
from tests.integration.test_llm_assets import _materialize

pytestmark = pytest.mark.timeout(180)

TICKERS = ["^GSPC", "^IXIC"]
START, END = "2018-06-01", "2018-12-31"
MODEL = DEFAULT_MODELS["signal"]
CUTOFF = "2018-09-28"  # inside the stored prices, so both periods have pairs
QUESTION = re.compile(r"Did (\S+)'s close (\d+) trading sessions after (\d{4}-\d{2}-\d{2}) ")


@pytest.fixture(scope="module")
def prices_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("probe") / "prices.duckdb")
    with DagsterInstance.ephemeral() as instance:
        result = _materialize(instance, path, [prices], OllamaResource(mode="fallback"), START, END)
        assert result.success, failure_message(result)
    return path


@pytest.fixture()
def store(prices_store, tmp_path):
    return copy_of(prices_store, tmp_path)


@pytest.fixture()
def directions(prices_store):
    """(ticker, date) -> the realised 5-session direction, from the stored prices."""
    with store_connect(prices_store, read_only=True) as conn:
        stored = query(conn, "SELECT * FROM prices")
    pairs = outcome_pairs(price_rows(stored))
    return {(t, d.isoformat()): direction for t, d, direction in pairs.select("ticker", "date", "direction").iter_rows()}


@pytest.fixture()
def fake():
    with FakeOllama() as server:
        yield server


def remembering(directions):
    """A scripted model that answers a named question from the real future return; the anonymized
    one, which names nothing, gets a constant."""
    def reply(body):
        asked = QUESTION.match(body["messages"][-1]["content"])
        return {"direction": directions[(asked[1], asked[3])] if asked else "up"}
    return reply


def _ollama(host, mode="auto", cutoff=CUTOFF, **overrides):
    return OllamaResource(host=host, mode=mode, timeout_seconds=2.0, backoff_seconds=0.01,
                          knowledge_cutoffs=f"{MODEL}={cutoff}" if cutoff else "", **overrides)


def _probe(instance, store, ollama, **config):
    instance.add_dynamic_partitions("tickers", [t for t in TICKERS if not instance.has_dynamic_partition("tickers", t)])
    config = {"pairs_per_period": 20, "models": [MODEL]} | config
    return materialize([memorization_probe], instance=instance, raise_on_error=False,
                       run_config={"ops": {"memorization_probe": {"config": config}}},
                       resources={"duckdb": DuckDBResource(database=store), "ollama": ollama})


def rows(store, sql):
    with store_connect(store, read_only=True) as conn:
        return query(conn, sql)


def _check(result):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_memorization"]
    return evaluation


def test_a_remembering_model_behind_the_server_is_flagged_and_the_check_warns(instance, store, fake, directions):
    fake.reply_json = remembering(directions)
    result = _probe(instance, store, _ollama(fake.host))
    assert result.success, failure_message(result)
    summary = rows(store, "SELECT * FROM memorization_probe ORDER BY period DESC, prompt_variant DESC")
    assert summary.select("period", "prompt_variant", "pairs", "answered", "hits").rows() == [
        ("before_cutoff", "named", 20, 20, 20), ("before_cutoff", "anonymized", 20, 20, 10),
        ("after_cutoff", "named", 20, 20, 20), ("after_cutoff", "anonymized", 20, 20, 10)]
    assert set(summary["verdict"]) == {"memorized"} and set(summary["knowledge_cutoff"]) == {dt.date(2018, 9, 28)}
    assert summary["ci_low"][0] > 0.5 and summary["seed"][0] == 24 and summary["horizon"][0] == 5
    check = _check(result)
    assert not check.passed and check.severity == AssetCheckSeverity.WARN and MODEL in check.description

    pairs = rows(store, "SELECT * FROM memorization_probe_pairs")
    assert pairs.height == 80 and pairs.select("model", "prompt_variant", "ticker", "date").is_unique().all()
    named = pairs.filter(pl.col("prompt_variant") == "named")
    assert named["hit"].all() and (named["answer"] == named["direction"]).all()
    assert (named["after_cutoff"] == (named["date"] > dt.date(2018, 9, 28))).all()
    assert set(named["llm_source"]) == {"ollama"} and set(named["latency_ms"]) == {2000.0}
    # the anonymized prompt is one text for every pair: asked once, its reply shared
    assert fake.count("/api/chat") == 40 + 1
    assert pairs.filter(pl.col("prompt_variant") == "anonymized")["prompt_hash"].n_unique() == 1
    assert (pairs["prompt_anonymized"] == (pairs["prompt_variant"] == "anonymized")).all()
    metadata = result.asset_materializations_for_node("memorization_probe")[0].metadata
    assert metadata["requests"].value == 41 and metadata["calls"].value == 41 and metadata["from_cache"].value == 0
    assert metadata["median_latency_ms"].value == 2000.0 and metadata["completion_tokens"].value == 41 * 60
    assert "memorized" in metadata["summary"].value and "| before_cutoff | named | 20 |" in metadata["summary"].value


def test_an_unchanged_rerun_asks_nothing_and_writes_the_same_verdict(instance, store, fake, directions):
    fake.reply_json = remembering(directions)
    assert _probe(instance, store, _ollama(fake.host)).success
    asked = fake.count("/api/chat")
    first = rows(store, "SELECT * FROM memorization_probe_pairs ORDER BY prompt_variant, ticker, date")
    again = _probe(instance, store, _ollama(fake.host))
    assert again.success and fake.count("/api/chat") == asked
    second = rows(store, "SELECT * FROM memorization_probe_pairs ORDER BY prompt_variant, ticker, date")
    assert set(second["llm_source"]) == {"cache"} and second["answer"].equals(first["answer"])
    assert set(rows(store, "SELECT verdict FROM memorization_probe")["verdict"]) == {"memorized"}
    assert again.asset_materializations_for_node("memorization_probe")[0].metadata["requests"].value == 0


def test_an_always_up_model_is_not_flagged(instance, store, fake):
    fake.reply_json = {"direction": "up"}
    result = _probe(instance, store, _ollama(fake.host))
    assert result.success, failure_message(result)
    summary = rows(store, "SELECT * FROM memorization_probe")
    assert set(summary["hit_rate"]) == {0.5} and set(summary["verdict"]) == {"no_evidence"}
    assert _check(result).passed


def test_every_configured_model_is_probed_by_default_and_a_rerun_of_one_replaces_only_its_rows(instance, store, fake):
    fake.reply_json = {"direction": "down"}
    assert _probe(instance, store, _ollama(fake.host), models=[], pairs_per_period=6).success
    summary = rows(store, "SELECT model, period, pairs, probed_at FROM memorization_probe")
    assert set(summary["model"]) == set(DEFAULT_MODELS.values()) and summary.height == 3 * 4
    # the two models without a documented or configured cutoff count every pair as before it:
    # 6 pairs each, against 6 + 6 for the one with a cutoff; and one anonymized question each
    assert fake.count("/api/chat") == (12 + 1) + 2 * (6 + 1)
    assert summary.filter(pl.col("model") != MODEL).group_by("period").agg(pl.col("pairs").sum()).sort("period").rows() == [
        ("after_cutoff", 0), ("before_cutoff", 2 * 2 * 6)]

    assert _probe(instance, store, _ollama(fake.host), models=[MODEL], pairs_per_period=10, seed=3).success
    again = rows(store, "SELECT model, count(*) AS n, min(probed_at) AS at FROM memorization_probe_pairs GROUP BY 1")
    counts = dict(again.select("model", "n").iter_rows())
    assert counts[MODEL] == 2 * 20 and all(n == 2 * 6 for m, n in counts.items() if m != MODEL)
    times = dict(again.select("model", "at").iter_rows())
    assert all(times[MODEL] > at for m, at in times.items() if m != MODEL)


def test_invalid_replies_are_counted_unanswered_and_give_insufficient_data(instance, store, fake):
    fake.behaviour = "garbage"
    result = _probe(instance, store, _ollama(fake.host))
    assert result.success, failure_message(result)
    summary = rows(store, "SELECT * FROM memorization_probe")
    assert set(summary["verdict"]) == {"insufficient_data"} and (summary["answered"] == 0).all()
    assert summary.filter(pl.col("prompt_variant") == "named")["unanswered"].to_list() == [20, 20]
    assert "none of the 20 pairs before the cutoff 2018-09-28 was answered" in summary["verdict_reason"][0]
    pairs = rows(store, "SELECT * FROM memorization_probe_pairs")
    assert set(pairs["llm_outcome"]) == {"invalid_reply"} and pairs["answer"].is_null().all() and pairs["hit"].is_null().all()
    check = _check(result)
    assert check.passed and "too little data" in check.description
    # invalid replies are cached too (deterministic): a re-run does not ask again
    assert rows(store, "SELECT count(*) AS n FROM llm_cache WHERE NOT valid").item() == 41
    asked = fake.count("/api/chat")
    assert _probe(instance, store, _ollama(fake.host)).success and fake.count("/api/chat") == asked


def test_an_unreachable_server_in_auto_mode_writes_the_pairs_unanswered(instance, store):
    result = _probe(instance, store, _ollama(unused_port_host()))
    assert result.success, failure_message(result)
    pairs = rows(store, "SELECT * FROM memorization_probe_pairs")
    assert pairs.height == 80 and set(pairs["llm_source"]) == {"fallback"} and set(pairs["llm_outcome"]) == {"unreachable"}
    assert set(rows(store, "SELECT verdict FROM memorization_probe")["verdict"]) == {"insufficient_data"}


def test_a_model_the_server_lacks_is_counted_unanswered_in_auto_mode(instance, store, fake):
    result = _probe(instance, store, _ollama(fake.host), models=["absent:1b"])
    assert result.success, failure_message(result)
    assert set(rows(store, "SELECT llm_outcome FROM memorization_probe_pairs")["llm_outcome"]) == {"model_missing"}
    assert fake.count("/api/chat") == 0


@pytest.mark.parametrize("models, message", [([MODEL], "Ollama unreachable"), (["absent:1b"], "no model for")])
def test_mode_ollama_fails_before_writing_when_the_server_or_model_is_missing(instance, store, fake, models, message):
    host = unused_port_host() if message == "Ollama unreachable" else fake.host
    result = _probe(instance, store, _ollama(host, mode="ollama"), models=models)
    assert not result.success and message in failure_message(result)
    with store_connect(store, read_only=True) as conn:
        assert not table_exists(conn, "memorization_probe") and not table_exists(conn, "memorization_probe_pairs")


def test_no_stored_prices_gives_insufficient_data_without_a_call(instance, tmp_path, fake):
    result = _probe(instance, str(tmp_path / "empty.duckdb"), _ollama(fake.host))
    assert result.success, failure_message(result)
    summary = rows(str(tmp_path / "empty.duckdb"), "SELECT * FROM memorization_probe")
    assert summary.height == 4 and (summary["pairs"] == 0).all() and "no pair before the cutoff" in summary["verdict_reason"][0]
    assert fake.count("/api/chat") == 0


def test_the_sensor_requests_one_probe_per_latest_price_date_and_skips_in_fallback(store, fake):
    with instance_for_test() as instance:
        def tick(cursor, mode="auto"):
            return memorization_probe_sensor.evaluate_tick(build_sensor_context(
                instance=instance, cursor=cursor, resources={"ollama": OllamaResource(host=fake.host, mode=mode)}))

        started = tick(None)
        assert "started" in started.skip_message and started.run_requests == []
        assert "no new prices" in tick(started.cursor).skip_message
        for day in ("2018-12-28", "2018-12-31"):
            assert _materialize(instance, store, [prices], OllamaResource(mode="fallback"), day, day).success
        landed = tick(started.cursor)
        (request,) = landed.run_requests
        assert request.run_key == "memorization_probe:2018-12-31" and request.job_name == "memorization_evaluation"
        assert "no new prices" in tick(landed.cursor).skip_message
        assert "PM_LLM_MODE=fallback" in tick(started.cursor, mode="fallback").skip_message
    assert fake.count("/api/chat") == 0


def test_the_evaluation_job_holds_the_probe_and_the_nightly_run_does_not():
    from dagster import AssetKey

    from pm_jobs.definitions import defs

    probe = AssetKey("memorization_probe")
    assert defs.resolve_job_def("memorization_evaluation").asset_layer.executable_asset_keys == {probe}
    assert probe not in defs.resolve_job_def("daily_research").asset_layer.executable_asset_keys
    assert defs.resolve_assets_def(probe).op.pool == "ollama"
