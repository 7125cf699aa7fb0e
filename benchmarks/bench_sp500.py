"""The S&P 500 on one machine: 500 synthetic tickers on the large-backfill instance, LLM stages in
fallback mode.

(range)   500 tickers x SESSIONS sessions through every stage, one in-process run per stage, each
          stage's wall time split into its own work (`run_compute_seconds`) and Dagster's; then the
          linear extrapolation to 2,520 sessions (10 years) per stage.
(nightly) the next session: the schedule's daily_research run through `dagster job execute` (a run
          process, as the daemon launches one), then the signal_validation tick and the runs it
          requests (their asset selection as the op selection), started as the daemon's queue does;
          launch to the last materialization.
(ui)      the UI at 500 tickers x every session from PM_START_DATE of `prices` (more than 2,520):
          the Partitions page, Lineage and the sensor's tick, through benchmarks/bench_ceiling.py.

The 100-ticker night is `make bench-scale` (part `nightly`); the LLM stages against one and two
real-model servers are `make bench-llm-parallel`.

    make bench-sp500                              # range of 20 sessions, nightly
    .venv/bin/python benchmarks/bench_sp500.py --sessions 2520 --parts range   # the full range: hours
    .venv/bin/python benchmarks/bench_sp500.py --parts ui                      # ~20 minutes more
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_scale import (  # noqa: E402
    GRAPH_STAGES,
    TS_CONFIG,
    base_env,
    large_instance,
    run_in_process,
    tickers_named,
    time_night,
)

FULL_SESSIONS = 2520


def dates(sessions: int):
    """(first price, first research date, last research date, the night)."""
    from pm_assets.ts_forecasts import LOOKBACK_SESSIONS
    from pm_domain import calendar

    night = calendar.last_closed_session(dt.datetime.now(dt.UTC))
    end = calendar.shift_trading_days(night, -1)
    start = calendar.shift_trading_days(end, -(sessions - 1))
    return calendar.shift_trading_days(start, -(LOOKBACK_SESSIONS + 5)), start, end, night


def bench_range(n_tickers: int, sessions: int) -> list[tuple[str, int, float, float]]:
    from dagster import DagsterInstance

    tickers = tickers_named(n_tickers)
    first_price, start, end, _ = dates(sessions)
    print(f"\n(range) {n_tickers} tickers x {sessions} sessions {start}..{end} (prices from {first_price}: "
          "the forecasts' lookback), one in-process run per stage", flush=True)
    print(f"    {'stage':<20} {'partitions':>10} {'wall':>9} {'own work':>9} {'Dagster':>9} {'ms/partition':>13}",
          flush=True)
    rows = []
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tickers", tickers)
        for assets in GRAPH_STAGES:
            asset = assets[0]
            by_ticker = asset != "portfolio_backtests"
            wall, own, partitions, _ = run_in_process(
                instance, assets, tickers if by_ticker else None, str(first_price if asset == "prices" else start),
                str(end), TS_CONFIG if asset == "ts_forecasts" else None)
            rows.append((asset, partitions, wall, own))
            print(f"    {asset:<20} {partitions:>10,} {wall:>8.1f}s {own:>8.1f}s {wall - own:>8.1f}s "
                  f"{1000 * (wall - own) / max(partitions, 1):>12.2f}", flush=True)
    total = sum(r[2] for r in rows)
    print(f"    {'all stages':<20} {'':>10} {total:>8.1f}s", flush=True)
    return rows


def extrapolate(rows: list[tuple[str, int, float, float]], n_tickers: int, sessions: int) -> None:
    """Each stage's own work and Dagster share scaled by partitions to 2,520 sessions."""
    scale = FULL_SESSIONS / sessions
    print(f"\n    linear extrapolation to {n_tickers} x {FULL_SESSIONS:,} sessions (prices: + the lookback). An upper "
          "bound: a short range's per-partition figures carry each run's fixed costs (step start, and for "
          "ts_forecasts each ticker's warm-up fits), which a long range pays once:")
    total_own = total_dagster = 0.0
    for asset, partitions, wall, own in rows:
        # prices also covers the lookback before the range, which does not grow with it
        full = partitions + n_tickers * (FULL_SESSIONS - sessions) if asset == "prices" else partitions * scale
        own_full = own * full / partitions
        dagster_full = (wall - own) * full / partitions
        total_own += own_full
        total_dagster += dagster_full
        print(f"    {asset:<20} {full:>12,.0f} partitions  own {own_full / 60:6.1f} min  Dagster {dagster_full / 60:6.1f} min",
              flush=True)
    print(f"    {'all stages':<20} {'':>12}             own {total_own / 60:6.1f} min  Dagster {total_dagster / 60:6.1f} min"
          f"  = {(total_own + total_dagster) / 3600:.1f} h in one process (target: under 1 h)", flush=True)


def bench_night(n_tickers: int, sessions: int) -> None:
    """The night after the range: its prices, then the night as bench-scale times it."""
    from dagster import DagsterInstance

    _, _, _, night = dates(sessions)
    print(f"\n(nightly) {n_tickers} tickers x 1 date ({night}), after the range above", flush=True)
    with DagsterInstance.get() as instance:
        run_in_process(instance, ["prices"], tickers_named(n_tickers), str(night), str(night))  # as the range's
        time_night(instance, night, dict(os.environ), "under 2 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="range,nightly", help="range,nightly and/or ui")
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=20, help="sessions of the range part (2520: 10 years)")
    parser.add_argument("--run-part", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_part == "range+nightly":
        parts = args.parts.split(",")
        if "range" in parts:
            extrapolate(bench_range(args.tickers, args.sessions), args.tickers, args.sessions)
        if "nightly" in parts:
            bench_night(args.tickers, args.sessions)
        return
    parts = args.parts.split(",")
    began = time.perf_counter()
    if {"range", "nightly"} & set(parts):
        first_price = dates(args.sessions)[0]
        with tempfile.TemporaryDirectory() as tmp, large_instance(Path(tmp)) as (home, settings):
            env = base_env(Path(tmp)) | {k: v for k, v in settings.items() if k != "PM_DUCKDB_PATH"} | {
                "DAGSTER_HOME": str(home), "PM_START_DATE": str(first_price)}
            command = [sys.executable, __file__, "--run-part", "range+nightly", "--parts", args.parts,
                       "--tickers", str(args.tickers), "--sessions", str(args.sessions)]
            if subprocess.run(command, env=env, timeout=6 * 3600).returncode != 0:
                raise SystemExit("bench-sp500: the range/nightly part failed")
    if "ui" in parts:
        from pm_assets.partitions import trading_day_partitions

        sessions = len(trading_day_partitions.get_partition_keys())
        partitions = args.tickers * sessions
        command = [sys.executable, str(ROOT / "benchmarks" / "bench_ceiling.py"), "--sizes", str(partitions),
                   "--listed-up-to", "0", "--backfill-up-to", "0"]
        print(f"\n(ui) {args.tickers} tickers x {sessions:,} sessions of prices (every partition from PM_START_DATE) "
              f"= {partitions:,} partitions", flush=True)
        if subprocess.run(command, timeout=6 * 3600).returncode != 0:
            raise SystemExit("bench-sp500: the ui part failed")
    print(f"\nbench-sp500: {time.perf_counter() - began:.0f} s in all")


if __name__ == "__main__":
    main()
