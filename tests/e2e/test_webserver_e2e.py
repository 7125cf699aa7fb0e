"""End to end: `dagster dev` (webserver + daemon, as `make ui` starts it) on loopback against a
temporary instance; a backfill of 2 tickers x 20 dates launched through the webserver's GraphQL
API (what the UI's backfill dialog sends) runs under the instance's pools and lands in DuckDB."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
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
from tests.support.dagster_dev import STARTUP_SECONDS, dagster_dev

ROOT = Path(__file__).resolve().parents[2]
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
        yield url, tmp_path / "pm.duckdb", tmp_path / "dagster_dev.log", home


@pytest.mark.timeout(STARTUP_SECONDS + 2 * BACKFILL_SECONDS + 600)
def test_a_backfill_launched_through_the_webserver_completes_under_the_pools_and_failures_reach_one_table(
        dagster_dev_url):
    url, db_path, log, home = dagster_dev_url
    listing = httpx.post(f"{url}/graphql", json={"query": SENSORS_QUERY}, timeout=30).json()
    repository = listing["data"]["repositoriesOrError"]["nodes"][0]
    assert {s["name"] for s in repository["sensors"]} == {"watchlist_sync", "signal_validation", "llm_health",
                                                           "run_failures", "marts_refresh", "stranded_runs",
                                                           "paper_trading", "paper_reconciliation", "memorization_probe"}
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

    # A failing backfill: `pm backfill --wait` ends with the failed step's own error, and the
    # run_failures sensor (watching every run on the instance) records it, as it does a run made
    # in a process of its own (`dagster asset materialize`, no code location).
    env = {**os.environ, "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": str(db_path), "PM_PRICE_SOURCE": "sample"}
    env["PM_WATCHLIST"] = str(home / "watchlist.txt")  # `pm tickers add` appends to it: not the project's
    added = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "tickers", "add", "QQQ"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    failed = subprocess.run([sys.executable, "-m", "pm_jobs.cli", "backfill", "--assets", "prices", "--tickers", "QQQ",
                             "--from", "2018-12-31", "--wait", str(BACKFILL_SECONDS)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=BACKFILL_SECONDS + 60)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"-> {url}/runs/b/" in failed.stdout  # the URL `pm ui` noted, without --url
    last = failed.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"pm: run \w{8} failed at prices \(2018-12-31\|QQQ\.\.\.2018-12-31\|QQQ\): "
                        r"source 'sample' has no ticker QQQ: .*", last), failed.stderr
    cli = subprocess.run([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                          "pm_jobs.definitions", "--select", "prices", "--partition", "2018-12-28|QQQ"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert cli.returncode != 0
    deadline = time.monotonic() + 150  # the sensor ticks every 30 s
    recorded = []
    while time.monotonic() < deadline and len(recorded) < 2:
        time.sleep(5)
        try:
            with duckdb.connect(str(db_path), read_only=True) as conn:
                recorded = query(conn, "SELECT partitions, error FROM run_failures WHERE step = 'prices' "
                                       "ORDER BY partitions").rows()
        except duckdb.Error:  # a writer holds the file: read again at the next poll
            continue
    assert [p for p, _ in recorded] == ["2018-12-28|QQQ", "2018-12-31|QQQ...2018-12-31|QQQ"], recorded
    assert all(e.startswith("source 'sample' has no ticker QQQ") for _, e in recorded)
