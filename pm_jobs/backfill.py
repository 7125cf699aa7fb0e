"""Launch and follow an asset backfill on a running Dagster webserver, through its GraphQL API.

This is what the UI's backfill dialog does: the webserver records the backfill, the daemon
splits it into runs (single-run policy: one range per ticker or per date) and queues them under
the instance's pools. `pm backfill` and the end-to-end test use it. The GraphQL documents and the
POST live in pm_assets/dagster_compat.py with Dagster's other unstable interfaces.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pm_domain import calendar

FINISHED = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
SUCCEEDED = {"COMPLETED", "COMPLETED_SUCCESS"}


class BackfillError(RuntimeError):
    """The webserver refused the backfill, could not be reached, or the backfill failed."""


@dataclass(frozen=True)
class BackfillProgress:
    status: str
    materialized: dict[str, int]
    failed: dict[str, int]
    targeted: dict[str, int]
    runs: int = 0
    error: str | None = None
    failed_run_ids: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()  # one line per failed step, filled in when the backfill ends

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status in SUCCEEDED and not any(self.failed.values())

    def describe(self) -> str:
        parts = [f"{asset} {self.materialized.get(asset, 0)}/{n}"
                 + (f" ({self.failed[asset]} failed)" if self.failed.get(asset) else "")
                 for asset, n in self.targeted.items()]
        return (f"{self.status}: {', '.join(parts)} in {self.runs} run(s)"
                + (f"; {self.error}" if self.error else ""))


def _sessions(start: dt.date, end: dt.date) -> list[dt.date]:
    days = calendar.trading_days(start, end)
    if not days:
        raise BackfillError(f"no {calendar.EXCHANGE} trading day between {start} and {end}")
    return days


def ticker_date_ranges(tickers: Sequence[str], start: dt.date, end: dt.date,
                       ticker_order: Sequence[str]) -> list[tuple[str, str]]:
    """The (first key, last key) ranges covering exactly `tickers` x the trading days start..end
    (one range when the tickers are adjacent in the universe's order)."""
    from pm_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, rectangles

    days = _sessions(start, end)
    unknown = [t for t in tickers if t not in ticker_order]
    if unknown:
        raise BackfillError(f"not in the universe: {', '.join(unknown)} (add them with `pm tickers add`)")
    return [(r.tags()[RANGE_START_TAG], r.tags()[RANGE_END_TAG])
            for r in rectangles([(d, t) for d in days for t in tickers], ticker_order)]


DEFAULT_UI_URL = "http://127.0.0.1:3000"
UI_STATE_FILE = "pm_ui.json"


def instance_home(home: str | os.PathLike | None = None) -> str:
    """`home`, or the root directory of the instance DAGSTER_HOME names (as DagsterInstance.get()
    loads it; DagsterHomeNotSetError, a DagsterError, when it is unset)."""
    if home is not None:
        return os.fspath(home)
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        return instance.root_directory


def remember_ui_url(url: str, home: str | os.PathLike | None = None) -> None:
    """Note in the instance (`home`, else DAGSTER_HOME's) where `pm ui` serves, so `pm backfill`
    finds it (`make ui PORT=...`)."""
    path = os.path.join(instance_home(home), UI_STATE_FILE)
    with open(path, "w") as handle:
        json.dump({"url": url, "pid": os.getpid()}, handle)


def ui_url(home: str | os.PathLike | None = None) -> str:
    """The webserver `pm ui` started on this instance (`home`, else DAGSTER_HOME's), if it still
    runs; else the default."""
    from dagster import DagsterError

    try:
        with open(os.path.join(instance_home(home), UI_STATE_FILE)) as handle:
            state = json.load(handle)
        os.kill(int(state["pid"]), 0)
        return str(state["url"])
    except (DagsterError, KeyError, OSError, ValueError, TypeError):
        return DEFAULT_UI_URL


def _graphql(url: str, query: str, variables: dict, timeout: float) -> dict:
    from pm_assets.dagster_compat import WebserverError, webserver_graphql

    try:
        return webserver_graphql(url, query, variables, timeout)
    except WebserverError as exc:
        raise BackfillError(str(exc)) from exc


def launch_backfill(url: str, assets: Sequence[str], ranges: Sequence[tuple[str, str]], title: str | None = None,
                    timeout: float = 60.0) -> str:
    """Launch a backfill of exactly `ranges` of every asset of `assets`; returns its id.

    The ranges are given per asset: a backfill given partition names instead applies them to the
    first asset and extends every later asset along its dependencies, and a lookback dependency
    (features reads pm_domain.features.WARMUP_SESSIONS sessions of prices) would then reach about
    a year past the range."""
    from pm_assets.dagster_compat import LAUNCH_BACKFILL

    selector = {"ranges": [{"start": first, "end": last} for first, last in ranges]}
    params = {"partitionsByAssets": [{"assetKey": {"path": [asset]}, "partitions": selector} for asset in assets],
              "title": title or f"pm backfill {', '.join(assets)}"}
    result = _graphql(url, LAUNCH_BACKFILL, {"params": params}, timeout)["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"backfill refused ({result['__typename']}): {result.get('message')}")
    return result["backfillId"]


def backfill_progress(url: str, backfill_id: str, timeout: float = 30.0) -> BackfillProgress:
    from pm_assets.dagster_compat import BACKFILL_STATUS

    result = _graphql(url, BACKFILL_STATUS, {"id": backfill_id}, timeout)["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise BackfillError(f"backfill {backfill_id}: {result.get('message')}")
    counts = [s for s in (result.get("assetBackfillData") or {}).get("assetBackfillStatuses", []) if s]
    name = lambda status: "/".join(status["assetKey"]["path"])  # noqa: E731
    return BackfillProgress(
        status=result["status"],
        materialized={name(s): s["numPartitionsMaterialized"] for s in counts},
        failed={name(s): s["numPartitionsFailed"] for s in counts},
        targeted={name(s): s["numPartitionsTargeted"] for s in counts},
        runs=len(result.get("runs") or []),
        error=(result.get("error") or {}).get("message"),
        failed_run_ids=tuple(r["runId"] for r in result.get("runs") or [] if r["status"] == "FAILURE"),
    )


def failed_steps(url: str, run_id: str, timeout: float = 30.0) -> list[str]:
    """`run abcdefgh failed at prices (range): the root error's first line`, per failed step."""
    from pm_assets.dagster_compat import RUN_FAILED_STEPS
    from pm_sensors.run_failures import without_class

    run = _graphql(url, RUN_FAILED_STEPS, {"runId": run_id}, timeout)["runOrError"]
    if run["__typename"] != "Run":
        return [f"run {run_id[:8]} failed (its events are not readable: {run['__typename']})"]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    scope = tags.get("dagster/partition") or (
        f"{tags['dagster/asset_partition_range_start']}...{tags.get('dagster/asset_partition_range_end', '?')}"
        if "dagster/asset_partition_range_start" in tags else "")
    lines = []
    for event in run["eventConnection"]["events"]:
        if event["__typename"] == "ExecutionStepFailureEvent":
            error = event["error"] or {}
            while error.get("cause"):
                error = error["cause"]
            message = without_class(error.get("message") or "", error.get("className")).splitlines()
            lines.append(f"run {run_id[:8]} failed at {event['stepKey']}"
                         f"{f' ({scope})' if scope else ''}: {message[0] if message else error.get('className')}")
    if not lines:
        run_failure = next((e.get("message") for e in run["eventConnection"]["events"]
                            if e["__typename"] == "RunFailureEvent"), None)
        lines.append(f"run {run_id[:8]} failed: {run_failure or 'see its page in the UI'}")
    return lines


def wait_for_backfill(url: str, backfill_id: str, timeout_seconds: float, poll_seconds: float = 2.0,
                      report: Callable[[BackfillProgress], None] | None = None) -> BackfillProgress:
    """Poll until the backfill finishes; BackfillError if it has not within `timeout_seconds`."""
    deadline = time.monotonic() + timeout_seconds
    last = None
    while time.monotonic() < deadline:
        progress = backfill_progress(url, backfill_id)
        if report and progress.describe() != last:
            report(progress)
            last = progress.describe()
        if progress.finished:
            failures = [line for run_id in progress.failed_run_ids for line in failed_steps(url, run_id)]
            return dataclasses.replace(progress, failures=tuple(failures))
        time.sleep(poll_seconds)
    raise BackfillError(f"backfill {backfill_id} not finished after {timeout_seconds:g} s: {last}")
