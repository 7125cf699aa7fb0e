"""How a connection to the store is opened: a DuckDB file, or the cluster's shared DuckLake.

A connection to the lake is a DuckDB in memory with the lake attached under one name and in use,
so every query of the project reads and writes it unchanged. Kept apart from database.py (the
Dagster resource) so the CLI's reports and `pm book` open the store the same way the assets do.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import duckdb_extension_ducklake
import duckdb_extension_postgres_scanner
import psycopg2
import psycopg2.errors

LAKE_PREFIX = "ducklake:"
LAKE_ALIAS = "pm_store"  # the catalog name the lake is attached under in every connection

# Ten times what a 1.26M-row write (500 tickers x 10 years of one stage) takes at the ~40,000 rows/s
# bench-cluster measures: a writer waiting longer is waiting on one that hangs.
WRITE_LOCK_WAIT_SECONDS = 600
_LOCK_SPACE = 0x504D  # "PM": the first key of every table lock, so other advisory users keep theirs

_lakes: dict[tuple[int, str], duckdb.DuckDBPyConnection] = {}
_lakes_guard = threading.Lock()
_lockers: dict[tuple[int, int, str], list] = {}  # (pid, thread, catalog) -> [connection, depth]


class LakeError(RuntimeError):
    """The shared store could not be attached: the message is the one line to show."""


def is_lake(database: str) -> bool:
    """True when `database` names a DuckLake (`ducklake:...`) rather than a DuckDB file."""
    return database.startswith(LAKE_PREFIX)


def _extension_file(module) -> str:
    # The PyPI packages ship DuckDB's signed binaries; LOAD by path reads them in place, so nothing is
    # installed into ~/.duckdb and nothing is downloaded (the default signature check still applies).
    return str(next(Path(module.__file__).parent.rglob("*.duckdb_extension")))


def _attach_sql(database: str, data_path: str | None) -> str:
    literal = database.replace("'", "''")
    options = f" (DATA_PATH '{data_path.replace(chr(39), chr(39) * 2)}')" if data_path else ""
    return f"ATTACH '{literal}' AS {LAKE_ALIAS}{options}"


def _open_lake(database: str, data_path: str | None = None) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    for module in (duckdb_extension_postgres_scanner, duckdb_extension_ducklake):
        conn.execute(f"LOAD '{_extension_file(module)}'")
    try:
        conn.execute(_attach_sql(database, data_path))
    except duckdb.Error as exc:
        conn.close()
        raise LakeError(f"cannot attach the shared store {redact(database)}: "
                        f"{str(exc).strip().splitlines()[0]}") from exc
    return conn


def create_lake(database: str, data_path: Path) -> None:
    """Create the DuckLake `database` with its Parquet files under `data_path` (a no-op when it
    exists: DuckLake keeps the data path in its catalog, so later connections need only `database`)."""
    data_path.mkdir(parents=True, exist_ok=True)
    _open_lake(database, str(data_path).rstrip("/") + "/").close()


def lake_catalog(database: str) -> str:
    """The libpq connection string of the catalog of the lake `database` (`ducklake:postgres:<it>`)."""
    return database.removeprefix(LAKE_PREFIX).removeprefix("postgres:")


def redact(database: str) -> str:
    """`database` with a libpq password masked, for messages and printed settings."""
    return " ".join("password=***" if part.startswith("password=") else part for part in database.split(" "))


def _lake_base(database: str) -> duckdb.DuckDBPyConnection:
    """The process's DuckDB with the lake attached. Loading the extensions and attaching costs
    about 0.4 s, so a process does it once and hands out cursors (connections to the same database
    instance); keyed by PID because a Celery worker forks its pool processes after importing."""
    key = (os.getpid(), database)
    with _lakes_guard:
        if key not in _lakes:
            _lakes[key] = _open_lake(database)
        return _lakes[key]


def close_lake(database: str) -> None:
    """Close this process's connections to the lake `database`: the DuckDB that attached it (and its
    catalog connections) and each thread's connection for table locks."""
    with _lakes_guard:
        base = _lakes.pop((os.getpid(), database), None)
    if base is not None:
        base.close()
    catalog = lake_catalog(database)
    for key in [key for key in list(_lockers) if key[0] == os.getpid() and key[2] == catalog]:
        _lockers.pop(key)[0].close()


def lake_connection(database: str) -> duckdb.DuckDBPyConnection:
    """A new connection to the lake `database`, with the lake as its default catalog."""
    conn = _lake_base(database).cursor()
    conn.execute(f"USE {LAKE_ALIAS}")
    return conn


def connect(database: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the store `database`, a DuckDB file or a DuckLake (read_only applies to files)."""
    if is_lake(database):
        return lake_connection(database)
    return duckdb.connect(database, read_only=read_only)


def _catalog_of(conn: duckdb.DuckDBPyConnection) -> str | None:
    """The libpq string of the lake `conn` uses, or None for a DuckDB file."""
    row = conn.execute("SELECT type, path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    if row is None or row[0] != "ducklake" or not row[1].startswith("postgres:"):
        return None
    return lake_catalog(row[1])


def _table_key(table: str) -> int:
    return zlib.crc32(table.encode()) - 2**31  # a stable int4 for pg_advisory_xact_lock(int, int)


def _locker(catalog: str) -> list:
    key = (os.getpid(), threading.get_ident(), catalog)
    held = _lockers.get(key)
    if held is None or held[0].closed:
        held = _lockers[key] = [psycopg2.connect(catalog), 0]
    return held


@contextlib.contextmanager
def table_write_lock(conn: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> Iterator[None]:
    """Hold, on a lake, a lock per table of `tables` that every writer of the lake takes before it
    begins: two writers of one table then run one after the other, on any machine.

    DuckLake checks concurrent commits for conflicts table by table, but a DELETE that matched no row
    records nothing to conflict with: two runs replacing the same empty partitions at once would both
    commit their INSERTs and double the rows. The lock is a PostgreSQL transaction-scoped advisory
    lock in the lake's catalog database, taken in name order (no deadlock between writers of several
    tables), released when the write ends or its process dies. A DuckDB file needs none: one process
    writes it at a time (pm_resources/database.py)."""
    catalog = _catalog_of(conn)
    if catalog is None:
        yield
        return
    held = _locker(catalog)
    try:
        _take_locks(held[0], tables)  # a nested write (same thread) re-enters the locks it holds
    except psycopg2.OperationalError:
        if held[1]:
            raise
        held[0].close()  # the catalog's server restarted since this thread's last write: reconnect once
        held = _locker(catalog)
        _take_locks(held[0], tables)
    held[1] += 1
    try:
        yield
    finally:
        held[1] -= 1
        if held[1] == 0 and not held[0].closed:
            held[0].rollback()  # ends the catalog transaction, which releases its locks


def _take_locks(catalog: psycopg2.extensions.connection, tables: Sequence[str]) -> None:
    with catalog.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = %s", [f"{WRITE_LOCK_WAIT_SECONDS}s"])
        try:
            for table in sorted(set(tables)):
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_SPACE, _table_key(table)])
        except psycopg2.errors.LockNotAvailable as exc:
            catalog.rollback()
            raise LakeError(f"{', '.join(sorted(set(tables)))}: waited {WRITE_LOCK_WAIT_SECONDS} s for another "
                            f"writer of the shared store to finish") from exc
