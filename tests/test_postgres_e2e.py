"""End to end on the shared-deployment instance (deploy/dagster.postgres.yaml): a local PostgreSQL
server holds run, event and schedule storage; `dagster dev` (webserver + daemon) on loopback runs
a backfill of `prices` for 2 tickers x 5 dates; the rows land in DuckDB and the runs, the
materializations and the ticker universe are rows in PostgreSQL, not SQLite files."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import duckdb
import pytest

from pm_jobs.backfill import launch_backfill, ticker_date_ranges, wait_for_backfill
from pm_resources.store import query
from tests.dagster_dev import STARTUP_SECONDS, dagster_dev
from tests.local_postgres import LocalPostgres, PostgresNotFound

psycopg2 = pytest.importorskip("psycopg2", reason="dagster-postgres (and psycopg2) not installed")
pytest.importorskip("dagster_postgres", reason="dagster-postgres not installed")

ROOT = Path(__file__).resolve().parent.parent
TICKERS = ["^GSPC", "^IXIC"]
START, END = dt.date(2018, 12, 24), dt.date(2018, 12, 31)  # 5 sessions (Christmas is closed)
POSTGRES_SECONDS = 120
BACKFILL_SECONDS = 300


@pytest.fixture()
def postgres():
    try:
        with LocalPostgres(dbname="dagster") as server:
            yield server
    except PostgresNotFound as exc:
        pytest.skip(f"PostgreSQL binaries not found: install postgresql (the CI script does) ({exc})")


@pytest.fixture()
def dagster_dev_on_postgres(tmp_path, postgres, monkeypatch):
    # The instance reads its credentials from these when it loads, in this process and in dagster dev's.
    for name, value in {"DAGSTER_PG_HOST": postgres.host, "DAGSTER_PG_PORT": str(postgres.port),
                        "DAGSTER_PG_USER": postgres.user, "DAGSTER_PG_PASSWORD": postgres.password,
                        "DAGSTER_PG_DB": postgres.dbname}.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")

    from dagster import DagsterInstance
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    # In-process: the instance loads from the deploy file, creates its tables and stores the universe.
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        instance.add_dynamic_partitions("tickers", TICKERS)
        assert instance.get_dynamic_partitions("tickers") == TICKERS

    with dagster_dev(home, tmp_path, TICKERS) as url:
        yield url, home, tmp_path / "pm.duckdb", tmp_path / "dagster_dev.log"


@pytest.mark.timeout(POSTGRES_SECONDS + STARTUP_SECONDS + BACKFILL_SECONDS + 120)
def test_a_backfill_through_the_daemon_keeps_its_runs_in_postgres(dagster_dev_on_postgres, postgres):
    url, home, db_path, log = dagster_dev_on_postgres
    ranges = ticker_date_ranges(TICKERS, START, END, TICKERS)
    assert ranges == [("2018-12-24|^GSPC", "2018-12-31|^IXIC")]
    began = time.monotonic()
    backfill_id = launch_backfill(url, ["prices"], ranges, title="e2e postgres")
    progress = wait_for_backfill(url, backfill_id, BACKFILL_SECONDS)
    assert progress.succeeded, f"{progress.describe()}\n{log.read_text()[-4000:]}"
    assert progress.materialized == {"prices": 10}
    assert 1 <= progress.runs <= 4, progress.describe()
    print(f"backfill of 2 tickers x 5 dates on PostgreSQL: {progress.describe()} "
          f"in {time.monotonic() - began:.0f} s")

    with duckdb.connect(str(db_path), read_only=True) as conn:
        stored = query(conn, "SELECT ticker, count(*) AS n, min(date) AS first, max(date) AS last "
                             "FROM prices GROUP BY ticker ORDER BY ticker")
        assert stored.rows() == [(t, 5, START, END) for t in TICKERS]

    # The records are rows in PostgreSQL, read with a plain client (not through Dagster).
    with psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                          password=postgres.password, dbname=postgres.dbname, connect_timeout=10) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                        "WHERE t.key = 'dagster/backfill' AND t.value = %s", (backfill_id,))
            statuses = [status for (status,) in cur.fetchall()]
            assert statuses and set(statuses) == {"SUCCESS"}, statuses
            assert len(statuses) == progress.runs
            cur.execute("SELECT count(DISTINCT partition) FROM event_logs "
                        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = %s", ('["prices"]',))
            assert cur.fetchone()[0] == 10
            cur.execute("SELECT count(*) FROM bulk_actions WHERE key = %s", (backfill_id,))
            assert cur.fetchone()[0] == 1
            cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'tickers' "
                        "ORDER BY partition")
            assert [p for (p,) in cur.fetchall()] == sorted(TICKERS)

    # Nothing fell back to SQLite under $DAGSTER_HOME.
    assert not [p.relative_to(home) for p in home.rglob("*.db")]
    assert "database is locked" not in log.read_text() and "Could not set lock" not in log.read_text()
