"""The large-backfill instance (pm_jobs/large_instance.py, docs/scale.md).

The first two tests are the upgrade guard: they fail if the pinned Dagster stops honouring the two
settings the instance relies on (event batching, ranged planned events), whatever the storage. The
rest build a real instance with `pm postgres start` on a throwaway folder and use it through `pm`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pm_assets import prices
from pm_jobs.large_instance import DAGSTER_SETTINGS, ENV_FILE, read_env_file, throwaway_home
from tests.support.runs import require_postgres_binaries, run_assets

ROOT = Path(__file__).resolve().parents[2]
TICKERS = ["^GSPC", "^IXIC"]
START, END = "2018-12-24", "2018-12-31"  # 5 sessions x 2 tickers = 10 partitions


def planned_events(instance, run_id: str) -> list:
    from dagster import DagsterEventType

    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    return [r.event_log_entry.dagster_event.event_specific_data for r in records]


def test_ranged_planned_events_are_one_per_asset_with_the_setting(instance, db_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", raising=False)
    per_partition = run_assets(instance, db_path, [prices], START, END, TICKERS)
    assert per_partition.success
    assert len(planned_events(instance, per_partition.run_id)) == 10

    monkeypatch.setenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS",
                       DAGSTER_SETTINGS["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"])
    ranged = run_assets(instance, db_path, [prices], START, END, TICKERS)
    assert ranged.success
    [planned] = planned_events(instance, ranged.run_id)
    assert planned.partition is None and len(planned.partitions_subset) == 10
    # the partitions view still counts all 10 as materialized
    from dagster import AssetKey

    assert len(instance.get_materialized_partitions(AssetKey("prices"))) == 10


def test_materializations_go_to_store_event_batch_with_the_setting(instance, db_path, monkeypatch):
    storage_class = type(instance.event_log_storage)
    batches: list[int] = []
    original = storage_class.store_event_batch

    def counting(self, events):
        batches.append(len(events))
        return original(self, events)

    monkeypatch.setattr(storage_class, "store_event_batch", counting)
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    assert run_assets(instance, db_path, [prices], START, END, TICKERS).success
    assert batches == []

    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", DAGSTER_SETTINGS["DAGSTER_EVENT_BATCH_SIZE"])
    assert run_assets(instance, db_path, [prices], START, END, TICKERS).success
    assert sum(batches) >= 10 and len(batches) < 10, batches  # the 10 materializations, in batches


# --------------------------------------------------------------------------------------------
# `pm postgres start` on a throwaway folder


def pm(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pm_jobs.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture()
def large_home():
    require_postgres_binaries()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "PM_"))}
    env.update(PYTHONPATH=str(ROOT), DAGSTER_DISABLE_TELEMETRY="1")
    with throwaway_home() as home:
        yield home, env


@pytest.mark.timeout(300)
def test_pm_postgres_start_builds_an_instance_that_pm_uses(large_home):
    home, env = large_home
    started = pm("postgres", "start", "--home", str(home), env=env)
    assert started.returncode == 0, started.stderr
    assert "started on 127.0.0.1:" in started.stdout
    settings = read_env_file(home / ENV_FILE)
    assert {k: settings[k] for k in DAGSTER_SETTINGS} == DAGSTER_SETTINGS
    assert settings["PM_DUCKDB_PATH"] == str(home.resolve() / "pm.duckdb")
    assert (home / ENV_FILE).stat().st_mode & 0o077 == 0  # the password is the owner's alone

    again = pm("postgres", "start", "--home", str(home), env=env)  # idempotent
    assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr

    on_large = {**env, "DAGSTER_HOME": str(home), "PM_PRICE_SOURCE": "sample"}
    assert pm("tickers", "add", *TICKERS, env=on_large).returncode == 0
    run = pm("materialize", "--assets", "prices", "--from", START, "--to", END, env=on_large)
    assert run.returncode == 0, run.stderr
    assert "8 settings from instance.env" in run.stderr
    assert (home / "pm.duckdb").is_file()  # the instance's own store, not data/pm.duckdb

    # the records are in PostgreSQL: one planned event for the range, 10 materializations
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=int(settings["DAGSTER_PG_PORT"]), user=settings["DAGSTER_PG_USER"],
                          password=settings["DAGSTER_PG_PASSWORD"], dbname=settings["DAGSTER_PG_DB"],
                          connect_timeout=10) as conn, conn.cursor() as cur:
        cur.execute("SELECT dagster_event_type, count(*) FROM event_logs WHERE asset_key = %s "
                    "GROUP BY 1 ORDER BY 1", ('["prices"]',))
        assert dict(cur.fetchall()) == {"ASSET_MATERIALIZATION": 10, "ASSET_MATERIALIZATION_PLANNED": 1}
    assert not list(home.rglob("*.db"))  # nothing fell back to SQLite

    stopped = pm("postgres", "stop", "--home", str(home), env=env)
    assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    refused = pm("tickers", "list", env=on_large)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"pm: the instance {home} keeps its storage in PostgreSQL, which is not running: "
        f"pm postgres start --home {home}")

    restarted = pm("postgres", "start", "--home", str(home), env=env)  # same cluster, same password
    assert restarted.returncode == 0, restarted.stderr
    listed = pm("tickers", "list", env=on_large)
    assert listed.stdout.split() == TICKERS, listed.stderr


def test_pm_postgres_start_names_a_folder_postgres_cannot_enter(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root hands the cluster to the `postgres` user")
    require_postgres_binaries()
    tmp_path.chmod(0o700)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    refused = pm("postgres", "start", "--home", str(tmp_path / "large"), env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (f"pm: the `postgres` user cannot enter {tmp_path / 'large'}/postgres: a parent "
                                      "folder is not searchable by others (chmod o+x it, or choose another --home)")


def test_pm_postgres_start_refuses_a_folder_holding_another_instance(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    refused = pm("postgres", "start", "--home", str(tmp_path), env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (f"pm: {tmp_path}/dagster.yaml exists and is not a large-backfill instance "
                                      "(no instance.env): choose another --home")


def test_the_ui_queries_the_ceiling_benchmark_times_are_valid_for_the_pinned_dagster():
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    from benchmarks import ui_queries

    schema = create_schema()
    for name in ("PARTITION_HEALTH_QUERY", "ASSET_GRAPH_QUERY", "ASSET_GRAPH_LIVE_QUERY", "LAUNCH_BACKFILL_MUTATION"):
        assert validate(schema.graphql_schema, parse(getattr(ui_queries, name))) == [], name
