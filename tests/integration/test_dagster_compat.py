"""pm_assets/dagster_compat.py against the installed Dagster: each part of the module has a test
here that fails when an upgrade breaks what it relies on (written against Dagster 1.13.27).

1. GroupedLookbackMapping maps exactly as Dagster's MultiPartitionMapping does, and still
   serializes (alone and in the repository snapshot the webserver and daemon load) as Dagster's.
2. pool_slot_usage / free_pool_slots read and free real slots of a real instance.
3. The backfill GraphQL documents validate against the installed webserver's schema.
4. The non-public instance methods still answer on a real instance.
"""

from __future__ import annotations

import os
import pickle
import random
import socket

import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    StaticPartitionsDefinition,
    TimeWindowPartitionMapping,
    asset,
    instance_for_test,
    materialize,
    partition_loading_context,
)
from dagster import MultiPartitionMapping as BuiltinMultiPartitionMapping

from pm_assets import dagster_compat as compat
from pm_assets.dagster_compat import GroupedLookbackMapping
from pm_assets.partitions import daily_ticker_partitions, lookback_mapping, trading_day_partitions

# --------------------------------------------------------------------------------------------
# 1. the lookback mapping

TICKERS = [f"T{i:02d}" for i in range(8)]
WINDOWS = [(-599, 0), (-59, 0), (2, 31), (0, 0)]


def mappings(start: int, end: int):
    dimensions = {
        "date": DimensionPartitionMapping("date", TimeWindowPartitionMapping(
            start_offset=start, end_offset=end, allow_nonexistent_upstream_partitions=True)),
        "ticker": DimensionPartitionMapping("ticker", IdentityPartitionMapping()),
    }
    return BuiltinMultiPartitionMapping(dimensions), GroupedLookbackMapping(dimensions)


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


def test_the_project_mappings_are_the_grouped_one():
    assert type(lookback_mapping(5)) is GroupedLookbackMapping
    assert isinstance(lookback_mapping(5), BuiltinMultiPartitionMapping)


def test_it_serializes_as_dagsters_mapping_and_still_pickles():
    """Dagster's serdes finds the serializer by the class's __name__: the mapping is written and
    read back as the built-in, with the same fields."""
    from dagster_shared.serdes import deserialize_value, serialize_value

    mapping = lookback_mapping(250)
    assert GroupedLookbackMapping.__name__ == BuiltinMultiPartitionMapping.__name__
    reloaded = deserialize_value(serialize_value(mapping), BuiltinMultiPartitionMapping)
    assert type(reloaded) is BuiltinMultiPartitionMapping
    assert reloaded.downstream_mappings_by_upstream_dimension == mapping.downstream_mappings_by_upstream_dimension
    assert type(pickle.loads(pickle.dumps(mapping))) is GroupedLookbackMapping


def test_the_repository_snapshot_carries_it_as_dagsters_mapping():
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import deserialize_value, serialize_value

    from pm_jobs.definitions import defs

    snapshot = deserialize_value(serialize_value(RepositorySnap.from_def(defs.get_repository_def())), RepositorySnap)
    lookbacks = [(node.asset_key.to_user_string(), edge.parent_asset_key.to_user_string(), edge.partition_mapping)
                 for node in snapshot.asset_nodes for edge in node.parent_edges
                 if isinstance(edge.partition_mapping, BuiltinMultiPartitionMapping)]
    assert ("ts_forecasts", "prices") in {(child, parent) for child, parent, _ in lookbacks}
    for _, _, mapping in lookbacks:  # reloaded as Dagster's own class, as the webserver sees it
        assert type(mapping) is BuiltinMultiPartitionMapping


def test_the_step_start_mapping_it_works_around_is_still_there():
    """When this fails, Dagster no longer maps every run partition through the upstream mapping
    at step start (or renamed its threshold): check whether GroupedLookbackMapping is still
    needed (benchmarks/bench_scale.py's stepstart part measures it) before adapting this test."""
    from dagster._core.execution.context import data_version_cache

    assert data_version_cache.SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD == 100
    assert hasattr(data_version_cache.DataVersionCache, "fetch_external_input_asset_version_info")


# --------------------------------------------------------------------------------------------
# 2. pool slots


