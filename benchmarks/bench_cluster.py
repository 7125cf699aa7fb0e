"""The cluster against one machine, in one run of this script (synthetic source, LLM stages in
fallback mode).

(range)  TICKERS synthetic tickers x SESSIONS sessions through prices, features, ts_forecasts and
         the LLM stages, as a person launches them (`pm materialize`, two commands: the prices,
         then the rest), wall time of the two commands:
         - one machine: the large-backfill instance (`pm postgres start`), steps in the command's process;
         - one machine on the lake: the same, its store the cluster's DuckLake instead of the DuckDB
           file (what the cluster's store costs without Celery);
         - cluster, 1 worker: `pm cluster start --workers 1`, the steps on the worker;
         - cluster, 2 workers: `pm cluster start --workers 2` and `pm materialize --parallel 2`,
           two runs at once, their steps on the two workers.
(launcher) the alternative to the cluster's executor, dagster-celery's CeleryRunLauncher: each
         run is one Celery task and its steps run in the worker's process, one after the other. The
         same range and commands on `pm cluster start` with its workers restarted for whole runs
         (no PM_CELERY_BROKER in their environment, so a run's steps stay in the worker), each run
         launched straight through the launcher and awaited; on 2 workers the tickers are cut into
         two shares as `--parallel 2` cuts them, a run each, the `duckdb` pool raised to 2.
(writes) the store's write throughput: N processes at once (1, 2, 4), each replacing its own
         tickers' partitions of one table the way every stage writes (write_partitions: DELETE and
         INSERT in one transaction), rows/s and partitions/s, on both stores: the DuckDB file
         (writers take turns under its lock) and the cluster's DuckLake on PostgreSQL (writers of one
         table take turns at its lock in the catalog).

    make bench-cluster                                        # 20 x 250: about 25 minutes
    .venv/bin/python benchmarks/bench_cluster.py --tickers 8 --sessions 60 --parts range
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_scale import tickers_named  # noqa: E402

PM = str(ROOT / ".venv" / "bin" / "pm")
LLM_STAGES = "llm_analysis,llm_signals,risk_assessments"
LOOKBACK = 300  # sessions of prices before the range: features read 250, ts_forecasts fits on what there is
WRITE_BATCHES = 20  # each writer's transactions
WRITE_SESSIONS = 250  # partitions per ticker per transaction


def pm(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([PM, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pm {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def range_dates(sessions: int) -> tuple[dt.date, dt.date, dt.date]:
    from pm_domain import calendar

    last = dt.date(2018, 12, 31)
    first = calendar.shift_trading_days(last, -(sessions - 1))
    return calendar.shift_trading_days(first, -LOOKBACK), first, last


def bench_env(home: Path, start: dt.date) -> dict[str, str]:
    """This environment without the person's own settings, plus the benchmark's (synthetic source,
    LLM fallback, a watchlist beside the throwaway instance)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "OLLAMA", "DAGSTER_"))} | {
        "DAGSTER_DISABLE_TELEMETRY": "1", "PM_WATCHLIST": str(home.parent / "watchlist.txt"),
        "PM_PRICE_SOURCE": "synthetic", "PM_LLM_MODE": "fallback", "PM_START_DATE": str(start)}


def time_range(variant: str, n_tickers: int, sessions: int) -> float:
    """Wall seconds of the two `pm materialize` commands on a fresh instance of `variant`."""
    from pm_jobs.large_instance import throwaway_home

    start, first, last = range_dates(sessions)
    kind, workers = variant.split(":") if ":" in variant else (variant, "0")
    with throwaway_home(f"pm-bench-cluster-{kind}-") as home:
        env = bench_env(home, start)
        if kind == "cluster":
            pm(env, "cluster", "start", "--home", str(home), "--workers", workers)
        elif kind == "lake":
            from pm_jobs.large_instance import start as start_instance

            start_instance(home, shared_store=True)  # what `pm cluster start` makes, without Redis and workers
        else:
            pm(env, "postgres", "start", "--home", str(home))
        try:
            env["DAGSTER_HOME"] = str(home)
            pm(env, "tickers", "add", *tickers_named(n_tickers))
            parallel = ["--parallel", workers] if int(workers) > 1 else []
            began = time.perf_counter()
            pm(env, "materialize", "--assets", "prices", "--from", str(start), "--to", str(last), *parallel)
            pm(env, "materialize", "--assets", f"features,ts_forecasts,{LLM_STAGES}", "--from", str(first),
               "--to", str(last), *parallel)
            return time.perf_counter() - began
        finally:
            if kind == "cluster":
                pm({**os.environ}, "cluster", "stop", "--home", str(home))


