"""SQL models: the loader (refs, config, schema.yml, clear errors), the build (one transaction,
checks from the column tests), each mart on a small store whose expected rows were computed by
hand, and the marts' refresh condition."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import AssetKey, AssetMaterialization, evaluate_automation_conditions, instance_for_test, materialize

from pm_assets import SQL_ASSETS
from pm_assets.sql_models import MODELS_DIR, TABLE_WRITERS, sql_model_asset
from pm_domain.sql_models import SqlModelError, load_models
from pm_resources.connections import connect as store_connect
from pm_resources.database import ClosingDuckDBResource
from pm_resources.store import query

TABLES = set(TABLE_WRITERS)
D = dt.date


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


# --- the loader ---------------------------------------------------------------------------------

def test_refs_sources_and_config_are_read_and_models_come_dependencies_first(tmp_path):
    folder = write(tmp_path, {
        "b_summary.sql": "{{ config(materialized='view') }}\nSELECT count(*) AS n FROM {{ ref('a_calls') }}",
        "a_calls.sql": "{# dbt comment #}SELECT * FROM {{ source('pm', 'llm_calls') }} JOIN {{ ref( \"prices\" ) }} USING (ticker);",
    })
    models = load_models(folder, TABLES)
    assert [m.name for m in models] == ["a_calls", "b_summary"]
    a, b = models
    assert a.refs == ("llm_calls", "prices") and a.materialized == "table"
    assert a.sql == "SELECT * FROM llm_calls JOIN prices USING (ticker)"
    assert b.refs == ("a_calls",) and b.materialized == "view" and b.sql == "SELECT count(*) AS n FROM a_calls"


def test_schema_yml_sets_description_materialization_and_tests(tmp_path):
    folder = write(tmp_path, {"m.sql": "SELECT 1 AS a, 'x' AS b", "schema.yml": """
version: 2
models:
  - name: m
    description: the model
    config: {materialized: view}
    data_tests:
      - dbt_utils.unique_combination_of_columns: {combination_of_columns: [a, b]}
    columns:
      - name: a
        description: column a
        tests: [not_null, unique]
      - name: b
        data_tests:
          - accepted_values: {values: [x, y]}
