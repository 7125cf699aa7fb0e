"""The cluster with real processes: `pm cluster start --workers 2` (PostgreSQL, Redis, two Celery
workers, the shared DuckLake store) on loopback, 4 synthetic tickers x 60 sessions of ts_forecasts.

A backfill launched through the webserver (as the UI launches one) runs on the workers. Each fault starts from a store without forecasts or kept fits (so the step refits for seconds),
strikes while the step is fitting, and is followed by the checks: the command ends within its
bound with one line naming what failed; every forecast row written is a whole partition equal
to a clean run's (nothing half-written); and a rerun gives the clean run's rows (nothing lost).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from pm_assets.dagster_compat import pool_slot_usage, set_pool_limit
from pm_domain import calendar
from pm_jobs.cluster import Workers
from pm_jobs.large_instance import read_env_file, throwaway_home
from pm_resources.database import store_connection
from tests.support.dagster_dev import STARTUP_SECONDS, dagster_dev
from tests.support.runs import celery_workers, large_instance_at, require_postgres_binaries, require_redis

ROOT = Path(__file__).resolve().parents[2]
PM = str(ROOT / ".venv" / "bin" / "pm")
TICKERS = ["SYN100", "SYN101", "SYN102", "SYN103"]
LAST = dt.date(2018, 12, 31)
FIRST = calendar.shift_trading_days(LAST, -59)
PARTITIONS_START = calendar.shift_trading_days(FIRST, -300)
FORECASTS = ["--assets", "ts_forecasts", "--from", str(FIRST), "--to", str(LAST),
             "--config-json", '{"ops": {"ts_forecasts": {"config": {"refit_every": 1}}}}']
FITTING = "windows to fit over"  # the step's first line once it has read its inputs
COMMAND_SECONDS = 300


def pm(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([PM, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=COMMAND_SECONDS)
    if check:
        assert done.returncode == 0, f"pm {' '.join(args)}:\n{done.stdout[-2500:]}\n{done.stderr[-2500:]}"
    return done


@pytest.fixture(scope="module")
def cluster():
    require_postgres_binaries()
    require_redis()
    with throwaway_home("pm-cluster-faults-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "OLLAMA", "DAGSTER_"))} | {
            "DAGSTER_DISABLE_TELEMETRY": "1", "PM_WATCHLIST": str(home.parent / "watchlist.txt"),
            "PM_PRICE_SOURCE": "synthetic", "PM_LLM_MODE": "fallback", "PM_START_DATE": str(PARTITIONS_START)}
        pm(env, "cluster", "start", "--home", str(home), "--workers", "2")
        try:
            env["DAGSTER_HOME"] = str(home)
            pm(env, "tickers", "add", *TICKERS)
            pm(env, "materialize", "--assets", "prices", "--from", str(PARTITIONS_START), "--to", str(LAST))
            pm(env, "materialize", "--assets", "features", "--from", str(FIRST), "--to", str(LAST))
            assert store(home).startswith("ducklake:postgres:")  # the shared store, not a file on this machine
            clear_forecasts(home)
            pm(env, "materialize", *FORECASTS)
            yield home, env, forecasts(home)
        finally:
            pm(env, "cluster", "stop", "--home", str(home), check=False)


def store(home: Path) -> str:
    return read_env_file(home / "instance.env")["PM_DUCKDB_PATH"]


def clear_forecasts(home: Path) -> None:
    with store_connection(store(home)) as conn:
        for table in ("ts_forecasts", "ts_forecast_fits"):
            if conn.sql(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{table}'").fetchall()[0][0]:
                conn.execute(f"DELETE FROM {table}")


def forecasts(home: Path) -> pl.DataFrame:
    with store_connection(store(home)) as conn:
        return pl.from_arrow(conn.sql("SELECT * FROM ts_forecasts").to_arrow_table()).sort("ticker", "date", "horizon")


def start_forecasts(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([PM, "materialize", *FORECASTS], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def start_fitting(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """From a store without forecasts, start a ts_forecasts run; return it and its worker's number
    once the step is fitting."""
    clear_forecasts(home)
    before = run_count(home)
    run = start_forecasts(env)
    return run, fitting_worker(home, before)


def fitting_worker(home: Path, runs_before: int, seconds: float = 120) -> int:
    """The number of the worker running a new run's ts_forecasts step once the step says it is
    fitting (its log line, in the run's events)."""
    deadline = time.monotonic() + seconds
    with large_instance_at(home) as instance:
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            for run in runs[:len(runs) - runs_before]:  # newest first
                worker, fitting = None, False
                for record in instance.all_logs(run.run_id):
                    event = record.dagster_event
                    metadata = getattr(event.event_specific_data, "metadata", None) or {} if event else {}
                    worker = metadata["Celery worker"].value if "Celery worker" in metadata else worker
                    fitting = fitting or FITTING in record.user_message
                if worker and fitting:
                    return int(worker.split("@")[0].rsplit("-", 1)[1])
            time.sleep(0.3)
    raise AssertionError(f"no worker started fitting within {seconds} s")


def run_count(home: Path) -> int:
    with large_instance_at(home) as instance:
        return len(instance.get_runs())


def pool_process(home: Path, worker: int) -> int:
    """The PID of the Celery pool process under worker `worker` (dagster-celery -> celery -> pool)."""
    pid = int((home / "workers" / f"{worker}.pid").read_text())
    for _ in range(2):
        pid = int(subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()[0])
    return pid


def assert_whole_partitions_of(rows: pl.DataFrame, clean: pl.DataFrame) -> None:
    """Every row there is equals the clean run's, and every partition there is has all its horizons."""
    keys = rows.select("ticker", "date").unique()
    assert rows.equals(clean.join(keys, on=["ticker", "date"], how="semi").sort("ticker", "date", "horizon"))


def assert_no_pool_slot_held(home: Path) -> None:
    """The failed run gave its pool slots back (else every later step of the pool would wait)."""
    with large_instance_at(home) as instance:
        assert [usage for usage in pool_slot_usage(instance) if usage.holders] == []


def test_the_clean_run_forecast_every_partition(cluster):
    _, _, clean = cluster
    assert clean.height == len(TICKERS) * 60 * 3


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_step_fails_the_step_in_one_line_and_a_rerun_restores_the_rows(cluster):
    home, env, clean = cluster
    run, worker = start_fitting(home, env)
    os.kill(pool_process(home, worker), signal.SIGKILL)
    output, _ = run.communicate(timeout=COMMAND_SECONDS)
    assert run.returncode == 1, output
    assert "failed at ts_forecasts: Worker exited prematurely: signal 9 (SIGKILL)" in output
    assert_no_pool_slot_held(home)
    assert_whole_partitions_of(forecasts(home), clean)

    pm(env, "materialize", *FORECASTS)  # the killed worker's pool process was replaced by Celery
    assert forecasts(home).equals(clean)


@pytest.mark.timeout(900)
def test_redis_stopped_mid_run_fails_the_run_in_one_line_and_a_restart_and_rerun_restore_the_rows(cluster):
    home, env, clean = cluster
    run, _ = start_fitting(home, env)
    os.kill(int((home / "redis" / "redis.pid").read_text()), signal.SIGKILL)
    output, _ = run.communicate(timeout=COMMAND_SECONDS)
    assert run.returncode == 1, output
    assert "Error 111 connecting to 127.0.0.1" in output and "(recorded in run_failures" in output
    assert_no_pool_slot_held(home)
    time.sleep(15)  # the step, which does not need the broker, may still finish writing
    assert_whole_partitions_of(forecasts(home), clean)

    restarted = pm(env, "cluster", "start", "--home", str(home), "--workers", "2").stdout
    assert "Redis started" in restarted and "(0 started)" in restarted  # the workers reconnect on their own
    pm(env, "materialize", *FORECASTS)
    assert forecasts(home).equals(clean)


@pytest.mark.timeout(900)
def test_two_workers_writing_the_same_partitions_at_once_leave_the_clean_rows(cluster):
    home, env, clean = cluster
    clear_forecasts(home)
    with large_instance_at(home) as instance:  # both steps compute at once; the lake retries a commit that conflicts
        set_pool_limit(instance, "duckdb", 2)
    runs = [start_forecasts(env) for _ in range(2)]
    outputs = [run.communicate(timeout=COMMAND_SECONDS)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    workers = {line.split(" on ")[-1] for output in outputs for line in output.splitlines() if "ts_forecasts: done" in line}
    assert {w.split("@")[0] for w in workers} == {"pm-worker-1", "pm-worker-2"}
    assert forecasts(home).equals(clean)


@pytest.mark.timeout(600)
def test_without_workers_or_broker_a_run_is_refused_in_one_line_before_it_starts(cluster):
    home, env, _ = cluster
    before = run_count(home)
    workers = Workers(home / "workers")
    for number in list(workers.running()):
        workers.stop(number)
    refused = pm(env, "materialize", *FORECASTS, check=False)
    assert refused.returncode == 2
    assert "pm: no Celery worker answers on redis://127.0.0.1:" in refused.stderr
    assert f"pm cluster start --home {home}" in refused.stderr

    os.kill(int((home / "redis" / "redis.pid").read_text()), signal.SIGKILL)
    refused = pm(env, "materialize", *FORECASTS, check=False)
    assert refused.returncode == 2 and "is not answering (Error 111 connecting to 127.0.0.1:" in refused.stderr
    assert run_count(home) == before  # nothing was queued for nobody

    assert "2 Celery worker(s) ready (2 started)" in pm(env, "cluster", "start", "--home", str(home)).stdout
    broker = read_env_file(home / "instance.env")["PM_CELERY_BROKER"]
    pm(env, "postgres", "start", "--home", str(home))  # the large-backfill instance's command keeps the broker
    assert read_env_file(home / "instance.env")["PM_CELERY_BROKER"] == broker


@pytest.mark.timeout(STARTUP_SECONDS + 600)
def test_a_backfill_through_the_webserver_and_daemon_runs_its_steps_on_the_workers(cluster, tmp_path):
    from dagster import RunsFilter

    from pm_jobs.backfill import launch_backfill, ticker_date_ranges, wait_for_backfill

    home, env, _ = cluster
    # The webserver and the daemon get the cluster's instance.env from `pm ui`; the workers compute
    # with their own settings, which these match.
    same = {k: v for k, v in env.items() if k.startswith("PM_")} | {"PM_DUCKDB_PATH": store(home)}
    with dagster_dev(home, tmp_path, TICKERS, env_extra=same) as url:
        backfill = launch_backfill(url, ["features"], ticker_date_ranges(TICKERS, FIRST, LAST, TICKERS), title="cluster")
        progress = wait_for_backfill(url, backfill, 400)
    assert progress.succeeded and progress.materialized == {"features": len(TICKERS) * 60}, progress.describe()
    with large_instance_at(home) as instance:
        runs = instance.get_runs(RunsFilter(tags={"dagster/backfill": backfill}))
        assert runs and all(run.is_success for run in runs)
        workers = set().union(*(celery_workers(instance, run.run_id) for run in runs))
    assert workers and all(worker.startswith("pm-worker-") for worker in workers)
