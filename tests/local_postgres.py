"""A throwaway PostgreSQL server for tests: initdb into a temporary directory, serve on a free
loopback port only, and always stop it and delete the directory afterwards.

    with LocalPostgres() as pg:
        psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=pg.dbname)

PostgreSQL refuses to run as root: under root the server's commands run as the unprivileged
`postgres` user (created by Debian's postgresql package) and the temporary directory is handed
to it; under any other user they run directly. No PostgreSQL binaries: PostgresNotFound.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.local_server import free_port

COMMAND_SECONDS = 120  # initdb, createdb, pg_ctl stop
START_SECONDS = 60  # pg_ctl start -w -t 60


class PostgresNotFound(RuntimeError):
    """No initdb/pg_ctl/postgres binaries on this machine (or no unprivileged user to run them as root)."""


class PostgresFailed(RuntimeError):
    """initdb, the server start or createdb failed (the message carries the server log's tail)."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres: $PG_BIN_DIR, then the newest Debian/Ubuntu
    /usr/lib/postgresql/<version>/bin, then the PATH (Homebrew, Fedora, a conda env)."""
    candidates = []
    if os.environ.get("PG_BIN_DIR"):
        candidates.append(Path(os.environ["PG_BIN_DIR"]))
    version = lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parent.name)] or [0]  # noqa: E731
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise PostgresNotFound("no PostgreSQL binaries (initdb, pg_ctl, postgres) in $PG_BIN_DIR, "
                           "/usr/lib/postgresql/*/bin or on the PATH")


class LocalPostgres:
    """Context manager: a fresh PostgreSQL cluster with one database, password auth over TCP on
    127.0.0.1 only (the Unix socket lives in the temporary directory, trust auth)."""

    def __init__(self, dbname: str = "dagster", user: str = "dagster", os_user: str = "postgres"):
        self.dbname, self.user, self.os_user = dbname, user, os_user
        self.password = secrets.token_urlsafe(16)
        self.root: Path | None = None
        self.server: PostgresServer | None = None
        self._started = False
        self._bin_dir: Path | None = None

    # -- the commands, as the unprivileged user when we are root ---------------------------------
    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        try:
            account = pwd.getpwnam(self.os_user)
        except KeyError as exc:
            raise PostgresNotFound(f"running as root and there is no `{self.os_user}` user to run "
                                   "PostgreSQL as (the postgresql package creates it)") from exc
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _run(self, args: list[str], timeout: float = COMMAND_SECONDS, **env: str) -> None:
        try:
            done = subprocess.run(args, cwd=self.root, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "LC_ALL": "C", **env}, **self._run_as())
        except subprocess.TimeoutExpired as exc:
            raise PostgresFailed(f"{Path(args[0]).name} did not finish in {timeout:g} s{self._log_tail()}") from exc
        if done.returncode != 0:
            raise PostgresFailed(f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout[-2000:]}"
                                 f"{done.stderr[-2000:]}{self._log_tail()}")

    def _log_tail(self) -> str:
        log = self.root / "postgres.log" if self.root else None
        if log and log.exists():
            return "\nserver log:\n" + log.read_text(errors="replace")[-3000:]
        return ""

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> PostgresServer:
        bin_dir = self._bin_dir = find_bin_dir()
        run_as = self._run_as()  # PostgresNotFound before anything is created
        self.root = Path(tempfile.mkdtemp(prefix="pm-postgres-"))
        try:
            if run_as:
                os.chown(self.root, run_as["user"], run_as["group"])
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            if run_as:
                os.chown(pwfile, run_as["user"], run_as["group"])
            pwfile.chmod(0o600)
            data = self.root / "data"
            self._run([str(bin_dir / "initdb"), "-D", str(data), "-U", self.user, f"--pwfile={pwfile}",
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale"])
            pwfile.unlink()
            port = free_port()
            with open(data / "postgresql.conf", "a") as conf:
                conf.write(f"\n# LocalPostgres (tests): loopback only, a private socket directory.\n"
                           f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                           f"unix_socket_directories = '{self.root}'\n"
                           # A throwaway cluster: durability is not needed, speed is.
                           "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
            self._started = True  # from here on, __exit__ must stop it even if the start fails
            self._run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "postgres.log"),
                       "-w", "-t", str(START_SECONDS), "start"], timeout=START_SECONDS + 30)
            self._run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", self.user,
                       self.dbname], PGPASSWORD=self.password)
            self.server = PostgresServer("127.0.0.1", port, self.user, self.password, self.dbname)
            return self.server
        except BaseException:
            self._stop(bin_dir)
            raise

    def __exit__(self, *exc_info) -> None:
        if self._bin_dir is not None:
            self._stop(self._bin_dir)

    def _stop(self, bin_dir: Path) -> None:
        if self.root is None:
            return
        data = self.root / "data"
        try:
            if self._started:
                try:
                    self._run([str(bin_dir / "pg_ctl"), "-D", str(data), "stop", "-m", "immediate", "-w",
                               "-t", "30"], timeout=60)
                except Exception:
                    self._kill_postmaster(data)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root, self._started = None, False

    @staticmethod
    def _kill_postmaster(data: Path) -> None:
        """pg_ctl could not stop it: SIGKILL the postmaster named in postmaster.pid."""
        try:
            pid = int((data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
