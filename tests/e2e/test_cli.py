"""`pm` at a terminal: the project's instance by default, every mistake in one line naming the
value and the fix (before Dagster sees it), failed runs told in one line and recorded, a busy
port refused before anything starts."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pm_jobs import cli
from pm_jobs.materialize import partition_bounds, partitioning_by_asset
from pm_jobs.selection import BY_DATE, BY_DATE_AND_TICKER, UNPARTITIONED, SelectionError, plan

ROOT = Path(__file__).resolve().parents[2]
UNIVERSE = ["^GSPC", "AAPL", "^IXIC"]
BOUNDS = (dt.date(2016, 1, 4), dt.date(2026, 11, 27))


def planned(assets="prices", tickers="", start="2018-12-24", end=None, universe=UNIVERSE):
    return plan([a for a in assets.split(",") if a], [t for t in tickers.split(",") if t], start, end,
                partitioning_by_asset(), universe, BOUNDS)


@pytest.mark.parametrize("kwargs, diagnosis", [
    ({"start": "2018-12-25"}, "--from 2018-12-25 is not an NYSE session (Christmas): the nearest sessions are "
                              "2018-12-24 and 2018-12-26"),
    ({"start": "2018-12-24", "end": "2018-12-29"}, "--to 2018-12-29 is not an NYSE session (a Saturday)"),
    ({"start": "2018-12-05"}, "--from 2018-12-05 is not an NYSE session (an unscheduled closure"),
    ({"start": "2018-12-31", "end": "2018-12-03"}, "--from 2018-12-31 is after --to 2018-12-03"),
    ({"start": "2030-01-02"}, "--from 2030-01-02 is after the last partition, 2026-11-27"),
    ({"start": "2015-12-31"}, "--from 2015-12-31 is before the first partition, 2016-01-04 (PM_START_DATE): "
                              "set PM_START_DATE=2015-12-31"),
    ({"start": "31/12/2018"}, "--from '31/12/2018' is not a date: use YYYY-MM-DD"),
    ({"tickers": "MSFT"}, "MSFT is not in the universe: pm tickers add MSFT"),
    ({"tickers": "MSFT,QQQ"}, "MSFT, QQQ are not in the universe: pm tickers add MSFT QQQ"),
    ({"tickers": "A;B"}, "invalid ticker 'A;B'"),
    ({"universe": []}, "the universe has no tickers: pm tickers add"),
    ({"assets": "price"}, "unknown asset 'price' (did you mean prices?): the assets are prices, features"),
    ({"assets": "prices,portfolio_backtests"}, "these assets are partitioned differently (prices by date x ticker; "
                                               "portfolio_backtests by date)"),
    ({"assets": "portfolio_backtests", "tickers": "AAPL"}, "portfolio_backtests is partitioned by date alone"),
    ({"assets": "portfolio_overview"}, "portfolio_overview is not partitioned: drop --from, --to and --tickers"),
    ({"start": None}, "prices is partitioned by date x ticker: --from YYYY-MM-DD is required"),
])
def test_each_mistake_gets_its_own_diagnosis(kwargs, diagnosis):
    with pytest.raises(SelectionError) as raised:
        planned(**kwargs)
    assert str(raised.value).startswith(diagnosis) and "\n" not in str(raised.value)


def test_a_good_request_is_split_into_runs_of_tickers_adjacent_in_the_universe():
    everything = planned(end="2018-12-31")
    assert everything.ticker_blocks == (("^GSPC", "AAPL", "^IXIC"),) and everything.sessions == 5
    # ^GSPC and ^IXIC are not adjacent (AAPL was added between them): a range over both would
    # include AAPL, so they are two runs
    assert planned(tickers="^IXIC,^GSPC").ticker_blocks == (("^GSPC",), ("^IXIC",))
    assert planned(assets="portfolio_backtests").partitioning == BY_DATE
    assert planned(assets="portfolio_overview,signal_scorecard", start=None).partitioning == UNPARTITIONED
    assert planned(assets="prices,features,ts_forecasts").partitioning == BY_DATE_AND_TICKER


def test_partition_bounds_are_the_definitions_own():
    first, last = partition_bounds()
    assert first == dt.date(2016, 1, 4) and dt.date.today() - dt.timedelta(days=5) <= last <= dt.date.today()


def test_without_dagster_home_pm_uses_the_projects_instance_and_says_so(monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    said = cli.instance.use_project_instance()
    assert os.environ["DAGSTER_HOME"] == str(ROOT / ".dagster_home")
    assert said == f"{ROOT / '.dagster_home'} (the project's; DAGSTER_HOME is unset)"
    monkeypatch.setenv("DAGSTER_HOME", "/somewhere/else")
    assert cli.instance.use_project_instance() == "/somewhere/else (DAGSTER_HOME)"


def pm(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pm_jobs.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture()
def pm_env(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")} | {
        "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": str(tmp_path / "pm.duckdb"), "PM_PRICE_SOURCE": "sample",
        "PM_WATCHLIST": str(tmp_path / "watchlist.txt")}  # `pm tickers add` appends to it: not the project's
    assert pm("tickers", "add", "^GSPC", "QQQ", env=env).returncode == 0
    return env


def test_pm_materialize_refuses_a_holiday_in_one_line_and_runs_nothing(pm_env):
    out = pm("materialize", "--assets", "prices", "--tickers", "^GSPC", "--from", "2018-12-25", env=pm_env)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == ("pm: --from 2018-12-25 is not an NYSE session (Christmas): "
                                                   "the nearest sessions are 2018-12-24 and 2018-12-26")
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert not Path(pm_env["PM_DUCKDB_PATH"]).exists()


def test_pm_materialize_runs_then_tells_a_failed_run_in_one_line_and_records_it(pm_env):
    ok = pm("materialize", "--assets", "prices", "--tickers", "^GSPC", "--from", "2018-12-24", "--to", "2018-12-31",
            env=pm_env)
    assert ok.returncode == 0, ok.stderr
    assert "materializing prices for ^GSPC 2018-12-24..2018-12-31 (5 sessions)" in ok.stdout
    assert "  prices: wrote 5 price rows" in ok.stdout and "succeeded" in ok.stdout
    assert pm("failures", env=pm_env).stdout.strip() == "no failed run recorded"  # the table exists, empty

    failed = pm("materialize", "--assets", "prices", "--tickers", "QQQ", "--from", "2018-12-31", env=pm_env)
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("pm: run ") and " failed at prices: source 'sample' has no ticker QQQ" in last
    assert "Traceback" not in failed.stdout + failed.stderr
    listed = pm("failures", env=pm_env).stdout
    assert "prices  2018-12-31|QQQ...2018-12-31|QQQ  PriceSourceError: source 'sample' has no ticker QQQ" in listed
    with duckdb.connect(pm_env["PM_DUCKDB_PATH"], read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM prices WHERE ticker = 'QQQ'").fetchone() == (0,)


def test_pm_ui_refuses_a_busy_port_before_starting_anything(pm_env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = pm("ui", "--port", str(port), env=pm_env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (f"pm: port {port} on 127.0.0.1 is in use (another `make ui`?): "
                                                   f"make ui PORT={port + 1}")
    assert not (Path(pm_env["DAGSTER_HOME"]) / "pm_ui.json").exists()


def test_every_verb_has_help():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, command in commands.choices.items():
        assert command.description or any(c.dest == name for c in commands._choices_actions), name
        verbs = [a for a in command._actions if a.dest == "action"]
        for verb in (verbs[0]._choices_actions if verbs else []):
            assert verb.help, f"pm {name} {verb.dest} has no help"
    assert all(c.help for c in commands._choices_actions)
