"""The store a test writes to: a DuckDB file, or, with PM_TEST_STORE=lake (`make test-lake`), a
DuckLake whose catalog is a database of its own in a throwaway PostgreSQL the test session starts.
The same tests run against both, so every stage, mart and report is checked on either store."""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
from pathlib import Path

import pytest

MODE = os.environ.get("PM_TEST_STORE", "file")
if MODE not in ("file", "lake"):
    raise ValueError(f"PM_TEST_STORE={MODE!r}: use file or lake")

_server: dict[str, object] = {}
_names = itertools.count()


def _catalog_server() -> tuple[int, str]:
    """One PostgreSQL per test process, started on first use and stopped when the process exits."""
    if "port" not in _server:
        from pm_jobs.large_instance import throwaway_home
        from pm_jobs.local_postgres import Cluster, PostgresNotFound, find_bin_dir, free_port

        try:
            find_bin_dir()
        except PostgresNotFound as exc:
            pytest.skip(f"PM_TEST_STORE=lake needs PostgreSQL for the lake's catalog: {exc}")
        context = throwaway_home("pm-lake-catalog-")
        home = context.__enter__()
        atexit.register(context.__exit__, None, None, None)
        cluster = Cluster(home / "postgres", dbname="postgres")  # where throwaway_home's exit stops it
        password = "lake-tests"
        cluster.init(password, durable=False)
        with open(cluster.data / "postgresql.conf", "a") as conf:
            conf.write("max_connections = 500\n")  # each test's lake keeps its catalog connections
        port = free_port()
        cluster.start(port)
        _server.update(port=port, password=password, home=home)
    return int(_server["port"]), str(_server["password"])


def lake_store(data_dir: Path) -> str:
    """A new, empty DuckLake: a fresh catalog database, its Parquet files under `data_dir`."""
    from pm_resources.connections import create_lake

    from pm_jobs.large_instance import lake_database
    from pm_jobs.local_postgres import Cluster

    port, password = _catalog_server()
    name = f"lake_{os.getpid()}_{next(_names)}"
    Cluster(Path(_server["home"]) / "postgres", dbname=name).create_database(port, password)
    database = lake_database(port, password, name)
    create_lake(database, data_dir)
    return database


def new_store(tmp_path: Path) -> str:
    """An empty store of the session's mode under `tmp_path`."""
    return lake_store(tmp_path / "lake") if MODE == "lake" else str(tmp_path / "pm.duckdb")


def forget(database: str) -> None:
    """Close this process's connections to a test's lake (a file store has none kept open)."""
    from pm_resources.connections import close_lake, is_lake

    if is_lake(database):
        close_lake(database)


def copy_of(store_path: str, tmp_path: Path) -> str:
    """A private copy of a module-scoped store (a DuckDB file), so a test can write to it freely; in
    lake mode the copy is a new lake holding the file's tables."""
    if MODE == "file":
        path = str(tmp_path / "pm.duckdb")
        shutil.copy(store_path, path)
        return path
    from pm_resources.connections import connect

    database = lake_store(tmp_path / "lake")
    with connect(database) as conn:
        conn.execute(f"ATTACH '{store_path}' AS source (READ_ONLY)")
        try:
            for (table,) in conn.execute("SELECT table_name FROM information_schema.tables WHERE "
                                         "table_catalog = 'source' AND table_type = 'BASE TABLE'").fetchall():
                conn.execute(f"CREATE TABLE {table} AS SELECT * FROM source.{table}")
        finally:
            conn.execute("DETACH source")
    return database
