"""backtests benchmark, two ratios measured in this process:
1. the vectorised core (pm_domain.backtest.backtest_core: positions from signals with the entry
   lag, costs, equity, Sharpe, max drawdown) for 500 tickers x 1,260 sessions against a plain
   NumPy implementation of the same computation written out below (target <= 2x); both results
   are checked equal first;
2. the backtests asset over 20 synthetic tickers x 250 dates in ONE single-run backfill against
   ONE partition, both materialized in-process with Dagster against a temporary store (target
   <= 3x): the cost of a year of backtests for a watchlist against the cost of one.
Run: make bench-backtests   (or .venv/bin/python benchmarks/bench_backtests.py [--quick])
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from benchmarks.bench_foundation import best_of  # noqa: E402
from pm_domain import calendar  # noqa: E402
from pm_domain.backtest import backtest_core  # noqa: E402

END = dt.date(2018, 12, 31)
COST_RATE = 0.0005


def plain_numpy(signals: np.ndarray, prices: np.ndarray, cost_rate: float) -> dict[str, np.ndarray]:
    """The same computation as backtest_core, written directly: the baseline."""
    returns = prices[:, 1:] / prices[:, :-1] - 1.0
    positions = np.zeros_like(returns)
    positions[:, 1:] = signals[:, : returns.shape[1] - 1]  # signal of d-2 earns the return of d
    previous = np.zeros_like(positions)
    previous[:, 1:] = positions[:, :-1]
    net = positions * returns - cost_rate * np.abs(positions - previous)
    equity = np.cumprod(1.0 + net, axis=1)
    sharpe = net.mean(axis=1) / net.std(axis=1, ddof=1) * np.sqrt(252)
    peaks = np.maximum.accumulate(np.concatenate([np.ones((len(net), 1)), equity], axis=1), axis=1)[:, 1:]
    drawdown = np.minimum((equity / peaks - 1.0).min(axis=1), 0.0)
    return {"net_returns": net, "equity": equity, "sharpe": sharpe, "max_drawdown": drawdown}


def core_ratio(n_tickers: int, n_sessions: int, repeats: int) -> float:
    rng = np.random.default_rng(42)
    prices = 100 * np.cumprod(1 + rng.normal(0.0003, 0.012, (n_tickers, n_sessions + 1)), axis=1)
    signals = rng.choice([-1.0, 0.0, 1.0], (n_tickers, n_sessions + 1))
    ours, baseline = backtest_core(signals, prices, COST_RATE), plain_numpy(signals, prices, COST_RATE)
    for key in baseline:
        np.testing.assert_allclose(ours[key], baseline[key], rtol=1e-10, atol=1e-12, err_msg=key)
    core = best_of(repeats, lambda: backtest_core(signals, prices, COST_RATE))
    plain = best_of(repeats, lambda: plain_numpy(signals, prices, COST_RATE))
    print(f"core: {n_tickers} tickers x {n_sessions} sessions, best of {repeats}: backtest_core "
          f"{1000 * core:.1f} ms, plain numpy {1000 * plain:.1f} ms, ratio {core / plain:.2f}x (target <= 2x)")
    return core / plain


def asset_ratio(n_tickers: int, n_dates: int) -> float:
    from dagster import DagsterInstance, materialize
    from dagster_duckdb import DuckDBResource

    import duckdb
    from pm_assets import backtests, prices
    from pm_assets.partitions import range_tags
    from pm_resources.price_source import PriceSourceResource
    from pm_resources.store import replace_partitions

    tickers = [f"SYN{i:02d}" for i in range(n_tickers)]
    first_date = calendar.shift_trading_days(END, -(n_dates - 1))
    first_signal = calendar.shift_trading_days(first_date, -260)
    with tempfile.TemporaryDirectory() as folder, DagsterInstance.ephemeral() as instance:
        path = str(Path(folder) / "pm.duckdb")
        resources = {"duckdb": DuckDBResource(database=path), "price_source": PriceSourceResource(source="synthetic")}
        instance.add_dynamic_partitions("tickers", tickers)
        assert materialize([prices], instance=instance, resources=resources,
                           tags=range_tags(tickers, str(first_signal), str(END))).success
        days = calendar.trading_days(first_signal, END)
        rng = np.random.default_rng(7)
        n = len(days) * n_tickers
        signals = pl.DataFrame({"ticker": [t for t in tickers for _ in days], "date": days * n_tickers,
                                "action": rng.choice(["BUY", "SELL", "HOLD"], n), "confidence": rng.uniform(0.5, 0.7, n),
                                "position_size": rng.uniform(0, 0.25, n), "horizon": np.full(n, 5)})
        with duckdb.connect(path) as conn:
            replace_partitions(conn, "llm_signals", signals, tickers, days)

        def run(partition_tickers: list[str], start: dt.date) -> tuple[float, float]:
            """(wall seconds of the run, seconds of the asset's own work)."""
            began = time.perf_counter()
            result = materialize([backtests], instance=instance, resources=resources,
                                 tags=range_tags(partition_tickers, str(start), str(END)))
            assert result.success
            own = result.asset_materializations_for_node("backtests")[0].metadata["run_compute_seconds"].value
            return time.perf_counter() - began, own

        run(tickers[:1], END)  # warm-up: imports, calendar and bootstrap caches
        single, single_own = min(run(tickers[:1], END) for _ in range(3))
        ranged, ranged_own = run(tickers, first_date)
    partitions = n_tickers * n_dates
    print(f"asset: one partition {single:.2f} s (best of 3; the asset's own work {single_own:.2f} s)")
    print(f"       {n_tickers} tickers x {n_dates} dates = {partitions} partitions in one run {ranged:.2f} s, of which "
          f"the asset's own work (read, compute, write, plot) {ranged_own:.2f} s = {1000 * ranged_own / partitions:.2f} ms "
          f"per partition and Dagster's per-partition materialization events {ranged - ranged_own:.2f} s = "
          f"{1000 * (ranged - ranged_own) / partitions:.2f} ms per partition")
    print(f"       ratio one run / one partition {ranged / single:.1f}x (target <= 3x); the asset's own work "
          f"{ranged_own / single:.1f}x a one-partition run")
    return ranged / single


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 tickers x 1,260 sessions and 5 x 60 partitions")
    args = parser.parse_args()
    core = core_ratio(100 if args.quick else 500, 1260, 3 if args.quick else 7)
    asset = asset_ratio(*((5, 60) if args.quick else (20, 250)))
    return 0 if core <= 2.0 and asset <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main())
