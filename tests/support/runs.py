"""Helpers the tests share: range tags, store copies, yfinance-shaped frames, in-process runs
and what a failed run said."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


def range_tags(tickers, start: dt.date | str, end: dt.date | str) -> dict[str, str]:
    from pm_assets.partitions import range_tags as tags

    return tags(list(tickers), str(start), str(end))


def yfinance_like_frame(tickers, dates, failed=()):
    """A frame shaped as yfinance.download(auto_adjust=False) returns: (Price, Ticker) columns;
    the `failed` tickers all NaN, as yfinance reports a symbol it could not download."""
    import numpy as np
    import pandas as pd

    fields = ["Adj Close", "Close", "High", "Low", "Open", "Volume"]
    columns = pd.MultiIndex.from_product([fields, tickers], names=["Price", "Ticker"])
    index = pd.DatetimeIndex(pd.to_datetime(dates), name="Date")
    rng = np.random.default_rng(1)
    data = {}
    for ticker in tickers:
        close = 100 + rng.normal(0, 1, len(dates)).cumsum()
        block = {"Open": close - 0.5, "High": close + 1, "Low": close - 1, "Close": close,
                 "Adj Close": close * 0.99, "Volume": rng.integers(1e5, 1e6, len(dates)).astype(float)}
        for field in fields:
            data[(field, ticker)] = np.full(len(dates), np.nan) if ticker in failed else block[field]
    return pd.DataFrame(data, index=index, columns=columns)


def table_names(db_path) -> list[str]:
    """The tables and views of a DuckDB file, sorted."""
    from pm_resources.connections import connect

    with connect(str(db_path), read_only=True) as conn:
        return sorted(r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                                 "WHERE table_catalog = current_database()").fetchall())


def run_assets(instance, db_path, assets, start, end, tickers, source="sample", csv_dir=None):
    """Materialize `assets` for tickers x start..end as one ranged run, in-process, adding the
    tickers to the universe first; failures are returned, not raised."""
    from dagster import materialize

    from pm_resources.database import ClosingDuckDBResource
    from pm_resources.price_source import PriceSourceResource

    known = set(instance.get_dynamic_partitions("tickers"))
    instance.add_dynamic_partitions("tickers", [t for t in tickers if t not in known])
    return materialize(assets, instance=instance, raise_on_error=False, tags=range_tags(list(tickers), start, end),
                       resources={"duckdb": ClosingDuckDBResource(database=str(db_path)),
                                  "price_source": PriceSourceResource(source=source, csv_dir=csv_dir)})


def require_postgres_binaries() -> None:
    """Skip the test, saying why, on a machine without PostgreSQL's binaries."""
    from pm_jobs.local_postgres import PostgresNotFound, find_bin_dir

    try:
        find_bin_dir()
    except PostgresNotFound as exc:
        pytest.skip(f"PostgreSQL binaries not found: install postgresql (the CI script does) ({exc})")


@contextlib.contextmanager
def large_instance_at(home: Path) -> Iterator:
    """The Dagster instance of a large-backfill instance or cluster folder, opened in this process
    (its dagster.yaml reads the PostgreSQL credentials of its instance.env from the environment)."""
    from dagster import DagsterInstance

    from pm_jobs.large_instance import read_env_file

    credentials = {k: v for k, v in read_env_file(home / "instance.env").items() if k.startswith("DAGSTER_PG_")}
    previous = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    try:
        with DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        for key, value in previous.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def celery_workers(instance, run_id: str) -> set[str]:
    """The Celery workers that executed the run's steps, as dagster-celery's engine events name them."""
    from dagster import DagsterEventType

    return {record.dagster_event.event_specific_data.metadata["Celery worker"].value
            for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if "Celery worker" in (record.dagster_event.event_specific_data.metadata or {})}


def require_redis() -> None:
    """Skip the test, saying why, on a machine without Debian's redis-server (the cluster's broker)."""
    if not (shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()):
        pytest.skip("redis-server not found: install redis-server (the CI script does)")


def failure_message(result) -> str:
    """The user-code error of the first failed step (dagster wraps it as the cause)."""
    error = result.get_step_failure_events()[0].event_specific_data.error
    return f"{error.message} {error.cause.message if error.cause else ''}"


def table(db_path, name, drop=("ingested_at",)):
    from pm_resources.connections import connect
    from pm_resources.store import query

    with connect(db_path, read_only=True) as conn:
        frame = query(conn, f"SELECT * FROM {name} ORDER BY ticker, date")
    return frame.drop([c for c in drop if c in frame.columns])
