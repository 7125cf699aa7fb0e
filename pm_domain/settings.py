"""The project's settings: one `Settings` model, read from the environment in one place.

Every PM_* variable the code reads (and OLLAMA_HOST, PG_BIN_DIR) is a field here, with its type,
default, range and what it means; docs/configuration.md's table is generated from these fields
(scripts/configuration_table.py, checked by tests/unit/test_settings.py). A malformed value is
refused in one line naming the variable, its value and what is expected (`SettingsError`).

`current()` is the settings of this process's environment, read once and re-read only when one of
these variables changes (a test's monkeypatch.setenv, `pm` loading an instance.env). The function
accessors below (`start_date()` ...) are one-liners over it, for the call sites that predate it.
Dagster's own variables (DAGSTER_HOME, DAGSTER_PG_*, ...) are Dagster's, not fields here.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The sample data ends on 2018-12-31 and ts_forecasts needs ~500 trading days of history, so the
# default partition set starts early enough for the demo (last 120 sessions of 2018) to have its
# full lookback, while keeping dates x tickers well under Dagster's ~100,000 partitions per asset:
# 2016-01-04 .. today is ~2,750 trading days, i.e. ~36 tickers per 100,000 partitions.
DEFAULT_START_DATE = "2016-01-04"
EXCHANGE = "XNYS"

PriceSource = Literal["yfinance", "sample", "csv", "synthetic"]
LLMMode = Literal["auto", "ollama", "fallback"]
AnonymizePolicy = Literal["auto", "always", "never"]
PaperWeightMethod = Literal["signal_kelly", "equal", "inverse_volatility", "hierarchical_risk_parity",
                            "minimum_variance"]
PRICE_SOURCES: tuple[str, ...] = get_args(PriceSource)  # pm_domain.price_sources.SOURCES (a test keeps them equal)
LLM_MODES: tuple[str, ...] = get_args(LLMMode)  # pm_domain.llm.client.MODES (likewise)
LLM_ANONYMIZE_POLICIES: tuple[str, ...] = get_args(AnonymizePolicy)
PAPER_WEIGHT_METHODS: tuple[str, ...] = get_args(PaperWeightMethod)

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
# The models the previous system ran, one per task; any model `ollama list` shows works.
DEFAULT_LLM_MODELS = {
    "analysis": "qwen:14b-chat-q4_K_M",
    "signal": "deepseek-coder:6.7b-instruct-q4_K_M",
    "risk": "codellama:13b-instruct-q4_K_M",
}
ROUTE_HELP = "a model `ollama list` shows, or several separated by commas in order of preference (routing)"


class SettingsError(ValueError):
    """A configuration value from the environment is malformed or out of range (one line)."""


def _setting(env: str, default: Any, description: str, doc_default: str | None = None, **constraints: Any) -> Any:
    """A field read from the variable `env`; `doc_default` is what the docs show when the default
    itself says too little (a path under the checkout, a choice made elsewhere)."""
    extra = {"env": env} | ({"doc_default": doc_default} if doc_default else {})
    return Field(default, validation_alias=env, description=description, json_schema_extra=extra, **constraints)


class Settings(BaseSettings):
    """Every setting the project reads from the environment; attribute = the variable's name in
    lower case without the PM_ prefix (PM_PRICE_SOURCE -> price_source, OLLAMA_HOST -> ollama_host)."""

    # Only the variables' own names are read (with populate_by_name the environment's `benchmark` or
    # `watchlist`, lower case, would be read too); a copy with other values: model_copy(update=...).
    model_config = SettingsConfigDict(case_sensitive=True, frozen=True, extra="ignore")

    # -- data ------------------------------------------------------------------------------------
    price_source: PriceSource = _setting(
        "PM_PRICE_SOURCE", "yfinance", "where daily prices come from: `yfinance`, `sample`, `csv` or `synthetic` "
        "([below](#price-sources))", doc_default="`yfinance` (`sample` under `make demo`/`make ui`)")
    csv_dir: Path | None = _setting("PM_CSV_DIR", None, "folder of `<TICKER>.csv` files for the `csv` source")
    duckdb_path: str = _setting("PM_DUCKDB_PATH", str(PROJECT_ROOT / "data" / "pm.duckdb"),
                                "the store every asset reads and writes: a DuckDB file (git-ignored), or the "
                                "cluster's shared DuckLake, `ducklake:postgres:<libpq connection string>` "
                                "([docs/deploy.md](deploy.md#the-shared-store))")
    start_date: dt.date = _setting("PM_START_DATE", dt.date.fromisoformat(DEFAULT_START_DATE),
                                   "first trading date of the partitions (YYYY-MM-DD, 1990-01-01 to today)",
                                   ge=dt.date(1990, 1, 1))
    watchlist: Path = _setting("PM_WATCHLIST", PROJECT_ROOT / "data" / "watchlist.txt",
                               "one ticker per line, `#` comments")
    forecast_fit_window: int = _setting(
        "PM_FORECAST_FIT_WINDOW", 500, "sessions each forecasting model is fitted on (250..2520); it sets "
        "the lookback `ts_forecasts` declares over `prices`, so it is read when the definitions load",
        ge=250, le=2520)
    benchmark: str = _setting("PM_BENCHMARK", "^GSPC",
                              "the ticker risk measures beta against (materialize its prices too)")
    # -- schedule and sensors --------------------------------------------------------------------
    nightly_time: dt.time = _setting(
        "PM_NIGHTLY_TIME", dt.time(18, 30), "when the nightly schedule ticks (weekdays, HH:MM local to "
        "`PM_NIGHTLY_TIMEZONE`): after the 16:00 close, once end-of-day data has settled")
    nightly_timezone: str = _setting("PM_NIGHTLY_TIMEZONE", "America/New_York",
                                     "the IANA time zone of `PM_NIGHTLY_TIME`")
    llm_health_interval: int = _setting(
        "PM_LLM_HEALTH_INTERVAL", 300, "seconds between Ollama health probes while it answers (at least 30); "
        "a down server is probed at doubling intervals up to an hour", ge=30)
    # -- the LLM stages --------------------------------------------------------------------------
    ollama_host: str = _setting("OLLAMA_HOST", DEFAULT_OLLAMA_HOST, "the Ollama server, or several separated by "
                                "commas: the LLM stages spread their calls over them ([llm.md](llm.md#several-servers))")
    llm_parallel_per_host: int = _setting(
        "PM_LLM_PARALLEL_PER_HOST", 1, "requests in flight at once on each Ollama server: set it to the "
        "server's `OLLAMA_NUM_PARALLEL` (1, Ollama's default on a CPU, asks one at a time)", ge=1, le=32)
    llm_mode: LLMMode = _setting(
        "PM_LLM_MODE", "auto", "`auto`: Ollama when reachable, else labelled rule-based fallback rows; "
        "`ollama`: fail the run when Ollama or a model is missing; `fallback`: never call Ollama "
        "([llm.md](llm.md))")
    llm_analysis_model: str = _setting("PM_LLM_ANALYSIS_MODEL", DEFAULT_LLM_MODELS["analysis"],
                                       f"the analysis stage's model: {ROUTE_HELP}")
    llm_signal_model: str = _setting("PM_LLM_SIGNAL_MODEL", DEFAULT_LLM_MODELS["signal"],
                                     f"the signal stage's model (its first is the health probe's): {ROUTE_HELP}")
    llm_risk_model: str = _setting("PM_LLM_RISK_MODEL", DEFAULT_LLM_MODELS["risk"],
                                   f"the risk stage's model: {ROUTE_HELP}")
    llm_retry_invalid: bool = _setting("PM_LLM_RETRY_INVALID", False,
                                       "`1`: ask again for prompts whose cached reply did not validate")
    llm_knowledge_cutoffs: str = _setting(
        "PM_LLM_KNOWLEDGE_CUTOFFS", "", "`model=YYYY-MM-DD` pairs, comma-separated, by full name or name "
        "without the tag: each model's training cutoff; without one (and no documented default: gemma3, "
        "llama3.x) a model is treated as having seen every session ([llm.md](llm.md#knowledge-cutoffs))",
        doc_default="none (the documented defaults)")
    llm_anonymize: AnonymizePolicy = _setting(
        "PM_LLM_ANONYMIZE", "auto", "`auto`: prompts about sessions not after the knowledge cutoff of the "
        "stage's first model say \"asset A\", \"session 0\" and prices indexed to 100, later sessions stay "
        "named; `always`; `never` ([llm.md](llm.md#anonymized-prompts))")
    llm_max_latency_seconds: float = _setting(
        "PM_LLM_MAX_LATENCY_SECONDS", 5.0, "a model slower than this (median over a run) is routed past; "
        "`llm_health` alerts past it", gt=0)
    llm_min_tokens_per_second: float = _setting(
        "PM_LLM_MIN_TOKENS_PER_SECOND", 5.0, "`llm_health` alerts when the probe generates fewer tokens per "
        "second than this", gt=0)
    # -- the paper book ([paper.md](paper.md#the-broker)) ----------------------------------------
    paper_book: str = _setting("PM_PAPER_BOOK", "paper", "the paper book's name, the first part of every "
                               "client_order_id ([paper.md](paper.md#the-broker))")
    paper_initial_cash: float = _setting("PM_PAPER_INITIAL_CASH", 1_000_000.0,
                                         "the paper book's cash at its first session", gt=0)
    paper_slippage_bps: float = _setting("PM_PAPER_SLIPPAGE_BPS", 5.0,
                                         "every simulated fill moves this far against the trader: no fill is free", ge=0)
    paper_commission_per_share: float = _setting("PM_PAPER_COMMISSION_PER_SHARE", 0.005, "commission per share", ge=0)
    paper_commission_minimum: float = _setting("PM_PAPER_COMMISSION_MINIMUM", 1.0,
                                               "commission per order that fills, at least", ge=0)
    paper_commission_bps: float = _setting("PM_PAPER_COMMISSION_BPS", 0.0,
                                           "commission on the notional, on top of the per-share fee", ge=0)
    paper_fractional: bool = _setting("PM_PAPER_FRACTIONAL", False, "`1`: fractional shares")
    paper_margin: bool = _setting("PM_PAPER_MARGIN", False, "`1`: buys are never cut to the cash there is")
    paper_weights: PaperWeightMethod = _setting(
        "PM_PAPER_WEIGHTS", "signal_kelly", "`target_weights`' default method (a run's config may choose "
        "another): " + ", ".join(f"`{m}`" for m in PAPER_WEIGHT_METHODS))
    paper_alert_bps: float = _setting(
        "PM_PAPER_ALERT_BPS", 100.0, "the paper NAV's gap to the backtest of the same weights (bps of the "
        "initial cash) past which `paper_reconciliation` alerts", gt=0)
    # -- the large-backfill instance -------------------------------------------------------------
    pg_bin_dir: Path | None = _setting(
        "PG_BIN_DIR", None, "where `pm postgres start` finds `initdb`, `pg_ctl` and `postgres`",
        doc_default="Debian's `/usr/lib/postgresql/<newest>/bin`, then the PATH")
    # -- the cluster -----------------------------------------------------------------------------
    celery_broker: str | None = _setting(
        "PM_CELERY_BROKER", None, "the cluster's Redis broker (`redis://host:port/0`; `pm cluster start` writes it "
        "into the cluster's instance.env): set, every run executes its steps on the cluster's Celery workers "
        "([docs/deploy.md](deploy.md))", doc_default="none: every run executes its steps in its own process")

    # -- validation: each check's message is the one line a person reads -------------------------
    @field_validator("price_source", "llm_mode", "llm_anonymize", "paper_weights", mode="before")
    @classmethod
    def _one_of(cls, value: Any, info: ValidationInfo) -> Any:
        choices = get_args(cls.model_fields[info.field_name].annotation)
        if value not in choices:
            raise _refused(info, value, f": use one of {', '.join(choices)}")
        return value

    @field_validator("paper_initial_cash", "paper_alert_bps", "llm_max_latency_seconds",
                     "llm_min_tokens_per_second", mode="before")
    @classmethod
    def _positive(cls, value: Any, info: ValidationInfo) -> float:
        number = _number(value)
        if not number > 0:
            raise _refused(info, value, " must be a positive number")
        return number

    @field_validator("paper_slippage_bps", "paper_commission_per_share", "paper_commission_minimum",
                     "paper_commission_bps", mode="before")
    @classmethod
    def _non_negative(cls, value: Any, info: ValidationInfo) -> float:
        number = _number(value)
        if not number >= 0:
            raise _refused(info, value, " must be a number >= 0")
        return number

    @field_validator("llm_retry_invalid", "paper_fractional", "paper_margin", mode="before")
    @classmethod
    def _flag(cls, value: Any, info: ValidationInfo) -> bool:
        if isinstance(value, bool):
            return value
        if value not in ("0", "1"):
            raise _refused(info, value, ": use 1 (on) or 0 (off)")
        return value == "1"

    @field_validator("csv_dir", "pg_bin_dir", mode="before")
    @classmethod
    def _optional_path(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @field_validator("start_date", mode="before")
    @classmethod
    def _start_date(cls, value: Any, info: ValidationInfo) -> dt.date:
        try:
            day = value if isinstance(value, dt.date) else dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            raise _refused(info, value, " is not an ISO date (YYYY-MM-DD)") from None
        if not dt.date(1990, 1, 1) <= day <= dt.date.today():
            raise _refused(info, value, " must lie between 1990-01-01 and today")
        return day

    @field_validator("forecast_fit_window", mode="before")
    @classmethod
    def _fit_window(cls, value: Any, info: ValidationInfo) -> int:
        return _whole_number(value, info, "sessions", 250, 2520)

    @field_validator("llm_health_interval", mode="before")
    @classmethod
    def _health_interval(cls, value: Any, info: ValidationInfo) -> int:
        return _whole_number(value, info, "seconds", 30)

    @field_validator("llm_parallel_per_host", mode="before")
    @classmethod
    def _parallel(cls, value: Any, info: ValidationInfo) -> int:
        return _whole_number(value, info, "requests", 1, 32)

    @field_validator("ollama_host", mode="after")
    @classmethod
    def _hosts(cls, value: str, info: ValidationInfo) -> str:
        if any("://" in h and not h.strip().startswith(("http://", "https://")) for h in value.split(",")):
            raise _refused(info, value, ": each server as http://host:port, several separated by commas")
        return value

    @field_validator("celery_broker", mode="after")
    @classmethod
    def _broker(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://")):
            raise _refused(info, value, ": a Redis URL, redis://host:port/0")
        return value

    @field_validator("benchmark", mode="before")
    @classmethod
    def _benchmark(cls, value: Any) -> str:
        from pm_domain.tickers import TickerError, validate_ticker

        try:
            return validate_ticker(value)
        except TickerError as exc:
            raise _error(f"PM_BENCHMARK: {exc}") from None

    @field_validator("nightly_time", mode="before")
    @classmethod
    def _nightly_time(cls, value: Any, info: ValidationInfo) -> dt.time:
        try:
            moment = value if isinstance(value, dt.time) else dt.time.fromisoformat(value)
        except (TypeError, ValueError):
            raise _refused(info, value, " is not a time of day (HH:MM)") from None
        return moment.replace(second=0, microsecond=0)

    @field_validator("nightly_timezone", mode="before")
    @classmethod
    def _timezone(cls, value: Any, info: ValidationInfo) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, TypeError, ValueError):
            raise _refused(info, value, " is not an IANA time zone (e.g. Europe/London)") from None
        return value

    @field_validator("llm_analysis_model", "llm_signal_model", "llm_risk_model", mode="before")
    @classmethod
    def _route(cls, value: Any, info: ValidationInfo) -> str:
        if not isinstance(value, str) or not any(name.strip() for name in value.split(",")):
            raise _refused(info, value, ": name a model, or several separated by commas")
        return value

    @field_validator("llm_knowledge_cutoffs", mode="before")
    @classmethod
    def _cutoffs(cls, value: Any) -> str:
        from pm_domain.llm.cutoffs import parse_cutoffs

        try:
            parse_cutoffs(value)
        except (AttributeError, ValueError) as exc:
            raise _error(str(exc)) from None
        return value

    @field_validator("ollama_host", "paper_book", "duckdb_path", "watchlist", mode="before")
    @classmethod
    def _not_blank(cls, value: Any, info: ValidationInfo) -> str:
        if not str(value).strip():
            raise _refused(info, value, " must not be empty")
        return value


ENV_NAMES: dict[str, str] = {name: field.validation_alias for name, field in Settings.model_fields.items()}


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _whole(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.isdigit())


def _whole_number(value: Any, info: ValidationInfo, unit: str, low: int, high: int | None = None) -> int:
    """`value` as a whole number in low..high (no upper bound without `high`), or the one-line refusal."""
    if not _whole(value) or int(value) < low or (high is not None and int(value) > high):
        bounds = f" in {low}..{high}" if high is not None else f", at least {low}"
        raise _refused(info, value, f" must be a whole number of {unit}{bounds}")
    return int(value)


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("pm_setting", "{message}", {"message": message})


def _refused(info: ValidationInfo, value: Any, expected: str) -> PydanticCustomError:
    """`PM_X='value' <what is expected>`: the one line every refusal reads as."""
    return _error(f"{ENV_NAMES[info.field_name]}={value!r}{expected}")


def one_line(exc: ValidationError) -> str:
    """pydantic's multi-line report as one line per the project's style, each refusal naming its variable."""
    lines = []
    for error in exc.errors():
        if error["type"] == "pm_setting":
            lines.append(error["msg"])
            continue
        key = str(error["loc"][0]) if error["loc"] else ""
        env = ENV_NAMES.get(key, key)
        lines.append(f"{env}={error['input']!r}: {error['msg']}")
    return "; ".join(lines)


def read() -> Settings:
    """The settings of the environment as it is now, checked."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(one_line(exc)) from None


