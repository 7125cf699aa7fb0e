from __future__ import annotations

import warnings

import pytest

warnings.filterwarnings("ignore", message=".*is currently in beta.*")


@pytest.fixture()
def db_path(tmp_path):
    return str(tmp_path / "pm.duckdb")


@pytest.fixture()
def instance():
    from dagster import DagsterInstance

    with DagsterInstance.ephemeral() as inst:
        yield inst