def test_pool_slot_usage_and_free_pool_slots_on_a_real_instance():
    from dagster._core.test_utils import create_run_for_test

    with instance_for_test() as instance:
        runs = [create_run_for_test(instance, job_name="prices_job", status=DagsterRunStatus.STARTED) for _ in range(2)]
        storage = instance.event_log_storage  # setting a limit and claiming are the daemon's and the steps' part
        storage.initialize_concurrency_limit_to_default("duckdb")
        storage.set_concurrency_slots("duckdb", 2)
        for run in runs:
            assert storage.claim_concurrency_slot("duckdb", run.run_id, "prices").is_claimed
        assert compat.pool_slot_usage(instance) == [
            compat.PoolUsage("duckdb", 2, frozenset(run.run_id for run in runs))]

        compat.free_pool_slots(instance, runs[0].run_id)
        assert compat.pool_slot_usage(instance) == [compat.PoolUsage("duckdb", 2, frozenset({runs[1].run_id}))]
        compat.free_pool_slots(instance, runs[0].run_id)  # nothing held: nothing happens
        compat.free_pool_slots(instance, runs[1].run_id)
        assert compat.pool_slot_usage(instance) == [compat.PoolUsage("duckdb", 2, frozenset())]


def test_an_instance_without_pools_has_no_usage():
    with DagsterInstance.ephemeral() as instance:
        assert compat.pool_slot_usage(instance) == []


def test_ensure_pool_creates_the_row_at_the_default_and_keeps_a_set_limit():
    with instance_for_test() as instance:
        compat.ensure_pool(instance, "ollama")
        assert compat.pool_slot_usage(instance) == [compat.PoolUsage("ollama", 1, frozenset())]
        compat.set_pool_limit(instance, "ollama", 3)
        compat.ensure_pool(instance, "ollama")
        assert compat.pool_limit(instance, "ollama") == 3


# --------------------------------------------------------------------------------------------
# 3. the webserver's GraphQL


@pytest.fixture(scope="module")
def graphql_schema():
    from dagster_graphql.schema import create_schema

    return create_schema().graphql_schema


@pytest.mark.parametrize("name", sorted(compat.BACKFILL_QUERIES))
def test_the_backfill_queries_validate_against_the_installed_webserver_schema(graphql_schema, name):
    import graphql

    errors = graphql.validate(graphql_schema, graphql.parse(compat.BACKFILL_QUERIES[name]))
    assert not errors, [error.message for error in errors]


def test_the_schema_check_catches_a_field_dagster_does_not_have(graphql_schema):
    import graphql

    query = compat.RUN_FAILED_STEPS.replace("tags { key value }", "tags { key value } noSuchField")
    assert graphql.validate(graphql_schema, graphql.parse(query))


def test_an_unreachable_webserver_is_one_line_naming_it():
    from pm_jobs.backfill import BackfillError, backfill_progress

    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(compat.WebserverError, match=f"no Dagster webserver at {url}"):
        compat.webserver_graphql(url, compat.BACKFILL_STATUS, {"id": "x"}, timeout=5)
    with pytest.raises(BackfillError, match="start it with `make ui`"):
        backfill_progress(url, "x", timeout=5)


# --------------------------------------------------------------------------------------------
# 4. instance methods Dagster does not mark public

LETTERS = StaticPartitionsDefinition(["a", "b"])


@asset(partitions_def=LETTERS)
def lettered() -> None:
    return None


def test_the_instance_methods_answer_on_a_real_run():
    from dagster._core.test_utils import create_run_for_test

    with instance_for_test() as instance:
        result = materialize([lettered], instance=instance, partition_key="a")
        run_id = result.run_id
        assert compat.materialized_partitions(instance, "lettered") == {"a"}
        assert compat.run_step_successes(instance, run_id) == ["lettered"]
        starts = compat.run_events(instance, run_id, {DagsterEventType.RUN_START})
        assert [entry.dagster_event.pid for entry in starts] == [os.getpid()]

        compat.tag_run(instance, run_id, {"pm/test": "yes"})
        assert instance.get_run_by_id(run_id).tags["pm/test"] == "yes"

        stuck = create_run_for_test(instance, job_name="prices_job", status=DagsterRunStatus.STARTED)
        compat.mark_run_failed(instance, stuck, "released by a test")
        assert instance.get_run_by_id(stuck.run_id).status == DagsterRunStatus.FAILURE
        [failure] = compat.run_events(instance, stuck.run_id, {DagsterEventType.RUN_FAILURE})
        assert "released by a test" in failure.dagster_event.message


# --------------------------------------------------------------------------------------------
# 5. the reconstructable asset job (the cluster's runs)


def test_the_asset_job_rebuilds_in_another_process_from_its_pointer():
    from dagster._core.definitions.reconstruct import ReconstructableJob

    job = compat.reconstructable_asset_job("pm_jobs.definitions", "defs", [AssetKey("prices"), AssetKey("features")])
    rebuilt = ReconstructableJob.from_dict(job.to_dict())  # what a Celery worker receives
    assert {AssetKey("prices"), AssetKey("features")} <= set(rebuilt.get_definition().asset_layer.asset_graph.get_all_asset_keys())
