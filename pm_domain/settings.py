"""Project settings read from the environment, with defaults that work on a fresh clone.

Only values that shape the asset graph itself (partition start, exchange) or locate files live
here; run-time choices (price source, CSV folder) are resource configuration.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The sample data ends on 2018-12-31 and ts_forecasts needs ~500 trading days of history, so the
# default partition set starts early enough for the demo (last 120 sessions of 2018) to have its
# full lookback, while keeping dates x tickers well under Dagster's ~100,000 partitions per asset:
# 2016-01-04 .. today is ~2,750 trading days, i.e. ~36 tickers per 100,000 partitions.
DEFAULT_START_DATE = "2016-01-04"
EXCHANGE = "XNYS"


class SettingsError(ValueError):
    """A configuration value from the environment is malformed or out of range."""


def start_date() -> dt.date:
    """First trading date of the partition set (`PM_START_DATE`, ISO format)."""
    raw = os.environ.get("PM_START_DATE", DEFAULT_START_DATE)
    try:
        value = dt.date.fromisoformat(raw)
    except ValueError as exc:
        raise SettingsError(f"PM_START_DATE={raw!r} is not an ISO date (YYYY-MM-DD)") from exc
    if not dt.date(1990, 1, 1) <= value <= dt.date.today():
        raise SettingsError(f"PM_START_DATE={raw!r} must lie between 1990-01-01 and today")
    return value


def duckdb_path() -> str:
    """The DuckDB file every asset reads and writes (`PM_DUCKDB_PATH`, default data/pm.duckdb)."""
    return os.environ.get("PM_DUCKDB_PATH", str(PROJECT_ROOT / "data" / "pm.duckdb"))


def watchlist_path() -> Path:
    """The watchlist file, one ticker per line (`PM_WATCHLIST`, default data/watchlist.txt)."""
    return Path(os.environ.get("PM_WATCHLIST", str(PROJECT_ROOT / "data" / "watchlist.txt")))


def forecast_fit_window() -> int:
    """Sessions each forecasting model is fitted on (`PM_FORECAST_FIT_WINDOW`, default 500).

    It sets the lookback `ts_forecasts` declares over `prices`, so it is read when the
    definitions load."""
    raw = os.environ.get("PM_FORECAST_FIT_WINDOW", "500")
    if not raw.isdigit() or not 250 <= int(raw) <= 2520:
        raise SettingsError(f"PM_FORECAST_FIT_WINDOW={raw!r} must be a whole number of sessions in 250..2520")
    return int(raw)


def benchmark_ticker() -> str:
    """The ticker risk measures beta against (PM_BENCHMARK, default ^GSPC)."""
    from pm_domain.tickers import TickerError, validate_ticker

    try:
        return validate_ticker(os.environ.get("PM_BENCHMARK", "^GSPC"))
    except TickerError as exc:
        raise SettingsError(f"PM_BENCHMARK: {exc}") from None


def nightly_time() -> dt.time:
    """When the nightly schedule runs, local to `nightly_timezone()` (`PM_NIGHTLY_TIME`, HH:MM,
    default 18:30: after the 16:00 close, once end-of-day data has settled)."""
    raw = os.environ.get("PM_NIGHTLY_TIME", "18:30")
    try:
        return dt.time.fromisoformat(raw).replace(second=0, microsecond=0)
    except ValueError as exc:
        raise SettingsError(f"PM_NIGHTLY_TIME={raw!r} is not a time of day (HH:MM)") from exc


def nightly_timezone() -> str:
    """The IANA time zone of `nightly_time()` (`PM_NIGHTLY_TIMEZONE`, default America/New_York)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    raw = os.environ.get("PM_NIGHTLY_TIMEZONE", "America/New_York")
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(f"PM_NIGHTLY_TIMEZONE={raw!r} is not an IANA time zone (e.g. Europe/London)") from exc
    return raw


def llm_health_interval_seconds() -> int:
    """Seconds between LLM health probes while Ollama answers (`PM_LLM_HEALTH_INTERVAL`, default
    300, at least 30); a down server is probed at doubling intervals up to an hour."""
    raw = os.environ.get("PM_LLM_HEALTH_INTERVAL", "300")
    if not raw.isdigit() or int(raw) < 30:
        raise SettingsError(f"PM_LLM_HEALTH_INTERVAL={raw!r} must be a whole number of seconds, at least 30")
    return int(raw)


LLM_ANONYMIZE_POLICIES = ("auto", "always", "never")


def llm_anonymize() -> str:
    """Which LLM prompts hide the ticker, the date and the price level (`PM_LLM_ANONYMIZE`,
    default auto): auto, those about sessions the asking model may remember (not after its
    training cutoff); always; never."""
    raw = os.environ.get("PM_LLM_ANONYMIZE", "auto")
    if raw not in LLM_ANONYMIZE_POLICIES:
        raise SettingsError(f"PM_LLM_ANONYMIZE={raw!r}: use one of {', '.join(LLM_ANONYMIZE_POLICIES)}")
    return raw


def number_from_env(name: str, default: float, positive: bool = True) -> float:
    """A number from the environment (`default` when unset): > 0 when `positive`, else >= 0."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0 if positive else value >= 0):
        raise SettingsError(f"{name}={raw!r} must be a {'positive number' if positive else 'number >= 0'}")
    return value


def paper_alert_bps() -> float:
    """How far (bps of the initial cash) the paper NAV may drift from the backtest of the same
    weights before the paper_reconciliation sensor writes an alert (`PM_PAPER_ALERT_BPS`, default 100)."""
    return number_from_env("PM_PAPER_ALERT_BPS", 100.0)


PAPER_WEIGHT_METHODS = ("signal_kelly", "equal", "inverse_volatility", "hierarchical_risk_parity", "minimum_variance")


def paper_weight_method() -> str:
    """How target_weights sizes the day's signals unless a run's config says otherwise
    (`PM_PAPER_WEIGHTS`, default signal_kelly; read when the definitions load)."""
    raw = os.environ.get("PM_PAPER_WEIGHTS", "signal_kelly")
    if raw not in PAPER_WEIGHT_METHODS:
        raise SettingsError(f"PM_PAPER_WEIGHTS={raw!r}: use one of {', '.join(PAPER_WEIGHT_METHODS)}")
    return raw