def bench_range(n_tickers: int, sessions: int) -> dict[str, float]:
    print(f"\n(range) {n_tickers} tickers x {sessions} sessions: prices ({sessions + LOOKBACK} sessions), then "
          f"features, ts_forecasts, {LLM_STAGES} (fallback); wall time of the two pm materialize commands")
    rows = [("one machine (large-backfill instance, steps in the process)", "postgres"),
            ("one machine, its store the DuckLake", "lake"),
            ("cluster, 1 worker", "cluster:1"), ("cluster, 2 workers (--parallel 2)", "cluster:2")]
    seconds = {}
    for label, variant in rows:
        seconds[variant] = time_range(variant, n_tickers, sessions)
        print(f"  {label:<62} {seconds[variant]:8.1f} s   x{seconds['postgres'] / seconds[variant]:.2f} "
              "of one machine's speed", flush=True)
    return seconds


def time_launched_range(n_tickers: int, sessions: int, workers: int) -> float:
    """Wall seconds of the same two commands as `time_range`, each as runs that dagster-celery's
    run launcher hands whole to the workers."""
    from pm_jobs import cluster
    from pm_jobs.large_instance import ENV_FILE, read_env_file, throwaway_home

    start, first, last = range_dates(sessions)
    with throwaway_home("pm-bench-cluster-launcher-") as home:
        env = bench_env(home, start)
        pm(env, "cluster", "start", "--home", str(home), "--workers", str(workers))
        try:
            env["DAGSTER_HOME"] = str(home)
            pm(env, "tickers", "add", *tickers_named(n_tickers))
            broker = read_env_file(home / ENV_FILE)["PM_CELERY_BROKER"]
            pool = cluster.Workers(home / "workers")
            worker_env = cluster._worker_env(home)  # with the venv's bin first on PATH, for `celery`
            whole_runs_env = {k: v for k, v in worker_env.items() if k != "PM_CELERY_BROKER"} | env | {
                "PATH": worker_env["PATH"]}
            for number in range(1, workers + 1):
                pool.stop(number)
                pool.start(number, home / "celery.yaml", whole_runs_env)
            pool.wait_ready(list(range(1, workers + 1)))
            launch = [sys.executable, __file__, "--launch-runs", broker, "--shares", str(workers)]
            began = time.perf_counter()
            for assets, since in (("prices", start), (f"features,ts_forecasts,{LLM_STAGES}", first)):
                done = subprocess.run([*launch, "--assets", assets, "--from", str(since), "--to", str(last)],
                                      env=whole_runs_env, cwd=ROOT, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"launched runs of {assets} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
            return time.perf_counter() - began
        finally:
            pm({**os.environ}, "cluster", "stop", "--home", str(home))


def launch_runs(broker: str, shares: int, assets: str, since: str, until: str) -> None:
    """(In a process whose settings have no broker, so the job runs its steps where it runs.) The
    selection's runs, `shares` at once, each handed to dagster-celery's CeleryRunLauncher as
    `dagster-daemon` would hand it; waits for all and exits non-zero if one did not succeed."""
    from dagster import AssetKey, DagsterInstance, DagsterRunStatus
    # The launcher's own API: it needs the run alone (no workspace), which the daemon would pass.
    from dagster._core.launcher import LaunchRunContext
    from dagster_celery.launcher import CeleryRunLauncher

    from pm_assets.dagster_compat import reconstructable_asset_job
    from pm_jobs.materialize import plan_selection, run_tags
    from pm_jobs.parallel import make_room

    instance = DagsterInstance.get()
    launcher = CeleryRunLauncher(default_queue="dagster", broker=broker, backend=broker)
    launcher.register_instance(instance)
    make_room(instance, shares, lambda line: None)  # the pools as `--parallel N` leaves them
    selection = plan_selection(instance, assets.split(","), [], since, until)
    keys = [AssetKey(a) for a in selection.assets]
    job = reconstructable_asset_job("pm_jobs.definitions", "defs", keys)
    run_ids = []
    for block in selection.share_blocks(shares):
        run = instance.create_run_for_job(
            job_def=job.get_definition(), run_config={"execution": {"config": {"in_process": {}}}},
            tags=run_tags(selection, block), job_code_origin=job.get_python_origin(), asset_selection=frozenset(keys))
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        run_ids.append(run.run_id)
    ended = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    while not all(instance.get_run_by_id(run_id).status in ended for run_id in run_ids):
        time.sleep(0.5)
    failed = [run_id for run_id in run_ids if instance.get_run_by_id(run_id).status != DagsterRunStatus.SUCCESS]
    if failed:
        from dagster import DagsterEventType

        errors = [f"{record.dagster_event.step_key}: {record.dagster_event.step_failure_data.error.message.strip()}"
                  for run_id in failed for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE)]
        if not errors:  # the run failed outside its steps: its last events say why
            errors = [(record.dagster_event.message if record.dagster_event else None) or record.user_message
                      for run_id in failed for record in instance.all_logs(run_id)[-6:]]
        raise SystemExit(f"runs not successful: {failed}: " + " | ".join(errors))


