"""The partition ceiling: what a user waits for at 100,000, 250,000 and 500,000 partitions per
asset on the large-backfill instance (PostgreSQL, docs/scale.md).

For each size, `prices` is materialized for every (session, ticker) from PM_START_DATE (2016) to the
last closed session (synthetic source; one in-process run per 20 tickers), then, against a real
`dagster-webserver` and `dagster-daemon` on 127.0.0.1:
- the asset's Partitions page: the UI's PartitionHealthQuery for `prices` (first, then best of 3);
- the Lineage page: LocationWorkspaceAssetsQuery plus AssetGraphLiveQuery for every asset, 10 keys
  a request as the UI sends them;
- a backfill of `features` over every partition as a range (what `pm backfill` sends) and, up to
  --listed-up-to partitions, as the UI's dialog sends it (every key listed): the mutation's time,
  then the daemon's time to turn it into its run (each backfill is cancelled and its run
  terminated right after);
- one signal_validation tick over the last night's `prices` events (in this process).

Run: make bench-ceiling  (or .venv/bin/python benchmarks/bench_ceiling.py [--sizes 100000,250000])
About 15 minutes for the three sizes on two cores. Needs PostgreSQL's binaries, as `pm postgres start`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

import httpx  # noqa: E402

from benchmarks import ui_queries  # noqa: E402
from benchmarks.bench_scale import base_env, large_instance, run_in_process, tickers_named  # noqa: E402

LOCATION = "portfolio_maximizer"
RUN_TICKERS = 20  # tickers per materialization run
CANCEL = """mutation Cancel($id: String!) { cancelPartitionBackfill(backfillId: $id) { __typename } }"""
TERMINATE = """mutation Terminate($id: String!) { terminateRun(runId: $id) { __typename } }"""
BACKFILL_RUNS = """query Runs($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status runs { runId status } } } }"""
STOPPED_SENSORS = ("watchlist_sync", "signal_validation", "llm_health", "marts_refresh")


def graphql(url: str, operation: str, query: str, variables: dict, timeout: float = 600) -> tuple[dict, float]:
    began = time.perf_counter()
    reply = httpx.post(f"{url}/graphql?op={operation}", timeout=timeout,
                       json={"operationName": operation, "variables": variables, "query": query})
    seconds = time.perf_counter() - began
    reply.raise_for_status()
    body = reply.json()
    if body.get("errors"):
        raise RuntimeError(f"{operation}: {body['errors'][0].get('message')}")
    return body["data"], seconds


@contextlib.contextmanager
def served(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A process group of ours, stopped (SIGTERM, then SIGKILL) by its PID afterwards."""
    from tests.support.local_server import stop_process_group

    with open(log, "w") as out:
        process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process
    finally:
        stop_process_group(process)


def partition_page(url: str) -> tuple[float, float]:
    variables = {"assetKey": {"path": ["prices"]}}
    _, first = graphql(url, "PartitionHealthQuery", ui_queries.PARTITION_HEALTH_QUERY, variables)
    again = min(graphql(url, "PartitionHealthQuery", ui_queries.PARTITION_HEALTH_QUERY, variables)[1] for _ in range(3))
    return first, again


def lineage_page(url: str) -> float:
    data, seconds = graphql(url, "LocationWorkspaceAssetsQuery", ui_queries.ASSET_GRAPH_QUERY, {"name": LOCATION})
    entry = data["workspaceLocationEntryOrError"]["locationOrLoadError"]["repositories"][0]["assetNodes"]
    keys = [node["assetKey"] for node in entry]
    for first in range(0, len(keys), 10):
        seconds += graphql(url, "AssetGraphLiveQuery", ui_queries.ASSET_GRAPH_LIVE_QUERY,
                           {"assetKeys": [{"path": k["path"]} for k in keys[first:first + 10]]})[1]
    return seconds


def backfill_everything(url: str, params: dict, timeout: float) -> tuple[float, float]:
    """Launch a backfill of `features` with `params`; return (the mutation's seconds, seconds
    until the daemon has created its run). Cancelled and its run terminated afterwards."""
    variables = {"backfillParams": params}
    data, launch = graphql(url, "LaunchPartitionBackfill", ui_queries.LAUNCH_BACKFILL_MUTATION, variables)
    backfill_id = data["launchPartitionBackfill"]["backfillId"]
    began = time.perf_counter()
    runs: list = []
    while time.perf_counter() - began < timeout and not runs:
        time.sleep(0.5)
        runs = graphql(url, "Runs", BACKFILL_RUNS, {"id": backfill_id})[0]["partitionBackfillOrError"]["runs"]
    to_run = time.perf_counter() - began if runs else float("nan")
    graphql(url, "Cancel", CANCEL, {"id": backfill_id})
    for run in runs:
        graphql(url, "Terminate", TERMINATE, {"id": run["runId"]})
    return launch, to_run


def measure_backfills(url: str, env: dict[str, str], workdir: Path, ranged: dict, listed: dict | None) -> tuple[float, float]:
    """The range backfill (and the listed one, if given) with a daemon running; prints and returns the range's."""
    daemon = [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", "workspace.yaml"]
    with served(daemon, env, workdir / "daemon.log"):
        launch, to_run = backfill_everything(url, ranged, 900)
        print(f"    backfill of features over every partition, as a range (pm backfill): launch {launch:6.2f} s, "
              f"the daemon's run after {to_run:6.1f} s", flush=True)
        if listed is not None:
            listed_launch, listed_run = backfill_everything(url, listed, 900)
            print(f"    the same, keys listed as the UI's dialog sends them: launch {listed_launch:6.2f} s, "
                  f"the daemon's run after {listed_run:6.1f} s", flush=True)
    return launch, to_run


def sensor_tick(instance, tickers: list[str], night: dt.date) -> tuple[float, int]:
    """One signal_validation tick whose cursor stops just before the last night's prices."""
    from dagster import AssetKey, AssetRecordsFilter, build_sensor_context

    from pm_sensors.signal_validation import WATCHED, signal_validation_sensor

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("prices"), asset_partitions=[f"{night}|{t}" for t in tickers]),
        limit=len(tickers)).records
    cursor = json.dumps(dict.fromkeys(WATCHED, min(r.storage_id for r in records) - 1))
    began = time.perf_counter()
    result = signal_validation_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))
    return time.perf_counter() - began, len(result.run_requests or [])


