"""Faults: a writer SIGKILLed in the middle of its write, two CLI writers at once over overlapping
ranges, and the same range materialized in one run, twice, or split any way.

The kill tests run real subprocesses. To kill a writer at a known moment of its transaction they
put a test-only `sitecustomize.py` first on the subprocess's PYTHONPATH (written to a temporary
directory here; no project code changes): when PM_FAULT_POINT is set it wraps
`pm_resources.store._replace` / `write_partitions` so that the process, on reaching that point,
writes a marker file and sleeps. The test kills the whole process group with SIGKILL as soon as the
marker appears. Points: `after_delete` (the run's rows deleted, the new ones not yet inserted),
`after_insert` (inserted, not committed), `after_commit` (committed, process not yet finished).
Because it is a sitecustomize, the hook reaches every Python process the command starts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl
import pytest

from pm_domain.calendar import trading_days
from pm_domain.price_sources import fetch_prices
from pm_resources.store import query
from tests.support.runs import run_assets, table_names

PROJECT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
DAGSTER_SCRIPT = Path(sys.executable).with_name("dagster")
DAGSTER = [str(DAGSTER_SCRIPT)] if DAGSTER_SCRIPT.exists() else [PYTHON, "-m", "dagster"]
KEY = ["ticker", "date"]

FAULT_HOOK = '''\
"""Test-only fault hook written by tests/e2e/test_faults.py: pause a DuckDB write at PM_FAULT_POINT,
and append every DuckDB open attempt and write step to PM_FAULT_TRACE."""
import os
import time

_POINT = os.environ.get("PM_FAULT_POINT")
_TRACE = os.environ.get("PM_FAULT_TRACE")
if _POINT or _TRACE:
    import duckdb as _duckdb
    import pm_resources.store as _store

    def _trace(event):
        if _TRACE:
            with open(_TRACE, "a") as handle:
                handle.write(f"{os.getpid()} {time.time():.6f} {event}\\n")

    def _reached(point):
        _trace(point)
        if point != _POINT:
            return
        marker = os.environ["PM_FAULT_MARKER"]
        with open(marker + ".tmp", "w") as handle:
            handle.write(f"{os.getpid()} {time.time()}")
        os.replace(marker + ".tmp", marker)
        time.sleep(float(os.environ.get("PM_FAULT_SLEEP", "600")))

    _connect = _duckdb.connect

    def _traced_connect(*args, **kwargs):
        try:
            conn = _connect(*args, **kwargs)
        except Exception as exc:
            _trace(f"connect_failed:{type(exc).__name__}")
            raise
        _trace("connect_ok")
        return conn

    _duckdb.connect = _traced_connect

    class _PausingConnection:
        def __init__(self, conn):
            self._conn = conn

        def __getattr__(self, name):
            return getattr(self._conn, name)

        def execute(self, sql, *args, **kwargs):
            result = self._conn.execute(sql, *args, **kwargs)
            if sql.lstrip().startswith("DELETE"):
                _reached("after_delete")
            elif sql.lstrip().startswith("INSERT"):
                _reached("after_insert")
            return result

    _replace = _store._replace
    _store._replace = lambda conn, rows: _replace(_PausingConnection(conn), rows)
    _write_partitions = _store.write_partitions

    def _paused_write_partitions(conn, *args, **kwargs):
        _reached("before_begin")
        _write_partitions(conn, *args, **kwargs)
        _reached("after_commit")

    _store.write_partitions = _paused_write_partitions
'''

# What the kill test's subprocess runs: `prices` for a tickers x dates rectangle, one ranged run,
# in-process executor on an ephemeral instance (the CLI's SQLite event log would add ~1 min per
# attempt at this size), through the project's resource class.
MATERIALIZE_PRICES = '''\
import sys
from dagster import DagsterInstance, materialize
from pm_assets import prices
from pm_assets.partitions import range_tags
from pm_resources.database import ClosingDuckDBResource
from pm_resources.price_source import PriceSourceResource

db, source, start, end, *tickers = sys.argv[1:]
with DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions("tickers", tickers)
    result = materialize(
        [prices], instance=instance, tags=range_tags(tickers, start, end), raise_on_error=False,
        resources={"duckdb": ClosingDuckDBResource(database=db), "price_source": PriceSourceResource(source=source)},
    )
sys.exit(0 if result.success else 1)
'''


# --------------------------------------------------------------------------------------------
# helpers: scratch directories, process groups, tables


@pytest.fixture()
def scratch() -> Iterator[Path]:
    """A temporary directory removed after the test (DAGSTER_HOME, DuckDB files, hook, logs)."""
    path = Path(tempfile.mkdtemp(prefix="pm_faults_"))
    try:
        hook_dir = path / "hook"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(FAULT_HOOK)
        (path / "materialize_prices.py").write_text(MATERIALIZE_PRICES)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def subprocess_env(scratch: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "DAGSTER_"))}
    env.update(
        PYTHONPATH=f"{scratch / 'hook'}{os.pathsep}{PROJECT}",
        DAGSTER_HOME=str(scratch / "dagster_home"),
        PM_DUCKDB_PATH=str(scratch / "pm.duckdb"),
        PM_PRICE_SOURCE="sample",
    )
    env.update(extra)
    return env


class Group:
    """A subprocess started in its own session; `kill()` SIGKILLs its whole process group
    (a CLI run, its compute-log tails, multiprocessing helpers)."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log: Path):
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(list(args), cwd=PROJECT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.started = time.monotonic()
        self.gone = False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.gone:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 5  # until every member is gone (so is its DuckDB lock)
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except (ProcessLookupError, PermissionError):
                self.gone = True
                return
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.proc.args[:4]}... still running after {timeout} s:\n"
                                 f"{self.output()[-3000:]}") from None


