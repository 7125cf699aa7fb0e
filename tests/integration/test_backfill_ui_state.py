"""Where `pm ui` notes its URL for `pm backfill`: in the instance's root directory, given or
loaded from DAGSTER_HOME as Dagster loads it."""

from __future__ import annotations

import json

from pm_jobs.backfill import DEFAULT_UI_URL, UI_STATE_FILE, instance_home, remember_ui_url, ui_url


def test_the_url_is_noted_in_the_given_home_and_read_back(tmp_path):
    remember_ui_url("http://127.0.0.1:3999", home=tmp_path)
    assert json.loads((tmp_path / UI_STATE_FILE).read_text())["url"] == "http://127.0.0.1:3999"
    assert ui_url(tmp_path) == "http://127.0.0.1:3999"  # this process, which wrote it, is alive


def test_without_a_home_it_is_the_root_directory_of_dagster_homes_instance(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    assert instance_home() == str(tmp_path)
    remember_ui_url("http://127.0.0.1:3998")
    assert (tmp_path / UI_STATE_FILE).exists()
    assert ui_url() == "http://127.0.0.1:3998"


def test_no_instance_or_a_dead_server_gives_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert ui_url() == DEFAULT_UI_URL
    (tmp_path / UI_STATE_FILE).write_text(json.dumps({"url": "http://127.0.0.1:3997", "pid": 2**22 + 1}))
    assert ui_url(tmp_path) == DEFAULT_UI_URL
    assert ui_url(tmp_path / "missing") == DEFAULT_UI_URL