def measure(sizes: list[int], listed_up_to: int, backfill_up_to: int) -> None:
    from dagster import DagsterInstance

    from pm_assets.partitions import trading_day_partitions

    sessions = trading_day_partitions.get_partition_keys()
    night = dt.date.fromisoformat(sessions[-1])
    print(f"{len(sessions):,} sessions {sessions[0]}..{sessions[-1]} per ticker; the large-backfill instance", flush=True)
    rows = []
    env = dict(os.environ)
    workdir = Path(env["PM_DUCKDB_PATH"]).parent
    from tests.support.local_server import free_port, wait_until_answering

    for sensor in STOPPED_SENSORS:  # their runs would compete with what is timed here
        subprocess.run([str(Path(sys.executable).with_name("dagster")), "sensor", "stop", "-w", "workspace.yaml",
                        sensor], env=env, cwd=ROOT, capture_output=True, timeout=300)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    webserver = [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml", "-h", "127.0.0.1",
                 "-p", str(port)]
    with DagsterInstance.get() as instance, served(webserver, env, workdir / "webserver.log") as web:
        wait_until_answering(f"{url}/server_info", web, workdir / "webserver.log", 180, "dagster-webserver", 1.0)
        tickers: list[str] = []
        for size in sizes:
            wanted = tickers_named(math.ceil(size / len(sessions)))
            new = wanted[len(tickers):]
            began = time.perf_counter()
            instance.add_dynamic_partitions("tickers", new)
            for first in range(0, len(new), RUN_TICKERS):
                block = new[first:first + RUN_TICKERS]
                run_in_process(instance, ["prices"], block, sessions[0], sessions[-1])
            tickers = wanted
            partitions = len(tickers) * len(sessions)
            with_listed = partitions <= listed_up_to
            with_backfill = partitions <= backfill_up_to
            print(f"\n{partitions:,} partitions per asset ({len(tickers)} tickers): prices materialized for "
                  f"{len(new)} new tickers in {time.perf_counter() - began:.0f} s", flush=True)
            page_first, page = partition_page(url)
            print(f"    Partitions page (PartitionHealthQuery, prices)  first {page_first:6.2f} s, then {page:6.2f} s", flush=True)
            graph = lineage_page(url)
            print(f"    Lineage (graph + live status of every asset)    {graph:6.2f} s", flush=True)
            ranged = {"partitionsByAssets": [{"assetKey": {"path": ["features"]}, "partitions": {"range": {
                "start": f"{sessions[0]}|{tickers[0]}", "end": f"{sessions[-1]}|{tickers[-1]}"}}}],
                "tags": [{"key": "dagster/from_ui", "value": "true"}]}
            listed = {"tags": [{"key": "dagster/from_ui", "value": "true"}], "assetSelection": [{"path": ["features"]}],
                      "partitionNames": [f"{d}|{t}" for d in sessions for t in tickers], "fromFailure": False}
            launch = to_run = float("nan")
            if with_backfill:
                launch, to_run = measure_backfills(url, env, workdir, ranged, listed if with_listed else None)
            tick, requested = sensor_tick(instance, tickers, night)
            print(f"    signal_validation tick over a night's prices    {tick:6.2f} s ({requested} run(s) requested)",
                  flush=True)
            rows.append((partitions, len(tickers), page_first, page, graph, launch, to_run, tick))
    print("\n| partitions per asset | tickers (2016-) | Partitions page, first / again | Lineage | range backfill launch "
          "| daemon to its run | signal_validation tick |")
    print("|---|---|---|---|---|---|---|")
    for partitions, n, first, again, graph, launch, to_run, tick in rows:
        print(f"| {partitions:,} | {n} | {first:.2f} s / {again:.2f} s | {graph:.2f} s | {launch:.2f} s | "
              f"{to_run:.1f} s | {tick:.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,250000,500000", help="partitions per asset, ascending")
    parser.add_argument("--backfill-up-to", type=int, default=110_000,
                        help="launch the backfills up to this many partitions (at 100,000 each takes minutes)")
    parser.add_argument("--listed-up-to", type=int, default=110_000,
                        help="also launch the UI dialog's backfill (every key listed) up to this many partitions")
    parser.add_argument("--in-instance", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.in_instance:
        measure(sizes, args.listed_up_to, args.backfill_up_to)
        return
    with tempfile.TemporaryDirectory() as tmp, large_instance(Path(tmp)) as (home, settings):
        watchlist = Path(tmp) / "watchlist.txt"
        watchlist.write_text("")
        env = base_env(Path(tmp)) | {k: v for k, v in settings.items() if k != "PM_DUCKDB_PATH"} | {
            "DAGSTER_HOME": str(home), "PM_WATCHLIST": str(watchlist)}
        done = subprocess.run([sys.executable, __file__, "--in-instance", "--sizes", args.sizes,
                               "--listed-up-to", str(args.listed_up_to), "--backfill-up-to", str(args.backfill_up_to)], env=env, timeout=7200)
        if done.returncode != 0:
            raise SystemExit("bench-ceiling failed")


if __name__ == "__main__":
    main()
