"""`pm materialize --parallel 2` writes what one process writes, on one machine and on the cluster:
20 synthetic tickers x 250 sessions through prices, features, ts_forecasts and the LLM stages
(fallback), once in one process, once in two, and once in two whose steps execute on the cluster's
two Celery workers (`pm cluster start --workers 2`), each in an instance on PostgreSQL (11,000
price partitions take minutes of Dagster bookkeeping on SQLite) with a store of its own, compared
row for row; and the runs did overlap."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

import polars as pl
import pytest

from pm_domain import calendar
from pm_jobs.large_instance import read_env_file, throwaway_home
from pm_resources.connections import connect as store_connect
from tests.support.runs import celery_workers, large_instance_at, require_postgres_binaries, require_redis

ROOT = Path(__file__).resolve().parents[2]
PM = str(ROOT / ".venv" / "bin" / "pm")
TICKERS = [f"SYN{i:03d}" for i in range(20)]
LAST = dt.date(2018, 12, 31)
FIRST = calendar.shift_trading_days(LAST, -249)
# Partitions start 300 sessions before the range: features read 250 of them, and ts_forecasts
# fits on the history there is (as for any instance whose partitions start later than its lookback).
PARTITIONS_START = calendar.shift_trading_days(FIRST, -300)
LLM_STAGES = "llm_analysis,llm_signals,risk_assessments"
TABLES = {"prices": ("ingested_at",), "features": (), "ts_forecasts": (), "ts_forecast_fits": (),
          "llm_analysis": (), "llm_signals": (), "risk_assessments": (), "llm_calls": ("called_at", "wall_ms")}
VARIANTS = (("one", ("postgres",), ()), ("two", ("postgres",), ("--parallel", "2")),
            ("cluster", ("cluster", "--workers", "2"), ("--parallel", "2")))


def environment(home: Path, start: tuple[str, ...]) -> dict[str, str]:
    """The instance `pm postgres start` or `pm cluster start` builds at `home`, and its environment
    (the cluster's workers inherit the same settings)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "OLLAMA", "DAGSTER_"))} | {
        "DAGSTER_DISABLE_TELEMETRY": "1", "PM_WATCHLIST": str(home.parent / "watchlist.txt"),
        "PM_PRICE_SOURCE": "synthetic", "PM_LLM_MODE": "fallback", "PM_START_DATE": str(PARTITIONS_START)}
    pm(env, start[0], "start", "--home", str(home), *start[1:])
    return env | {"DAGSTER_HOME": str(home)}


def store(env: dict[str, str]) -> str:
    return read_env_file(Path(env["DAGSTER_HOME"]) / "instance.env")["PM_DUCKDB_PATH"]


def pm(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PM, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"pm {' '.join(args)}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def runs():
    require_postgres_binaries()
    made = {}
    with ExitStack() as homes:
        for name, start, extra in VARIANTS:
            home = homes.enter_context(throwaway_home(f"pm-parallel-{name}-"))
            if start[0] == "cluster":
                require_redis()
                homes.callback(pm, {**os.environ}, "cluster", "stop", "--home", str(home))
            env = environment(home, start)
            pm(env, "tickers", "add", *TICKERS)
            output = pm(env, "materialize", "--assets", "prices", "--from", str(PARTITIONS_START), "--to", str(LAST),
                        *extra)
            output += pm(env, "materialize", "--assets", f"features,ts_forecasts,{LLM_STAGES}", "--from", str(FIRST),
                         "--to", str(LAST), *extra)
            made[name] = env, output
        yield made


def rows(env: dict[str, str], table: str) -> pl.DataFrame:
    with store_connect(store(env), read_only=True) as conn:
        frame = pl.from_arrow(conn.sql(f"SELECT * FROM {table}").to_arrow_table())
    return frame.drop(TABLES[table]).sort([c for c in ("ticker", "date", "fit_date", "horizon", "stage") if c in frame.columns])


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("variant", ["two", "cluster"])
def test_two_processes_write_the_rows_of_one(runs, variant):
    (one, _), (other, _) = runs["one"], runs[variant]
    assert rows(one, "ts_forecasts").height == 20 * 250 * 3
    assert rows(one, "llm_signals").height == 20 * 250
    for table in TABLES:
        assert rows(other, table).equals(rows(one, table)), table


@pytest.mark.parametrize("variant", ["two", "cluster"])
def test_the_two_processes_ran_at_once_and_said_so(runs, variant):
    env, output = runs[variant]
    assert "[1/2]" in output and "[2/2]" in output and "2 processes succeeded" in output
    assert "the duckdb pool allowed 1 step(s) at once; raised to 2" in output
    spans = sorted((r.start_time, r.end_time) for r in run_records(env))
    assert len(spans) == 4  # two commands x two shares
    assert any(later_start < end for (_, end), (later_start, _) in zip(spans, spans[1:]))


def test_on_the_cluster_both_workers_executed_steps(runs):
    env, output = runs["cluster"]
    assert "done on pm-worker-1@" in output and "done on pm-worker-2@" in output
    with large_instance_at(Path(env["DAGSTER_HOME"])) as instance:
        workers = set().union(*(celery_workers(instance, record.dagster_run.run_id) for record in run_records(env)))
    assert {w.split("@")[0] for w in workers} == {"pm-worker-1", "pm-worker-2"}


def run_records(env: dict[str, str]):
    from dagster import RunsFilter

    with large_instance_at(Path(env["DAGSTER_HOME"])) as instance:
        return instance.get_run_records(RunsFilter(tags={"pm/trigger": "pm"}))
