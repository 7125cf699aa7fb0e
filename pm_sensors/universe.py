"""watchlist_sync: the watchlist file becomes the ticker dimension, so the next nightly run
includes a ticker added there.

It only adds. A ticker taken out of the file stays in the universe (it may have been added in
the UI, and its history stays stored either way); `pm tickers remove` or the UI takes it out.
"""

from __future__ import annotations

import hashlib

from dagster import AddDynamicPartitionsRequest, DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from pm_assets.partitions import TICKERS_PARTITIONS_NAME
from pm_domain import settings
from pm_domain.tickers import read_watchlist


@sensor(
    name="watchlist_sync",
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds every ticker of the watchlist file (PM_WATCHLIST, default data/watchlist.txt) "
    "to the ticker partitions; never removes one.",
)
def watchlist_sync_sensor(context: SensorEvaluationContext):
    path = settings.watchlist_path()
    if not path.exists():
        return SkipReason(f"no watchlist file at {path}")
    content = path.read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    # A malformed line raises TickerError naming the file and the value: the tick fails visibly
    # in the UI and nothing is added until the file is fixed.
    watchlist = read_watchlist(path)
    known = set(context.instance.get_dynamic_partitions(TICKERS_PARTITIONS_NAME))
    new = [ticker for ticker in watchlist if ticker not in known]
    absent = sorted(known - set(watchlist))
    if absent and digest != context.cursor:
        context.log.info(f"in the universe but not in {path.name} (kept; `pm tickers remove` takes them out): "
                         f"{', '.join(absent[:20])}")
    if not new:
        return SensorResult(skip_reason=SkipReason(f"{path.name}: {len(watchlist)} ticker(s), none new"),
                            cursor=digest)
    context.log.info(f"adding {len(new)} ticker(s) from {path}: {', '.join(new)}")
    return SensorResult(
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(TICKERS_PARTITIONS_NAME, new)],
        cursor=digest,
    )
