"""The resources of a deployment, chosen in one place from one `Settings`.

Every deployment this project has (the project's `.dagster_home`, the large-backfill instance, the
demo, a test's temporary store) runs the same resource classes; what differs is configuration: the
DuckDB file, the price source, the Ollama host and mode, the paper account. So where
hooli-data-eng-pipelines keys a dict of resources by deployment name, here one function maps a
deployment's `Settings` to its resources, and the deployment is the Settings (the environment's,
`settings.current()`, or a copy: `current().model_copy(update={"price_source": "sample"})`).

Values are resolved when the definitions load, not with Dagster's `EnvVar` at launch. Measured on
Dagster 1.13: a field given `EnvVar("PM_PRICE_SOURCE")` reaches the resource's own validator as the
variable's *name* (PriceSourceResource refused 'PM_PRICE_SOURCE' when the definitions loaded); an unset
`EnvVar` fails the run's config check at launch (`DagsterInvalidConfigError`), so a default such as
`yfinance` or the bundled Ollama host is impossible; and the refusal is Dagster's multi-line config
error, not the one line naming the variable. The gain would be nothing here: a run the daemon or the
UI launches is a new process that imports the definitions again, with the environment of the code
server that launched it, so a value read at import is the value at launch; and none of these values
is a secret to hide from the launchpad (the PostgreSQL password is Dagster's own, in dagster.yaml's
`env:` entries).
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from pm_domain.settings import Settings
from pm_resources.broker import broker_from
from pm_resources.connections import is_lake
from pm_resources.database import ClosingDuckDBResource
from pm_resources.ollama import ollama_from
from pm_resources.price_source import PriceSourceResource


def resources_for(config: Settings) -> dict[str, ConfigurableResource]:
    """duckdb, price_source, ollama and broker as `config` sets them; creates the store's folder."""
    if config.duckdb_path != ":memory:" and not is_lake(config.duckdb_path):
        Path(config.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
    return {
        "duckdb": ClosingDuckDBResource(database=config.duckdb_path),
        "price_source": PriceSourceResource(source=config.price_source,
                                            csv_dir=str(config.csv_dir) if config.csv_dir else None),
        "ollama": ollama_from(config),
        "broker": broker_from(config),
    }
