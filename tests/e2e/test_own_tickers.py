"""The README's "Your own tickers" path, as a newcomer runs it: two Yahoo-format CSVs of two years
(2017-01-03..2018-12-31), the section's commands taken from README.md and run in order in one
shell against a temporary instance and store, through prices, features, forecasts, the LLM
stages (rule-based fallback), outcomes, backtests and the paper book, then `pm book`.

The section's history table is checked against the constants it quotes, and the flag that
`ts_forecasts` names when history is short is the one the README's path uses."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from pm_domain.calendar import trading_days
from pm_domain.price_sources import fetch_sample

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FIRST, LAST = dt.date(2017, 1, 3), dt.date(2018, 12, 31)
# The README's example tickers, served from the real index data bundled with `arch`.
CSV_SOURCES = {"AAPL": "^GSPC", "MSFT": "^IXIC"}
NOT_RUN = ("make ui",)  # blocks until stopped
TICKER_TABLES = ("prices", "features", "ts_forecasts", "llm_analysis", "llm_signals", "risk_assessments",
                 "signal_outcomes", "backtests")
BOOK_TABLES = ("target_weights", "paper_fills", "paper_book", "paper_orders")


def own_tickers_section() -> str:
    text = README.read_text()
    start = text.index("## Your own tickers\n")
    return text[start:text.index("\n## ", start + 1)]


def own_tickers_commands() -> list[str]:
    """The section's shell lines, continuations joined and comments dropped."""
    (block,) = re.findall(r"```bash\n(.*?)```", own_tickers_section(), flags=re.S)
    lines = []
    for raw in block.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s+#.*$", "", raw).strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def yahoo_csv(path: Path, source_ticker: str, first: dt.date = FIRST, last: dt.date = LAST) -> None:
    """A Yahoo Finance download's columns (Date, Open, High, Low, Close, Adj Close, Volume)."""
    frame = fetch_sample([source_ticker], first, last).sort("date")
    frame.select(Date="date", Open="open", High="high", Low="low", Close="close", **{"Adj Close": "adj_close"},
                 Volume="volume").write_csv(path)


def fresh_environment(tmp_path: Path) -> tuple[dict[str, str], Path]:
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    for ticker, source in CSV_SOURCES.items():
        yahoo_csv(csvs / f"{ticker}.csv", source)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "OLLAMA", "DAGSTER_"))} | {
        "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": str(tmp_path / "pm.duckdb"),
        "PM_WATCHLIST": str(tmp_path / "watchlist.txt")}
    return env, csvs


def test_the_section_states_each_stages_history_from_the_code():
    from pm_domain import risk
    from pm_domain.backtest import BacktestRules
    from pm_domain.features import LONGEST_WINDOW, WARMUP_SESSIONS
    from pm_domain.forecasting.engine import ForecastConfig
    from pm_domain.outcomes import ENTRY_LAG_SESSIONS, TRACKING_SESSIONS

    signals = importlib.import_module("pm_assets.llm_signals")
    backtests = importlib.import_module("pm_assets.backtests")
    forecast = ForecastConfig()
    section = own_tickers_section()
    for stated in (
        f"| `features` | {WARMUP_SESSIONS} of prices",
        f"under {LONGEST_WINDOW}, SMA 50 is empty",
        f"| `ts_forecasts` | {forecast.lookback_sessions} of prices: a {forecast.fit_window}-session fit window "
        f"(`PM_FORECAST_FIT_WINDOW`), {forecast.refit_every} to the next refit, {forecast.warmup_origins} of past errors",
        f"every model from {forecast.min_history}",
        f"{signals.PRICE_LOOKBACK_SESSIONS} of prices and forecasts (hit rates), {risk.LOOKBACK_SESSIONS} for drawdown",
        f"the {ENTRY_LAG_SESSIONS + TRACKING_SESSIONS} sessions *after* each signal",
        f"the signals of {BacktestRules().position_lag} sessions before, {backtests.PRICE_LOOKBACK_SESSIONS} of prices",
        f"# {len(trading_days(FIRST, dt.date(2018, 7, 2)))} sessions, not {forecast.lookback_sessions}",
        f"start `prices` {forecast.lookback_sessions - 1} sessions before",
    ):
        assert stated in section, stated


