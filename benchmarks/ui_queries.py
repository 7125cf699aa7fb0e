"""The GraphQL operations the Dagster 1.13 UI sends, as the browser sends them (with the
`__typename` fields Apollo adds), for benchmarks/bench_ceiling.py to time what a user waits for.

Taken from the UI bundle shipped in dagster-webserver 1.13.27 (webapp/build/_next/static/chunks,
whose source maps name the ui-core files) with fragments expanded, and checked against
dagster_graphql's schema (tests/e2e/test_large_instance.py validates them, so an upgrade that changes
the schema says so). The UI POSTs them to <base>/graphql?op=<OperationName> as
{"operationName", "variables", "query"}.
"""

# Catalog -> asset -> Partitions: the query that carries each partition's status
# (ui-core/src/assets/usePartitionHealthData.tsx); re-sent when the asset's live data changes.
PARTITION_HEALTH_QUERY = """\
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension {
        name
        type
        partitionKeys
        __typename
      }
      assetPartitionStatuses {
        ... on TimePartitionStatuses {
          ranges {
            status
            startTime
            endTime
            startKey
            endKey
            __typename
          }
          __typename
        }
        ... on DefaultPartitionStatuses {
          materializedPartitions
          materializingPartitions
          failedPartitions
          __typename
        }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey
            primaryDimEndKey
            primaryDimStartTime
            primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses {
                ranges {
                  status
                  startTime
                  endTime
                  startKey
                  endKey
                  __typename
                }
                __typename
              }
              ... on DefaultPartitionStatuses {
                materializedPartitions
                materializingPartitions
                failedPartitions
                __typename
              }
              __typename
            }
            __typename
          }
          __typename
        }
        __typename
      }
      __typename
    }
    __typename
  }
}
"""

# Lineage: the graph's nodes and edges, once per code location
# (LocationWorkspaceAssetsQuery, ui-core/src/workspace/WorkspaceContext).
ASSET_GRAPH_QUERY = """\
query LocationWorkspaceAssetsQuery($name: String!) {
  workspaceLocationEntryOrError(name: $name) {
    ...WorkspaceLocationAssetsEntry
    ...PythonErrorFragment
    __typename
  }
}

fragment WorkspaceLocationAssetsEntry on WorkspaceLocationEntry {
  id
  name
  loadStatus
  updatedTimestamp
  versionKey
  locationOrLoadError {
    ... on RepositoryLocation {
      id
      ...WorkspaceLocationAssets
      __typename
    }
    ...PythonErrorFragment
    __typename
  }
  __typename
}

fragment PythonErrorFragment on PythonError {
  message
  stack
  errorChain {
    ...PythonErrorChain
    __typename
  }
  __typename
}

fragment WorkspaceLocationAssets on RepositoryLocation {
  id
  name
  repositories {
    id
    ...WorkspaceRepositoryAssets
    __typename
  }
  __typename
}

fragment PythonErrorChain on ErrorChainLink {
  isExplicitLink
  error {
    message
    stack
    __typename
  }
  __typename
}

fragment WorkspaceRepositoryAssets on Repository {
  id
  name
  assetNodes {
    id
    ...RepositoryAsset
    __typename
  }
  assetGroups {
    ...WorkspaceAssetGroup
    __typename
  }
  __typename
}

fragment RepositoryAsset on AssetNode {
  id
  ...AssetBaseNodeFragment
  graphName
  dependencyKeys {
    path
    __typename
  }
  __typename
}

fragment WorkspaceAssetGroup on AssetGroup {
  id
  groupName
  __typename
}

fragment AssetBaseNodeFragment on AssetNode {
  id
  changedReasons
  groupName
  opNames
  isMaterializable
  isObservable
  isExecutable
  isPartitioned
  isAutoCreatedStub
  hasAssetChecks
  computeKind
  hasMaterializePermission
  hasWipePermission
  hasReportRunlessAssetEventPermission
  assetKey {
    path
    __typename
  }
  internalFreshnessPolicy {
    ...FreshnessPolicyFragment
    __typename
  }
  partitionDefinition {
    dimensionTypes {
      type
      dynamicPartitionsDefinitionName
      __typename
    }
    __typename
  }
  automationCondition {
    __typename
  }
  description(characterLimit: 240)
  owners {
    ... on UserAssetOwner {
      email
      __typename
    }
    ... on TeamAssetOwner {
      team
      __typename
    }
    __typename
  }
  tags {
    key
    value
    __typename
  }
  storageAddress {
    storageKind
    tableName
    __typename
  }
  jobNames
  kinds
  __typename
}

fragment FreshnessPolicyFragment on InternalFreshnessPolicy {
  ... on TimeWindowFreshnessPolicy {
    failWindowSeconds
    warnWindowSeconds
    __typename
  }
  ... on CronFreshnessPolicy {
    deadlineCron
    lowerBoundDeltaSeconds
    timezone
    __typename
  }
  __typename
}
"""

