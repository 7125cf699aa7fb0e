"""What a Dagster process of this project costs to start: every run worker, every step of a
multiprocess run, every code server and every `dagster` CLI call imports the definitions first.

Times a fresh interpreter importing (min / median of --runs, interleaved so that load on the
machine falls on all rows alike):
- dagster alone (the floor: Dagster's own import);
- pm_jobs.definitions as it loads now (statsmodels, arch, scipy.stats and matplotlib are imported
  where a step fits or draws, not at the top of pm_domain's modules);
- pm_jobs.definitions with those libraries loaded first: what every process paid while they were
  imported at the top of the modules (the baseline the ratio is taken against).

Then a one-partition `prices,features` run of ^GSPC (sample source) through `dagster asset
materialize` on a throwaway SQLite instance, as a whole process, with its steps in the run's
process (the project's executor on one machine) and with a process per step (Dagster's default,
through a definitions file that only swaps the executor), interleaved.

Run: make bench-process-start  (or .venv/bin/python benchmarks/bench_process_start.py [--runs 7])
About 4 minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_AND_CHART_LIBRARIES = "scipy.stats, statsmodels.tsa.statespace.sarimax, statsmodels.tsa.ar_model, " \
                            "arch.univariate, matplotlib.pyplot"
ROWS = {
    "dagster alone": "import dagster",
    "the definitions (now)": "import pm_jobs.definitions",
    "the definitions, model and chart libraries at the top (before)":
        f"import {MODEL_AND_CHART_LIBRARIES}; import pm_jobs.definitions",
}


PER_STEP_DEFINITIONS = """from dagster import Definitions, multiprocess_executor
import pm_jobs.definitions

defs = Definitions(assets=pm_jobs.definitions.defs.assets, resources=pm_jobs.definitions.defs.resources,
                   executor=multiprocess_executor)
"""


def seconds(code: str) -> float:
    return timed([sys.executable, "-c", code])


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - began


def table(title: str, times: dict[str, list[float]], baseline: str) -> None:
    before = statistics.median(times[baseline])
    print(f"| {title} | min | median | {baseline.split(' (')[0]} / this |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {min(values):.2f} s | {median:.2f} s | {before / median:.2f}x |")


def one_partition_runs(runs: int) -> dict[str, list[float]]:
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="pm-bench-start-") as tmp:
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home)
        env = {**os.environ, "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": f"{tmp}/pm.duckdb",
               "PM_WATCHLIST": f"{tmp}/watchlist.txt", "PM_PRICE_SOURCE": "sample", "DAGSTER_DISABLE_TELEMETRY": "1"}
        subprocess.run([str(bin_dir / "pm"), "tickers", "add", "^GSPC"], env=env, check=True, capture_output=True)
        per_step = Path(tmp) / "per_step_definitions.py"
        per_step.write_text(PER_STEP_DEFINITIONS)
        materialize = [str(bin_dir / "dagster"), "asset", "materialize", "--select", "prices,features",
                       "--partition", "2018-12-31|^GSPC"]
        commands = {"steps in the run's process (the project's)": [*materialize, "-m", "pm_jobs.definitions"],
                    "a process per step (Dagster's default)": [*materialize, "-f", str(per_step)]}
        for command in commands.values():  # the instance's tables and the store, untimed
            timed(command, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, command in commands.items():
                times[name].append(timed(command, env))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    for code in ROWS.values():  # warm the file cache and the bytecode once, untimed
        seconds(code)
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(runs):
        for name, code in ROWS.items():
            times[name].append(seconds(code))
    table(f"a fresh process importing ({runs} runs)", times,
          "the definitions, model and chart libraries at the top (before)")
    print()
    table(f"`dagster asset materialize`, one partition of prices,features ({runs} runs)", one_partition_runs(runs),
          "a process per step (Dagster's default)")


if __name__ == "__main__":
    main()
