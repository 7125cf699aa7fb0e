"""The large-backfill instance: a Dagster instance whose storage is a project-local PostgreSQL, with
event batching and ranged planned events on. What `pm postgres start` (`make large-instance`) builds.

Its folder (default `.dagster_large/` beside workspace.yaml) holds:
- `dagster.yaml`: deploy/dagster.postgres.yaml, copied (credentials come from the environment);
- `instance.env`: the PostgreSQL credentials, the two Dagster settings below and the instance's own
  DuckDB store; `pm` loads it into its environment whenever DAGSTER_HOME points at this folder, so
  `pm ui` (dagster dev), its daemon, code servers and every run they launch inherit it;
- `postgres/`: the cluster, served on 127.0.0.1 only.

Why the two settings (Dagster 1.13, checked in its source and by tests/e2e/test_large_instance.py):
- DAGSTER_EVENT_BATCH_SIZE: a step hands its materialization events to
  `EventLogStorage.store_event_batch` in batches of this size; dagster-postgres writes a batch in one
  statement, where unbatched it opens a connection per event.
- DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS: a single-run backfill records one "planned" event
  per asset for its whole range instead of one per partition. The cost: a failed ranged run no
  longer marks its partitions failed in the partitions view (they stay "missing"); the failure is
  on the run's page and in `run_failures` (`pm failures`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pm_domain import settings
from pm_jobs.local_postgres import Cluster, PostgresFailed, free_port, new_password, port_is_free

HOME_NAME = ".dagster_large"
ENV_FILE = "instance.env"
BATCH_SIZE = 1000
DAGSTER_SETTINGS = {
    "DAGSTER_EVENT_BATCH_SIZE": str(BATCH_SIZE),
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
}
USER = DBNAME = "dagster"
LAKE_DBNAME = "pm_store"  # the shared store's catalog, a database of the instance's PostgreSQL
LAKE_FILES = "store"  # the shared store's Parquet files, under the instance's folder
# What another command wrote into instance.env and a restart keeps: the cluster's broker (pm_jobs/cluster.py).
KEPT_SETTINGS = ("PM_CELERY_BROKER",)


class LargeInstanceError(RuntimeError):
    """The large-backfill instance cannot be built or used (one line, says what to do)."""


def default_home() -> Path:
    return settings.PROJECT_ROOT / HOME_NAME


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments skipped."""
    if not path.is_file():
        return {}
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def load_instance_env(home: Path) -> list[str]:
    """Put the instance's `instance.env` into this process's environment, keeping any variable the
    user set themselves; return the names it set. A stopped PostgreSQL is named here, in one line,
    rather than as a connection error deep in Dagster."""
    env = read_env_file(home / ENV_FILE)
    if not env:
        return []
    if Cluster(home / "postgres").pid() is None:
        raise LargeInstanceError(f"the instance {home} keeps its storage in PostgreSQL, which is not running: "
                                 f"pm postgres start --home {home}")
    # Not settings: Dagster (dagster.yaml's env: entries, the processes pm ui starts) reads these from the environment.
    loaded = [key for key in env if key not in os.environ]
    for key in loaded:
        os.environ[key] = env[key]
    return loaded


def lake_database(port: int, password: str, dbname: str = LAKE_DBNAME) -> str:
    """PM_DUCKDB_PATH of a shared store whose catalog is the database `dbname` (the instance's
    `pm_store`) of a PostgreSQL on 127.0.0.1:`port`."""
    return f"ducklake:postgres:host=127.0.0.1 port={port} dbname={dbname} user={USER} password={password}"