def bench_launcher(n_tickers: int, sessions: int, executor_seconds: dict[str, float]) -> None:
    print("\n(launcher) the same range, each run handed whole to a worker by dagster-celery's CeleryRunLauncher "
          "(its steps in the worker's process)")
    for workers in (1, 2):
        seconds = time_launched_range(n_tickers, sessions, workers)
        label = f"run launcher, {workers} worker{'s' * (workers > 1)}" + (" (two shares at once)" * (workers > 1))
        ratios = "" if not executor_seconds else (
            f"   x{executor_seconds['postgres'] / seconds:.2f} of one machine's speed, "
            f"x{executor_seconds[f'cluster:{workers}'] / seconds:.2f} of the executor's on {workers}")
        print(f"  {label:<62} {seconds:8.1f} s{ratios}", flush=True)


def _writer(database: str, tickers: list[str], barrier) -> tuple[float, float, int, int]:
    """Replace `tickers`' partitions WRITE_BATCHES times, shaped as ts_forecasts' (three horizons a
    partition); (start, end, rows, partitions)."""
    import polars as pl

    from pm_domain import calendar
    from pm_resources.database import store_connection
    from pm_resources.store import PartitionRows, write_partitions

    dates = [calendar.shift_trading_days(dt.date(2018, 12, 31), -i) for i in range(WRITE_SESSIONS)][::-1]
    keys = pl.DataFrame({"ticker": tickers}).join(pl.DataFrame({"date": dates}), how="cross").join(
        pl.DataFrame({"horizon": [1, 5, 20]}), how="cross")
    frame = keys.with_columns(*(pl.lit(float(i)).alias(f"value_{i}") for i in range(20)))
    rows = PartitionRows("bench_writes", frame, key_columns=("ticker", "date", "horizon"))
    barrier.wait()
    began = time.perf_counter()
    for _ in range(WRITE_BATCHES):
        with store_connection(database) as conn:
            write_partitions(conn, tickers, dates, [rows])
    return began, time.perf_counter(), WRITE_BATCHES * frame.height, WRITE_BATCHES * len(tickers) * len(dates)


def bench_writes(workdir: Path) -> None:
    from pm_jobs.large_instance import lake_database, read_env_file, start, throwaway_home

    print(f"\n(writes) N processes at once, each replacing 5 tickers x {WRITE_SESSIONS} sessions x 3 horizons of one "
          f"table (23 columns) {WRITE_BATCHES} times, a connection each time")
    with throwaway_home("pm-bench-lake-") as home:
        start(home, shared_store=True)
        env = read_env_file(home / "instance.env")
        lake = lake_database(int(env["DAGSTER_PG_PORT"]), env["DAGSTER_PG_PASSWORD"])
        for store, database_for in (("DuckDB file", lambda n: str(workdir / f"writes-{n}.duckdb")),
                                    ("DuckLake", lambda n: _emptied(lake))):
            _writes_table(store, database_for)


def _emptied(lake: str) -> str:
    from pm_resources.database import store_connection

    with store_connection(lake) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_writes")
    return lake


def _writes_table(store: str, database_for) -> None:
    print(f"  {store}\n  {'writers':>7} {'seconds':>8} {'rows/s':>10} {'partitions/s':>13}   vs 1 writer")
    context = multiprocessing.get_context("spawn")
    one = None
    for writers in (1, 2, 4):
        database = database_for(writers)
        barrier = context.Manager().Barrier(writers)
        with context.Pool(writers) as pool:
            results = pool.starmap(_writer, [(database, [f"W{w}T{i}" for i in range(5)], barrier)
                                             for w in range(writers)])
        seconds = max(end for _, end, _, _ in results) - min(start for start, _, _, _ in results)
        rows, partitions = sum(r[2] for r in results) / seconds, sum(r[3] for r in results) / seconds
        one = one or rows
        print(f"  {writers:>7} {seconds:8.2f} {rows:10.0f} {partitions:13.0f}   x{rows / one:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=250)
    parser.add_argument("--parts", default="range,launcher,writes")
    parser.add_argument("--launch-runs", metavar="BROKER", help=argparse.SUPPRESS)  # the launcher part's helper
    parser.add_argument("--shares", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--assets", help=argparse.SUPPRESS)
    parser.add_argument("--from", dest="since", help=argparse.SUPPRESS)
    parser.add_argument("--to", dest="until", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.launch_runs:
        launch_runs(args.launch_runs, args.shares, args.assets, args.since, args.until)
        return
    parts = args.parts.split(",")
    print(f"bench-cluster on {os.cpu_count()} cores")
    executor_seconds = bench_range(args.tickers, args.sessions) if "range" in parts else {}
    if "launcher" in parts:
        bench_launcher(args.tickers, args.sessions, executor_seconds)
    if "writes" in parts:
        with tempfile.TemporaryDirectory(prefix="pm-bench-writes-") as workdir:
            bench_writes(Path(workdir))


if __name__ == "__main__":
    main()
