"""`pm` in this process on a temporary instance and store: `pm tickers add | remove` keep the
watchlist file in step with the universe and say so, a lower-case ticker is refused in one line,
and `pm failures` marks a failure whose partitions have materialized since."""

from __future__ import annotations

import datetime as dt
import re

import duckdb
import pytest
from dagster import AssetMaterialization, DagsterInstance

from pm_jobs.cli import main
from pm_sensors.run_failures import FAILURE_SCHEMA, ensure_failures_table


@pytest.fixture()
def pm_home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    watchlist = tmp_path / "watchlist.txt"
    watchlist.write_text("# mine\n^GSPC\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PM_DUCKDB_PATH", str(tmp_path / "pm.duckdb"))
    monkeypatch.setenv("PM_WATCHLIST", str(watchlist))
    return watchlist


def test_adding_and_removing_tickers_keeps_the_watchlist_in_step(pm_home, capsys):
    assert main(["tickers", "add", "^GSPC", "AAPL", "MSFT"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "added: ^GSPC, AAPL, MSFT", f"watchlist {pm_home}: updated, appended AAPL, MSFT"]
    assert pm_home.read_text() == "# mine\n^GSPC\nAAPL\nMSFT\n"
    assert main(["tickers", "remove", "AAPL"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "removed: AAPL (their stored rows stay in DuckDB)", f"watchlist {pm_home}: updated, removed AAPL"]
    assert pm_home.read_text() == "# mine\n^GSPC\nMSFT\n"
    assert main(["tickers", "list"]) == 0
    assert capsys.readouterr().out.split() == ["^GSPC", "MSFT"]


def test_a_lower_case_ticker_is_refused_in_one_line_and_nothing_is_added(pm_home, capsys):
    assert main(["tickers", "add", "aaa"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "pm: aaa: tickers are upper case: did you mean AAA? (pm tickers add AAA)"
    assert pm_home.read_text() == "# mine\n^GSPC\n"
    assert main(["tickers", "list"]) == 0 and capsys.readouterr().out.split() == []


def test_the_bundled_sp500_file_adds_every_constituent_in_one_command(pm_home, capsys):
    from pm_domain.settings import PROJECT_ROOT
    from pm_domain.tickers import read_watchlist

    sp500 = PROJECT_ROOT / "data" / "universes" / "sp500.txt"
    expected = read_watchlist(sp500)
    assert 490 <= len(expected) <= 510 and "BRK-B" in expected and "AAPL" in expected  # Yahoo's symbols
    assert main(["tickers", "add", "^GSPC", "--from-file", str(sp500)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"added: {len(expected) + 1} tickers (^GSPC, A, AAPL, ABBV, ABNB, ABT, ACGL, ACN, ADBE, ADI, " \
                     f"ADM, ADP and {len(expected) + 1 - 12} more)"
    assert main(["tickers", "list"]) == 0 and capsys.readouterr().out.split() == ["^GSPC", *expected]
    assert read_watchlist(pm_home) == ["^GSPC", *expected]


@pytest.mark.parametrize("lines, error", [
    ("AAPL\nMSFT;--\n", "bad.txt:2: invalid ticker 'MSFT;--': use 1-20 characters from letters, digits and . ^ = -"),
    (None, "bad.txt: no such file (--from-file takes a text file, one ticker a line)"),
])
def test_a_bad_ticker_file_is_refused_in_one_line_naming_the_line_and_nothing_is_added(pm_home, tmp_path, capsys,
                                                                                      lines, error):
    path = tmp_path / "bad.txt"
    if lines is not None:
        path.write_text(lines)
    assert main(["tickers", "add", "--from-file", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(error)
    assert pm_home.read_text() == "# mine\n^GSPC\n"
    assert main(["tickers", "list"]) == 0 and capsys.readouterr().out.split() == []


def test_pm_failures_marks_the_failures_whose_partitions_materialized_since(pm_home, tmp_path, capsys):
    failed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=1)
    rows = [("run-one", "prices", "2018-12-31|QQQ"), ("run-two", "prices", "2018-12-27|QQQ...2018-12-28|QQQ"),
            ("run-six", "features", "2018-12-31|QQQ"), ("run-ten", "high_is_highest", "2018-12-31|QQQ")]
    with duckdb.connect(str(tmp_path / "pm.duckdb")) as conn:
        ensure_failures_table(conn)
        for run_id, step, partitions in rows:
            conn.execute(f"INSERT INTO run_failures ({', '.join(FAILURE_SCHEMA)}) VALUES (?, ?, 'job', ?, ?, ?, 'pm', "
                         "'PriceSourceError', 'no QQQ')",
                         [run_id, step, failed_at, step if step != "high_is_highest" else None, partitions])
    with DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tickers", ["QQQ"])
        for day in ("2018-12-31", "2018-12-27"):
            instance.report_runless_asset_event(AssetMaterialization("prices", partition=f"{day}|QQQ"))
    assert main(["failures"]) == 0
    lines = {line.split()[3]: line for line in capsys.readouterr().out.splitlines()}
    assert re.search(r"prices  2018-12-31\|QQQ  PriceSourceError: no QQQ  \(since succeeded \d{4}-\d\d-\d\d \d\d:\d\d\)$",
                     lines["run-one"]), lines["run-one"]
    assert lines["run-two"].endswith("  (since succeeded: 1/2 partitions)")
    assert lines["run-six"].endswith("PriceSourceError: no QQQ")  # features never materialized since
    assert lines["run-ten"].endswith("PriceSourceError: no QQQ")  # a check's step: no asset to look at
