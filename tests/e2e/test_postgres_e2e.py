"""End to end on the large-backfill instance (`pm postgres start`: deploy/dagster.postgres.yaml on a
project-local PostgreSQL, with event batching and ranged planned events): `pm ui` (dagster dev:
webserver + daemon) on loopback runs a backfill of `prices` for 2 tickers x 5 dates; the rows land in
DuckDB, the runs, the materializations and the ticker universe are rows in PostgreSQL, not SQLite
files; the runs the daemon launched had both settings in their environment; a failed range still
reaches `run_failures` and the run's own page, though the partitions view shows it as missing."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from pm_jobs.backfill import launch_backfill, ticker_date_ranges, wait_for_backfill
from pm_resources.store import query
from pm_jobs import large_instance
from tests.support.runs import require_postgres_binaries
from tests.support.dagster_dev import STARTUP_SECONDS, dagster_dev

psycopg2 = pytest.importorskip("psycopg2", reason="dagster-postgres (and psycopg2) not installed")
pytest.importorskip("dagster_postgres", reason="dagster-postgres not installed")

ROOT = Path(__file__).resolve().parents[2]
TICKERS = ["^GSPC", "^IXIC"]
START, END = dt.date(2018, 12, 24), dt.date(2018, 12, 31)  # 5 sessions (Christmas is closed)
POSTGRES_SECONDS = 120
BACKFILL_SECONDS = 300


@pytest.fixture()
def large_home():
    """`pm postgres start` on a throwaway folder."""
    require_postgres_binaries()
    with large_instance.temporary_instance() as (home, settings):
        yield home, settings


@pytest.fixture()
def dagster_dev_on_postgres(tmp_path, large_home, monkeypatch):
    home, settings = large_home
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(name, settings[name])  # for this process's own look at the instance

    from dagster import DagsterInstance
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    # In-process: the instance loads from the deploy file, creates its tables and stores the universe.
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        instance.add_dynamic_partitions("tickers", TICKERS)
        assert instance.get_dynamic_partitions("tickers") == TICKERS

    # `pm ui` must read the settings from the instance's instance.env: none comes from this process.
    for name in large_instance.DAGSTER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    with RunWorkerEnvironments(home) as workers, dagster_dev(home, tmp_path, TICKERS) as url:
        yield url, home, tmp_path / "pm.duckdb", tmp_path / "dagster_dev.log", settings, workers


class RunWorkerEnvironments(threading.Thread):
    """Reads, from /proc, the environment of every process that appears while it watches and runs a
    step of this instance's runs (its command line names the step or the run): what the runs the
    daemon launched really got."""

    def __init__(self, home: Path):
        super().__init__(daemon=True)
        self.home = str(home)
        self.seen: dict[int, dict[str, str]] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if int(pid) not in self.seen and any(b"execute_run" in part or b"execute_step" in part
                                                         or b"spawn_main" in part for part in cmdline):
                        raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                        environ = dict(kv.decode().partition("=")[::2] for kv in raw if b"=" in kv)
                        if environ.get("DAGSTER_HOME") == self.home:
                            self.seen[int(pid)] = environ | {"cmdline": b" ".join(cmdline).decode()[:300]}
                except OSError:
                    continue
            time.sleep(0.1)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        self.join(5)


@pytest.mark.timeout(POSTGRES_SECONDS + STARTUP_SECONDS + BACKFILL_SECONDS + 120)
def test_a_backfill_through_the_daemon_keeps_its_runs_in_postgres(dagster_dev_on_postgres):
    url, home, db_path, log, settings, workers = dagster_dev_on_postgres
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
    with connect(settings) as conn:
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
            # ranged planned events: one per run, not one per partition
            cur.execute("SELECT count(*) FROM event_logs e JOIN run_tags t ON t.run_id = e.run_id "
                        "WHERE t.key = 'dagster/backfill' AND t.value = %s "
                        "AND e.dagster_event_type = 'ASSET_MATERIALIZATION_PLANNED'", (backfill_id,))
            assert cur.fetchone()[0] == progress.runs

    # Every run worker the daemon launched had both settings, read by `pm ui` from instance.env.
    assert workers.seen, "no run worker was seen"
    for pid, environ in workers.seen.items():
        got = {k: environ.get(k) for k in large_instance.DAGSTER_SETTINGS}
        assert got == large_instance.DAGSTER_SETTINGS, (pid, environ["cmdline"])

    # Nothing fell back to SQLite under $DAGSTER_HOME.
    assert not [p.relative_to(home) for p in home.rglob("*.db")]
    assert "database is locked" not in log.read_text() and "Could not set lock" not in log.read_text()

    # A failed range: the partitions view shows it as missing, not failed (the ranged planned event
    # carries no partitions to mark); the failure is on the run's page and in run_failures.
    env = {**os.environ, "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": str(db_path), "PM_PRICE_SOURCE": "sample"}
    env["PM_WATCHLIST"] = str(home / "watchlist.txt")  # `pm tickers add` appends to it: not the project's
    assert subprocess.run([sys.executable, "-m", "pm_jobs.cli", "tickers", "add", "QQQ"], env=env, cwd=ROOT,
                          capture_output=True, timeout=120).returncode == 0
    failed = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "backfill", "--assets", "prices", "--tickers", "QQQ",
                             "--from", "2018-12-27", "--to", "2018-12-31", "--wait", str(BACKFILL_SECONDS)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=BACKFILL_SECONDS + 60)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith("pm: run ")
    stats = partition_stats(url, "prices")
    assert stats == {"numMaterialized": 10, "numFailed": 0, "numMaterializing": 0}, stats
    deadline = time.monotonic() + 150  # the run_failures sensor ticks every 30 s
    recorded = []
    while time.monotonic() < deadline and not recorded:
        time.sleep(5)
        try:
            with duckdb.connect(str(db_path), read_only=True) as conn:
                recorded = query(conn, "SELECT partitions, error FROM run_failures WHERE step = 'prices'").rows()
        except duckdb.Error:  # a writer holds the file, or the table is not there yet
            continue
    assert recorded == [("2018-12-27|QQQ...2018-12-31|QQQ", recorded[0][1])] if recorded else False, recorded
    assert recorded[0][1].startswith("source 'sample' has no ticker QQQ")


def connect(settings: dict[str, str]):
    return psycopg2.connect(host=settings["DAGSTER_PG_HOST"], port=int(settings["DAGSTER_PG_PORT"]),
                            user=settings["DAGSTER_PG_USER"], password=settings["DAGSTER_PG_PASSWORD"],
                            dbname=settings["DAGSTER_PG_DB"], connect_timeout=10)


def partition_stats(url: str, asset: str) -> dict[str, int]:
    """The counts the asset's Partitions page shows, from the webserver's GraphQL."""
    import requests

    query_text = ("query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { "
                  "partitionStats { numMaterialized numFailed numMaterializing } } } }")
    reply = requests.post(f"{url}/graphql", json={"query": query_text, "variables": {"key": {"path": [asset]}}},
                          timeout=60)
    reply.raise_for_status()
    return reply.json()["data"]["assetNodeOrError"]["partitionStats"]
