"""`pm materialize --parallel 2` writes what one process writes: 20 synthetic tickers x 250
sessions through prices, features and ts_forecasts, once in one process and once in two, each in
a large-backfill instance (`pm postgres start`: 11,000 price partitions take minutes of Dagster
bookkeeping on SQLite) and a store of its own, compared row for row; and the two processes did
overlap."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from contextlib import ExitStack
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pm_domain import calendar
from pm_jobs.large_instance import read_env_file, throwaway_home
from tests.support.runs import require_postgres_binaries

ROOT = Path(__file__).resolve().parents[2]
PM = str(ROOT / ".venv" / "bin" / "pm")
TICKERS = [f"SYN{i:03d}" for i in range(20)]
LAST = dt.date(2018, 12, 31)
FIRST = calendar.shift_trading_days(LAST, -249)
# Partitions start 300 sessions before the range: features read 250 of them, and ts_forecasts
# fits on the history there is (as for any instance whose partitions start later than its lookback).
PARTITIONS_START = calendar.shift_trading_days(FIRST, -300)
TABLES = {"prices": ("ingested_at",), "features": (), "ts_forecasts": (), "ts_forecast_fits": ()}


def environment(home: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "OLLAMA", "DAGSTER_"))} | {
        "DAGSTER_DISABLE_TELEMETRY": "1"}
    pm(base, "postgres", "start", "--home", str(home))
    return base | {"DAGSTER_HOME": str(home), "PM_WATCHLIST": str(home / "watchlist.txt"),
                   "PM_PRICE_SOURCE": "synthetic", "PM_LLM_MODE": "fallback", "PM_START_DATE": str(PARTITIONS_START)}


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
        for name, extra in (("one", ()), ("two", ("--parallel", "2"))):
            env = environment(homes.enter_context(throwaway_home(f"pm-parallel-{name}-")))
            pm(env, "tickers", "add", *TICKERS)
            output = pm(env, "materialize", "--assets", "prices", "--from", str(PARTITIONS_START), "--to", str(LAST),
                        *extra)
            output += pm(env, "materialize", "--assets", "features,ts_forecasts", "--from", str(FIRST),
                         "--to", str(LAST), *extra)
            made[name] = env, output
        yield made


def rows(env: dict[str, str], table: str) -> pl.DataFrame:
    with duckdb.connect(store(env), read_only=True) as conn:
        frame = pl.from_arrow(conn.sql(f"SELECT * FROM {table}").to_arrow_table())
    return frame.drop(TABLES[table]).sort(frame.columns[:2] + (["horizon"] if "horizon" in frame.columns else []))


@pytest.mark.timeout(900)
def test_two_processes_write_the_rows_of_one(runs):
    (one, _), (two, _) = runs["one"], runs["two"]
    assert rows(one, "ts_forecasts").height == 20 * 250 * 3
    for table in TABLES:
        assert rows(two, table).equals(rows(one, table)), table


def test_the_two_processes_ran_at_once_and_said_so(runs):
    from dagster import DagsterInstance, RunsFilter

    env, output = runs["two"]
    assert "[1/2]" in output and "[2/2]" in output and "2 processes succeeded" in output
    assert "the duckdb pool allowed 1 step(s) at once; raised to 2" in output
    credentials = {k: v for k, v in read_env_file(Path(env["DAGSTER_HOME"]) / "instance.env").items()
                   if k.startswith("DAGSTER_PG_")}  # the instance's dagster.yaml reads them
    previous = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    try:
        with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            records = instance.get_run_records(RunsFilter(tags={"pm/trigger": "pm"}))
    finally:
        for key, value in previous.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    spans = sorted((r.start_time, r.end_time) for r in records)
    assert len(spans) == 4  # two commands x two shares
    assert any(later_start < end for (_, end), (later_start, _) in zip(spans, spans[1:]))
