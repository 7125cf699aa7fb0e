"""End to end: `dagster dev` (webserver + daemon, as `make ui` starts it) on loopback against a
temporary instance; a backfill of 2 tickers x 20 dates launched through the webserver's GraphQL
API (what the UI's backfill dialog sends) runs under the instance's pools and lands in DuckDB."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from dagster import DagsterInstance

from pm_jobs.backfill import launch_backfill, ticker_date_ranges, wait_for_backfill
from pm_resources.store import query
from tests.dagster_dev import STARTUP_SECONDS, dagster_dev

ROOT = Path(__file__).resolve().parent.parent
TICKERS = ["^GSPC", "^IXIC"]
START, END = dt.date(2018, 11, 30), dt.date(2018, 12, 31)  # 20 sessions
BACKFILL_SECONDS = 420

SENSORS_QUERY = """
query {
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name sensors { name sensorState { status } } schedules { name cronSchedule executionTimezone } }
    }
  }
}"""


@pytest.fixture()
def dagster_dev_url(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("tickers", TICKERS)
    with dagster_dev(home, tmp_path, TICKERS) as url:
        yield url, tmp_path / "pm.duckdb", tmp_path / "dagster_dev.log"


@pytest.mark.timeout(STARTUP_SECONDS + BACKFILL_SECONDS + 120)
def test_a_backfill_launched_through_the_webserver_completes_under_the_pools(dagster_dev_url):
    url, db_path, log = dagster_dev_url
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
