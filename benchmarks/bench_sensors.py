"""Cost of a signal_validation tick after downtime, against reading the same events alone.

A temporary SQLite instance gets a year of events for 20 tickers (prices and llm_signals, 5,000
each, as runless materializations); the sensor then ticks once over all of them (catching up
after downtime, its worst case) and is compared with the baseline of fetching those events from
the instance with the same calls and nothing else. Run: make bench-sensors
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
warnings.filterwarnings("ignore")

from dagster import AssetKey, AssetMaterialization, AssetRecordsFilter, build_sensor_context, instance_for_test  # noqa: E402

from pm_domain import calendar  # noqa: E402
from pm_sensors.signal_validation import MAX_EVENTS_PER_TICK, WATCHED, signal_validation_sensor  # noqa: E402

TICKERS = [f"T{i:02d}" for i in range(20)]
END = dt.date(2018, 12, 31)
SESSIONS = 250


def read_events(instance) -> int:
    """The baseline: every new event of the watched assets, read as the sensor reads them."""
    count = 0
    for asset in WATCHED:
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), after_storage_id=0), limit=MAX_EVENTS_PER_TICK,
            ascending=True).records
        count += len({r.partition_key for r in records})
    return count


def main() -> None:
    days = calendar.trading_days(calendar.shift_trading_days(END, -(SESSIONS - 1)), END)
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("tickers", TICKERS)
        began = time.perf_counter()
        for asset in ("prices", "llm_signals"):
            for day in days:
                for ticker in TICKERS:
                    instance.report_runless_asset_event(AssetMaterialization(asset_key=asset, partition=f"{day}|{ticker}"))
        print(f"setup: {2 * len(days) * len(TICKERS):,} events in {time.perf_counter() - began:.0f} s")

        baseline = []
        for _ in range(3):
            began = time.perf_counter()
            events = read_events(instance)
            baseline.append(time.perf_counter() - began)
        cursor = json.dumps({asset: 0 for asset in WATCHED})
        ticks = []
        for _ in range(3):
            began = time.perf_counter()
            data = signal_validation_sensor.evaluate_tick(build_sensor_context(instance=instance, cursor=cursor))
            ticks.append(time.perf_counter() - began)
        partitions = len(days) * len(TICKERS)
        print(f"{len(TICKERS)} tickers x {len(days)} sessions: {events:,} new events -> {len(data.run_requests)} run "
              f"request(s) for {partitions:,} outcome and backtest partitions")
        print(f"read the events alone (baseline): {min(baseline):.2f} s")
        print(f"one signal_validation tick:       {min(ticks):.2f} s = {min(ticks) / min(baseline):.1f}x the baseline "
              f"(Dagster's sensor timeout is 60 s)")


if __name__ == "__main__":
    main()
