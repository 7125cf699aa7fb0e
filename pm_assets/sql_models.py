"""One asset per SQL model of `dbt_like_sql/models` (the marts), loaded when the definitions load.

Each model's ref()s become its deps, so the UI draws the lineage from the Python assets; its
schema.yml tests become asset checks; it builds in DuckDB through the same resource and `duckdb`
pool as every other writer. Adding a `.sql` file adds an asset: no Python change.
"""


import hashlib
import time
from pathlib import Path

import duckdb as duckdb_module
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)
from dagster_duckdb import DuckDBResource

from pm_assets.metadata import preview_markdown
from pm_domain.settings import PROJECT_ROOT
from pm_domain.sql_models import SqlModel, SqlModelError, load_models
from pm_resources.store import build_model, query

MODELS_DIR = PROJECT_ROOT / "dbt_like_sql" / "models"
MARTS_GROUP = "marts"

# The tables a model may ref(), and the assets that write them (lineage). llm_calls is written by
# the three LLM stages; llm_health and run_failures by sensors, so they have no asset to draw.
TABLE_WRITERS: dict[str, tuple[str, ...]] = {
    **{name: (name,) for name in ("prices", "features", "ts_forecasts", "llm_analysis", "llm_signals",
                                  "risk_assessments", "signal_outcomes", "backtests", "portfolio_backtests")},
    "llm_calls": ("llm_analysis", "llm_signals", "risk_assessments"),
    "llm_cache": ("llm_analysis", "llm_signals", "risk_assessments"),
    "llm_health": (),
    "run_failures": (),
}

# Refresh once whatever a model reads has been updated and nothing it reads is still being
# written: after the nightly run and the evaluation runs the sensors launch, not during them.
MART_REFRESH = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("refresh after its inputs settle")


def _shown(path: Path) -> str:
    """The model file as a reader finds it: relative to the project when it lies inside."""
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


def _deps(model: SqlModel) -> list[AssetKey]:
    keys: dict[str, None] = {}
    for ref in model.refs:
        for writer in TABLE_WRITERS.get(ref, (ref,)):  # a ref to another model is that model's asset
            keys[writer] = None
    return [AssetKey(k) for k in keys]


def sql_model_asset(model: SqlModel) -> AssetsDefinition:
    check_specs = [AssetCheckSpec(test.name, asset=model.name, description=f"{test.kind} on {', '.join(test.columns)}")
                   for test in model.tests]

    @asset(
        name=model.name,
        group_name=MARTS_GROUP,
        deps=_deps(model),
        pool="duckdb",
        kinds={"duckdb", "sql"},
        description=f"{model.description}\n\nSQL model `{_shown(model.path)}` "
                    f"({model.materialized}).",
        check_specs=check_specs,
        automation_condition=MART_REFRESH,
        code_version=hashlib.sha256(model.sql.encode()).hexdigest()[:12],
        metadata={"path": _shown(model.path), "materialized": model.materialized},
    )
    def _build(context: AssetExecutionContext, duckdb: DuckDBResource) -> MaterializeResult:
        began = time.perf_counter()
        with duckdb.get_connection() as conn:
            try:
                build_model(conn, model.name, model.sql, model.materialized)
            except duckdb_module.Error as exc:
                raise SqlModelError(f"{_shown(model.path)}: DuckDB could not build {model.name}: {exc}") from None
            rows = conn.execute(f"SELECT count(*) FROM {model.name}").fetchall()[0][0]
            columns = query(conn, "SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = ? ORDER BY ordinal_position", [model.name])
            failures = {test.name: conn.execute(*test.failing_rows_sql(model.name)).fetchall()[0][0]
                        for test in model.tests}
            preview = query(conn, f"SELECT * FROM {model.name} LIMIT 10")
        context.log.info(f"built {model.name} ({model.materialized}): {rows} rows")
        schema = TableSchema(columns=[TableColumn(name, dtype, description=model.column_descriptions.get(name))
                                      for name, dtype in columns.iter_rows()])
        return MaterializeResult(
            metadata={"dagster/row_count": rows, "dagster/column_schema": schema,
                      "build_seconds": round(time.perf_counter() - began, 3),
                      "sql": MetadataValue.md(f"```sql\n{model.sql}\n```"),
                      "preview": MetadataValue.md(preview_markdown(preview, preview.columns))},
            check_results=[
                AssetCheckResult(check_name=name, passed=failed == 0, severity=AssetCheckSeverity.ERROR,
                                 metadata={"failing_rows": int(failed)})
                for name, failed in failures.items()],
        )

    return _build


def sql_model_assets() -> list[AssetsDefinition]:
    """An asset per model file; a malformed file fails the definitions load with its name."""
    return [sql_model_asset(model) for model in load_models(MODELS_DIR, TABLE_WRITERS)]
