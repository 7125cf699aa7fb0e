"""pm_assets/lookback_mapping.py maps exactly as Dagster's MultiPartitionMapping does, and the
definitions still serialize it as Dagster's (the webserver and daemon load that snapshot)."""

from __future__ import annotations

import random

import pytest
from dagster import DimensionPartitionMapping, IdentityPartitionMapping, TimeWindowPartitionMapping, instance_for_test
from dagster import MultiPartitionMapping as BuiltinMultiPartitionMapping
from dagster import partition_loading_context

from pm_assets.lookback_mapping import MultiPartitionMapping
from pm_assets.partitions import daily_ticker_partitions, trading_day_partitions

TICKERS = [f"T{i:02d}" for i in range(8)]
WINDOWS = [(-599, 0), (-59, 0), (2, 31), (0, 0)]


def mappings(start: int, end: int):
    dimensions = {
        "date": DimensionPartitionMapping("date", TimeWindowPartitionMapping(
            start_offset=start, end_offset=end, allow_nonexistent_upstream_partitions=True)),
        "ticker": DimensionPartitionMapping("ticker", IdentityPartitionMapping()),
    }
    return BuiltinMultiPartitionMapping(dimensions), MultiPartitionMapping(dimensions)


def selections(dates: list[str]) -> dict[str, list[str]]:
    middle = dates.index("2020-01-02")
    rng = random.Random(1)
    return {
        "a rectangle": [f"{d}|{t}" for d in dates[middle:middle + 40] for t in TICKERS],
        "near the first session": [f"{d}|{t}" for d in dates[:25] for t in TICKERS[:3]],
        "near the last session": [f"{d}|{t}" for d in dates[-25:] for t in TICKERS[:2]],
        "scattered keys": rng.sample([f"{d}|{t}" for d in dates[middle:middle + 300] for t in TICKERS], 200),
        "a ticker not in the universe": [f"{d}|GONE" for d in dates[middle:middle + 5]],
    }


@pytest.mark.parametrize("window", WINDOWS, ids=[f"{s}..{e}" for s, e in WINDOWS])
def test_maps_exactly_as_dagsters_mapping(window):
    builtin, grouped = mappings(*window)
    dates = trading_day_partitions.get_partition_keys()
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("tickers", TICKERS)
        with partition_loading_context(dynamic_partitions_store=instance):
            for name, keys in selections(dates).items():
                subset = daily_ticker_partitions.empty_subset().with_partition_keys(keys)
                expected = builtin.get_upstream_mapped_partitions_result_for_partitions(
                    subset, daily_ticker_partitions, daily_ticker_partitions, dynamic_partitions_store=instance)
                got = grouped.get_upstream_mapped_partitions_result_for_partitions(
                    subset, daily_ticker_partitions, daily_ticker_partitions, dynamic_partitions_store=instance)
                assert set(got.partitions_subset.get_partition_keys()) == set(expected.partitions_subset.get_partition_keys()), name
                assert (set(got.required_but_nonexistent_subset.get_partition_keys())
                        == set(expected.required_but_nonexistent_subset.get_partition_keys())), name


def test_the_repository_snapshot_carries_it_as_dagsters_mapping():
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import deserialize_value, serialize_value

    from pm_jobs.definitions import defs

    snapshot = deserialize_value(serialize_value(RepositorySnap.from_def(defs.get_repository_def())), RepositorySnap)
    lookbacks = [(node.asset_key.to_user_string(), edge.parent_asset_key.to_user_string(), edge.partition_mapping)
                 for node in snapshot.asset_nodes for edge in node.parent_edges
                 if type(edge.partition_mapping).__name__ == "MultiPartitionMapping"]
    assert ("ts_forecasts", "prices") in {(child, parent) for child, parent, _ in lookbacks}
    for _, _, mapping in lookbacks:  # reloaded as Dagster's own class, as the webserver sees it
        assert type(mapping) is BuiltinMultiPartitionMapping
