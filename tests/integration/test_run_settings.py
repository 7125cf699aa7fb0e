"""A run given its own Settings (the demo's sample prices) uses them, not the environment's."""

from __future__ import annotations

import io

from pm_domain import settings
from pm_jobs.materialize import Progress, execute
from pm_jobs.resources import resources_for
from pm_resources.connections import connect as store_connect
from tests.support.runs import range_tags


def test_resources_follow_the_settings_they_are_built_from(monkeypatch, tmp_path):
    monkeypatch.setenv("PM_PRICE_SOURCE", "csv")
    monkeypatch.setenv("PM_CSV_DIR", str(tmp_path))
    monkeypatch.setenv("PM_LLM_MODE", "fallback")
    resources = resources_for(settings.current().model_copy(update={"duckdb_path": str(tmp_path / "a" / "pm.duckdb")}))
    assert (resources["price_source"].source, resources["price_source"].csv_dir) == ("csv", str(tmp_path))
    assert resources["ollama"].mode == "fallback" and resources["duckdb"].database == str(tmp_path / "a" / "pm.duckdb")
    assert (tmp_path / "a").is_dir()  # the store's folder is made


def test_a_run_given_settings_takes_its_resources_from_them(instance, monkeypatch, tmp_path):
    monkeypatch.setenv("PM_PRICE_SOURCE", "csv")  # the environment's source would find no folder of files
    monkeypatch.delenv("PM_CSV_DIR", raising=False)
    store = str(tmp_path / "pm.duckdb")
    demo = settings.current().model_copy(update={"price_source": "sample", "duckdb_path": store})
    instance.add_dynamic_partitions("tickers", ["^GSPC"])
    result = execute(instance, ("prices",), range_tags(["^GSPC"], "2018-12-27", "2018-12-31"),
                     Progress(io.StringIO()), config=demo)
    assert result.success
    with store_connect(store, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM prices WHERE ticker = '^GSPC'").fetchone() == (3,)