def start(home: Path, extra_env: dict[str, str] | None = None, shared_store: bool = False) -> list[str]:
    """Build the instance at `home` if needed and start its PostgreSQL (idempotent): initdb once, a
    free loopback port each start (the previous one when it is free), the database, dagster.yaml and
    instance.env (with `extra_env`: the cluster's broker). The store is the DuckDB file `pm.duckdb`
    in `home`, or with `shared_store` (the cluster; kept by a later start) a DuckLake: its catalog
    the `pm_store` database, its files `home/store/`. Returns what to print."""
    home = home.resolve()
    env_path = home / ENV_FILE
    if (home / "dagster.yaml").is_file() and not env_path.is_file():
        raise LargeInstanceError(f"{home}/dagster.yaml exists and is not a large-backfill instance "
                                 "(no instance.env): choose another --home")
    cluster = Cluster(home / "postgres", user=USER, dbname=DBNAME)
    previous = read_env_file(env_path)
    lines = []
    if cluster.initialized:
        password = previous.get("DAGSTER_PG_PASSWORD")
        if not password:
            raise LargeInstanceError(f"{env_path} lost DAGSTER_PG_PASSWORD: delete {home} and start again")
    else:
        password = new_password()
        cluster.init(password)
        lines.append(f"created a PostgreSQL cluster in {cluster.root}")
    port = cluster.port() if cluster.pid() is not None else None
    if port is None:
        wanted = int(previous.get("DAGSTER_PG_PORT", "0"))
        port = wanted if wanted and port_is_free(wanted) else free_port()
        try:
            cluster.start(port)
        except PostgresFailed as exc:
            raise LargeInstanceError(f"PostgreSQL did not start: {str(exc).splitlines()[0]} (log: {cluster.log})") from exc
        lines.append(f"PostgreSQL {_version(cluster)} started on 127.0.0.1:{port} (pid {cluster.pid()})")
    else:
        lines.append(f"PostgreSQL already running on 127.0.0.1:{port} (pid {cluster.pid()})")
    cluster.create_database(port, password)
    store = str(home / "pm.duckdb")
    if shared_store or previous.get("PM_DUCKDB_PATH", "").startswith("ducklake:"):
        store = _start_lake(home, port, password)
        lines.append(f"shared store: a DuckLake, catalog database {LAKE_DBNAME} on 127.0.0.1:{port}, "
                     f"files in {home / LAKE_FILES}")
    shutil.copy(settings.PROJECT_ROOT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    _write_env(env_path, {
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": USER,
        "DAGSTER_PG_PASSWORD": password, "DAGSTER_PG_DB": DBNAME, **DAGSTER_SETTINGS,
        "PM_DUCKDB_PATH": store,
        **{key: previous[key] for key in KEPT_SETTINGS if key in previous}, **(extra_env or {})})
    lines.append(f"instance {home}: dagster.yaml + {ENV_FILE} (event batching {BATCH_SIZE}, ranged planned events)")
    lines.append(f"use it: DAGSTER_HOME={home} pm ... | make ui-large | "
                 f"for the dagster CLI: set -a; . {env_path}; set +a")
    return lines


def _start_lake(home: Path, port: int, password: str) -> str:
    from pm_resources.connections import create_lake  # loads DuckDB's extensions: only for a lake

    Cluster(home / "postgres", user=USER, dbname=LAKE_DBNAME).create_database(port, password)
    database = lake_database(port, password)
    create_lake(database, home / LAKE_FILES)
    return database


def stop(home: Path) -> str:
    cluster = Cluster(home.resolve() / "postgres")
    pid = cluster.pid()
    if pid is None:
        return f"PostgreSQL of {home} is not running"
    cluster.stop()
    return f"PostgreSQL of {home} stopped (pid {pid})"


def status(home: Path) -> str:
    cluster = Cluster(home.resolve() / "postgres")
    if not cluster.initialized:
        return f"no large-backfill instance at {home}: pm postgres start"
    pid = cluster.pid()
    return (f"PostgreSQL of {home}: running on 127.0.0.1:{cluster.port()} (pid {pid})" if pid
            else f"PostgreSQL of {home}: stopped (pm postgres start)")


def _version(cluster: Cluster) -> str:
    return (cluster.data / "PG_VERSION").read_text().strip()


def _write_env(path: Path, values: dict[str, str]) -> None:
    text = ("# Written by `pm postgres start` (or `pm cluster start`); pm loads it when DAGSTER_HOME is this folder.\n"
            + "".join(f"{key}={value}\n" for key, value in values.items()))
    path.write_text(text)
    path.chmod(0o600)  # it holds the database password


@contextlib.contextmanager
def throwaway_home(prefix: str = "pm-large-") -> Iterator[Path]:
    """A folder for an instance that must not outlive the block (tests, benchmarks): a fresh
    temporary directory the `postgres` user can enter (not pytest's private ones); on exit any
    PostgreSQL started in it is stopped and the folder deleted."""
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    parent.chmod(0o755)
    home = parent / "large"
    try:
        yield home
    finally:
        try:
            stop(home)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def temporary_instance(prefix: str = "pm-large-") -> Iterator[tuple[Path, dict[str, str]]]:
    """A started large-backfill instance in a throwaway folder; yields it and its instance.env."""
    with throwaway_home(prefix) as home:
        start(home)
        yield home, read_env_file(home / ENV_FILE)

