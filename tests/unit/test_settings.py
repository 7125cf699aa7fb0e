"""pm_domain/settings.py: one model of every variable, refused in one line, documented from the fields."""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
from pathlib import Path

import pytest

from pm_domain import settings
from pm_domain.settings import ENV_NAMES, PROJECT_ROOT, Settings, SettingsError

DEFAULTS = {
    "price_source": "yfinance", "csv_dir": None, "duckdb_path": str(PROJECT_ROOT / "data" / "pm.duckdb"),
    "start_date": dt.date(2016, 1, 4), "watchlist": PROJECT_ROOT / "data" / "watchlist.txt",
    "forecast_fit_window": 500, "benchmark": "^GSPC", "nightly_time": dt.time(18, 30),
    "nightly_timezone": "America/New_York", "llm_health_interval": 300, "ollama_host": "http://127.0.0.1:11434",
    "llm_parallel_per_host": 1,
    "llm_mode": "auto", "llm_analysis_model": "qwen:14b-chat-q4_K_M",
    "llm_signal_model": "deepseek-coder:6.7b-instruct-q4_K_M", "llm_risk_model": "codellama:13b-instruct-q4_K_M",
    "llm_retry_invalid": False, "llm_knowledge_cutoffs": "", "llm_anonymize": "auto",
    "llm_max_latency_seconds": 5.0, "llm_min_tokens_per_second": 5.0, "paper_book": "paper",
    "paper_initial_cash": 1_000_000.0, "paper_slippage_bps": 5.0, "paper_commission_per_share": 0.005,
    "paper_commission_minimum": 1.0, "paper_commission_bps": 0.0, "paper_fractional": False, "paper_margin": False,
    "paper_weights": "signal_kelly", "paper_alert_bps": 100.0, "pg_bin_dir": None, "celery_broker": None,
}

# A malformed value of every variable that has one, and what the refusal says.
BAD = [
    ("PM_PRICE_SOURCE", "bloomberg", ": use one of yfinance, sample, csv, synthetic"),
    ("PM_DUCKDB_PATH", "", " must not be empty"),
    ("PM_START_DATE", "last monday", " is not an ISO date (YYYY-MM-DD)"),
    ("PM_START_DATE", "1900-01-02", " must lie between 1990-01-01 and today"),
    ("PM_WATCHLIST", " ", " must not be empty"),
    ("PM_FORECAST_FIT_WINDOW", "10", " must be a whole number of sessions in 250..2520"),
    ("PM_FORECAST_FIT_WINDOW", "500.0", " must be a whole number of sessions in 250..2520"),
    ("PM_BENCHMARK", "SPY;--", "invalid ticker"),
    ("PM_NIGHTLY_TIME", "6pm", " is not a time of day (HH:MM)"),
    ("PM_NIGHTLY_TIMEZONE", "Mars/Olympus", " is not an IANA time zone (e.g. Europe/London)"),
    ("PM_LLM_HEALTH_INTERVAL", "5", " must be a whole number of seconds, at least 30"),
    ("OLLAMA_HOST", "", " must not be empty"),
    ("OLLAMA_HOST", "http://127.0.0.1:18434,ftp://x", ": each server as http://host:port, several separated by commas"),
    ("PM_CELERY_BROKER", "amqp://127.0.0.1:5672//", ": a Redis URL, redis://host:port/0"),
    ("PM_LLM_PARALLEL_PER_HOST", "0", " must be a whole number of requests in 1..32"),
    ("PM_LLM_PARALLEL_PER_HOST", "2.5", " must be a whole number of requests in 1..32"),
    ("PM_LLM_MODE", "yolo", ": use one of auto, ollama, fallback"),
    ("PM_LLM_ANALYSIS_MODEL", " , ", ": name a model, or several separated by commas"),
    ("PM_LLM_SIGNAL_MODEL", "", ": name a model, or several separated by commas"),
    ("PM_LLM_RISK_MODEL", ",", ": name a model, or several separated by commas"),
    ("PM_LLM_RETRY_INVALID", "yes", ": use 1 (on) or 0 (off)"),
    ("PM_LLM_KNOWLEDGE_CUTOFFS", "gemma3=August 2024", "'gemma3=August 2024' is not model=YYYY-MM-DD"),
    ("PM_LLM_ANONYMIZE", "yes", ": use one of auto, always, never"),
    ("PM_LLM_MAX_LATENCY_SECONDS", "-1", " must be a positive number"),
    ("PM_LLM_MIN_TOKENS_PER_SECOND", "fast", " must be a positive number"),
    ("PM_PAPER_BOOK", "", " must not be empty"),
    ("PM_PAPER_INITIAL_CASH", "0", " must be a positive number"),
    ("PM_PAPER_INITIAL_CASH", "inf", " must be a positive number"),
    ("PM_PAPER_SLIPPAGE_BPS", "-5", " must be a number >= 0"),
    ("PM_PAPER_COMMISSION_PER_SHARE", "nan", " must be a number >= 0"),
    ("PM_PAPER_COMMISSION_MINIMUM", "one", " must be a number >= 0"),
    ("PM_PAPER_COMMISSION_BPS", "-0.1", " must be a number >= 0"),
    ("PM_PAPER_FRACTIONAL", "true", ": use 1 (on) or 0 (off)"),
    ("PM_PAPER_MARGIN", "on", ": use 1 (on) or 0 (off)"),
    ("PM_PAPER_WEIGHTS", "kelly", ": use one of signal_kelly, equal, inverse_volatility"),
    ("PM_PAPER_ALERT_BPS", "many", " must be a positive number"),
]
# Any value is a folder name (an empty one means unset).
ANY_VALUE = {"PM_CSV_DIR", "PG_BIN_DIR"}


