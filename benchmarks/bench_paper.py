"""Paper book benchmark, measured in this process:
1. target_weights and the paper book's step (paper_fills, paper_book, paper_orders) over 20
   synthetic tickers x 2,520 sessions in ONE single-run materialization against a temporary store:
   the project's own work (each step's run_compute_seconds: reading, the book's path, the five
   counterfactual books of the reconciliation, the rows written) against the 10 s target, and
   Dagster's share (the run's wall time less that work) beside it;
2. skfolio's fit per date at 100 tickers x 252 returns (inverse volatility, hierarchical risk
   parity, minimum variance), median of repeated fits, against the 100 ms target.
Run: make bench-paper   (or .venv/bin/python benchmarks/bench_paper.py [--quick])
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from pm_domain import calendar  # noqa: E402
from pm_domain.price_sources import fetch_synthetic  # noqa: E402
from pm_domain.signal_validation import LAYERS  # noqa: E402

BOOK_TARGET_SECONDS = 10.0
FIT_TARGET_MS = 100.0


def synthetic_signals(tickers: list[str], days: list, seed: int = 0) -> pl.DataFrame:
    """llm_signals rows as the stage stores them (the columns the book reads): random calls,
    half-Kelly sizes, one in ten failing a validation layer."""
    rng = np.random.default_rng(seed)
    n = len(tickers) * len(days)
    failing = rng.random(n) < 0.1
    return pl.DataFrame({
        "ticker": [t for t in tickers for _ in days], "date": list(days) * len(tickers),
        "action": rng.choice(["BUY", "BUY", "SELL", "HOLD", "HOLD"], n), "confidence": rng.uniform(0.5, 0.8, n),
        "position_size": rng.uniform(0.0, 0.25, n), "prompt_hash": [f"h{i}" for i in range(n)], "llm_model": "bench",
        **{f"validation_{layer}": np.where(failing & (layer == "technical"), "fail", "pass").tolist() for layer in LAYERS},
        **{f"validation_{layer}_reason": ["against the trend" if f and layer == "technical" else None for f in failing]
           for layer in LAYERS},
    }, schema_overrides={f"validation_{layer}_reason": pl.String for layer in LAYERS})


def book_run(tickers: int, sessions: int) -> dict[str, float]:
    import duckdb
    from dagster import DagsterInstance, materialize

    from pm_assets import paper_trading, target_weights
    from pm_assets.partitions import range_tags, trading_day_partitions
    from pm_resources.broker import SimulatedBrokerResource
    from pm_resources.database import ClosingDuckDBResource
    from pm_resources.store import replace_partitions

    last = calendar.last_closed_session(dt.datetime.now(dt.UTC))
    first_partition = dt.date.fromisoformat(trading_day_partitions.get_first_partition_key())
    days = calendar.trading_days(first_partition, last)[-sessions:]
    names = [f"SYN{i:03d}" for i in range(tickers)]
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "bench.duckdb")
        history = calendar.shift_trading_days(days[0], -260)
        with duckdb.connect(path) as conn:
            prices = fetch_synthetic(names, history, days[-1])
            replace_partitions(conn, "prices", prices, names, calendar.trading_days(history, days[-1]))
            replace_partitions(conn, "llm_signals", synthetic_signals(names, days), names, days)
        with DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions("tickers", names)
            began = time.perf_counter()
            result = materialize([target_weights, paper_trading], instance=instance, raise_on_error=True,
                                 tags=range_tags(None, days[0], days[-1]),
                                 resources={"duckdb": ClosingDuckDBResource(database=path), "broker": SimulatedBrokerResource()})
            wall = time.perf_counter() - began
        compute = {}
        for event in result.get_asset_materialization_events():
            metadata = event.step_materialization_data.materialization.metadata
            if "run_compute_seconds" in metadata:
                compute[event.step_key] = metadata["run_compute_seconds"].value
        with duckdb.connect(path, read_only=True) as conn:
            rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                    for t in ("target_weights", "paper_orders", "paper_fills", "paper_book", "paper_positions")}
    own = sum(compute.values())
    return {"days": len(days), "first": days[0], "last": days[-1], "wall": wall, "own": own, "steps": compute, "rows": rows}


def fit_timings(tickers: int, repeats: int) -> dict[str, float]:
    from pm_domain.paper.weights import SKFOLIO_METHODS, fit_weights

    rng = np.random.default_rng(1)
    returns = rng.normal(0, 0.01, (252, tickers)) + rng.normal(0, 0.008, (252, 1))
    timings = {}
    for method in SKFOLIO_METHODS:
        fit_weights(returns, method)  # imports and first-call set-up are not per date
        samples = []
        for _ in range(repeats):
            began = time.perf_counter()
            weights = fit_weights(returns, method)
            samples.append(time.perf_counter() - began)
        assert abs(weights.sum() - 1) < 1e-6 and weights.min() >= -1e-9
        timings[method] = statistics.median(samples) * 1000
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 tickers x 250 sessions, 5 fits (a smoke run)")
    args = parser.parse_args()
    tickers, sessions, repeats = (5, 250, 5) if args.quick else (20, 2520, 30)
    book = book_run(tickers, sessions)
    print(f"1. target_weights + paper book over {tickers} tickers x {book['days']} sessions "
          f"({book['first']}..{book['last']}), one run:")
    for step, seconds in book["steps"].items():
        print(f"   {step:<16} own work {seconds:6.2f} s")
    print(f"   project's work {book['own']:6.2f} s = {book['own'] / BOOK_TARGET_SECONDS:.2f}x the {BOOK_TARGET_SECONDS:g} s target; "
          f"run wall {book['wall']:.2f} s, Dagster's share {book['wall'] - book['own']:.2f} s "
          f"({(book['wall'] - book['own']) / book['wall']:.0%})")
    print(f"   rows: {', '.join(f'{t} {n:,}' for t, n in book['rows'].items())}")
    fits = fit_timings(100, repeats)
    print(f"2. skfolio fit per date, 100 tickers x 252 returns (median of {repeats}):")
    for method, ms in fits.items():
        print(f"   {method:<26} {ms:7.1f} ms = {ms / FIT_TARGET_MS:.2f}x the {FIT_TARGET_MS:g} ms target")


if __name__ == "__main__":
    main()
