from __future__ import annotations

import datetime as dt
import shutil
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


def range_tags(tickers, start: dt.date | str, end: dt.date | str) -> dict[str, str]:
    from pm_assets.partitions import range_tags as tags

    return tags(list(tickers), str(start), str(end))


def copy_of(store_path: str, tmp_path) -> str:
    """A private copy of a module-scoped store, so a test can write to it freely."""
    path = str(tmp_path / "pm.duckdb")
    shutil.copy(store_path, path)
    return path
