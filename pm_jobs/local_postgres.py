"""A PostgreSQL cluster in a directory of its own, served on 127.0.0.1 only: what the large-backfill
instance (`pm postgres start`) and the tests' throwaway servers run.

The binaries are the system's (Debian's `postgresql` package: /usr/lib/postgresql/<version>/bin).
PostgreSQL refuses to run as root: under root its commands run as the unprivileged `postgres` user
(created by that package) and the cluster's directory is handed to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

COMMAND_SECONDS = 120  # initdb, createdb, pg_ctl stop
START_SECONDS = 60  # pg_ctl start -w -t 60
INSTALL_HINT = "apt-get install postgresql (Debian/Ubuntu), or set PG_BIN_DIR to a folder holding them"


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server can listen on 127.0.0.1:`port`. With SO_REUSEADDR, as PostgreSQL and Redis
    bind: a port whose last server was killed is in TIME_WAIT for a minute, free to them."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres: $PG_BIN_DIR, then the newest Debian/Ubuntu
    /usr/lib/postgresql/<version>/bin, then the PATH (Homebrew, Fedora, a conda env)."""
    import shutil

    from pm_domain import settings

    configured = settings.current().pg_bin_dir
    candidates = [configured] if configured else []
    version = lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parent.name)] or [0]  # noqa: E731
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise PostgresNotFound(f"no PostgreSQL binaries (initdb, pg_ctl, postgres): {INSTALL_HINT}")


class Cluster:
    """One cluster under `root`: `root/data` (the cluster), `root/postgres.log`. Password auth over
    TCP on 127.0.0.1; the Unix socket lives in `root` (trust auth, for the owner only)."""

    def __init__(self, root: Path, user: str = "dagster", dbname: str = "dagster", os_user: str = "postgres"):
        self.root, self.user, self.dbname, self.os_user = Path(root), user, dbname, os_user
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

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

    def _run(self, args: list[str], timeout: float = COMMAND_SECONDS, **env: str) -> str:
        try:
            # Not settings: the PostgreSQL tools inherit this process's environment, plus LC_ALL/PGPASSWORD.
            done = subprocess.run(args, cwd=self.root, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "LC_ALL": "C", **env}, **self._run_as())
        except subprocess.TimeoutExpired as exc:
            raise PostgresFailed(f"{Path(args[0]).name} did not finish in {timeout:g} s{self.log_tail()}") from exc
        if done.returncode != 0:
            raise PostgresFailed(f"{' '.join(args)} exited with {done.returncode}: "
                                 f"{(done.stderr or done.stdout).strip()[-2000:]}{self.log_tail()}")
        return done.stdout

    def log_tail(self) -> str:
        if self.log.exists():
            return "\nserver log:\n" + self.log.read_text(errors="replace")[-3000:]
        return ""

    def _own(self, path: Path) -> None:
        run_as = self._run_as()
        if run_as:
            os.chown(path, run_as["user"], run_as["group"])

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def init(self, password: str, durable: bool = True) -> None:
        """initdb with `user`/`password` as the superuser. `durable=False` (throwaway test clusters)
        turns fsync off; otherwise only synchronous_commit is off, which can lose the last few
        commits on a crash but never corrupts the cluster."""
        bin_dir = find_bin_dir()
        self._run_as()  # PostgresNotFound before anything is created
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        self._check_reachable()
        pwfile = self.root / "pwfile"
        pwfile.write_text(password + "\n")
        self._own(pwfile)
        pwfile.chmod(0o600)
        try:
            self._run([str(bin_dir / "initdb"), "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale"])
        finally:
            pwfile.unlink(missing_ok=True)
        settings = ("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n" if not durable
                    else "synchronous_commit = off\n")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\n# pm_jobs/local_postgres.py: loopback only, a private socket directory.\n"
                       f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n{settings}")

    def _check_reachable(self) -> None:
        """Under root the server runs as `postgres`, which must be able to enter every parent folder."""
        if not self._run_as():
            return
        probe = subprocess.run(["test", "-x", str(self.root)], **self._run_as())
        if probe.returncode != 0:
            raise PostgresFailed(f"the `{self.os_user}` user cannot enter {self.root}: a parent folder is "
                                 "not searchable by others (chmod o+x it, or choose another --home)")

    def pid(self) -> int | None:
        """The postmaster's PID when it is running, else None."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def port(self) -> int | None:
        """The port the running server listens on (line 4 of postmaster.pid)."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[3])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, port: int) -> None:
        self._run([str(find_bin_dir() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", f"-p {port}",
                   "-w", "-t", str(START_SECONDS), "start"], timeout=START_SECONDS + 30)

    def create_database(self, port: int, password: str) -> None:
        exists = self._run([str(find_bin_dir() / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", self.user,
                            "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{self.dbname}'"],
                           PGPASSWORD=password)
        if exists.strip() != "1":
            self._run([str(find_bin_dir() / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", self.user,
                       self.dbname], PGPASSWORD=password)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop; if that fails, SIGKILL the postmaster named in postmaster.pid."""
        if self.pid() is None:
            return
        try:
            self._run([str(find_bin_dir() / "pg_ctl"), "-D", str(self.data), "stop", "-m", mode, "-w", "-t", "30"],
                      timeout=60)
        except Exception:
            pid = self.pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)


def new_password() -> str:
    return secrets.token_urlsafe(16)