@contextlib.contextmanager
def started(args: Sequence[str], env: dict[str, str], log: Path) -> Iterator[Group]:
    group = Group(args, env, log)
    try:
        yield group
    finally:
        group.kill()


def wait_for(condition, group: Group, timeout: float, what: str, poll: float = 0.02) -> float:
    """Poll `condition()` until true; fail if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if group.proc.poll() is not None:
            raise AssertionError(f"process exited ({group.proc.returncode}) before {what}:\n"
                                 f"{group.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout} s:\n{group.output()[-3000:]}")
        time.sleep(poll)
    return time.monotonic() - group.started


def read_table(db: Path, table: str = "prices") -> pl.DataFrame:
    with duckdb.connect(str(db), read_only=True) as conn:
        return query(conn, f"SELECT * FROM {table} ORDER BY ticker, date")


def fingerprint(frame: pl.DataFrame) -> tuple[int, int, int]:
    """(rows, distinct keys, checksum of the rows' values without ingested_at)."""
    values = frame.drop([c for c in ("ingested_at",) if c in frame.columns])
    checksum = int(values.hash_rows(seed=7).cast(pl.UInt64).sum() % (1 << 64)) if frame.height else 0
    distinct = frame.select(KEY).unique().height if frame.height else 0
    return frame.height, distinct, checksum


def expected_prices(source: str, tickers: Sequence[str], days: Sequence[dt.date]) -> pl.DataFrame:
    """The rows a complete write holds, fetched here independently of any run."""
    return fetch_prices(source, list(tickers), list(days)).sort(KEY)


def partition_range(tickers: Sequence[str], start: str, end: str) -> str:
    return f"{start}|{tickers[0]}...{end}|{tickers[-1]}"


def add_tickers(home: Path, tickers: Sequence[str]) -> None:
    """What `pm tickers add` does, in-process (the CLI would add ~5 s of imports)."""
    from dagster import DagsterInstance

    from pm_jobs.cli.tickers import add_tickers as add

    with DagsterInstance.from_config(str(home)) as instance:
        add(instance, tickers)


def make_home(scratch: Path, pools: bool = True) -> Path:
    home = scratch / "dagster_home"
    home.mkdir()
    if pools:  # the project's instance config, as .ci/run copies it
        shutil.copy(PROJECT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


# --------------------------------------------------------------------------------------------
# 1. a writer killed in the middle of its write


KILL_TICKERS = [f"SYN{i:02d}" for i in range(20)]
KILL_BEFORE = ("2017-11-01", "2018-02-28")  # the earlier version: 20 tickers x 82 sessions
KILL_RUN = ("2018-01-02", "2018-12-31")     # the killed run: 20 tickers x 251 sessions
# (kind, point, outcome the moment implies). "paused": the hook stops the writer at the point and
# it is killed there. "unpaused": the writer runs on; it is killed as soon as the test sees the
# point in the trace (~30 ms before the commit), wherever the write has got to by then.
KILLS = [
    ("unpaused", "before_begin", None),
    ("unpaused", "after_delete", None),
    ("paused", "after_delete", "as-before"),
    ("paused", "after_insert", "as-before"),
    ("paused", "after_commit", "fully-updated"),
]


def classify(now: pl.DataFrame, before: pl.DataFrame, expected_new: pl.DataFrame,
             tickers: Sequence[str], start: dt.date, end: dt.date) -> str:
    """'as-before' (every row, ingestion time included, as before the run), 'fully-updated'
    (the run's rectangle holds exactly the expected rows with one new ingestion time, every other
    row untouched), or AssertionError describing the half-written table."""
    if fingerprint(now) == fingerprint(before) and now.equals(before):
        return "as-before"
    inside = pl.col("ticker").is_in(list(tickers)) & pl.col("date").is_between(start, end)
    now_in, now_out, before_out = now.filter(inside), now.filter(~inside), before.filter(~inside)
    stamps = now_in["ingested_at"].unique()
    newest_before = before["ingested_at"].max() if before.height else None
    checks = {
        "rows outside the run untouched": now_out.equals(before_out),
        "the run's rows are the expected ones": (
            fingerprint(now_in) == fingerprint(expected_new)
            and now_in.drop("ingested_at").equals(expected_new)),
        "one new ingestion time": len(stamps) == 1 and (newest_before is None or stamps[0] > newest_before),
    }
    if all(checks.values()):
        return "fully-updated"
    raise AssertionError(
        f"HALF-WRITTEN table: {checks}; now (rows, keys, checksum) {fingerprint(now)}, before "
        f"{fingerprint(before)}, expected in the run {fingerprint(expected_new)} + outside "
        f"{fingerprint(before_out)}")


@pytest.mark.timeout(240)
def test_sigkill_mid_write_leaves_each_table_as_before_or_fully_updated(instance, scratch):
    """A subprocess materializing `prices` over 20 tickers x 251 sessions (one ranged run, one
    transaction) is SIGKILLed five times at different moments of its write: twice unpaused, as
    soon as the trace shows BEGIN or the DELETE; then paused after the DELETE, after the INSERT
    (before the COMMIT) and after the COMMIT. After each kill every table of the store is either
    exactly as before the run (ingestion times included) or fully updated, never half; each next
    run opens the killed store (and its WAL) and writes; a final re-run of the same range
    completes with exactly the expected rows and no duplicate key."""
    from pm_assets import prices

    t0 = time.monotonic()
    db = scratch / "pm.duckdb"
    script = str(scratch / "materialize_prices.py")
    run_days = trading_days(dt.date.fromisoformat(KILL_RUN[0]), dt.date.fromisoformat(KILL_RUN[1]))
    before_days = trading_days(dt.date.fromisoformat(KILL_BEFORE[0]), dt.date.fromisoformat(KILL_BEFORE[1]))
    expected_new = expected_prices("synthetic", KILL_TICKERS, run_days)
    only_before = [d for d in before_days if d < run_days[0]]
    args = [PYTHON, script, str(db), "synthetic", *KILL_RUN, *KILL_TICKERS]

    # the earlier version: prices for an overlapping, earlier range
    assert run_assets(instance, db, [prices], *KILL_BEFORE, KILL_TICKERS, source="synthetic").success
    earlier = read_table(db)
    assert earlier.drop("ingested_at").equals(expected_prices("synthetic", KILL_TICKERS, before_days))
    assert table_names(db) == ["prices"]
    timings = {"earlier version": time.monotonic() - t0}

    outcomes: list[tuple[str, str, str, float, int]] = []
    for number, (kind, point, implied) in enumerate(KILLS):
        before = read_table(db)
        marker, trace = scratch / f"marker{number}", scratch / f"trace{number}"
        env = subprocess_env(scratch, PM_FAULT_TRACE=str(trace))
        if kind == "paused":
            env.update(PM_FAULT_POINT=point, PM_FAULT_MARKER=str(marker))
        with started(args, env, scratch / f"kill{number}.log") as run:
            if kind == "paused":
                at = wait_for(marker.exists, run, 90, f"marker of {point}")
            else:
                at = wait_for(lambda: trace.exists() and f" {point}\n" in trace.read_text(), run, 90,
                              f"trace of {point}", poll=0.002)
            assert run.proc.poll() is None, "the run finished before the kill"
            run.kill()
            assert run.proc.returncode == -signal.SIGKILL
        last = trace.read_text().split()[-1]  # the last point the writer reported before dying
        wal = db.with_name(db.name + ".wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        assert table_names(db) == ["prices"]
        outcome = classify(read_table(db), before, expected_new, KILL_TICKERS, run_days[0], run_days[-1])
        label = f"{kind} at {point}"
        if implied:
            assert outcome == implied, f"killed {label}: {outcome}, expected {implied}"
        if last == "after_commit":
            assert outcome == "fully-updated", f"killed {label} after its commit, yet {outcome}"
        outcomes.append((label, last, outcome, at, wal_bytes))
    timings[f"{len(KILLS)} kills"] = time.monotonic() - t0 - timings["earlier version"]

    # the same materialization, run to the end on the store the last kill left
    before = read_table(db)
    with started(args, subprocess_env(scratch), scratch / "rerun.log") as run:
        assert run.wait(150) == 0, run.output()[-3000:]
    final = read_table(db)
    assert classify(final, before, expected_new, KILL_TICKERS, run_days[0], run_days[-1]) == "fully-updated"
    assert fingerprint(final)[:2] == (len(KILL_TICKERS) * (len(only_before) + len(run_days)),) * 2  # no duplicate
    assert final.filter(pl.col("date") < run_days[0]).equals(earlier.filter(pl.col("date") < run_days[0]))
    assert table_names(db) == ["prices"]
    timings["final re-run"] = time.monotonic() - t0 - sum(timings.values())

    counts = {o: sum(outcome == o for _, _, outcome, _, _ in outcomes) for o in ("as-before", "fully-updated")}
    print(f"\n[faults] {len(outcomes)} kills: {counts['as-before']} as-before, "
          f"{counts['fully-updated']} fully-updated, {len(outcomes) - sum(counts.values())} half-written")
    for label, last, outcome, at, wal_bytes in outcomes:
        print(f"[faults]   killed {label} ({at:.1f} s after start; last point reached: {last}): "
              f"{outcome}; WAL left: {wal_bytes} bytes")
    print("[faults]   " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


# --------------------------------------------------------------------------------------------
# 1b. the same kill through the real CLI, and what it leaves in the Dagster instance


CLI_TICKERS = ["^GSPC", "^IXIC"]
STRANDED_DEFS = """from dagster import Definitions
from pm_sensors.stranded_runs import stranded_runs_sensor

defs = Definitions(sensors=[stranded_runs_sensor])
"""


@pytest.mark.timeout(300)
def test_killed_cli_run_leaves_the_table_as_before_and_the_daemon_frees_its_slot(scratch):
    """`dagster asset materialize` (its steps in the run's own process) is SIGKILLed, with its
    whole process group, between DELETE and INSERT. The table is exactly as before. The dead run
    still says STARTED and holds the `duckdb` pool's one slot; the stranded_runs sensor, ticking
    in a real `dagster-daemon`, marks it failed and frees the slot (the delay from the kill is
    printed), and the next run of the same range completes by itself without ever being blocked by
    the pool."""
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

    home = make_home(scratch)
    db = scratch / "pm.duckdb"
    add_tickers(home, CLI_TICKERS)
    full = ("2018-12-03", "2018-12-31")

    def cli(start, end):
        return [*DAGSTER, "asset", "materialize", "-m", "pm_jobs.definitions", "--select", "prices",
                "--partition-range", partition_range(CLI_TICKERS, start, end)]

    with started(cli("2018-12-03", "2018-12-14"), subprocess_env(scratch), scratch / "before.log") as run:
        assert run.wait(120) == 0, run.output()[-3000:]
    before = read_table(db)
    days = trading_days(dt.date(2018, 12, 3), dt.date(2018, 12, 31))
    expected_new = expected_prices("sample", CLI_TICKERS, days)

    # The daemon with only the stranded_runs sensor (the project's other sensors would launch runs
    # of their own on this instance); it ticks at once, then every 30 s.
    defs_file = scratch / "stranded_defs.py"
    defs_file.write_text(STRANDED_DEFS)
    daemon_args = [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-f", str(defs_file)]
    with started(daemon_args, subprocess_env(scratch), scratch / "daemon.log") as daemon:
        marker = scratch / "marker"
        env = subprocess_env(scratch, PM_FAULT_POINT="after_delete", PM_FAULT_MARKER=str(marker))
        with started(cli(*full), env, scratch / "killed.log") as run:
            wait_for(marker.exists, run, 90, "marker of after_delete")
            writer_pid = int(marker.read_text().split()[0])
            assert writer_pid == run.proc.pid  # the step writes in the run's own process
            run.kill()
            killed_at = time.monotonic()
            assert run.proc.returncode == -signal.SIGKILL
        assert classify(read_table(db), before, expected_new, CLI_TICKERS, days[0], days[-1]) == "as-before"

        with DagsterInstance.from_config(str(home)) as instance:
            [dead] = [r for r in instance.get_runs() if r.status != DagsterRunStatus.SUCCESS]
            assert dead.status == DagsterRunStatus.STARTED  # what it says after the kill
            assert instance.event_log_storage.get_concurrency_info("duckdb").active_run_ids == {dead.run_id}
            freed = wait_for(lambda: not instance.event_log_storage.get_concurrency_info("duckdb").active_run_ids,
                             daemon, 120, "the stranded_runs sensor to free the slot", poll=0.25)
            delay = time.monotonic() - killed_at
            failed = instance.get_run_by_id(dead.run_id)
            assert failed.status == DagsterRunStatus.FAILURE
            [failure] = instance.all_logs(dead.run_id, of_type=DagsterEventType.RUN_FAILURE)
            assert "released by the stranded_runs sensor" in failure.message
            print(f"\n[faults] stranded slot freed by the daemon's stranded_runs sensor {delay:.1f} s after the kill "
                  f"(the daemon had been up {freed - delay:.1f} s at the kill; the sensor ticks every 30 s)")

        with started(cli(*full), subprocess_env(scratch), scratch / "rerun.log") as rerun:
            assert rerun.wait(120) == 0, rerun.output()[-3000:]
            assert "Step blocked by limit for pool duckdb" not in rerun.output()
    final = read_table(db)
    assert classify(final, before, expected_new, CLI_TICKERS, days[0], days[-1]) == "fully-updated"
    assert fingerprint(final)[:2] == (len(CLI_TICKERS) * len(days),) * 2


def test_stranded_runs_frees_only_dead_runs_and_pm_runs_release_does_it_by_hand(scratch):
    """Of two STARTED runs holding `duckdb` slots, the sensor's check frees only the one whose
    process (a finished child) is gone; `pm runs release` frees the other by hand."""
    from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
    from dagster._core.events import DagsterEvent
    from dagster._core.test_utils import create_run_for_test

    from pm_jobs.cli.runs import pool_slot_holders, release_run
    from pm_sensors.stranded_runs import release_stranded

    home = make_home(scratch)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with DagsterInstance.from_config(str(home)) as instance:
        run = create_run_for_test(instance, job_name="prices_job", status=DagsterRunStatus.STARTED)
        instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, "prices_job", pid=gone.pid),
                                      run.run_id)
        alive = create_run_for_test(instance, job_name="prices_job", status=DagsterRunStatus.STARTED)
        instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, "prices_job", pid=os.getpid()),
                                      alive.run_id)
        instance.event_log_storage.initialize_concurrency_limit_to_default("duckdb")
        instance.event_log_storage.set_concurrency_slots("duckdb", 2)
        for holder in (run, alive):
            assert instance.event_log_storage.claim_concurrency_slot("duckdb", holder.run_id, "prices").is_claimed
        assert f"  {run.run_id}  STARTED" in pool_slot_holders(instance)  # what `pm runs slots` shows
        assert release_stranded(instance) == [f"run {run.run_id} (STARTED) marked failed and its pool slots freed"]
        assert instance.event_log_storage.get_concurrency_info("duckdb").active_run_ids == {alive.run_id}
        assert release_run(instance, alive.run_id).endswith("marked failed and its pool slots freed")
        assert not instance.event_log_storage.get_concurrency_info("duckdb").active_run_ids


# --------------------------------------------------------------------------------------------
# 2. two CLI writers at once over overlapping ranges


CONCURRENT_RANGES = [("2018-12-03", "2018-12-21"), ("2018-12-14", "2018-12-31")]
HOLD_SECONDS = 5


@pytest.mark.timeout(200)
@pytest.mark.parametrize("pools", [True, False], ids=["project-pools", "no-pools"])
def test_two_cli_runs_over_overlapping_ranges_both_succeed(scratch, pools):
    """Two `dagster asset materialize` processes start together on one DAGSTER_HOME and one DuckDB
    file, over overlapping ranges of prices for 2 tickers. Each keeps its DuckDB connection open
    5 s after its commit (hook), so their writes surely contend: with the project's dagster.yaml
    the `duckdb` pool queues the second step; without pools, the store's lock (a flock beside the
    file, pm_resources/database.py) queues the second connection, which never meets DuckDB's own
    file lock. Both exit 0; the table holds exactly the union's (ticker, date) rows, once
    each, with the source's values, and the overlap is entirely one run's rows; the instance
    records both runs successful and every partition materialized."""
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus

    home = make_home(scratch, pools=pools)
    db = scratch / "pm.duckdb"
    trace = scratch / "trace"
    add_tickers(home, CLI_TICKERS)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        runs = []
        for number, (start, end) in enumerate(CONCURRENT_RANGES):
            env = subprocess_env(scratch, PM_FAULT_POINT="after_commit", PM_FAULT_SLEEP=str(HOLD_SECONDS),
                                 PM_FAULT_MARKER=str(scratch / f"committed{number}"), PM_FAULT_TRACE=str(trace))
            args = [*DAGSTER, "asset", "materialize", "-m", "pm_jobs.definitions", "--select", "prices",
                    "--partition-range", partition_range(CLI_TICKERS, start, end)]
            runs.append(stack.enter_context(started(args, env, scratch / f"run{number}.log")))
        codes = [run.wait(150) for run in runs]
        outputs = [run.output() for run in runs]
    elapsed = time.monotonic() - t0
    events = [line.split() for line in trace.read_text().splitlines()]
    for code, output in zip(codes, outputs, strict=True):
        assert code == 0, f"exit {code}:\n{output[-4000:]}\ntrace:\n{trace.read_text()}"

    # the two writes really contended, and were serialised
    lock_retries = sum(event.startswith("connect_failed") for _, _, event in events)
    queued = sum("Step blocked by limit for pool duckdb" in output for output in outputs)
    opened = sorted(float(t) for _, t, event in events if event == "connect_ok")
    committed = sorted(float(t) for _, t, event in events if event == "after_commit")
    assert len(opened) == len(committed) == 2
    assert opened[1] >= committed[0] + HOLD_SECONDS  # the second opened the file after the first let go
    if pools:
        assert queued == 1 and lock_retries == 0  # the pool queued the second step
    else:
        assert queued == 0 and lock_retries == 0  # the store's lock queued it: no failed connect to retry

    days = sorted({d for start, end in CONCURRENT_RANGES
                   for d in trading_days(dt.date.fromisoformat(start), dt.date.fromisoformat(end))})
    table = read_table(db)
    assert fingerprint(table)[:2] == (len(CLI_TICKERS) * len(days),) * 2
    assert table.drop("ingested_at").equals(expected_prices("sample", CLI_TICKERS, days))
    overlap = table.filter(pl.col("date").is_between(dt.date(2018, 12, 14), dt.date(2018, 12, 21)))
    assert overlap["ingested_at"].n_unique() == 1  # one run's rectangle, not a mix
    assert table["ingested_at"].n_unique() == 2

    with DagsterInstance.from_config(str(home)) as instance:
        statuses = [r.status for r in instance.get_runs()]
        materialized = instance.get_materialized_partitions(AssetKey("prices"))
    assert statuses == [DagsterRunStatus.SUCCESS] * 2
    assert materialized == {f"{d}|{t}" for d in days for t in CLI_TICKERS}
    print(f"\n[faults] two CLI runs ({'project pools' if pools else 'no pools'}): both exit 0 in "
          f"{elapsed:.1f} s; second open {opened[1] - committed[0]:.1f} s after the first commit; "
          f"pool-queued steps {queued}; DuckDB lock retries {lock_retries}")


# --------------------------------------------------------------------------------------------
# 3. the same range, however it is split into runs


SPLIT_TICKERS = ["FLTA", "FLTB", "FLTC"]
SPLIT_START, SPLIT_END = "2018-09-04", "2018-12-31"


def _split_plans() -> dict[str, list[tuple[str, Sequence[str], str, str]]]:
    days = [str(d) for d in trading_days(dt.date.fromisoformat(SPLIT_START), dt.date.fromisoformat(SPLIT_END))]
    a, b, c = days[len(days) // 3], days[2 * len(days) // 3], days[len(days) // 2]  # chunk starts
    before = {d: days[i - 1] for i, d in enumerate(days) if i}
    both, t = "prices,features", SPLIT_TICKERS
    return {
        "one run": [(both, t, SPLIT_START, SPLIT_END)],
        "twice": [(both, t, SPLIT_START, SPLIT_END), (both, t, SPLIT_START, SPLIT_END)],
        "by date": [(both, t, SPLIT_START, before[a]), (both, t, a, before[b]), (both, t, b, SPLIT_END)],
        "by ticker": [(both, t[:1], SPLIT_START, SPLIT_END), (both, t[1:], SPLIT_START, SPLIT_END)],
        # prices out of order and overlapping, then features by ticker and date, one range twice
        "grid": [
            ("prices", t[1:], b, SPLIT_END), ("prices", t[:1], c, SPLIT_END),
            ("prices", t, SPLIT_START, before[b]), ("prices", t[:1], SPLIT_START, c),
            ("features", t[:2], SPLIT_START, before[c]), ("features", t[2:], SPLIT_START, SPLIT_END),
            ("features", t[:2], a, SPLIT_END),
        ],
    }


@pytest.mark.timeout(240)
def test_prices_and_features_identical_however_the_range_is_split(instance, scratch):
    """prices+features for 3 tickers x 82 sessions: one run, the same run twice, three runs by
    date, two by ticker, and a grid of seven overlapping runs (prices out of date order) each give
    exactly the same full sorted tables (only prices.ingested_at excluded), with one row per key."""
    from pm_assets import features, prices

    instance.add_dynamic_partitions("tickers", SPLIT_TICKERS)
    assets = {"prices": prices, "features": features}
    n_rows = len(SPLIT_TICKERS) * len(trading_days(dt.date.fromisoformat(SPLIT_START), dt.date.fromisoformat(SPLIT_END)))
    tables: dict[str, tuple[pl.DataFrame, pl.DataFrame]] = {}
    timings = {}
    for name, plan in _split_plans().items():
        t0 = time.monotonic()
        db = scratch / f"{name.replace(' ', '_')}.duckdb"
        for selection, tickers, start, end in plan:
            result = run_assets(instance, db, [assets[a] for a in selection.split(",")], start, end, tickers,
                                source="synthetic")
            assert result.success, f"{name}: {selection} {tickers} {start}..{end} failed"
        tables[name] = (read_table(db).drop("ingested_at"), read_table(db, "features"))
        for frame in tables[name]:
            assert fingerprint(frame)[:2] == (n_rows, n_rows), name
        timings[name] = time.monotonic() - t0
    reference_prices, reference_features = tables["one run"]
    assert reference_prices.equals(expected_prices("synthetic", SPLIT_TICKERS, trading_days(
        dt.date.fromisoformat(SPLIT_START), dt.date.fromisoformat(SPLIT_END))))
    assert reference_features["sma_20"].drop_nulls().len() > 0
    for name, (prices_table, features_table) in tables.items():
        assert prices_table.equals(reference_prices), f"prices differ: {name}"
        assert features_table.equals(reference_features), f"features differ: {name}"  # bit-identical
    print("\n[faults] splits identical: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
