"""Scale benchmark: the whole graph at 10 years x 20 tickers, the nightly shape at 100 tickers, and
the instance comparison, on the large-backfill instance (PostgreSQL, docs/scale.md). Synthetic
prices, LLM stages in fallback mode. Prints each table as it finishes.

(compare)   prices + features, 20 tickers x 250 dates, one single-run range each, on the project's
            SQLite instance and on the large-backfill instance (`--compare all`: also SQLite with
            ranged planned events, PostgreSQL with no settings and with batching alone), each in a
            process of its own: wall time and events written.
(graph)     20 tickers x 10 years (~50,000 partitions per asset) through every stage, one in-process
            run each: wall time, the stage's own work (`run_compute_seconds`, its body) and the rest,
            Dagster's bookkeeping. Target: under 10 minutes in all.
(stepstart) features and ts_forecasts over the same 50,000 partitions through `dagster asset
            materialize` (a run process and a step process, as the CLI and the daemon run them)
            against the in-process runs of (graph); then, alone, what each step's start spends
            mapping 10,000 run partitions through the upstream lookback, with Dagster's
            MultiPartitionMapping and with the project's (pm_assets/dagster_compat.py).
(nightly)   100 tickers x 1 date: the `daily_research` run the schedule requests, through
            `dagster job execute`, then the signal_validation sensor's tick and the runs it requests
            (up to 3 at once, as the daemon's run queue starts them).
            Target: under 60 s from launch to the last materialization.

Run: make bench-scale  (or .venv/bin/python benchmarks/bench_scale.py [--parts compare,graph,...] [--quick])
Needs PostgreSQL's binaries (Debian's postgresql package), as `pm postgres start` does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

DAGSTER = str(Path(sys.executable).with_name("dagster"))
GRAPH_STAGES = [
    ["prices"], ["features"], ["ts_forecasts"], ["llm_analysis"], ["llm_signals"], ["risk_assessments"],
    ["signal_outcomes"], ["backtests"], ["portfolio_backtests"],
]
TS_CONFIG = {"ops": {"ts_forecasts": {"config": {"refit_every": 20}}}}
COMPARE_CONFIGS = {
    "sqlite": ("SQLite (the project's default)", {}),
    "sqlite_subset": ("SQLite + ranged planned events", {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}),
    "postgres": ("PostgreSQL, no settings", {}),
    "postgres_batch": ("PostgreSQL + DAGSTER_EVENT_BATCH_SIZE=1000", {"DAGSTER_EVENT_BATCH_SIZE": "1000"}),
    "large": ("large-backfill instance (PostgreSQL + both settings)", None),  # None: the instance's own
}


def tickers_named(n: int) -> list[str]:
    return [f"SYN{i:03d}" for i in range(n)]


def base_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "PM_"))}
    env.update(PM_PRICE_SOURCE="synthetic", PM_LLM_MODE="fallback", PM_DUCKDB_PATH=str(workdir / "pm.duckdb"),
               PYTHONPATH=str(ROOT), DAGSTER_DISABLE_TELEMETRY="1")
    return env


def large_instance(workdir: Path):
    """A started large-backfill instance in a throwaway folder; yields it and its settings."""
    from pm_jobs.large_instance import temporary_instance

    return temporary_instance(prefix="pm-bench-large-")


# ------------------------------------------------------------------------------------------------
# in-process runs


def run_in_process(instance, assets: list[str], tickers: list[str] | None, start: str, end: str,
                   run_config: dict | None = None) -> tuple[float, float, int, str]:
    """One ranged run of `assets`; returns (wall seconds, the stages' own seconds, partitions, run id)."""
    from dagster import AssetKey, DagsterEventType

    from pm_assets.partitions import range_tags
    from pm_jobs.definitions import defs

    job = defs.resolve_implicit_global_asset_job_def()
    began = time.perf_counter()
    result = job.execute_in_process(
        instance=instance, asset_selection=[AssetKey(a) for a in assets],
        tags=range_tags(tickers, start, end) if tickers else range_tags(None, start, end),
        run_config={**(run_config or {}), "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False)
    wall = time.perf_counter() - began
    if not result.success:
        failure = next((e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE), None)
        raise SystemExit(f"run of {assets} failed: {failure.step_failure_data.error.message.strip() if failure else '?'}")
    own, partitions = 0.0, 0
    for asset in assets:
        [materialization] = [e for e in result.get_asset_materialization_events()
                             if e.asset_key == AssetKey(asset)][:1] or [None]
        if materialization is not None:
            metadata = materialization.materialization.metadata
            own += float(metadata["run_compute_seconds"].value)
            partitions = max(partitions, int(metadata["run_partitions"].value))
    return wall, own, partitions, result.run_id


def session_range(end: dt.date, sessions: int) -> tuple[dt.date, dt.date]:
    from pm_domain import calendar

    return calendar.shift_trading_days(end, -(sessions - 1)), end


# ------------------------------------------------------------------------------------------------
# (compare)


def compare_one(config: str, n_tickers: int, n_days: int) -> dict:
    """In a process of its own (`--compare-one`): prices + features over the rectangle."""
    from dagster import DagsterInstance

    tickers = tickers_named(n_tickers)
    start, end = session_range(dt.date(2018, 12, 31), n_days)
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tickers", tickers)
        run_in_process(instance, ["prices"], tickers[:1], str(start), str(start))  # imports, tables
        wall = own = 0.0
        events = 0
        for assets in (["prices"], ["features"]):
            w, o, _, run_id = run_in_process(instance, assets, tickers, str(start), str(end))
            wall, own = wall + w, own + o
            events += len(instance.all_logs(run_id))
        return {"seconds": wall, "own": own, "events": events}


def bench_compare(configs: list[str], n_tickers: int, n_days: int) -> None:
    from pm_jobs.local_postgres import Cluster

    print(f"\n(compare) prices + features, {n_tickers} tickers x {n_days} dates, one single-run range each "
          f"({n_tickers * n_days:,} partitions per asset), a process per instance", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, large_instance(Path(tmp)) as (large_home, large_env):
        for config in configs:
            label, extra = COMPARE_CONFIGS[config]
            workdir = Path(tmp) / config
            workdir.mkdir()
            env = base_env(workdir)
            if config.startswith("sqlite"):
                home = workdir / "dagster_home"
                home.mkdir()
                shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
                env.update(DAGSTER_HOME=str(home), **extra)
            else:
                home = large_home
                env.update({k: v for k, v in large_env.items() if k != "PM_DUCKDB_PATH"})
                if extra is not None:  # plain PostgreSQL: a database of its own, without the settings
                    for key in ("DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"):
                        env.pop(key, None)
                    env.update(extra)
                else:
                    config = "large"
                dbname = f"bench_{config}"
                Cluster(large_home / "postgres", user=large_env["DAGSTER_PG_USER"], dbname=dbname).create_database(
                    int(large_env["DAGSTER_PG_PORT"]), large_env["DAGSTER_PG_PASSWORD"])
                env.update(DAGSTER_HOME=str(home), DAGSTER_PG_DB=dbname)
            done = subprocess.run([sys.executable, __file__, "--compare-one", config, "--tickers", str(n_tickers),
                                   "--days", str(n_days)], env=env, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise SystemExit(f"{label}: {done.stderr.strip()[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((label, result))
            print(f"    {label:<55} {result['events']:>8,} events {result['seconds']:8.1f} s "
                  f"(own work {result['own']:.2f} s)", flush=True)
    baseline = rows[0][1]["seconds"]
    print(f"    {'instance':<55} {'events':>8} {'wall':>10} {'vs ' + rows[0][0].split(' (')[0]:>14}")
    for label, result in rows:
        print(f"    {label:<55} {result['events']:>8,} {result['seconds']:>8.1f} s {baseline / result['seconds']:>12.1f}x")


# ------------------------------------------------------------------------------------------------
# (graph) and (stepstart)


def graph_dates(years: int) -> tuple[dt.date, dt.date, dt.date]:
    """(first price, first date of the stages, last date): prices start the forecasts' lookback
    before the stages' `years` of sessions."""
    from pm_assets.ts_forecasts import LOOKBACK_SESSIONS
    from pm_domain import calendar

    end = calendar.last_closed_session(dt.datetime.now(dt.UTC))
    start, _ = session_range(end, 252 * years)
    return calendar.shift_trading_days(start, -(LOOKBACK_SESSIONS + 5)), start, end


def bench_graph(home: Path, n_tickers: int, years: int) -> dict[str, float]:
    """Every stage over n_tickers x `years` of sessions, one in-process run each (in a process
    whose environment the parent set: PM_START_DATE is read when the partitions are defined)."""
    from dagster import DagsterInstance

    from pm_domain import calendar

    tickers = tickers_named(n_tickers)
    first_price, start, end = graph_dates(years)
    sessions = len(calendar.trading_days(start, end))
    print(f"\n(graph) {n_tickers} tickers x {sessions:,} sessions {start}..{end} = {n_tickers * sessions:,} partitions "
          f"per asset (prices from {first_price}: the forecasts' lookback), one in-process run per stage, "
          "large-backfill instance", flush=True)
    print(f"    {'stage':<20} {'partitions':>10} {'wall':>9} {'own work':>9} {'Dagster':>9} {'ms/partition':>13}")
    walls: dict[str, float] = {}
    total = 0.0
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tickers", tickers)
        for assets in GRAPH_STAGES:
            asset = assets[0]
            first = first_price if asset == "prices" else start
            by_ticker = asset != "portfolio_backtests"
            wall, own, partitions, _ = run_in_process(instance, assets, tickers if by_ticker else None, str(first), str(end),
                                                   TS_CONFIG if asset == "ts_forecasts" else None)
            walls[asset] = wall
            total += wall
            print(f"    {asset:<20} {partitions:>10,} {wall:>8.1f}s {own:>8.1f}s {wall - own:>8.1f}s "
                  f"{1000 * (wall - own) / max(partitions, 1):>12.2f}", flush=True)
    print(f"    {'all stages':<20} {'':>10} {total:>8.1f}s  = {total / 60:.1f} min (target: under 10 min)")
    return {"start": str(start), "end": str(end), "first_price": str(first_price), **walls}


def bench_stepstart(home: Path, graph: dict, n_tickers: int) -> None:
    """features and ts_forecasts again over the graph's range, through `dagster asset materialize`."""
    tickers = tickers_named(n_tickers)
    run_env = dict(os.environ)
    print("\n(stepstart) the same ranges through `dagster asset materialize` (run process + step process) "
          "vs in-process", flush=True)
    print(f"    {'stage':<14} {'in-process':>11} {'CLI':>9} {'CLI step start':>15} {'CLI - in-process':>17}")
    for asset in ("features", "ts_forecasts"):
        args = [DAGSTER, "asset", "materialize", "-m", "pm_jobs.definitions", "--select", asset,
                "--partition-range", f"{graph['start']}|{tickers[0]}...{graph['end']}|{tickers[-1]}"]
        if asset == "ts_forecasts":
            args += ["--config-json", json.dumps(TS_CONFIG)]
        began = time.perf_counter()
        done = subprocess.run(args, env=run_env, capture_output=True, text=True, timeout=3600, cwd=ROOT)
        wall = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"dagster asset materialize {asset}: {done.stderr.strip()[-2000:]}")
        step_start = step_start_seconds(home, asset)
        print(f"    {asset:<14} {graph[asset]:>10.1f}s {wall:>8.1f}s {step_start:>14.1f}s "
              f"{wall - graph[asset]:>16.1f}s", flush=True)


def bench_mapping(n_tickers: int, n_dates: int) -> None:
    """What Dagster does at each step's start, alone: map the run's partitions through the
    upstream lookback, with Dagster's MultiPartitionMapping (the baseline) and the project's
    (pm_assets/dagster_compat.py), in this process on the same subset."""
    from dagster import DagsterInstance
    from dagster import MultiPartitionMapping as BuiltinMultiPartitionMapping

    from pm_assets.features import WARMUP_SESSIONS
    from pm_assets.partitions import daily_ticker_partitions, lookback_mapping, trading_day_partitions
    from pm_assets.ts_forecasts import LOOKBACK_SESSIONS

    tickers = tickers_named(n_tickers)
    dates = trading_day_partitions.get_partition_keys()[-n_dates:]
    subset = daily_ticker_partitions.empty_subset().with_partition_keys([f"{d}|{t}" for d in dates for t in tickers])
    print(f"\n(stepstart) mapping {n_tickers * n_dates:,} run partitions through the upstream lookback, as each "
          "step's start does: Dagster's MultiPartitionMapping vs the project's", flush=True)
    print(f"    {'dependency':<36} {'Dagster':>9} {'project':>9} {'ratio':>8}")
    with DagsterInstance.get() as instance:
        for label, sessions in ((f"features <- prices ({WARMUP_SESSIONS} sessions)", WARMUP_SESSIONS),
                                (f"ts_forecasts <- prices ({LOOKBACK_SESSIONS})", LOOKBACK_SESSIONS)):
            project = lookback_mapping(sessions)
            builtin = BuiltinMultiPartitionMapping(project.downstream_mappings_by_upstream_dimension)
            seconds = []
            for mapping in (builtin, project):
                began = time.perf_counter()
                mapping.get_upstream_mapped_partitions_result_for_partitions(
                    subset, daily_ticker_partitions, daily_ticker_partitions, dynamic_partitions_store=instance)
                seconds.append(time.perf_counter() - began)
            print(f"    {label:<36} {seconds[0]:>8.1f}s {seconds[1]:>8.2f}s {seconds[0] / seconds[1]:>7.0f}x", flush=True)


def step_start_seconds(home: Path, asset: str) -> float:
    """From the run starting (RUN_START: its one step runs in the run's process) to the step's
    first line of its own (STEP_START), in the latest run of `asset`: where Dagster maps the run's
    partitions through the upstream lookback."""
    from dagster import DagsterEventType, DagsterInstance, RunsFilter

    with DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs(RunsFilter(tags={}), limit=1)
        logs = instance.all_logs(run.run_id, of_type={DagsterEventType.RUN_START, DagsterEventType.STEP_START})
        times = {e.dagster_event.event_type: e.timestamp for e in logs}
        return times[DagsterEventType.STEP_START] - times[DagsterEventType.RUN_START]


# ------------------------------------------------------------------------------------------------
# (nightly)


def nightly_dates() -> tuple[dt.date, dt.date, dt.date, dt.date]:
    """(first price, first research date of the history, last date of the history, the night)."""
    from pm_assets.ts_forecasts import LOOKBACK_SESSIONS
    from pm_domain import calendar

    night = calendar.last_closed_session(dt.datetime.now(dt.UTC))
    return (calendar.shift_trading_days(night, -(LOOKBACK_SESSIONS + 5)), calendar.shift_trading_days(night, -10),
            calendar.shift_trading_days(night, -1), night)


def bench_nightly(n_tickers: int) -> None:
    """The nightly shape: history set up first, then the schedule's run and the sensor's runs, timed."""
    from dagster import DagsterInstance

    tickers = tickers_named(n_tickers)
    first_price, signals_from, history_end, night = nightly_dates()
    run_env = dict(os.environ)
    print(f"\n(nightly) {n_tickers} tickers x 1 date ({night}): the schedule's daily_research run through "
          "`dagster job execute`, then the signal_validation tick and its runs", flush=True)
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tickers", tickers)
        began = time.perf_counter()
        run_in_process(instance, ["prices"], tickers, str(first_price), str(history_end))
        for assets in (["features", "ts_forecasts", "llm_analysis", "llm_signals", "risk_assessments"],):
            run_in_process(instance, assets, tickers, str(signals_from), str(history_end), TS_CONFIG)
        print(f"    setup (not timed below): prices {first_price}..{history_end}, research stages "
              f"{signals_from}..{history_end}: {time.perf_counter() - began:.0f} s", flush=True)
        time_night(instance, night, run_env, "under 30 s")


def time_night(instance, night: dt.date, env: dict[str, str], target: str) -> None:
    """The night as the daemon runs it, timed from launch to the last materialization: the
    schedule's daily_research run through `dagster job execute`, then the signal_validation tick
    from the events before the night, and the runs it requests, started as the daemon's queue does
    (up to max_concurrent_runs, 3, at once). Prints every run's steps."""
    from dagster import build_schedule_context, build_sensor_context

    from pm_jobs.schedules import nightly_research_schedule
    from pm_sensors.signal_validation import WATCHED, signal_validation_sensor

    cursor = json.dumps(dict.fromkeys(WATCHED, instance.event_log_storage.get_maximum_record_id() or 0))
    tick_time = dt.datetime.combine(night, dt.time(18, 0), tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    with build_schedule_context(instance=instance, scheduled_execution_time=tick_time) as context:
        request = nightly_research_schedule.evaluate_tick(context).run_requests[0]
    launched, launched_at = time.perf_counter(), time.time()
    execute_job("daily_research", request.tags, env, TS_CONFIG)
    research_done = time.perf_counter()
    result = signal_validation_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))
    sensor_seconds = time.perf_counter() - research_done
    requests = list(result.run_requests or [])
    while requests:
        batch, requests = requests[:3], requests[3:]
        processes = [start_job(r.job_name or "signal_evaluation", r.tags, env,
                               [key.path[-1] for key in r.asset_selection or []]) for r in batch]
        for process in processes:
            out, err = process.communicate(timeout=3600)
            if process.returncode != 0:
                raise SystemExit(f"dagster job execute: {(err or out).strip()[-3000:]}")
    finished = time.perf_counter()
    runs = [(record.dagster_run, step_breakdown(instance, record.dagster_run.run_id))
            for record in night_runs(instance, launched_at)]
    print(f"    daily_research run                       {research_done - launched:6.1f} s")
    print(f"    signal_validation tick                   {sensor_seconds:6.1f} s -> "
          f"{len(result.run_requests or [])} run(s): {', '.join(r.job_name for r in result.run_requests or [])}")
    print(f"    its runs                                 {finished - research_done - sensor_seconds:6.1f} s")
    for run, (before_steps, steps) in runs:
        print(f"    {run.job_name} {run.run_id[:8]}: {before_steps:5.1f} s from run start to its first step")
        for step, wall, own in steps:
            print(f"        {step:<20} step {wall:5.1f} s, own work {own:5.1f} s")
    print(f"    launch to last materialization           {finished - launched:6.1f} s (target: {target})", flush=True)


def step_breakdown(instance, run_id: str) -> tuple[float, list[tuple[str, float, float]]]:
    """A run's seconds from its start to its first step (the run process importing the project),
    and its steps: (step, STEP_START to STEP_SUCCESS, run_compute_seconds)."""
    from dagster import DagsterEventType

    kinds = {DagsterEventType.RUN_START, DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS,
             DagsterEventType.ASSET_MATERIALIZATION}
    run_started, started, ended, own = None, {}, {}, {}
    for entry in instance.all_logs(run_id, of_type=kinds):
        event = entry.dagster_event
        if event.event_type == DagsterEventType.RUN_START:
            run_started = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event.event_type == DagsterEventType.STEP_SUCCESS:
            ended[event.step_key] = entry.timestamp
        elif event.step_key not in own:
            metadata = event.materialization.metadata
            own[event.step_key] = float(metadata["run_compute_seconds"].value)
            if "fits_made" in metadata:
                print(f"    {event.step_key}: {metadata['fits_made'].value} windows fitted, "
                      f"{metadata['fits_reused'].value} kept fits reused")
    first_step = min(started.values(), default=run_started)
    return (first_step - run_started if run_started else float("nan"),
            [(step, ended[step] - started[step], own.get(step, float("nan")))
             for step in sorted(started, key=started.get) if step in ended])


def night_runs(instance, since: float) -> list:
    """The runs created after `since` (a timestamp), oldest first."""
    from dagster import RunsFilter

    return sorted(instance.get_run_records(RunsFilter(created_after=dt.datetime.fromtimestamp(since, dt.UTC))),
                  key=lambda record: record.create_timestamp.timestamp())


def start_job(job: str, tags: dict[str, str], env: dict[str, str], assets: list[str] | None = None) -> subprocess.Popen:
    """`dagster job execute` of a request: its tags, and its asset selection as the op selection
    (an asset job's ops are named after its assets), so the run does what the daemon's would."""
    args = [DAGSTER, "job", "execute", "-m", "pm_jobs.definitions", "-j", job, "--tags", json.dumps(tags)]
    if assets:
        args += ["-o", ",".join(assets)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def execute_job(job: str, tags: dict[str, str], env: dict[str, str], run_config: dict | None = None) -> str:
    """`dagster job execute` with a request's tags: a run process, as the daemon launches one."""
    args = [DAGSTER, "job", "execute", "-m", "pm_jobs.definitions", "-j", job, "--tags", json.dumps(tags)]
    if run_config and job == "daily_research":
        config_path = Path(env["PM_DUCKDB_PATH"]).with_suffix(".run_config.json")
        config_path.write_text(json.dumps(run_config))
        args += ["-c", str(config_path)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"dagster job execute {job}: {(done.stderr or done.stdout).strip()[-3000:]}")
    return job


def run_part(part: str, home: Path, settings: dict[str, str], workdir: Path, first_price: dt.date,
             quick: bool) -> None:
    """A part in a process of its own, on the large-backfill instance at `home`, its output streamed."""
    env = base_env(workdir) | {k: v for k, v in settings.items() if k != "PM_DUCKDB_PATH"} | {
        "DAGSTER_HOME": str(home), "PM_START_DATE": str(first_price)}
    args = [sys.executable, __file__, "--run-part", part] + (["--quick"] if quick else [])
    if subprocess.run(args, env=env, timeout=7200).returncode != 0:
        raise SystemExit(f"bench-scale: part {part} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="compare,graph,stepstart,nightly")
    parser.add_argument("--compare", default="sqlite,large", help="instances to compare, or `all`")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--compare-one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-part", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tickers", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--days", type=int, default=250, help=argparse.SUPPRESS)
    args = parser.parse_args()
    graph_tickers, years, night_tickers = (2, 1, 5) if args.quick else (20, 10, 100)
    if args.compare_one:
        print(json.dumps(compare_one(args.compare_one, args.tickers, args.days)))
        return
    if args.run_part:
        home = Path(os.environ["DAGSTER_HOME"])
        if args.run_part.startswith("graph"):
            graph = bench_graph(home, graph_tickers, years)
            if "stepstart" in args.run_part:
                bench_stepstart(home, graph, graph_tickers)
                bench_mapping(graph_tickers, 50 if args.quick else 500)
        else:
            bench_nightly(night_tickers)
        return
    parts = args.parts.split(",")
    began = time.perf_counter()
    if "compare" in parts:
        configs = list(COMPARE_CONFIGS) if args.compare == "all" else args.compare.split(",")
        bench_compare(configs, 2 if args.quick else 20, 20 if args.quick else 250)
    if "graph" in parts or "stepstart" in parts:
        with tempfile.TemporaryDirectory() as tmp, large_instance(Path(tmp)) as (home, settings):
            part = "graph+stepstart" if "stepstart" in parts else "graph"
            run_part(part, home, settings, Path(tmp), graph_dates(years)[0], args.quick)
    if "nightly" in parts:
        with tempfile.TemporaryDirectory() as tmp, large_instance(Path(tmp)) as (home, settings):
            run_part("nightly", home, settings, Path(tmp), nightly_dates()[0], args.quick)
    print(f"\nbench-scale: {time.perf_counter() - began:.0f} s in all")


if __name__ == "__main__":
    main()