"""})
    (model,) = load_models(folder, TABLES)
    assert (model.description, model.materialized, model.column_descriptions["a"]) == ("the model", "view", "column a")
    assert [(t.name, t.kind, t.columns, t.values) for t in model.tests] == [
        ("a_not_null", "not_null", ("a",), ()), ("a_unique", "unique", ("a",), ()),
        ("b_accepted_values", "accepted_values", ("b",), ("x", "y")),
        ("unique_a_b", "unique_combination_of_columns", ("a", "b"), ())]


@pytest.mark.parametrize("files, message", [
    ({"m.sql": "SELECT * FROM {{ ref('nope') }}"}, r"m.sql: ref\('nope'\) is neither a model nor a table"),
    ({"a.sql": "SELECT * FROM {{ ref('b') }}", "b.sql": "SELECT * FROM {{ ref('c') }}", "c.sql": "SELECT * FROM {{ ref('a') }}"},
     r"a.sql: ref\(\) cycle a -> b -> c -> a"),
    ({"x/m.sql": "SELECT 1", "y/m.sql": "SELECT 2"}, r"y/m.sql: model 'm' is defined twice \(also .*x/m.sql\)"),
    ({"prices.sql": "SELECT 1"}, "would replace the table a Python asset writes"),
    ({"m.sql": "{% if true %}SELECT 1{% endif %}"}, "m.sql: Jinja blocks"),
    ({"m.sql": "SELECT {{ var('x') }}"}, r"m.sql: unsupported Jinja"),
    ({"m.sql": "{{ config(materialized='incremental') }} SELECT 1"}, "materialized='incremental': use table or view"),
    ({"m.sql": "SELECT * FROM {{ source('raw', 'prices') }}"}, "write source\\('pm', 'table'\\)"),
    ({"m.sql": "SELECT 1", "s.yml": "models:\n  - name: other\n"}, r"s.yml: describes model 'other', but there is no other.sql"),
    ({"m.sql": "SELECT 1 AS a", "s.yml": "models:\n  - name: m\n    columns:\n      - name: a\n        tests: [relationships]\n"},
     "column test 'relationships' on a is not supported"),
    ({"Bad-Name.sql": "SELECT 1"}, "a model's file name is its table name"),
])
def test_malformed_models_fail_at_load_naming_the_file(tmp_path, files, message):
    with pytest.raises(SqlModelError, match=message):
        load_models(write(tmp_path, files), TABLES)


def test_the_project_marts_load_with_lineage_to_the_assets_they_read():
    models = {m.name: m for m in load_models(MODELS_DIR, TABLES)}
    assert set(models) == {"signal_scorecard", "llm_latency_daily", "portfolio_overview", "llm_scorecard"}
    assert models["portfolio_overview"].refs == ("prices", "llm_signals", "risk_assessments", "backtests")
    deps = {a.key.to_user_string(): {k.to_user_string() for k in a.asset_deps[a.key]} for a in SQL_ASSETS}
    assert deps["llm_latency_daily"] == {"llm_analysis", "llm_signals", "risk_assessments"}
    assert deps["signal_scorecard"] == {"signal_outcomes"}
    assert deps["llm_scorecard"] == {"llm_signals", "signal_outcomes"}


# --- the build ----------------------------------------------------------------------------------

def build(db_path: str, assets, instance=None):
    return materialize(assets, resources={"duckdb": ClosingDuckDBResource(database=db_path)}, instance=instance,
                       raise_on_error=False)


def rows(db_path: str, sql: str) -> list[tuple]:
    with store_connect(db_path, read_only=True) as conn:
        return query(conn, sql).rows()


def test_a_new_sql_file_is_an_asset_and_a_failed_build_keeps_the_previous_version(tmp_path, db_path):
    with store_connect(db_path) as conn:
        conn.execute("CREATE TABLE prices AS SELECT 'AAA' AS ticker, DATE '2018-12-31' AS date, 10.0::DOUBLE AS close")
    folder = write(tmp_path / "models", {"last_close.sql": "SELECT ticker, max(close) AS close FROM {{ ref('prices') }} GROUP BY ALL",
                                          "schema.yml": "models:\n  - name: last_close\n    columns:\n      - name: close\n        data_tests:\n          - accepted_values: {values: [11.0]}\n"})
    (model,) = load_models(folder, TABLES)
    result = build(db_path, [sql_model_asset(model)])
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.metadata["failing_rows"].value) == ("close_accepted_values", False, 1)
    assert rows(db_path, "SELECT * FROM last_close") == [("AAA", 10.0)]

    (folder / "last_close.sql").write_text("SELECT ticker, max(clsoe) AS close FROM {{ ref('prices') }} GROUP BY ALL")
    (broken,) = load_models(folder, TABLES)
    failed = build(db_path, [sql_model_asset(broken)])
    assert not failed.success
    error = failed.get_step_failure_events()[0].event_specific_data.error
    assert "last_close.sql: DuckDB could not build last_close" in error.cause.message and "clsoe" in error.cause.message
    assert rows(db_path, "SELECT * FROM last_close") == [("AAA", 10.0)]  # the previous version stays

    (folder / "last_close.sql").write_text("{{ config(materialized='view') }} SELECT ticker, close FROM {{ ref('prices') }}")
    (as_view,) = load_models(folder, TABLES)
    assert build(db_path, [sql_model_asset(as_view)]).success  # a table becomes a view in place
    with store_connect(db_path, read_only=True) as conn:
        assert query(conn, "SELECT table_type FROM information_schema.tables WHERE table_name = 'last_close'").rows() == [("VIEW",)]


@pytest.fixture()
def small_store(db_path):
    """A few rows per table, small enough to compute every mart by hand."""
    with store_connect(db_path) as conn:
        conn.execute("""CREATE TABLE signal_outcomes AS SELECT * FROM (VALUES
            ('AAA', DATE '2018-11-01', 'BUY',  0.8::DOUBLE, true,  0.02::DOUBLE,  0.05::DOUBLE, 0.02::DOUBLE),
            ('AAA', DATE '2018-11-02', 'SELL', 0.6, false, 0.01, -0.03, 0.01),
            ('AAA', DATE '2018-11-05', 'HOLD', 0.5, NULL, -0.01, NULL, -0.01),
            ('AAA', DATE '2018-11-06', 'BUY',  0.7, NULL,  NULL,  NULL, NULL),
            ('AAA', DATE '2018-12-03', 'SELL', 0.9, true, -0.04,  NULL, -0.04)
            ) t(ticker, date, action, confidence, hit, realised_return_5d, realised_return_30d, realised_return_horizon)""")
        conn.execute("""CREATE TABLE llm_calls AS SELECT * FROM (VALUES
            (TIMESTAMP '2018-12-03 20:00:00', 'signal', 'm1', 'ollama', 'ok', 100.0::DOUBLE, 10.0::DOUBLE),
            (TIMESTAMP '2018-12-03 20:01:00', 'signal', 'm1', 'ollama', 'ok', 200.0, 20.0),
            (TIMESTAMP '2018-12-03 20:02:00', 'signal', 'm1', 'ollama', 'ok', 300.0, 30.0),
            (TIMESTAMP '2018-12-03 20:03:00', 'signal', 'm1', 'ollama', 'ok', 400.0, 40.0),
            (TIMESTAMP '2018-12-03 20:04:00', 'signal', 'm1', 'cache', 'ok', NULL, NULL),
            (TIMESTAMP '2018-12-03 20:05:00', 'signal', 'm1', 'fallback', 'timeout', NULL, NULL),
            -- a fresh reply that did not validate: the server's time counts, the row is a fallback
            (TIMESTAMP '2018-12-03 20:06:00', 'signal', 'm1', 'fallback', 'invalid_reply', 500.0, 5.0),
            (TIMESTAMP '2018-12-03 20:07:00', 'signal', 'm1', 'skipped', 'not_asked', NULL, NULL),
            (TIMESTAMP '2018-12-04 20:00:00', 'analysis', NULL, 'fallback', 'unreachable', NULL, NULL)
            ) t(called_at, stage, llm_model, llm_source, llm_outcome, latency_ms, tokens_per_second)""")
        conn.execute("""CREATE TABLE prices AS SELECT * FROM (VALUES
            ('AAA', DATE '2018-12-03', 10.0::DOUBLE, TIMESTAMP '2018-12-03 23:00:00'),
            ('AAA', DATE '2018-12-04', 11.0, TIMESTAMP '2018-12-04 23:00:00'),
            ('BBB', DATE '2018-12-03', 20.0, TIMESTAMP '2018-12-03 23:00:00')
            ) t(ticker, date, close, ingested_at)""")
        conn.execute("""CREATE TABLE llm_signals AS SELECT * FROM (VALUES
            ('AAA', DATE '2018-11-01', 'HOLD', 0.6::DOUBLE, 0.0::DOUBLE, 'llm_veto', 'ollama', 'BUY', 'SELL', 0.9::DOUBLE, false),
            ('AAA', DATE '2018-11-02', 'SELL', 0.6, 0.1, 'forecast+llm', 'ollama', 'SELL', 'SELL', 0.7, true),
            ('AAA', DATE '2018-12-03', 'HOLD', 0.5, 0.0, 'forecast', 'fallback', 'HOLD', NULL, NULL, true),
            ('AAA', DATE '2018-12-04', 'BUY', 0.7, 0.1, 'llm', 'ollama', 'BUY', 'BUY', 0.8, true)
            ) t(ticker, date, action, confidence, position_size, decided_by, llm_source, forecast_action, llm_action,
                llm_confidence, after_cutoff)""")
        conn.execute("""CREATE TABLE risk_assessments AS SELECT * FROM (VALUES
            ('AAA', DATE '2018-12-03', 'high', 0.6::DOUBLE), ('AAA', DATE '2018-12-04', 'medium', 0.4)
            ) t(ticker, date, risk_level, risk_score)""")
        conn.execute("""CREATE TABLE backtests AS SELECT * FROM (VALUES
            ('AAA', DATE '2018-12-04', 'failed', 'Sharpe 1.5 ...', 'failed', 'failed before any stress (...)',
             0.01::DOUBLE, 0.02::DOUBLE, 1.5::DOUBLE),
            ('BBB', DATE '2018-12-03', 'insufficient_data', 'no signal in the window', 'insufficient_data',
             'no verdict to stress: insufficient data', NULL, NULL, NULL)
            ) t(ticker, date, verdict, verdict_reason, robust_verdict, robust_reason, total_return,
                buy_hold_total_return, sharpe)""")
    return db_path


def test_the_marts_on_a_hand_computed_store(small_store):
    result = build(small_store, SQL_ASSETS)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    scorecard = rows(small_store, "SELECT * FROM signal_scorecard")
    expected = [
        # signals buys sells holds scored hit_rate  mean r5      mean r30  call r5  call r30  Brier
        ("AAA", D(2018, 11, 1), 4, 2, 1, 1, 2, 0.5, 0.02 / 3, 0.01, 0.005, 0.04, 0.2),
        ("AAA", D(2018, 12, 1), 1, 0, 1, 0, 1, 1.0, -0.04, None, 0.04, None, 0.01),
    ]
    assert len(scorecard) == 2
    for got, want in zip(scorecard, expected, strict=True):
        assert got == pytest.approx(want)

    latency = rows(small_store, "SELECT * FROM llm_latency_daily")
    # p95 of 100..400 interpolated: 300 + 0.85 * 100
    # five replies reached the server (100..500 ms), four validated: p95 = 400 + 0.8 * 100
    assert latency[0] == pytest.approx((D(2018, 12, 3), "signal", "m1", 8, 5, 4, 300.0, 480.0, 21.0,
                                        1 / 8, 2 / 8, 1 / 8))
    assert latency[1] == (D(2018, 12, 4), "analysis", "(none)", 1, 0, 0, None, None, None, 0.0, 1.0, 0.0)

    # November: the LLM called SELL on two up days, 11-01 before the model's cutoff (contaminated:
    # Brier 0.81) and 11-02 after it (clean: 0.49); the forecast BUY on 11-01 hit (0.16), SELL on
    # 11-02 missed (0.36); always-up hit both days. December has no scored call (12-03 is a HOLD
    # the LLM was not asked about; 12-04 has no outcome yet).
    clean, contaminated = rows(small_store, "SELECT * FROM llm_scorecard")
    assert clean == pytest.approx(("AAA", D(2018, 11, 1), "clean", 1, 0.0, 0.49, 1.0, 1, 0.0, 0.36, 1.0))
    assert contaminated == pytest.approx(("AAA", D(2018, 11, 1), "contaminated", 1, 0.0, 0.81, 1.0, 1, 1.0, 0.16, 1.0))

    overview = rows(small_store, "SELECT * FROM portfolio_overview")
    assert overview == [
        ("AAA", D(2018, 12, 4), 11.0, dt.datetime(2018, 12, 4, 23), 0, D(2018, 12, 4), "BUY", 0.7, 0.1, "llm",
         "ollama", D(2018, 12, 4), "medium", 0.4, D(2018, 12, 4), "failed", "Sharpe 1.5 ...", "failed",
         "failed before any stress (...)", 0.01, 0.02, 1.5),
        ("BBB", D(2018, 12, 3), 20.0, dt.datetime(2018, 12, 3, 23), 1, None, None, None, None, None, None, None,
         None, None, D(2018, 12, 3), "insufficient_data", "no signal in the window", "insufficient_data",
         "no verdict to stress: insufficient data", None, None, None),
    ]


def test_a_failing_mart_test_fails_its_check_and_names_the_rows(small_store):
    with store_connect(small_store) as conn:
        conn.execute("INSERT INTO llm_signals VALUES ('BBB', DATE '2018-12-03', 'STRONG_BUY', 0.9, 0.2, 'llm', 'ollama', "
                     "'BUY', NULL, NULL, true)")
    result = build(small_store, SQL_ASSETS)
    failed = {e.check_name: e.metadata["failing_rows"].value for e in result.get_asset_check_evaluations() if not e.passed}
    assert failed == {"action_accepted_values": 1}


def test_marts_refresh_once_their_inputs_were_updated_and_not_before():
    from pm_jobs.definitions import defs

    with instance_for_test() as instance:
        instance.add_dynamic_partitions("tickers", ["^GSPC"])
        first = evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0
        instance.report_runless_asset_event(AssetMaterialization("signal_outcomes", partition="2018-12-31|^GSPC"))
        second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert second.get_num_requested(AssetKey("signal_scorecard")) == 1
        assert second.get_num_requested(AssetKey("llm_latency_daily")) == 0
        instance.report_runless_asset_event(AssetMaterialization("signal_scorecard"))
        third = evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
        assert third.total_requested == 0


def test_the_models_folder_is_a_dbt_project_in_shape():
    import yaml

    project = yaml.safe_load((MODELS_DIR.parent / "dbt_project.yml").read_text())
    assert project["model-paths"] == ["models"] and project["config-version"] == 2


def test_pm_summary_lists_the_marts_beside_the_partitioned_tables(small_store, monkeypatch):
    from pm_jobs.cli.reports import portfolio_overview_summary, store_summary

    assert build(small_store, SQL_ASSETS).success
    monkeypatch.setenv("PM_DUCKDB_PATH", small_store)
    lines = store_summary()
    assert "  portfolio_overview       2 rows" in lines and "  signal_scorecard         2 rows" in lines
    assert any(line.startswith("  prices                   3 rows  2 tickers  2018-12-03 .. 2018-12-04") for line in lines)
    assert portfolio_overview_summary()[1].startswith("  AAA      prices to 2018-12-04 (0 behind)  signal 2018-12-04 BUY")
