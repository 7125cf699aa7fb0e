"""Every use of Dagster's private modules and internal or unstable APIs, in one place.

Written against Dagster 1.13.27. Nothing else in pm_* imports `dagster._*`, reaches into the
event-log storage or speaks the webserver's GraphQL: an upgrade that breaks one of these breaks
here, and tests/integration/test_dagster_compat.py says which. Each part names what it works
around; when an upgrade makes a part unnecessary, delete it and its test.

1. `GroupedLookbackMapping`: Dagster's MultiPartitionMapping computed per group of tickers
   (`dagster._core` partition-subset internals; Dagster serializes it under its own class name).
2. `pool_slot_usage`, `pool_limit`, `set_pool_limit`, `ensure_pool`, `free_pool_slots`: who holds
   the concurrency pools' slots, a pool's limit, creating a pool's row before runs race to, and
   freeing a dead run's (the event-log storage's concurrency methods, not Dagster's public API).
3. `webserver_graphql` and the backfill queries: what the UI's backfill dialog sends (the
   webserver's GraphQL schema, which Dagster versions with the UI, not as an API).
4. `materialized_partitions`, `run_events`, `run_step_successes`, `mark_run_failed`, `tag_run`:
   DagsterInstance methods the sensors and stages need that Dagster does not mark @public.
5. `reconstructable_asset_job`: the implicit job of some assets as a ReconstructableJob, which an
   executor that runs steps in other processes (the cluster's Celery workers) needs. Public
   `dagster.reconstructable` wraps a job-returning function in a repository of its own and refuses
   the implicit job's reserved name; this is what `dagster asset materialize` itself does
   (dagster/_cli/asset.py: the module's repository, then its implicit job for the assets).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpx
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    EventLogEntry,
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
    partition_loading_context,
)
from dagster import MultiPartitionMapping as BuiltinMultiPartitionMapping
from dagster._core.definitions.partitions.mapping.partition_mapping import UpstreamPartitionsResult
from dagster._core.definitions.partitions.subset.all import AllPartitionsSubset
from dagster._core.definitions.partitions.subset.default import DefaultPartitionsSubset

DAGSTER_VERSION = "1.13.27"  # the version every part below was written and tested against


# --------------------------------------------------------------------------------------------
# 1. The lookback mapping, computed per group of tickers
#
# Works around (Dagster 1.13.27, no upstream issue; the code path is dagster/_core/execution/
# context/data_version_cache.py, `fetch_external_input_asset_version_info`): at the start of every
# asset step Dagster maps the run's whole partition range through each upstream dependency's
# mapping to record input provenance, and then, past SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD
# (100) upstream keys, throws the keys away and uses the upstream's latest event (the limit came
# with dagster-io/dagster#14265, "a temporary limitation"). The built-in MultiPartitionMapping
# walks the lookback window once per date and builds one key per (run partition, upstream
# session): for ts_forecasts (about 600 sessions back) over 50,000 partitions that is 30 million
# keys and minutes of a step's start, on every run however launched. No setting skips it. This
# mapping groups the run's tickers by the dates they cover, maps each group's dates once and builds
# only the distinct upstream keys (measured by benchmarks/bench_scale.py's stepstart part).
#
# Private imports: UpstreamPartitionsResult (what a mapping returns), DefaultPartitionsSubset (the
# nonexistent keys) and AllPartitionsSubset (a subset this mapping leaves to the built-in).
# Shapes other than the project's (one time dimension, the others by identity) fall back to the
# built-in. tests/integration/test_dagster_compat.py checks equal results with the built-in and
# the round trip through Dagster's serdes.


class GroupedLookbackMapping(BuiltinMultiPartitionMapping):
    """Dagster's MultiPartitionMapping with the same result, upstream keys computed per group of
    tickers sharing dates: time proportional to the distinct upstream keys instead of (run
    partitions x lookback sessions)."""

    def get_upstream_mapped_partitions_result_for_partitions(
        self, downstream_partitions_subset, downstream_partitions_def, upstream_partitions_def,
        current_time=None, dynamic_partitions_store=None,
    ):
        with partition_loading_context(current_time, dynamic_partitions_store):
            grouped = self._grouped_upstream(downstream_partitions_subset, downstream_partitions_def,
                                             upstream_partitions_def)
        if grouped is not None:
            return grouped
        return super().get_upstream_mapped_partitions_result_for_partitions(
            downstream_partitions_subset, downstream_partitions_def, upstream_partitions_def,
            current_time, dynamic_partitions_store)

    def _grouped_upstream(self, downstream_subset, downstream_def, upstream_def) -> UpstreamPartitionsResult | None:
        shape = self._time_and_identity_dimensions(downstream_subset, downstream_def, upstream_def)
        if shape is None:
            return None
        time_dimension, identity_dimensions = shape
        window_mapping = self.downstream_mappings_by_upstream_dimension[time_dimension].partition_mapping
        time_def = upstream_def.get_partitions_def_for_dimension(time_dimension)
        downstream_time_def = downstream_def.get_partitions_def_for_dimension(time_dimension)

        dates_by_identity: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for key in downstream_subset.get_partition_keys():
            by_dimension = downstream_def.get_partition_key_from_str(key).keys_by_dimension
            dates_by_identity[tuple(by_dimension[d] for d in identity_dimensions)].add(by_dimension[time_dimension])
        existing = [set(upstream_def.get_partitions_def_for_dimension(d).get_partition_keys()) for d in identity_dimensions]
        nonexistent: set[str] = set()
        upstream_keys = set()
        identities_by_dates: dict[frozenset[str], list[tuple[str, ...]]] = defaultdict(list)
        unknown_keys = []
        for identity, dates in dates_by_identity.items():
            if all(value in known for value, known in zip(identity, existing, strict=True)):
                identities_by_dates[frozenset(dates)].append(identity)
            else:  # a ticker upstream does not have (removed from the universe): Dagster's own answer
                unknown_keys += [MultiPartitionKey({**dict(zip(identity_dimensions, identity, strict=True)),
                                                    time_dimension: day}) for day in dates]
        if unknown_keys:
            builtin = super().get_upstream_mapped_partitions_result_for_partitions(
                downstream_def.empty_subset().with_partition_keys(unknown_keys), downstream_def, upstream_def)
            upstream_keys.update(builtin.partitions_subset.get_partition_keys())
            nonexistent.update(builtin.required_but_nonexistent_subset.get_partition_keys())

        for dates, identities in identities_by_dates.items():
            mapped = window_mapping.get_upstream_mapped_partitions_result_for_partitions(
                downstream_time_def.empty_subset().with_partition_keys(dates), downstream_time_def, time_def)
            nonexistent.update(mapped.required_but_nonexistent_subset.get_partition_keys())
            upstream_dates = list(mapped.partitions_subset.get_partition_keys())
            for identity in identities:
                fixed = dict(zip(identity_dimensions, identity, strict=True))
                upstream_keys.update(MultiPartitionKey({**fixed, time_dimension: day}) for day in upstream_dates)
        return UpstreamPartitionsResult(
            partitions_subset=upstream_def.empty_subset().with_partition_keys(upstream_keys),
            required_but_nonexistent_subset=DefaultPartitionsSubset(nonexistent),
        )

    def _time_and_identity_dimensions(self, downstream_subset, downstream_def, upstream_def):
        """(the time dimension, the identity dimensions) when the mapping has the project's shape
        between two multi-partitioned assets with the same dimension names; else None."""
        if not (isinstance(downstream_def, MultiPartitionsDefinition) and isinstance(upstream_def, MultiPartitionsDefinition)):
            return None
        if downstream_subset is None or isinstance(downstream_subset, AllPartitionsSubset):
            return None
        mappings = self.downstream_mappings_by_upstream_dimension
        names = set(upstream_def.partition_dimension_names)
        if set(mappings) != names or set(downstream_def.partition_dimension_names) != names:
            return None
        if any(m.dimension_name != upstream for upstream, m in mappings.items()):
            return None
        time = [d for d, m in mappings.items() if isinstance(m.partition_mapping, TimeWindowPartitionMapping)]
        identity = tuple(d for d, m in mappings.items() if isinstance(m.partition_mapping, IdentityPartitionMapping))
        if len(time) != 1 or len(identity) != len(mappings) - 1:
            return None
        if not all(isinstance(d.get_partitions_def_for_dimension(time[0]), TimeWindowPartitionsDefinition)
                   for d in (downstream_def, upstream_def)):
            return None
        return time[0], identity


# Dagster's serdes (dagster_shared/serdes/serdes.py, Dagster 1.13.27) finds a value's serializer
# by `value.__class__.__name__`, and only whitelisted names serialize: under its own name this
# class would fail the code location's snapshot. Answering to the built-in's name, it is written
# (and reloaded by the webserver and daemon, which never import this module) as a plain
# MultiPartitionMapping with the same fields. `__qualname__` stays GroupedLookbackMapping, so
# pickle still finds the class in this module.
GroupedLookbackMapping.__name__ = BuiltinMultiPartitionMapping.__name__


# --------------------------------------------------------------------------------------------
# 2. Pool slots
#
# Works around dagster-io/dagster#28456 (a cancelled or killed run keeps its concurrency-pool
# slot) for the runs this project makes, which Dagster 1.13.27's run monitoring and its
# `free_slots_after_run_end_seconds` (dagster-io/dagster#32560) do not watch: in-process
# `pm materialize`, `dagster asset materialize`, the default run launcher. The stranded_runs
# sensor and `pm runs slots|release` read and free the slots through these two functions; they
# call the event-log storage's concurrency methods (get_concurrency_keys, get_concurrency_info,
# free_concurrency_slots_for_run), which are not marked @public in Dagster.


@dataclass(frozen=True)
class PoolUsage:
    """One concurrency pool: its slot limit and the runs holding a slot of it."""

    pool: str
    limit: int
    holders: frozenset[str]


def pool_slot_usage(instance: DagsterInstance) -> list[PoolUsage]:
    """Every pool the instance knows (one appears once a step of it ran), by name."""
    storage = instance.event_log_storage
    usage = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        usage.append(PoolUsage(pool, info.slot_count, frozenset(info.active_run_ids)))
    return usage


def pool_limit(instance: DagsterInstance, pool: str) -> int:
    """How many steps of `pool` may run at once (the instance's default for a pool not yet used)."""
    storage = instance.event_log_storage
    if pool in storage.get_concurrency_keys():
        return storage.get_concurrency_info(pool).slot_count
    return storage.get_pool_config().default_pool_limit or 1


def set_pool_limit(instance: DagsterInstance, pool: str, limit: int) -> None:
    """What `dagster instance concurrency set POOL LIMIT` does."""
    instance.event_log_storage.set_concurrency_slots(pool, limit)


def ensure_pool(instance: DagsterInstance, pool: str) -> None:
    """Give `pool` its row at the instance's default limit if it has none yet. Dagster creates the
    row when a step first takes a slot of the pool; two runs doing so at once on PostgreSQL collide
    on its unique key (`UniqueViolation ... concurrency_limits_concurrency_key_key`, which failed
    one of two `pm materialize --parallel 2` shares at their first LLM stage, Dagster 1.13.27)."""
    if pool not in instance.event_log_storage.get_concurrency_keys():
        set_pool_limit(instance, pool, pool_limit(instance, pool))


def free_pool_slots(instance: DagsterInstance, run_id: str) -> None:
    """Free every pool slot the run holds (nothing when it holds none)."""
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


# --------------------------------------------------------------------------------------------
# 3. The webserver's GraphQL
#
# `pm backfill` launches and follows an asset backfill as the UI's backfill dialog does: there is
# no public Python API that makes the webserver record a backfill for the daemon to split into
# runs (Dagster 1.13.27). The queries are written against the GraphQL schema of dagster-webserver
# 1.13.27 (dagster_graphql.schema); tests/integration/test_dagster_compat.py validates each one
# against the installed schema.

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""

BACKFILL_STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      error { message }
      runs { runId status }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
    ... on Error { message }
  }
}"""

RUN_FAILED_STEPS = """
query FailedSteps($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      tags { key value }
      eventConnection(limit: 5000) {
        events {
          __typename
          ... on ExecutionStepFailureEvent { stepKey error { className message cause { className message
            cause { className message cause { className message } } } } }
          ... on RunFailureEvent { message }
        }
      }
    }
  }
}"""

BACKFILL_QUERIES = {"launch": LAUNCH_BACKFILL, "status": BACKFILL_STATUS, "failed_steps": RUN_FAILED_STEPS}


class WebserverError(RuntimeError):
    """The webserver could not be reached, or answered with an HTTP or GraphQL error."""


def webserver_graphql(url: str, query: str, variables: Mapping[str, object], timeout: float) -> dict:
    """POST one GraphQL document to the webserver at `url`; its `data`, or WebserverError."""
    try:
        response = httpx.post(f"{url.rstrip('/')}/graphql", json={"query": query, "variables": variables},
                              timeout=timeout)
    except httpx.HTTPError as exc:
        raise WebserverError(f"no Dagster webserver at {url} ({type(exc).__name__}: {exc}); start it with `make ui`") from exc
    if response.status_code != 200:
        raise WebserverError(f"{url}/graphql answered HTTP {response.status_code}: {response.text[:300]}")
    body = response.json()
    if body.get("errors"):
        raise WebserverError(f"GraphQL error: {body['errors'][0].get('message')}")
    return body["data"]


# --------------------------------------------------------------------------------------------
# 4. Instance methods Dagster does not mark @public
#
# Not workarounds of a bug: DagsterInstance methods the project needs that Dagster 1.13.27 has
# no @public equivalent for (its public surface is fetch_materializations, get_run_by_id,
# get_dynamic_partitions ...). tests/integration/test_dagster_compat.py runs each against a real
# instance.


def materialized_partitions(instance: DagsterInstance, asset: AssetKey | str) -> set[str]:
    """The partition keys of `asset` that have a materialization."""
    return set(instance.get_materialized_partitions(AssetKey.from_coercible(asset)))


def run_events(instance: DagsterInstance, run_id: str,
               of_type: Iterable[DagsterEventType]) -> Sequence[EventLogEntry]:
    """The run's events of the given types, oldest first."""
    return instance.all_logs(run_id, of_type=set(of_type))


def run_step_successes(instance: DagsterInstance, run_id: str) -> list[str]:
    """The step keys of the run's successful steps (a run's steps are few, whatever its partitions)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_SUCCESS).records
    return [record.event_log_entry.step_key for record in records]


def mark_run_failed(instance: DagsterInstance, run: DagsterRun, message: str) -> None:
    """Record a RUN_FAILURE event saying `message`: the run then shows FAILURE."""
    instance.report_run_failed(run, message)


def tag_run(instance: DagsterInstance, run_id: str, tags: Mapping[str, str]) -> None:
    """Add tags to a run (existing keys are overwritten)."""
    instance.add_run_tags(run_id, dict(tags))


def reconstructable_asset_job(module: str, attribute: str, assets: Sequence[AssetKey]):
    """The implicit asset job of `module.attribute` (a Definitions) that covers `assets` (which
    pm_jobs.selection has checked are partitioned alike), reconstructable in another process by
    importing `module` there."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository.for_module(module, attribute)
    return repository.get_reconstructable_job(repository.get_definition().get_implicit_job_def_for_assets(list(assets)).name)
