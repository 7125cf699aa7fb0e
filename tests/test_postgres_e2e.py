"""End to end on the shared-deployment instance (deploy/dagster.postgres.yaml): a local PostgreSQL
server holds run, event and schedule storage; `dagster dev` (webserver + daemon) on loopback runs
a backfill of `prices` for 2 tickers x 5 dates; the rows land in DuckDB and the runs, the
materializations and the ticker universe are rows in PostgreSQL, not SQLite files."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from pm_jobs.backfill import launch_backfill, ticker_date_ranges, wait_for_backfill
from pm_resources.store import query
from tests.local_postgres import LocalPostgres, PostgresNotFound, free_port

psycopg2 = pytest.importorskip("psycopg2", reason="dagster-postgres (and psycopg2) not installed")
pytest.importorskip("dagster_postgres", reason="dagster-postgres not installed")

ROOT = Path(__file__).resolve().parent.parent
TICKERS = ["^GSPC", "^IXIC"]
START, END = dt.date(2018, 12, 24), dt.date(2018, 12, 31)  # 5 sessions (Christmas is closed)
POSTGRES_SECONDS = 120
STARTUP_SECONDS = 180
BACKFILL_SECONDS = 300


def wait_for_webserver(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"webserver not up after {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def stop_process_group(process: subprocess.Popen) -> None:
    # dagster dev runs the webserver, the daemon, a code server and the runs as children: stop them all.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


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
    watchlist = tmp_path / "watchlist.txt"
    watchlist.write_text("\n".join(TICKERS) + "\n")

    from dagster import DagsterInstance
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    # In-process: the instance loads from the deploy file, creates its tables and stores the universe.
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        instance.add_dynamic_partitions("tickers", TICKERS)
        assert instance.get_dynamic_partitions("tickers") == TICKERS

    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": str(tmp_path / "pm.duckdb"),
           "PM_PRICE_SOURCE": "sample", "PM_LLM_MODE": "fallback", "PM_WATCHLIST": str(watchlist),
           "PYTHONPATH": str(ROOT), "DAGSTER_DISABLE_TELEMETRY": "1"}
    dagster = Path(sys.executable).parent / "dagster"
    log = tmp_path / "dagster_dev.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_webserver(f"http://127.0.0.1:{port}", process, log)
        yield f"http://127.0.0.1:{port}", home, tmp_path / "pm.duckdb", log
    finally:
        stop_process_group(process)


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
