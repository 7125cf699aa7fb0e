"""How a connection to the store is opened: a DuckDB file, or the cluster's shared DuckLake.

A connection to the lake is a DuckDB in memory with the lake attached under one name and in use,
so every query of the project reads and writes it unchanged. Kept apart from database.py (the
Dagster resource) so the CLI's reports and `pm book` open the store the same way the assets do.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import duckdb
import duckdb_extension_ducklake
import duckdb_extension_postgres_scanner

LAKE_PREFIX = "ducklake:"
LAKE_ALIAS = "pm_store"  # the catalog name the lake is attached under in every connection

_lakes: dict[tuple[int, str], duckdb.DuckDBPyConnection] = {}
_lakes_guard = threading.Lock()


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
    """Close this process's connection to the lake `database` (and its catalog connections)."""
    with _lakes_guard:
        base = _lakes.pop((os.getpid(), database), None)
    if base is not None:
        base.close()


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
