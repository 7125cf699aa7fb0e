"""`pm materialize --parallel N`: a long range as N processes, each running its share of the
tickers (adjacent in the universe) as ordinary in-process runs.

Each process is `pm materialize` itself on a share of the tickers, so it plans, runs, records
failures and reports exactly as a single-process command does; its lines come back prefixed
`[k/N]`. The shares compute in parallel and queue only to open the store (the store's lock,
pm_resources/database.py), so the `duckdb` pool must let N steps run at once: a pool smaller
than N is raised to N, and the command says so.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dagster import DagsterInstance

from pm_assets.dagster_compat import ensure_pool, pool_limit, set_pool_limit
from pm_assets.llm_stage import LLM_STAGE_ASSET_ARGS
from pm_jobs.selection import Selection

STORE_POOL = "duckdb"
OTHER_POOLS = (LLM_STAGE_ASSET_ARGS["pool"],)


@dataclass(frozen=True)
class ShareOutcome:
    share: int
    tickers: list[str]
    returncode: int
    last_line: str


def share_command(selection: Selection, tickers: list[str], config_json: str | None) -> list[str]:
    command = [sys.executable, "-m", "pm_jobs.cli", "materialize", "--assets", ",".join(selection.assets),
               "--tickers", ",".join(tickers), "--from", str(selection.start), "--to", str(selection.end)]
    return command + (["--config-json", config_json] if config_json else [])


def make_room(instance: DagsterInstance, parts: int, say: Callable[[str], None]) -> None:
    """Raise the store pool's limit to `parts` when it is lower (kept afterwards: the store's lock
    makes any limit safe, and the limit only bounds how many stages compute at once); and give every
    pool its row before the shares' runs would race to create it (dagster_compat.ensure_pool)."""
    for pool in OTHER_POOLS:
        ensure_pool(instance, pool)
    limit = pool_limit(instance, STORE_POOL)
    if limit < parts:
        set_pool_limit(instance, STORE_POOL, parts)
        say(f"the {STORE_POOL} pool allowed {limit} step(s) at once; raised to {parts} "
            f"(dagster instance concurrency set {STORE_POOL} {limit} restores it)")


def run_shares(selection: Selection, parts: int, config_json: str | None,
               say: Callable[[str], None]) -> list[ShareOutcome]:
    """Run the selection's tickers as `parts` processes at once; wait for all of them."""
    shares = selection.shares(parts)
    processes = [subprocess.Popen(share_command(selection, tickers, config_json), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1) for tickers in shares]
    last_lines = [""] * len(shares)

    def relay(index: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            line = line.rstrip("\n")
            if line.strip():
                last_lines[index] = line.strip()
                say(f"[{index + 1}/{len(shares)}] {line}")

    threads = [threading.Thread(target=relay, args=(i, p), daemon=True) for i, p in enumerate(processes)]
    for thread in threads:
        thread.start()
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    for thread in threads:
        thread.join()
    return [ShareOutcome(i + 1, tickers, code, last_lines[i])
            for i, (tickers, code) in enumerate(zip(shares, codes, strict=True))]
