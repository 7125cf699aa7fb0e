"""End to end: `dagster dev` (webserver + daemon, as `make ui` starts it) on loopback against a
temporary instance; a backfill of 2 tickers x 20 dates launched through the webserver's GraphQL
API (what the UI's backfill dialog sends) runs under the instance's pools and lands in DuckDB."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from dagster import DagsterInstance

from pm_jobs.backfill import launch_backfill, ticker_date_ranges, wait_for_backfill
from pm_resources.store import query

ROOT = Path(__file__).resolve().parent.parent
TICKERS = ["^GSPC", "^IXIC"]
START, END = dt.date(2018, 11, 30), dt.date(2018, 12, 31)  # 20 sessions
STARTUP_SECONDS = 180
BACKFILL_SECONDS = 420

SENSORS_QUERY = """
query {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name sensors { name sensorState { status } } schedules { name cronSchedule executionTimezone } }
    }
  }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture()
def dagster_dev(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    watchlist = tmp_path / "watchlist.txt"
    watchlist.write_text("\n".join(TICKERS) + "\n")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("tickers", TICKERS)
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
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_webserver(url, process, log)
        yield url, tmp_path / "pm.duckdb", log
    finally:
        # dagster dev runs the webserver, the daemon and a code server as children: stop them all.
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass


@pytest.mark.timeout(STARTUP_SECONDS + BACKFILL_SECONDS + 120)
def test_a_backfill_launched_through_the_webserver_completes_under_the_pools(dagster_dev):
    url, db_path, log = dagster_dev
    listing = httpx.post(f"{url}/graphql", json={"query": SENSORS_QUERY}, timeout=30).json()
    repository = listing["data"]["repositoriesOrError"]["nodes"][0]
    assert {s["name"] for s in repository["sensors"]} == {"watchlist_sync", "signal_validation", "llm_health",
                                                           "run_failures", "marts_refresh"}
    assert [(s["name"], s["executionTimezone"]) for s in repository["schedules"]] == [
        ("nightly_research", "America/New_York")]

    ranges = ticker_date_ranges(TICKERS, START, END, TICKERS)
    assert ranges == [("2018-11-30|^GSPC", "2018-12-31|^IXIC")]
    began = time.monotonic()
    backfill_id = launch_backfill(url, ["prices", "features"], ranges, title="e2e")
    progress = wait_for_backfill(url, backfill_id, BACKFILL_SECONDS)
    assert progress.succeeded, f"{progress.describe()}\n{log.read_text()[-4000:]}"
    assert progress.materialized == {"prices": 40, "features": 40}
    # The single-run policy: a few ranged runs (one per ticker), never one run per partition.
    assert 1 <= progress.runs <= 4, progress.describe()
    print(f"backfill of 2 tickers x 20 dates: {progress.describe()} in {time.monotonic() - began:.0f} s")

    with duckdb.connect(str(db_path), read_only=True) as conn:
        for table in ("prices", "features"):
            stored = query(conn, f"SELECT ticker, count(*) AS n, min(date) AS first, max(date) AS last "
                                 f"FROM {table} GROUP BY ticker ORDER BY ticker")
            assert stored.rows() == [(t, 20, START, END) for t in TICKERS], table
    assert "database is locked" not in log.read_text() and "Could not set lock" not in log.read_text()
