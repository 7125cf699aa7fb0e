"""The cluster on one machine's loopback: what `pm cluster start` (`make cluster`) stands up and
`pm cluster stop` (`make stop-cluster`) stops, each process by the PID it recorded.

Its folder (default `.dagster_cluster/` beside workspace.yaml) is a large-backfill instance
(pm_jobs/large_instance.py: Dagster's storage in a project-local PostgreSQL) plus:
- `redis/`: a Redis server (Debian's `redis-server`) on a free loopback port, the Celery broker and
  results backend; no snapshots (a queued step is a run's, and a run outlives no broker restart);
- `celery.yaml`: the broker, as dagster-celery's worker reads it;
- `workers/<k>.pid|.log`: N Celery workers (`dagster-celery worker start`), one process each;
- `instance.env` gains PM_CELERY_BROKER, so every run on this instance (from the UI, the daemon,
  `pm materialize` or `dagster asset materialize`) executes its steps on the workers
  (pm_jobs/executors.py);
- `store/` and the PostgreSQL database `pm_store`: the shared store, a DuckLake (its Parquet files
  and its catalog), which PM_DUCKDB_PATH names, so workers on several machines write at once.

The workers inherit this process's environment plus instance.env, so they read the same store
(PM_DUCKDB_PATH), price source and Ollama hosts as the runs that send them steps. docs/deploy.md
says what runs where on several machines.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pm_domain import settings
from pm_jobs import large_instance
from pm_jobs.local_postgres import free_port, port_is_free

HOME_NAME = ".dagster_cluster"
DEFAULT_WORKERS = 2
READY_SECONDS = 90  # a worker imports dagster and the project's definitions before it says "ready"
STOP_SECONDS = 30
INSTANCE_SETTINGS = ("PM_CELERY_BROKER", "PM_DUCKDB_PATH")  # instance.env's, which every `pm` on it loads
REDIS_INSTALL_HINT = "apt-get install redis-server (Debian/Ubuntu), or put redis-server on the PATH"


class ClusterError(RuntimeError):
    """The cluster cannot be stood up or used (one line, says what to do)."""


def default_home() -> Path:
    return settings.PROJECT_ROOT / HOME_NAME


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class RedisServer:
    root: Path

    @property
    def pid_file(self) -> Path:
        return self.root / "redis.pid"

    @property
    def log(self) -> Path:
        return self.root / "redis.log"

    def pid(self) -> int | None:
        pid = _read_pid(self.pid_file)
        return pid if _alive(pid) else None

    def start(self, port: int) -> None:
        binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
        if binary is None:
            raise ClusterError(f"redis-server not found: {REDIS_INSTALL_HINT}")
        self.root.mkdir(parents=True, exist_ok=True)
        subprocess.run([binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.root),
                        "--daemonize", "yes", "--pidfile", str(self.pid_file), "--logfile", str(self.log),
                        "--save", "", "--appendonly", "no", "--protected-mode", "yes"],
                       check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 15
        while self.pid() is None or port_is_free(port):
            if time.monotonic() > deadline:
                raise ClusterError(f"Redis did not start on 127.0.0.1:{port} (log: {self.log})")
            time.sleep(0.1)

    def stop(self) -> int | None:
        pid = self.pid()
        if pid is not None:
            _terminate(pid, group=False)
        return pid


def _terminate(pid: int, group: bool) -> None:
    """SIGTERM (a Celery worker's warm shutdown finishes its step), then SIGKILL after STOP_SECONDS."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + STOP_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass


@dataclass(frozen=True)
class Workers:
    root: Path

    def pid_file(self, number: int) -> Path:
        return self.root / f"{number}.pid"

    def log(self, number: int) -> Path:
        return self.root / f"{number}.log"

    def running(self) -> dict[int, int]:
        """Worker number -> PID of each worker that is alive."""
        found = {}
        for path in sorted(self.root.glob("*.pid")) if self.root.is_dir() else []:
            pid = _read_pid(path)
            if path.stem.isdigit() and _alive(pid):
                found[int(path.stem)] = pid
        return found

    def start(self, number: int, config_yaml: Path, env: dict[str, str]) -> int:
        """`dagster-celery worker start` as a process group of its own (it runs `celery worker`
        beneath it), one step at a time (--concurrency=1), named pm-worker-<k>@<host>."""
        self.root.mkdir(parents=True, exist_ok=True)
        command = [str(Path(sys.executable).with_name("dagster-celery")), "worker", "start", "-A", "dagster_celery.app",
                   "-y", str(config_yaml), "-n", f"pm-worker-{number}", "--", "--concurrency=1",
                   f"--logfile={self.log(number)}"]
        self.log(number).unlink(missing_ok=True)
        with open(self.root / f"{number}.err", "w") as errors:
            process = subprocess.Popen(command, env=env, cwd=settings.PROJECT_ROOT, start_new_session=True,
                                       stdout=subprocess.DEVNULL, stderr=errors)
        self.pid_file(number).write_text(f"{process.pid}\n")
        return process.pid

    def wait_ready(self, numbers: list[int]) -> None:
        deadline = time.monotonic() + READY_SECONDS
        waiting = set(numbers)
        while waiting:
            for number in list(waiting):
                if not _alive(_read_pid(self.pid_file(number))):
                    error = (self.root / f"{number}.err").read_text().strip().splitlines()
                    raise ClusterError(f"worker {number} exited while starting: "
                                       f"{error[-1] if error else 'no output'} (log: {self.log(number)})")
                if self.log(number).is_file() and " ready." in self.log(number).read_text():
                    waiting.discard(number)
            if waiting and time.monotonic() > deadline:
                raise ClusterError(f"worker(s) {sorted(waiting)} not ready after {READY_SECONDS} s "
                                   f"(logs: {self.root})")
            time.sleep(0.5)

    def stop(self, number: int) -> int | None:
        pid = _read_pid(self.pid_file(number))
        if _alive(pid):
            _terminate(pid, group=True)
        self.pid_file(number).unlink(missing_ok=True)
        return pid if pid else None


def _worker_env(home: Path) -> dict[str, str]:
    """This process's environment, the instance's settings and DAGSTER_HOME, with the venv's `bin`
    first on the PATH: dagster-celery shells out to `celery`, and without it the worker dies."""
    env = {**os.environ, **large_instance.read_env_file(home / large_instance.ENV_FILE), "DAGSTER_HOME": str(home)}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def start(home: Path, workers: int = DEFAULT_WORKERS) -> list[str]:
    """Stand the cluster up at `home` (idempotent): PostgreSQL, Redis, then workers 1..N; a
    worker already running is kept, workers beyond N are stopped. Returns what to print."""
    if not 1 <= workers <= 64:
        raise ClusterError(f"--workers {workers}: use 1 to 64")
    home = home.resolve()
    previous = large_instance.read_env_file(home / large_instance.ENV_FILE)
    if (home / "dagster.yaml").is_file() and previous and "PM_CELERY_BROKER" not in previous:
        raise ClusterError(f"{home} is a large-backfill instance without a broker: choose another --home")
    redis = RedisServer(home / "redis")
    lines = []
    port = _broker_port(previous.get("PM_CELERY_BROKER", ""))
    if redis.pid() is None:
        port = port if port and port_is_free(port) else free_port()
        redis.start(port)
        lines.append(f"Redis started on 127.0.0.1:{port} (pid {redis.pid()})")
    else:
        lines.append(f"Redis already running on 127.0.0.1:{port} (pid {redis.pid()})")
    broker = f"redis://127.0.0.1:{port}/0"
    lines += large_instance.start(home, extra_env={"PM_CELERY_BROKER": broker}, shared_store=True)[:-1]
    config_yaml = home / "celery.yaml"
    config_yaml.write_text(f"# Written by `pm cluster start`: what each worker reads.\n"
                           f"execution:\n  config:\n    broker: {broker}\n    backend: {broker}\n")
    pool = Workers(home / "workers")
    running = pool.running()
    if running and previous.get("PM_CELERY_BROKER") != broker:  # they would wait on the old broker for ever
        for number, pid in running.items():
            pool.stop(number)
            lines.append(f"worker {number} stopped (pid {pid}): the broker moved to {broker}")
        running = {}
    for number in sorted(set(running) - set(range(1, workers + 1))):
        pool.stop(number)
        lines.append(f"worker {number} stopped (pid {running[number]})")
    new = [n for n in range(1, workers + 1) if n not in running]
    env = _worker_env(home)
    for number in new:
        pool.start(number, config_yaml, env)
    pool.wait_ready(new)
    lines.append(f"{workers} Celery worker(s) ready ({len(new)} started), one step at a time each (logs: {pool.root})")
    if new:
        given = sorted(f"{k}={v}" for k, v in env.items() if k.startswith(("PM_", "OLLAMA_")) and k not in INSTANCE_SETTINGS)
        lines.append("the new workers' settings: " + (", ".join(given) or "the defaults")
                     + " (runs on this instance must use the same: the workers read them, not the run's)")
    lines.append(f"use it: DAGSTER_HOME={home} pm materialize ... | DAGSTER_HOME={home} pm ui | "
                 f"stop it: pm cluster stop --home {home}")
    return lines


def require_workers(broker: str, seconds: float = 2.0) -> list[str]:
    """The names of the workers that answer on `broker`; one line naming what is missing when none
    does (a run would otherwise wait for ever on a queue nobody reads)."""
    from celery import Celery
    from kombu.exceptions import OperationalError

    start = f"pm cluster start --home {os.environ.get('DAGSTER_HOME', '<the cluster folder>')}"
    app = Celery(broker=broker)
    try:
        replies = app.control.ping(timeout=seconds)
    except (OperationalError, OSError) as exc:
        raise ClusterError(f"the cluster's broker {broker} is not answering ({str(exc).splitlines()[0]}): {start}") from None
    finally:
        app.close()
    if not replies:
        raise ClusterError(f"no Celery worker answers on {broker}: {start}")
    return sorted(name for reply in replies for name in reply)


def _broker_port(url: str) -> int | None:
    try:
        return int(url.rsplit(":", 1)[1].split("/")[0]) if url else None
    except (IndexError, ValueError):
        return None


def stop(home: Path) -> list[str]:
    """Stop the workers, then Redis, then PostgreSQL (the data stays)."""
    home = home.resolve()
    pool = Workers(home / "workers")
    lines = [f"worker {number} stopped (pid {pid})" for number, pid in pool.running().items() if pool.stop(number)]
    pid = RedisServer(home / "redis").stop()
    lines.append(f"Redis stopped (pid {pid})" if pid else "Redis was not running")
    lines.append(large_instance.stop(home))
    return lines


def status(home: Path) -> list[str]:
    home = home.resolve()
    if not (home / "celery.yaml").is_file():
        return [f"no cluster at {home}: pm cluster start --home {home}"]
    env = large_instance.read_env_file(home / large_instance.ENV_FILE)
    broker = env.get("PM_CELERY_BROKER", "?")
    store = env.get("PM_DUCKDB_PATH", "?")
    if store.startswith("ducklake:"):
        store = f"a DuckLake, catalog database {large_instance.LAKE_DBNAME}, files in {home / large_instance.LAKE_FILES}"
    redis_pid = RedisServer(home / "redis").pid()
    running = Workers(home / "workers").running()
    return [large_instance.status(home),
            f"Redis: {'running at ' + broker + f' (pid {redis_pid})' if redis_pid else 'stopped'}",
            f"workers: {len(running)} running" + (f" ({', '.join(f'{n}: pid {p}' for n, p in running.items())})"
                                                  if running else ""),
            f"store: {store}"]
