"""The DuckDB resource every asset and sensor writes through, the store's lock, and the shared store.

DuckDB lets one process at a time open a database file for writing; a second process that tries
fails at once with "Could not set lock on file". The store therefore takes an exclusive lock on a
file beside the database (`pm.duckdb.lock`) for as long as a connection is open, so processes
that share the store (parallel runs of a backfill, the daemon's runs, the sensors) queue for it
instead of failing. The lock is the kernel's (flock): a killed process releases it. Steps open a
connection only to read their inputs and to write their rows, never while they compute, so the
wait is short, and the compute of several steps runs in parallel.

The cluster's store is a DuckLake instead (`PM_DUCKDB_PATH=ducklake:postgres:<libpq conninfo>`,
docs/deploy.md): its catalog is a PostgreSQL database and its rows are Parquet files under the data
path the lake was created with, so processes on several machines write at once, each transaction
committing or conflicting as a whole (pm_resources/store.py retries a conflict), and there is no
file lock to take. pm_resources/connections.py opens either kind.
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster_duckdb import DuckDBResource

from pm_resources.connections import connect, is_lake

_depths = threading.local()  # per lock file, how many connections this thread has open under it


def lock_path(database: str) -> Path | None:
    """The lock file of a database file; None for an in-memory database or a lake."""
    if database in ("", ":memory:") or database.startswith(":memory:") or is_lake(database):
        return None
    return Path(database).with_name(Path(database).name + ".lock")


@contextmanager
def store_lock(database: str) -> Iterator[None]:
    """Hold the store's cross-process lock; a thread that holds it already goes on (a connection
    opened inside another shares the process's database, which DuckDB allows)."""
    path = lock_path(database)
    if path is None:
        yield
        return
    depths: dict[Path, int] = _depths.__dict__.setdefault("by_path", {})
    held = depths.get(path, 0)
    depths[path] = held + 1
    try:
        if held:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        depths[path] = held


@contextmanager
def store_connection(database: str, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the store, opened under its lock and closed however the block ends."""
    with store_lock(database):
        conn = connect(database, read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()


class ClosingDuckDBResource(DuckDBResource):
    """`DuckDBResource` whose connection is opened under the store's lock and closed however the
    block ends.

    dagster-duckdb 0.29 closes the connection only when the `with` block exits normally: a step
    that raised inside it left the connection, and so the file's lock, open in its process until
    the exception was collected (in-process runs: the demo, the CLI, tests)."""

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if is_lake(self.database):
            with store_connection(self.database) as conn:
                yield conn
            return
        with store_lock(self.database):
            manager = super().get_connection()
            conn = manager.__enter__()
            try:
                yield conn
            except BaseException:
                conn.close()
                raise
            manager.__exit__(None, None, None)
