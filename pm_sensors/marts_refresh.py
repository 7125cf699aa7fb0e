"""marts_refresh: evaluates the SQL marts' automation condition (refresh once their inputs were
updated and none is still being written), so the marts follow the nightly run and the
evaluation runs without a schedule of their own."""

from __future__ import annotations

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from pm_assets.sql_models import MARTS_GROUP

marts_refresh_sensor = AutomationConditionSensorDefinition(
    "marts_refresh",
    target=AssetSelection.groups(MARTS_GROUP),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Requests the SQL marts once the tables they read were updated and are no longer in progress.",
)
