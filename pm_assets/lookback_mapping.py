"""Dagster's MultiPartitionMapping with the same result, computed in time proportional to the
distinct upstream keys instead of (run partitions x lookback sessions).

Why: at the start of every asset step, Dagster 1.13 maps the run's whole partition range through
each upstream dependency's mapping to record input provenance
(`dagster/_core/execution/context/data_version_cache.py`, `fetch_external_input_asset_version_info`)
and then, past 100 upstream keys, throws the keys away and uses the upstream's latest event. The
built-in MultiPartitionMapping walks the lookback window once per date and builds one key per
(run partition, upstream session): for ts_forecasts (about 600 sessions back) over 50,000
partitions that is 30 million keys and minutes of a step's start, on every run however launched.
No setting skips it. This mapping groups the run's tickers by the dates they cover, maps each
group's dates once and builds only the distinct upstream keys (measured by
benchmarks/bench_scale.py's stepstart part; equality with the built-in is tested in
tests/test_lookback_mapping.py).

The class keeps the built-in's name and fields on purpose: Dagster serializes a mapping by class
name, so the webserver and daemon see (and reload) a plain MultiPartitionMapping; a subclass under
another name fails the code location's snapshot. tests/test_lookback_mapping.py round-trips the
repository snapshot to catch an upgrade that changes this. Shapes other than the project's (one
time dimension, the others by identity) fall back to the built-in.
"""

from __future__ import annotations

from collections import defaultdict

from dagster import (
    IdentityPartitionMapping,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    TimeWindowPartitionMapping,
    TimeWindowPartitionsDefinition,
    partition_loading_context,
)
from dagster import MultiPartitionMapping as BuiltinMultiPartitionMapping
from dagster._core.definitions.partitions.mapping.partition_mapping import UpstreamPartitionsResult
from dagster._core.definitions.partitions.subset.default import DefaultPartitionsSubset


class MultiPartitionMapping(BuiltinMultiPartitionMapping):
    """Dagster's MultiPartitionMapping, upstream keys computed per group of tickers sharing dates."""

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
        if downstream_subset is None or type(downstream_subset).__name__ == "AllPartitionsSubset":
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
