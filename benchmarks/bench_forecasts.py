"""ts_forecasts benchmark: the fast path against the naive refit-everything-every-day loop.

Both run in this process over the same partitions (synthetic tickers x the last trading days of
2018) and produce the same columns:
- naive: every model (SARIMAX, GARCH, SAMOSSA, MSSA-RL) refitted from scratch at every origin
  (ForecastConfig(refit_every=1)), one process;
- fast: parameters refitted every 20 sessions of the calendar grid with state updates in
  between (Kalman filter, variance recursion, fixed SSA maps), tickers spread over both cores
  (and once more in one process, to separate the two gains).
Then: accuracy of both on the same origins (RMSE against realised returns, 90% coverage), and
the peak traced memory of the fast path for a short and a long range of one ticker.

Run: make bench-forecasts   (or .venv/bin/python benchmarks/bench_forecasts.py [--quick])
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import tracemalloc
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pm_domain import calendar  # noqa: E402
from pm_domain.forecasting import evaluation  # noqa: E402
from pm_domain.forecasting.engine import (  # noqa: E402
    ForecastConfig,
    forecast_tickers,
    price_histories,
    processes_for,
)
from pm_domain.price_sources import fetch_synthetic  # noqa: E402

END = dt.date(2018, 12, 31)


def histories(tickers: list[str], n_dates: int, config: ForecastConfig) -> tuple[dict, list[dt.date], dict]:
    first_target = calendar.shift_trading_days(END, -(n_dates - 1))
    start = calendar.shift_trading_days(first_target, -(config.lookback_sessions - 1))
    prices = fetch_synthetic(tickers, start, END + dt.timedelta(days=45))
    targets = calendar.trading_days(first_target, END)
    # Forecasts see prices up to END only; the later ones score them.
    return price_histories(prices.filter(pl.col("date") <= END)), targets, price_histories(prices)


def accuracy(rows: pl.DataFrame, outcomes: pl.DataFrame, horizon: int) -> tuple[float, float]:
    scored = rows.filter(pl.col("horizon") == horizon).join(outcomes, on=["ticker", "date", "horizon"])
    truth = scored["realised"].to_numpy()
    return (evaluation.rmse(truth - scored["expected_log_return"].to_numpy()),
            evaluation.coverage(truth, scored["lower_90"].to_numpy(), scored["upper_90"].to_numpy()))


def peak_memory_mib(n_dates: int) -> float:
    config = ForecastConfig()
    data, targets, _ = histories(["SYN00"], n_dates, config)
    tracemalloc.start()
    forecast_tickers(data, targets, calendar.session_numbers(END), config, workers=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 tickers x 60 dates (about a minute)")
    args = parser.parse_args()
    n_tickers, n_dates = (4, 60) if args.quick else (20, 250)
    tickers = [f"SYN{i:02d}" for i in range(n_tickers)]
    fast_config, naive_config = ForecastConfig(), ForecastConfig(refit_every=1)
    data, targets, everything = histories(tickers, n_dates, fast_config)
    sessions = calendar.session_numbers(END)
    partitions = n_tickers * len(targets)
    print(f"ts_forecasts: {n_tickers} synthetic tickers x {len(targets)} dates = {partitions} partitions "
          f"({targets[0]} .. {targets[-1]}), 3 horizons each", flush=True)

    began = time.perf_counter()
    fast = forecast_tickers(data, targets, sessions, fast_config, workers=2).rows
    fast_seconds = time.perf_counter() - began
    processes = processes_for(n_tickers, len(targets), 2)
    print(f"  fast (refit every {fast_config.refit_every}, {processes} process(es)): {fast_seconds:7.1f} s "
          f"= {1000 * fast_seconds / partitions:6.1f} ms per partition", flush=True)
    began = time.perf_counter()
    forecast_tickers(data, targets, sessions, fast_config, workers=1)
    one_process_seconds = time.perf_counter() - began
    print(f"  fast, 1 process (reuse alone):      {one_process_seconds:7.1f} s "
          f"= {1000 * one_process_seconds / partitions:6.1f} ms per partition", flush=True)
    began = time.perf_counter()
    naive = forecast_tickers(data, targets, sessions, naive_config, workers=1).rows
    naive_seconds = time.perf_counter() - began
    print(f"  naive (refit every date, 1 process): {naive_seconds:7.1f} s "
          f"= {1000 * naive_seconds / partitions:6.1f} ms per partition")
    print(f"  ratio naive / fast: {naive_seconds / fast_seconds:.1f}x (target >= 4x); "
          f"from parameter reuse alone (1 process): {naive_seconds / one_process_seconds:.1f}x")

    outcomes = evaluation.realised_log_returns(everything, fast_config.horizons)
    print("  accuracy on the same origins (RMSE of the ensemble, 90% interval coverage):")
    for horizon in fast_config.horizons:
        (fast_rmse, fast_cover), (naive_rmse, naive_cover) = (
            accuracy(fast, outcomes, horizon), accuracy(naive, outcomes, horizon))
        print(f"    h={horizon:>2}: RMSE fast {fast_rmse:.5f} naive {naive_rmse:.5f} "
              f"(fast/naive {fast_rmse / naive_rmse:.4f}); coverage fast {fast_cover:.3f} naive {naive_cover:.3f}")
    short, long = (30, 120) if args.quick else (125, 500)
    print(f"  peak traced memory, fast path, one ticker: {short} dates {peak_memory_mib(short):.1f} MiB, "
          f"{long} dates {peak_memory_mib(long):.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
