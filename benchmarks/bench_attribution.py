"""The false-positive rate of the LLM attribution verdict: on a driftless random walk, a forecast
that proposes a trade every day at random, and an LLM that holds each trade back on a coin flip,
how often is the LLM judged to add or remove skill (`llm_adds` / `llm_removes`) in the 252-session
backtest? The interval is a 90% paired stationary bootstrap, so the nominal rate is 10%.

Run: .venv/bin/python benchmarks/bench_attribution.py [--seeds 200] [--replications 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from pm_domain.backtest import BacktestRules  # noqa: E402
from tests.unit.test_attribution import coin_flip_false_positive_rate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--replications", type=int, default=BacktestRules().bootstrap_replications)
    args = parser.parse_args()
    rules = BacktestRules(bootstrap_replications=args.replications)
    began = time.perf_counter()
    rate = coin_flip_false_positive_rate(range(args.seeds), rules)
    print(f"coin-flip LLM over {args.seeds} seeds ({args.replications} bootstrap replications, "
          f"{rules.interval:.0%} interval, block {rules.bootstrap_block:g}): judged to add or remove skill on "
          f"{rate:.1%} of seeds (nominal {1 - rules.interval:.0%}); {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
