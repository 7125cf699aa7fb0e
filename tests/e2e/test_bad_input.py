"""Source faults and the bad-input catalogue: each is refused with a message naming what was
wrong, before it touches SQL, a file or a prompt, and the rows stored earlier stay as they were.
docs/operations.md's catalogue table lists the same inputs."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd
import pytest
import yfinance
from dagster import DagsterInstance, materialize

from pm_assets import backtests, prices, ts_forecasts
from pm_domain import settings
from pm_domain.calendar import trading_days
from pm_domain.tickers import TickerError, validate_ticker
from pm_resources.database import ClosingDuckDBResource
from pm_resources.broker import broker_from_env
from pm_resources.ollama import ollama_from_env
from pm_resources.price_source import PriceSourceResource
from tests.support.runs import range_tags, run_assets, table_names, yfinance_like_frame
from tests.support.runs import failure_message, table

ROOT = Path(__file__).resolve().parents[2]
TICKERS = ["AAPL", "MSFT"]


def sessions(start: str, end: str) -> list[str]:
    return [str(d) for d in trading_days(dt.date.fromisoformat(start), dt.date.fromisoformat(end))]


def run_prices(instance, db_path, start, end, tickers=TICKERS, source="yfinance", csv_dir=None):
    return run_assets(instance, db_path, [prices], start, end, tickers, source, csv_dir)


@pytest.fixture()
def stored(instance, db_path, monkeypatch):
    """AAPL and MSFT for the last week of 2018, through the yfinance path (a fake download)."""
    monkeypatch.setattr(yfinance, "download", lambda **kw: yfinance_like_frame(kw["tickers"], sessions("2018-12-24", "2018-12-31")))
    assert run_prices(instance, db_path, "2018-12-24", "2018-12-31").success
    return table(db_path, "prices")


# --- source faults ------------------------------------------------------------------------------

@pytest.mark.parametrize("download, message", [
    (lambda **kw: (_ for _ in ()).throw(ConnectionError("Connection reset by peer")),
     r"source 'yfinance' failed while downloading AAPL, MSFT 2018-12-17..2018-12-31 \(ConnectionError: Connection reset by peer\); PM_PRICE_SOURCE=sample serves"),
    (lambda **kw: pd.DataFrame(), r"source 'yfinance' returned an empty frame for AAPL, MSFT 2018-12-17..2018-12-31"),
    (lambda **kw: yfinance_like_frame(kw["tickers"], sessions("2018-12-17", "2018-12-31"), failed={"MSFT"}), "no prices for MSFT"),
    (lambda **kw: yfinance_like_frame(kw["tickers"], sessions("2018-12-17", "2018-12-27")), r"no prices for AAPL on 2018-12-28"),
])
def test_a_failed_download_names_the_fault_and_keeps_the_stored_rows(instance, db_path, stored, monkeypatch,
                                                                      download, message):
    monkeypatch.setattr(yfinance, "download", download)
    result = run_prices(instance, db_path, "2018-12-17", "2018-12-31")
    assert not result.success
    assert re.search(message, failure_message(result))
    # The run is all or nothing: no partition of it is written, every partition stored before stays.
    assert table(db_path, "prices").equals(stored)


def test_a_csv_cut_mid_write_fails_naming_the_file_and_an_edited_csv_replaces_its_rows(instance, db_path, tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    days = sessions("2018-12-24", "2018-12-31")
    lines = ["date,open,high,low,close,volume"] + [f"{d},10,12,9,11,1000" for d in days]
    (folder / "MYCO.csv").write_text("\n".join(lines) + "\n")
    assert run_prices(instance, db_path, days[0], days[-1], ["MYCO"], "csv", str(folder)).success
    before = table(db_path, "prices")

    # Another program is rewriting the file: it holds half a line when the run reads it.
    (folder / "MYCO.csv").write_text("\n".join(lines[:3]) + "\n2018-12-27,10,1")
    result = run_prices(instance, db_path, days[0], days[-1], ["MYCO"], "csv", str(folder))
    assert not result.success and "MYCO" in failure_message(result)
    assert table(db_path, "prices").equals(before)

    # The file is edited between runs: the re-run replaces the range's rows, never duplicates them.
    (folder / "MYCO.csv").write_text("\n".join(lines).replace(",11,1000", ",11.5,1000") + "\n")
    assert run_prices(instance, db_path, days[0], days[-1], ["MYCO"], "csv", str(folder)).success
    after = table(db_path, "prices")
    assert after.height == before.height and set(after["close"]) == {11.5}


# --- the bad-input catalogue --------------------------------------------------------------------

HOSTILE_TICKERS = [
    "AAPL'; DROP TABLE prices; --",  # SQL
    "../../etc/passwd",              # a path
    "AAPL /* comment */",            # a SQL comment
    "A" * 21,                        # too long
    "ÄPFEL",                         # unicode
    "AAPL\nMSFT",                    # a newline (a second line in a prompt or a file)
    "{{ ref('prices') }}",           # template syntax
    "",                              # empty
]


@pytest.mark.parametrize("ticker", HOSTILE_TICKERS)
def test_hostile_tickers_are_refused_with_the_value(ticker):
    with pytest.raises(TickerError, match="invalid ticker"):
        validate_ticker(ticker)


def test_a_hostile_ticker_in_the_partitions_fails_the_run_before_any_sql(instance, db_path):
    instance.add_dynamic_partitions("tickers", ["A;B"])  # the UI's "add partition" does not validate
    result = materialize([prices], instance=instance, raise_on_error=False, tags=range_tags(["A;B"], "2018-12-31", "2018-12-31"),
                         resources={"duckdb": ClosingDuckDBResource(database=db_path),
                                    "price_source": PriceSourceResource(source="sample")})
    assert not result.success and "invalid ticker 'A;B'" in failure_message(result)
    assert not Path(db_path).exists() or table_names(db_path) == []


@pytest.mark.timeout(180)
def test_dates_that_are_not_partitions_are_refused_by_the_cli(tmp_path):
    """A holiday, a weekend and a date after today are not partitions: the dagster CLI refuses
    them before any run starts."""
    import os
    import shutil
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": str(tmp_path / "pm.duckdb"),
           "PM_PRICE_SOURCE": "sample", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "pm_jobs.cli", "tickers", "add", "^GSPC"], env=env, check=True,
                   capture_output=True, timeout=60)
    dagster = Path(sys.executable).parent / "dagster"
    out = subprocess.run([str(dagster), "asset", "materialize", "-m", "pm_jobs.definitions", "--select", "prices",
                          "--partition-range", "2018-12-25|^GSPC...2018-12-25|^GSPC"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "must have a PartitionsDefinition containing the passed partition key `2018-12-25|^GSPC`" in out.stderr
    assert not (tmp_path / "pm.duckdb").exists()  # refused before any run touched the store


def test_a_range_before_the_partitions_start_is_refused_by_dagster(instance, db_path):
    instance.add_dynamic_partitions("tickers", ["^GSPC"])
    with pytest.raises(Exception, match="before the partitions definition start time 2016-01-04"):
        materialize([prices], instance=instance, tags=range_tags(["^GSPC"], "2015-12-30", "2016-01-05"),
                    resources={"duckdb": ClosingDuckDBResource(database=db_path),
                               "price_source": PriceSourceResource(source="sample")})


def test_a_value_outside_a_config_enum_is_refused_before_the_run(instance, db_path):
    from dagster import DagsterInvalidConfigError

    instance.add_dynamic_partitions("tickers", ["^GSPC"])
    with pytest.raises(DagsterInvalidConfigError, match="ops:backtests:config:sizing not in enum"):
        materialize([backtests], instance=instance, tags=range_tags(["^GSPC"], "2018-12-31", "2018-12-31"),
                    run_config={"ops": {"backtests": {"config": {"sizing": "all_in"}}}},
                    resources={"duckdb": ClosingDuckDBResource(database=db_path),
                               "price_source": PriceSourceResource(source="sample")})


@pytest.mark.parametrize("asset, config, message", [
    (ts_forecasts, {"refit_every": 0}, "refit_every\n  Input should be greater than or equal to 1"),
    (ts_forecasts, {"sarimax_order": [1, 1]}, "sarimax_order\n  List should have at least 3 items"),
    (backtests, {"window_sessions": 0}, "window_sessions\n  Input should be greater than or equal to 2"),
])
def test_run_config_out_of_range_is_refused_naming_the_field(instance, db_path, asset, config, message):
    instance.add_dynamic_partitions("tickers", ["^GSPC"])
    result = materialize([asset], instance=instance, raise_on_error=False, tags=range_tags(["^GSPC"], "2018-12-31", "2018-12-31"),
                         run_config={"ops": {asset.key.path[-1]: {"config": config}}},
                         resources={"duckdb": ClosingDuckDBResource(database=db_path),
                                    "price_source": PriceSourceResource(source="sample")})
    assert not result.success and message in failure_message(result)
    assert not Path(db_path).exists() or table_names(db_path) == []


@pytest.mark.parametrize("name, value, reader, message", [
    ("PM_START_DATE", "last monday", settings.start_date, "is not an ISO date"),
    ("PM_START_DATE", "1900-01-02", settings.start_date, "must lie between 1990-01-01 and today"),
    ("PM_FORECAST_FIT_WINDOW", "10", settings.forecast_fit_window, "must be a whole number of sessions in 250..2520"),
    ("PM_BENCHMARK", "SPY;--", settings.benchmark_ticker, "invalid ticker"),
    ("PM_LLM_MODE", "yolo", ollama_from_env, "use one of auto, ollama, fallback"),
    ("PM_LLM_MAX_LATENCY_SECONDS", "-1", ollama_from_env, "must be a positive number"),
    ("PM_NIGHTLY_TIME", "25:00", settings.nightly_time, "is not a time of day"),
    ("PM_PAPER_SLIPPAGE_BPS", "-5", broker_from_env, "must be a number >= 0"),
    ("PM_PAPER_INITIAL_CASH", "0", broker_from_env, "must be a positive number"),
    ("PM_PAPER_FRACTIONAL", "yes", broker_from_env, "use 1 (on) or 0 (off)"),
    ("PM_PAPER_WEIGHTS", "kelly", settings.paper_weight_method, "use one of signal_kelly, equal"),
    ("PM_PAPER_ALERT_BPS", "many", settings.paper_alert_bps, "must be a positive number"),
])
def test_bad_settings_are_refused_naming_the_variable(monkeypatch, name, value, reader, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(settings.SettingsError, match=f"{name}.*{re.escape(message)}"):
        reader()


def test_an_unknown_price_source_is_refused():
    with pytest.raises(Exception, match="yfinance|sample|csv|synthetic"):
        with DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions("tickers", ["^GSPC"])
            result = materialize([prices], instance=instance, tags=range_tags(["^GSPC"], "2018-12-31", "2018-12-31"),
                                 resources={"duckdb": ClosingDuckDBResource(database=":memory:"),
                                            "price_source": PriceSourceResource(source="bloomberg")})
            raise AssertionError(failure_message(result))


# --- security -----------------------------------------------------------------------------------

def test_the_ui_binds_to_loopback_by_default(monkeypatch):
    ui = re.search(r"^ui:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert "pm ui --port" in ui
    from pm_jobs.cli import ui as pm_ui

    started = []
    monkeypatch.chdir(ROOT)  # run_ui moves to the project's folder, as dagster dev needs
    monkeypatch.setenv("DAGSTER_HOME", str(ROOT / ".dagster_home"))
    monkeypatch.setattr(pm_ui.os, "execv", lambda path, args: started.append(args))
    monkeypatch.setattr("pm_jobs.backfill.remember_ui_url", lambda url: None)
    pm_ui.run_ui(0)  # port 0: any free one, so the bind check passes
    assert started and started[0][1:] == ["dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "0"]


def test_no_project_code_executes_text_or_reads_secrets_outside_environment_variables():
    code = {path: path.read_text() for folder in ("pm_domain", "pm_assets", "pm_resources", "pm_jobs", "pm_sensors")
            for path in (ROOT / folder).rglob("*.py")}
    for path, text in code.items():
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), f"{path} evaluates text"
        assert "shell=True" not in text and "os.system(" not in text, f"{path} runs a shell"
        assert not re.search(r"(?i)(password|secret|token|api_key)\s*=\s*['\"]\w", text), f"{path} holds a secret"
