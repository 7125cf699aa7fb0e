"""The README's commands run as written: its `pm` lines are extracted from the README itself and
run in order against a temporary instance and store, with Yahoo-style CSV files for the tickers
it adds. Links in the README and docs/ point at files that exist."""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import subprocess
from pathlib import Path

import duckdb
import pytest

from pm_domain.price_sources import fetch_sample

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Commands a test cannot run here: the UI blocks until stopped, the demo and the suite are tested
# on their own (tests/test_demo.py, CI).
NOT_RUN = ("make ui", "make demo", "make test")


def readme_commands() -> list[str]:
    """The README's shell lines in its ```bash blocks, comments and continuations resolved."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = []
    for block in blocks:
        for raw in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", raw).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def yahoo_csv(path: Path, source_ticker: str) -> None:
    """A Yahoo Finance export (Date, Open, High, Low, Close, Adj Close, Volume) of real index data."""
    frame = fetch_sample([source_ticker], dt.date(2015, 1, 2), dt.date(2018, 12, 31)).sort("date")
    frame.select(Date="date", Open="open", High="high", Low="low", Close="close", **{"Adj Close": "adj_close"},
                 Volume="volume").write_csv(path)


@pytest.mark.timeout(900)
def test_the_readme_commands_run_as_written(tmp_path):
    commands = readme_commands()
    runnable = [c for c in commands if not c.startswith(NOT_RUN)]
    assert any(c.startswith("make demo") for c in commands) and any("pm materialize" in c for c in runnable)
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    yahoo_csv(csvs / "AAPL.csv", "^GSPC")
    yahoo_csv(csvs / "MSFT.csv", "^IXIC")
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "OLLAMA"))} | {
        "DAGSTER_HOME": str(home), "PM_DUCKDB_PATH": str(tmp_path / "pm.duckdb"),
        "PM_WATCHLIST": str(tmp_path / "watchlist.txt"), "PM_LLM_MODE": "fallback"}
    # One shell, so the README's `export` lines hold for the commands after them, as for a reader.
    script = "set -e\n" + "\n".join(
        f"echo '>>> {c.replace(chr(39), '')}'\n{c.replace('/path/to/csvs', shlex.quote(str(csvs)))}"
        for c in runnable)
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=840)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert "no failed run recorded" in out.stdout
    with duckdb.connect(env["PM_DUCKDB_PATH"], read_only=True) as conn:
        for table in ("prices", "features", "ts_forecasts", "llm_signals"):
            tickers = {t for (t,) in conn.execute(f"SELECT DISTINCT ticker FROM {table}").fetchall()}
            assert tickers == {"AAPL", "MSFT"}, table


def test_links_in_the_readme_and_docs_point_at_files_in_the_repository():
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://127.0.0.1", "data:")):
                continue
            assert not target.startswith(("http://", "https://", "../")), f"{page.name}: link outside the repository: {target}"
            assert (page.parent / target).exists(), f"{page.name}: {target} does not exist"
