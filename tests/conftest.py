from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", message=".*is currently in beta.*")


@pytest.fixture()
def db_path(tmp_path):
    """An empty store: a DuckDB file, or a DuckLake under PM_TEST_STORE=lake (tests/support/stores.py)."""
    from tests.support.stores import forget, new_store

    database = new_store(tmp_path)
    yield database
    forget(database)


@pytest.fixture()
def instance():
    from dagster import DagsterInstance

    with DagsterInstance.ephemeral() as inst:
        yield inst