# Lineage: each node's live status, at most 10 asset keys a request (AssetGraphLiveQuery).
ASSET_GRAPH_LIVE_QUERY = """\
query AssetGraphLiveQuery($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys, loadMaterializations: true) {
    id
    ...AssetNodeLiveFragment
    __typename
  }
  assetsLatestInfo(assetKeys: $assetKeys) {
    id
    ...AssetLatestInfoFragment
    __typename
  }
}

fragment AssetNodeLiveFragment on AssetNode {
  id
  opNames
  repository {
    id
    __typename
  }
  assetKey {
    path
    __typename
  }
  assetMaterializations(limit: 1) {
    ...AssetNodeLiveMaterialization
    __typename
  }
  assetObservations(limit: 1) {
    ...AssetNodeLiveObservation
    __typename
  }
  assetChecksOrError {
    ... on AssetChecks {
      checks {
        ...AssetCheckLiveFragment
        __typename
      }
      __typename
    }
    __typename
  }
  partitionStats {
    numMaterialized
    numMaterializing
    numPartitions
    numFailed
    __typename
  }
  __typename
}

fragment AssetLatestInfoFragment on AssetLatestInfo {
  id
  assetKey {
    path
    __typename
  }
  unstartedRunIds
  inProgressRunIds
  latestRun {
    id
    ...AssetLatestInfoRun
    __typename
  }
  __typename
}

fragment AssetNodeLiveMaterialization on MaterializationEvent {
  timestamp
  runId
  stepKey
  __typename
}

fragment AssetNodeLiveObservation on ObservationEvent {
  timestamp
  runId
  stepKey
  __typename
}

fragment AssetCheckLiveFragment on AssetCheck {
  name
  canExecuteIndividually
  executionForLatestMaterialization {
    id
    runId
    status
    timestamp
    stepKey
    evaluation {
      severity
      __typename
    }
    __typename
  }
  partitionDefinition {
    name
    description
    __typename
  }
  partitionStatuses {
    ... on AssetCheckDefaultPartitionStatuses {
      succeededPartitions
      failedPartitions
      inProgressPartitions
      skippedPartitions
      executionFailedPartitions
      __typename
    }
    ... on AssetCheckTimePartitionStatuses {
      ranges {
        startKey
        endKey
        status
        __typename
      }
      __typename
    }
    ... on AssetCheckMultiPartitionStatuses {
      primaryDimensionName
      ranges {
        primaryDimStartKey
        primaryDimEndKey
        secondaryDim {
          ... on AssetCheckDefaultPartitionStatuses {
            succeededPartitions
            failedPartitions
            inProgressPartitions
            skippedPartitions
            executionFailedPartitions
            __typename
          }
          ... on AssetCheckTimePartitionStatuses {
            ranges {
              startKey
              endKey
              status
              __typename
            }
            __typename
          }
          __typename
        }
        __typename
      }
      __typename
    }
    __typename
  }
  __typename
}

fragment AssetLatestInfoRun on Run {
  status
  startTime
  endTime
  id
  __typename
}
"""

# Materialize -> partitions -> Launch backfill (LaunchPartitionBackfill); the UI expands
# the selected range into explicit partition keys (`partitionNames`).
LAUNCH_BACKFILL_MUTATION = """\
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    ... on LaunchBackfillSuccess {
      backfillId
      __typename
    }
    ... on PartitionSetNotFoundError {
      message
      __typename
    }
    ... on PartitionKeysNotFoundError {
      message
      __typename
    }
    ... on InvalidStepError {
      invalidStepKey
      __typename
    }
    ... on InvalidOutputError {
      stepKey
      invalidOutputName
      __typename
    }
    ... on UnauthorizedError {
      message
      __typename
    }
    ... on PipelineNotFoundError {
      message
      __typename
    }
    ... on RunConflict {
      message
      __typename
    }
    ... on ConflictingExecutionParamsError {
      message
      __typename
    }
    ... on PresetNotFoundError {
      message
      __typename
    }
    ... on RunConfigValidationInvalid {
      pipelineName
      errors {
        message
        path
        reason
        __typename
      }
      __typename
    }
    ...PythonErrorFragment
    __typename
  }
}

fragment PythonErrorFragment on PythonError {
  message
  stack
  errorChain {
    ...PythonErrorChain
    __typename
  }
  __typename
}

fragment PythonErrorChain on ErrorChainLink {
  isExplicitLink
  error {
    message
    stack
    __typename
  }
  __typename
}
"""