_cached: tuple[tuple[str | None, ...], Settings] | None = None


def current() -> Settings:
    """This process's settings: read once, read again only when one of the variables changed."""
    global _cached
    environment = tuple(os.environ.get(env) for env in ENV_NAMES.values())
    cached = _cached
    if cached is None or cached[0] != environment:
        cached = _cached = (environment, read())
    return cached[1]


# -- accessors for the call sites that predate `current()` -------------------------------------

def start_date() -> dt.date:
    """First trading date of the partition set (PM_START_DATE)."""
    return current().start_date


def duckdb_path() -> str:
    """The DuckDB file every asset reads and writes (PM_DUCKDB_PATH)."""
    return current().duckdb_path


def watchlist_path() -> Path:
    """The watchlist file, one ticker per line (PM_WATCHLIST)."""
    return current().watchlist


def forecast_fit_window() -> int:
    """Sessions each forecasting model is fitted on (PM_FORECAST_FIT_WINDOW)."""
    return current().forecast_fit_window


def benchmark_ticker() -> str:
    """The ticker risk measures beta against (PM_BENCHMARK)."""
    return current().benchmark


def nightly_time() -> dt.time:
    """When the nightly schedule runs, local to `nightly_timezone()` (PM_NIGHTLY_TIME)."""
    return current().nightly_time


def nightly_timezone() -> str:
    """The IANA time zone of `nightly_time()` (PM_NIGHTLY_TIMEZONE)."""
    return current().nightly_timezone


def llm_health_interval_seconds() -> int:
    """Seconds between LLM health probes while Ollama answers (PM_LLM_HEALTH_INTERVAL)."""
    return current().llm_health_interval


def llm_anonymize() -> str:
    """Which LLM prompts hide the ticker, the date and the price level (PM_LLM_ANONYMIZE)."""
    return current().llm_anonymize


def paper_alert_bps() -> float:
    """The paper NAV's drift (bps of the initial cash) past which paper_reconciliation alerts (PM_PAPER_ALERT_BPS)."""
    return current().paper_alert_bps


def paper_weight_method() -> str:
    """target_weights' method unless a run's config says otherwise (PM_PAPER_WEIGHTS)."""
    return current().paper_weights