@pytest.fixture()
def clean_env(monkeypatch):
    for env in ENV_NAMES.values():
        monkeypatch.delenv(env, raising=False)
    return monkeypatch


def test_a_clean_environment_gives_the_defaults(clean_env):
    assert settings.read().model_dump() == DEFAULTS
    assert settings.current().model_dump() == DEFAULTS and settings.current().model_fields_set == set()
    assert (settings.start_date(), settings.duckdb_path(), settings.watchlist_path(), settings.forecast_fit_window(),
            settings.benchmark_ticker(), settings.nightly_time(), settings.nightly_timezone(),
            settings.llm_health_interval_seconds(), settings.llm_anonymize(), settings.paper_alert_bps(),
            settings.paper_weight_method()) == (
        DEFAULTS["start_date"], DEFAULTS["duckdb_path"], DEFAULTS["watchlist"], 500, "^GSPC", dt.time(18, 30),
        "America/New_York", 300, "auto", 100.0, "signal_kelly")


def test_every_variable_is_named_as_its_attribute():
    assert set(ENV_NAMES) == set(DEFAULTS)
    for name, env in ENV_NAMES.items():
        assert env.lower().removeprefix("pm_") == name, env
        assert Settings.model_fields[name].description, f"{env} says nothing about itself"


def test_every_variable_with_a_malformed_value_is_tested():
    assert {env for env, _, _ in BAD} | ANY_VALUE == set(ENV_NAMES.values())


@pytest.mark.parametrize("env, value, expected", BAD)
def test_a_malformed_value_is_refused_in_one_line_naming_the_variable(clean_env, env, value, expected):
    clean_env.setenv(env, value)
    with pytest.raises(SettingsError) as refused:
        settings.current()
    message = str(refused.value)
    assert "\n" not in message and message.startswith(env) and expected in message
    if env not in ("PM_BENCHMARK", "PM_LLM_KNOWLEDGE_CUTOFFS"):  # these keep their own wording
        assert message.startswith(f"{env}={value!r}{expected}")


def test_two_malformed_values_are_both_named_in_one_line(clean_env):
    clean_env.setenv("PM_START_DATE", "soon")
    clean_env.setenv("PM_LLM_MODE", "yolo")
    with pytest.raises(SettingsError, match=r"^PM_START_DATE='soon' is not an ISO date \(YYYY-MM-DD\); "
                                            r"PM_LLM_MODE='yolo': use one of auto, ollama, fallback$"):
        settings.current()


def test_only_the_variables_own_names_are_read(clean_env):
    for name, value in {"price_source": "sample", "benchmark": "A;B", "pm_price_source": "csv", "Pm_Llm_Mode": "x"}.items():
        clean_env.setenv(name, value)
    assert settings.current().model_dump() == DEFAULTS