def test_the_flag_ts_forecasts_names_for_short_history_is_the_readmes_and_works():
    import polars as pl

    from pm_assets.inputs import MissingInputsError

    module = importlib.import_module("pm_assets.ts_forecasts")
    history = pl.DataFrame({"ticker": ["AAPL"], "date": [FIRST]})
    with pytest.raises(MissingInputsError) as caught:
        module._require_lookback(history, dt.date(2016, 3, 1))
    flag = re.search(r"--config-json '([^']*)'", str(caught.value))
    assert flag, str(caught.value)
    (forecasts_command,) = [c for c in own_tickers_commands() if "ts_forecasts" in c]
    assert flag.group(0) in forecasts_command
    config = json.loads(flag.group(1))["ops"]["ts_forecasts"]["config"]
    assert module.TsForecastsConfig(**config).allow_short_history


@pytest.mark.timeout(1500)
def test_the_readme_own_tickers_path_runs_on_two_years_of_csv(tmp_path):
    commands = [c for c in own_tickers_commands() if not c.startswith(NOT_RUN)]
    assert any("--assets prices " in c for c in commands) and commands[-2:] == [".venv/bin/pm book",
                                                                                ".venv/bin/pm failures"]
    env, csvs = fresh_environment(tmp_path)
    timings = tmp_path / "timings.txt"
    # One shell, so the section's `export` lines hold for the commands after them, as for a reader.
    script = "set -e\n" + "\n".join(
        f"echo '>>> {c.replace(chr(39), '')}'\nstarted=$(date +%s%N)\n"
        f"{c.replace('/path/to/csvs', shlex.quote(str(csvs)))}\n"
        f"echo \"$(( ($(date +%s%N) - started) / 1000000000 )) s: {c.split(' --tickers')[0][:80]}\" >> {shlex.quote(str(timings))}"
        for c in commands)
    began = time.monotonic()
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1440)
    print(f"{time.monotonic() - began:.0f} s in all\n{timings.read_text() if timings.exists() else ''}")
    assert out.returncode == 0, f"{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    assert "no failed run recorded" in out.stdout
    assert f"as of {LAST}" in out.stdout  # pm book

    with duckdb.connect(env["PM_DUCKDB_PATH"], read_only=True) as conn:
        def one(sql):
            return conn.execute(sql).fetchone()

        assert one("SELECT count(*), min(date), max(date) FROM prices") == (2 * len(trading_days(FIRST, LAST)), FIRST, LAST)
        for table in TICKER_TABLES:
            tickers = {t for (t,) in conn.execute(f"SELECT DISTINCT ticker FROM {table}").fetchall()}
            assert tickers == set(CSV_SOURCES), table
        # forecast from the shorter window the flag allows, every model fitted (>= 250 sessions)
        shortest, first_forecast = one("SELECT min(fit_sessions), min(date) FROM ts_forecasts")
        assert first_forecast == dt.date(2018, 7, 2) and 250 <= shortest < 500
        for table in BOOK_TABLES:
            assert one(f"SELECT count(*) FROM {table}")[0] > 0, table
        assert one("SELECT max(date) FROM paper_book")[0] == LAST


def test_prices_beyond_a_csvs_dates_are_refused_before_any_run(tmp_path):
    env, csvs = fresh_environment(tmp_path)
    env |= {"PM_PRICE_SOURCE": "csv", "PM_CSV_DIR": str(csvs)}
    pm = str(ROOT / ".venv" / "bin" / "pm")
    subprocess.run([pm, "tickers", "add", "AAPL"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    out = subprocess.run([pm, "materialize", "--assets", "prices", "--tickers", "AAPL", "--from", "2016-01-04",
                          "--to", "2016-01-05"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    refusal = [line for line in out.stderr.splitlines() if "covers" in line]
    assert refusal == [f"pm: {csvs / 'AAPL.csv'} covers 2017-01-03..2018-12-31 (502 sessions); --from 2016-01-04 "
                       "is before it: start at 2017-01-03, or use a file that reaches back to 2016-01-04"]
    assert "materializing" not in out.stdout  # nothing ran
