"""Foundation benchmark: prints ratios against baselines run in this same process.

(a) features for 500 synthetic tickers x 1,260 days: pm_domain.features (polars) vs a
    straightforward pandas groupby implementation of the same indicators (target >= 3x).
(b) prices + features for 20 tickers x 250 trading days in one single-run backfill vs one
    partition, on a temporary SQLite-backed Dagster instance like the project's own (target <= 3x),
    with the time split between the project's code and Dagster's per-partition bookkeeping.

Run: make bench   (or .venv/bin/python benchmarks/bench_foundation.py [--quick])
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from benchmarks.pandas_features import compute_features_pandas  # noqa: E402
from pm_domain.calendar import trading_days  # noqa: E402
from pm_domain.features import compute_features  # noqa: E402
from pm_domain.price_sources import fetch_synthetic  # noqa: E402


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def bench_features(n_tickers: int, n_days: int) -> None:
    end = dt.date(2018, 12, 31)
    days = trading_days(dt.date(2010, 1, 4), end)[-n_days:]
    prices = fetch_synthetic([f"SYN{i:03d}" for i in range(n_tickers)], days[0], end)
    frame = prices.to_pandas()
    polars_s = best_of(3, lambda: compute_features(prices))
    pandas_s = best_of(3, lambda: compute_features_pandas(frame))
    print(f"(a) features, {n_tickers} tickers x {n_days} days = {prices.height:,} rows")
    print(f"    pandas groupby baseline {pandas_s:8.3f} s")
    print(f"    project (polars)        {polars_s:8.3f} s")
    print(f"    speed-up                {pandas_s / polars_s:8.1f}x   (target >= 3x)")


def bench_single_run_backfill(n_tickers: int, n_days: int) -> None:
    from dagster import DagsterInstance, materialize
    from dagster_duckdb import DuckDBResource

    import duckdb
    from pm_assets import features, prices
    from pm_assets.partitions import range_tags
    from pm_resources.price_source import PriceSourceResource
    from pm_resources.store import replace_partitions

    tickers = [f"SYN{i:03d}" for i in range(n_tickers)]
    days = trading_days(dt.date(2018, 1, 2), dt.date(2018, 12, 31))[-n_days:]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        instance = DagsterInstance.local_temp(str(home))  # SQLite run and event storage, as on disk
        instance.add_dynamic_partitions("tickers", tickers)

        def materialize_rectangle(db: str, first: str, last: str, start: dt.date, end: dt.date) -> None:
            result = materialize(
                [prices, features], instance=instance,
                resources={"duckdb": DuckDBResource(database=db),
                           "price_source": PriceSourceResource(source="synthetic")},
                tags=range_tags([first, last], str(start), str(end)),
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            )
            assert result.success

        warm_db = str(Path(tmp) / "warm.duckdb")
        materialize_rectangle(warm_db, tickers[0], tickers[0], days[0], days[0])  # imports, caches

        single_db = str(Path(tmp) / "single.duckdb")
        single_s = best_of(3, lambda: materialize_rectangle(single_db, tickers[0], tickers[0], days[-1], days[-1]))

        range_db = str(Path(tmp) / "range.duckdb")
        began = time.perf_counter()
        materialize_rectangle(range_db, tickers[0], tickers[-1], days[0], days[-1])
        range_s = time.perf_counter() - began

        def project_code_only() -> None:  # the same work with no Dagster: fetch, compute, write
            rows = fetch_synthetic(tickers, days[0], days[-1])
            with duckdb.connect(str(Path(tmp) / "plain.duckdb")) as conn:
                replace_partitions(conn, "prices", rows, tickers, days)
                replace_partitions(conn, "features", compute_features(rows), tickers, days)

        code_s = best_of(3, project_code_only)

    partitions = n_tickers * n_days
    print(f"\n(b) prices + features, {n_tickers} tickers x {n_days} trading days = {partitions:,} partitions per asset")
    print(f"    one partition, one run            {single_s:8.2f} s")
    print(f"    whole range, one single-run       {range_s:8.2f} s")
    print(f"    ratio range / single              {range_s / single_s:8.1f}x  (target <= 3x)")
    print(f"    one in-process run per partition  {partitions * single_s:8.0f} s (estimated; daemon-launched "
          f"runs cost seconds more each) -> single-run is {partitions * single_s / range_s:,.0f}x faster")
    print(f"    of the range run: project code    {code_s:8.2f} s (fetch, indicators, DuckDB writes)")
    print(f"                      Dagster         {range_s - code_s:8.2f} s = "
          f"{1000 * (range_s - code_s - single_s) / (2 * partitions):.1f} ms per partition per asset "
          "(planned and materialization events in the SQLite event log)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        bench_features(50, 300)
        bench_single_run_backfill(2, 20)
    else:
        bench_features(500, 1260)
        bench_single_run_backfill(20, 250)


if __name__ == "__main__":
    main()
