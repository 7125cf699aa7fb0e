"""Two consecutive nights end to end, as the daemon runs them: the nightly schedule's run of the
research stages (the LLM stages answered by the fake Ollama through the real client), then the
paper_trading sensor's run of the book. Night 1 places an order, night 2 fills it at the open;
a re-run of night 1 with a different LLM reply leaves the placed order as it was and records an
amendment."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterInstance, Definitions, build_schedule_context, build_sensor_context, instance_for_test, materialize

from pm_assets import ALL_ASSETS, prices
from pm_jobs.jobs import paper_job, research_job
from pm_jobs.schedules import nightly_research_schedule
from pm_resources.broker import SimulatedBrokerResource
from pm_resources.connections import connect as store_connect
from pm_resources.database import ClosingDuckDBResource
from pm_resources.ollama import OllamaResource
from pm_resources.price_source import PriceSourceResource
from pm_resources.store import query
from pm_sensors.paper_trading import paper_trading_sensor
from tests.support.runs import range_tags
from tests.support.stores import copy_of
from tests.support.fake_ollama import FakeOllama, schema_answer

pytestmark = pytest.mark.timeout(600)

TICKERS = ["^GSPC", "^IXIC"]
# On these sessions the 5-session forecast proposes a BUY of ^GSPC (a trade the LLM can veto).
NIGHT_1, NIGHT_2 = dt.date(2018, 10, 16), dt.date(2018, 10, 17)
EQUAL = {"ops": {"target_weights": {"config": {"method": "equal"}}}}


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("nightly") / "history.duckdb")
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("tickers", TICKERS)
        assert materialize([prices], instance=instance, tags=range_tags(TICKERS, "2016-01-04", "2018-10-15"),
                           resources={"duckdb": ClosingDuckDBResource(database=path),
                                      "price_source": PriceSourceResource(source="sample")}).success
    return path


def agreeing(body):
    """The signal model agrees with a BUY; the other stages get their usual valid answers."""
    answer = schema_answer(body)
    return {**answer, "action": "BUY", "confidence": 80} if "action" in answer else answer


def night(instance, definitions, day, sensor_cursor):
    """The 18:30 tick's run, then the paper sensor's run; returns the sensor's cursor."""
    tick = nightly_research_schedule.evaluate_tick(build_schedule_context(
        instance=instance, scheduled_execution_time=dt.datetime.combine(day, dt.time(18, 30), ZoneInfo("America/New_York"))))
    [request] = tick.run_requests
    research = definitions.resolve_job_def(research_job.name).execute_in_process(instance=instance, tags=request.tags)
    assert research.success
    data = paper_trading_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=sensor_cursor))
    [paper] = data.run_requests
    assert paper.job_name == paper_job.name
    assert definitions.resolve_job_def(paper_job.name).execute_in_process(
        instance=instance, tags=paper.tags, run_config=EQUAL).success
    return data.cursor


def rows(path, sql, params=()):
    with store_connect(path, read_only=True) as conn:
        return query(conn, sql, list(params))


def test_two_nights_place_then_fill_and_a_re_run_of_the_first_cannot_change_its_order(history, tmp_path):
    store = copy_of(history, tmp_path)
    with FakeOllama() as fake, instance_for_test() as instance:
        fake.reply_json = agreeing
        ollama = OllamaResource(host=fake.host, mode="ollama", timeout_seconds=5.0, backoff_seconds=0.01)
        definitions = Definitions(assets=ALL_ASSETS, jobs=[research_job, paper_job], resources={
            "duckdb": ClosingDuckDBResource(database=store), "price_source": PriceSourceResource(source="sample"),
            "ollama": ollama, "broker": SimulatedBrokerResource()})
        instance.add_dynamic_partitions("tickers", TICKERS)
        cursor = paper_trading_sensor.evaluate_tick(build_sensor_context(instance=instance)).cursor

        cursor = night(instance, definitions, NIGHT_1, cursor)
        signal = rows(store, "SELECT action, decided_by FROM llm_signals WHERE ticker = '^GSPC' AND date = ?", [NIGHT_1])
        assert signal.row(0) == ("BUY", "forecast+llm")
        placed = rows(store, "SELECT * FROM paper_orders WHERE date = ?", [NIGHT_1])
        assert placed.select("client_order_id", "side", "fill_session").row(0) == (
            "paper-20181016-^GSPC-BUY", "BUY", NIGHT_2)
        assert rows(store, "SELECT count(*) AS n FROM paper_fills").item() == 0  # nothing fills before the open

        cursor = night(instance, definitions, NIGHT_2, cursor)
        fill = rows(store, "SELECT f.*, p.open FROM paper_fills f JOIN prices p ON p.ticker = f.ticker AND p.date = f.date")
        assert fill.select("client_order_id", "date", "status", "filled_shares").row(0) == (
            "paper-20181016-^GSPC-BUY", NIGHT_2, "filled", placed["shares"][0])
        assert fill["reference_price"][0] == fill["open"][0] and fill["fill_price"][0] > fill["open"][0]
        book = rows(store, "SELECT * FROM paper_book ORDER BY date")
        assert book["date"].to_list() == [NIGHT_1, NIGHT_2] and book["positions"].to_list() == [0, 1]
        assert book["costs"][1] > 0

        # Night 1 again with another signal model (the cache keeps the first one's replies), which
        # vetoes the BUY: HOLD at 70% confidence.
        fake.models["gemma3:270m"] = "ab" * 32
        fake.reply_json = schema_answer
        definitions = Definitions(assets=ALL_ASSETS, jobs=[research_job, paper_job], resources={
            **definitions.resources, "ollama": OllamaResource(host=fake.host, mode="ollama", timeout_seconds=5.0, backoff_seconds=0.01,
                                     signal_model="gemma3:270m")})
        assert definitions.resolve_job_def(research_job.name).execute_in_process(
            instance=instance, tags=range_tags(TICKERS, NIGHT_1, NIGHT_1)).success
        assert rows(store, "SELECT action, decided_by, llm_model FROM llm_signals WHERE ticker = '^GSPC' AND date = ?",
                    [NIGHT_1]).row(0) == ("HOLD", "llm_veto", "gemma3:270m")
        from pm_assets.partitions import range_tags as date_range

        rerun = definitions.resolve_job_def(paper_job.name).execute_in_process(
            instance=instance, tags=date_range(None, NIGHT_1, NIGHT_1), run_config=EQUAL)
        assert rerun.success
        assert rows(store, "SELECT * FROM paper_orders WHERE date = ?", [NIGHT_1]).equals(placed)
        amendment = rows(store, "SELECT * FROM paper_order_amendments").row(0, named=True)
        assert amendment["client_order_id"] == "paper-20181016-^GSPC-BUY" and amendment["kind"] == "dropped"
        assert "the placed order stands" in amendment["reason"]
        assert rows(store, "SELECT amendments FROM paper_book WHERE date = ?", [NIGHT_1]).item() == 1