def test_values_are_parsed_and_empty_folders_mean_unset(clean_env):
    for env, value in {"PM_FORECAST_FIT_WINDOW": "750", "PM_NIGHTLY_TIME": "07:05:59", "PM_PAPER_FRACTIONAL": "1",
                       "PM_PAPER_INITIAL_CASH": "2.5e4", "PM_CSV_DIR": "", "PG_BIN_DIR": "/opt/pg/bin",
                       "PM_LLM_SIGNAL_MODEL": "gemma3:270m, llama3.2:1b"}.items():
        clean_env.setenv(env, value)
    read = settings.current()
    assert (read.forecast_fit_window, read.nightly_time, read.paper_fractional, read.paper_initial_cash) == (
        750, dt.time(7, 5), True, 25_000.0)
    assert read.csv_dir is None and read.pg_bin_dir == Path("/opt/pg/bin")
    assert read.model_fields_set == {"forecast_fit_window", "nightly_time", "paper_fractional", "paper_initial_cash",
                                     "csv_dir", "pg_bin_dir", "llm_signal_model"}


def test_current_is_read_once_and_again_when_a_variable_changes(clean_env):
    first = settings.current()
    assert settings.current() is first
    clean_env.setenv("PM_PAPER_ALERT_BPS", "25")
    assert settings.current() is not first and settings.paper_alert_bps() == 25.0
    clean_env.setenv("PM_UNRELATED_TO_SETTINGS", "1")
    assert settings.current() is settings.current()


def test_a_copy_is_a_deployment_of_its_own(clean_env):
    demo = settings.current().model_copy(update={"price_source": "sample"})
    assert demo.price_source == "sample" and settings.current().price_source == "yfinance"
    assert hash(demo) != hash(settings.current())  # frozen: usable as a cache key


def test_the_choices_agree_with_the_code_that_uses_them():
    from pm_domain.llm.client import MODES
    from pm_domain.paper.weights import WEIGHT_METHODS
    from pm_domain.price_sources import SOURCES

    assert tuple(SOURCES) == settings.PRICE_SOURCES
    assert tuple(MODES) == settings.LLM_MODES
    assert tuple(WEIGHT_METHODS) == settings.PAPER_WEIGHT_METHODS


def test_the_resources_default_to_what_the_settings_default_to(clean_env):
    from pm_resources.broker import SimulatedBrokerResource, broker_from
    from pm_resources.ollama import OllamaResource, ollama_from

    def fields(resource):
        return {name: getattr(resource, name) for name in type(resource).model_fields}

    assert fields(broker_from(settings.current())) == fields(SimulatedBrokerResource())
    assert fields(ollama_from(settings.current())) == fields(OllamaResource())


def _configuration_table():
    path = PROJECT_ROOT / "scripts" / "configuration_table.py"
    spec = importlib.util.spec_from_file_location("configuration_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_configuration_doc_is_the_table_generated_from_the_settings():
    script = _configuration_table()
    committed = script.DOC.read_text(encoding="utf-8")
    assert script.rewrite(committed) == committed, "docs/configuration.md is out of date: python scripts/configuration_table.py"
    table = committed.split(script.BEGIN)[1].split(script.END)[0]
    documented = re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE)
    assert documented == list(ENV_NAMES.values())
    assert "| `PM_FORECAST_FIT_WINDOW` | `500` |" in table and "| `PM_DUCKDB_PATH` | `data/pm.duckdb` |" in table


ENVIRONMENT_READ = re.compile(r"os\.environ|os\.getenv|getenv\(")
# The exceptions, each commented where it is: the instance.env loader
# puts Dagster's variables into the process for Dagster; the PostgreSQL tools and the cluster's
# Celery workers inherit the environment.
EXCEPTIONS = {"pm_jobs/large_instance.py", "pm_jobs/local_postgres.py", "pm_jobs/cluster.py"}


def _environment_lines(folder_filter):
    for folder in ("pm_domain", "pm_assets", "pm_resources", "pm_jobs", "pm_sensors"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            relative = path.relative_to(PROJECT_ROOT).as_posix()
            if folder_filter(relative):
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    if ENVIRONMENT_READ.search(line):
                        yield relative, number, line.strip()


def test_only_the_settings_read_the_environment():
    found = [hit for hit in _environment_lines(lambda p: not p.startswith("pm_jobs/cli/"))
             if hit[0] != "pm_domain/settings.py" and hit[0] not in EXCEPTIONS]
    assert found == []


def test_the_cli_touches_the_environment_only_for_dagster_home():
    found = [hit for hit in _environment_lines(lambda p: p.startswith("pm_jobs/cli/")) if "DAGSTER_HOME" not in hit[2]]
    assert found == []
