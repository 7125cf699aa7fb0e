"""What a Dagster process of this project costs to start: every run worker, every step of a
multiprocess run, every code server and every `dagster` CLI call imports the definitions first.

Times a fresh interpreter importing (min / median of --runs, interleaved so that load on the
machine falls on all rows alike):
- dagster alone (the floor: Dagster's own import);
- pm_jobs.definitions as it loads now (statsmodels, arch, scipy.stats and matplotlib are imported
  where a step fits or draws, not at the top of pm_domain's modules);
- pm_jobs.definitions with those libraries loaded first: what every process paid while they were
  imported at the top of the modules (the baseline the ratio is taken against).

Run: make bench-process-start  (or .venv/bin/python benchmarks/bench_process_start.py [--runs 7])
About a minute and a half.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
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


def seconds(code: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    for code in ROWS.values():  # warm the file cache and the bytecode once, untimed
        seconds(code)
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    for _ in range(runs):
        for name, code in ROWS.items():
            times[name].append(seconds(code))
    before = statistics.median(times["the definitions, model and chart libraries at the top (before)"])
    print(f"| a fresh process importing ({runs} runs) | min | median | before / this |")
    print("|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {min(values):.2f} s | {median:.2f} s | {before / median:.2f}x |")


if __name__ == "__main__":
    main()
