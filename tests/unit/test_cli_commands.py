"""`pm`'s package (pm_jobs/cli/): every command registered by its module with the function that
runs it, `pm --help` without dagster, and the helpers behind the commands' output: the watchlist
kept in step, a lower-case ticker refused with the spelling meant, the steps' lines tidied, the
reports' lines short, a failed range's partitions."""

from __future__ import annotations

import io
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from pm_domain.tickers import TickerError
from pm_jobs import cli
from pm_jobs.cli import reports, runs, tickers
from pm_jobs.cli.materialize import TerminalLines

ROOT = Path(__file__).resolve().parents[2]


def every_command_line() -> list[list[str]]:
    """['demo'], ['tickers', 'add'], ...: each command, and each of its actions."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    lines = []
    for name, command in commands.choices.items():
        actions = [a for a in command._actions if a.dest == "action"]
        lines += [[name, action] for action in actions[0].choices] if actions else [[name]]
    return lines


def test_every_command_and_action_is_registered_with_its_function():
    lines = every_command_line()
    assert {line[0] for line in lines} == {"demo", "materialize", "backfill", "tickers", "partitions", "failures",
                                           "runs", "ui", "summary", "book", "postgres", "cluster"}
    required = {"materialize": ["--assets", "prices"], "backfill": ["--assets", "prices"], "add": ["AAPL"],
                "remove": ["AAPL"], "release": ["0123abcd"]}
    for line in lines:
        args = cli.build_parser().parse_args(line + required.get(line[-1], []))
        assert callable(args.func) and args.func.__module__.startswith("pm_jobs.cli."), line
        assert args.instance in ("announce", "quiet", "none"), line


@pytest.mark.parametrize("line", every_command_line(), ids=" ".join)
def test_every_command_and_action_answers_help(line, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args([*line, "--help"])
    assert exited.value.code == 0 and f"usage: pm {' '.join(line)}" in capsys.readouterr().out


def test_the_console_script_points_at_main():
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["pm"]
    module, _, name = target.partition(":")
    assert (module, name) == ("pm_jobs.cli", "main") and callable(cli.main)


def test_pm_help_imports_neither_dagster_nor_the_assets():
    code = ("import sys\nfrom pm_jobs.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in ('dagster', 'pm_assets', 'pandas', 'polars', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_only_dagsters_own_notices_are_hidden():
    from dagster import BetaWarning, PreviewWarning, SupersessionWarning

    from pm_jobs.cli.instance import quiet_dagster_notices

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        quiet_dagster_notices()
        for category in (BetaWarning, PreviewWarning, SupersessionWarning, UserWarning, DeprecationWarning):
            warnings.warn(category.__name__, category)
    assert [str(w.message) for w in shown] == ["UserWarning", "DeprecationWarning"]


def test_a_lower_case_ticker_is_refused_with_the_spelling_meant():
    with pytest.raises(TickerError) as refused:
        tickers.refuse_lower_case(["^GSPC", "aapl", "Brk.b"])
    message = str(refused.value)
    assert "did you mean AAPL BRK.B?" in message and "\n" not in message
    assert "pm tickers add aapl" not in message
    tickers.refuse_lower_case(["^GSPC", "BRK.B", "EURUSD=X"])  # upper case: nothing to say


def test_adding_appends_to_the_watchlist_keeping_its_comments_and_order(tmp_path):
    path = tmp_path / "watchlist.txt"
    path.write_text("# mine\n^GSPC\nAAPL  # apple")  # no newline at the end
    assert tickers.append_to_watchlist(path, ["AAPL", "MSFT", "^IXIC"]) == ["MSFT", "^IXIC"]
    assert path.read_text() == "# mine\n^GSPC\nAAPL  # apple\nMSFT\n^IXIC\n"
    assert tickers.append_to_watchlist(path, ["MSFT"]) == []  # listed already: the file is left alone
    assert tickers.append_to_watchlist(tmp_path / "new" / "list.txt", ["QQQ"]) == ["QQQ"]
    assert (tmp_path / "new" / "list.txt").read_text() == "QQQ\n"


def test_removing_deletes_the_tickers_lines_and_nothing_else(tmp_path):
    path = tmp_path / "watchlist.txt"
    path.write_text("# mine: AAPL and MSFT\n^GSPC\nAAPL  # apple\n\nMSFT\n")
    assert tickers.remove_from_watchlist(path, ["AAPL", "QQQ"]) == ["AAPL"]
    assert path.read_text() == "# mine: AAPL and MSFT\n^GSPC\n\nMSFT\n"
    assert tickers.remove_from_watchlist(path, ["QQQ"]) == []
    assert tickers.remove_from_watchlist(tmp_path / "none.txt", ["AAPL"]) == []


def test_the_steps_lines_say_their_step_once_and_ollama_unreachable_once_in_a_short_line():
    error = ("Ollama unreachable at http://127.0.0.1:11434: ConnectionError: Failed to connect to Ollama. Please "
             "check that Ollama is downloaded, running and accessible. https://ollama.com/download; writing 120 "
             "rule-based fallback row(s), labelled llm_source='fallback' (mode=auto; PM_LLM_MODE=fallback skips it)")
    out = io.StringIO()
    lines = TerminalLines(out)
    for line in ["materializing backtests: the walk-forward backtest ...", "  backtests: backtests: ^GSPC done",
                 f"  llm_analysis: WARNING: analysis: {error}", f"  llm_signals: signal: {error} (warned once this run)",
                 "  llm_signals: signal: {'ollama': 0, 'fallback': 3}", "  ... still running: 15 s"]:
        print(line, file=lines, flush=True)
    assert out.getvalue().splitlines() == [
        "materializing backtests: the walk-forward backtest ...", "  backtests: ^GSPC done",
        "  llm_analysis: WARNING: Ollama unreachable at http://127.0.0.1:11434: writing labelled rule-based fallback rows",
        "  llm_signals: signal: {'ollama': 0, 'fallback': 3}", "  ... still running: 15 s"]
    assert max(len(line) for line in out.getvalue().splitlines()) < 120


def test_report_lines_are_packed_short_without_splitting_a_part():
    parts = ["return -3.21% vs -9.87%", "Sharpe -0.45", "max DD 12.34%", "exposure 45.00%", "trades 3",
             "hit rate 66.67%", "insufficient_data (no session after the LLM's knowledge cutoff: 2018 is before it)"]
    lines = reports.packed("  ^GSPC    ", parts, 11)
    assert all(len(line) <= reports.WIDTH for line in lines) and len(lines) > 1
    assert all(any(part in line for line in lines) for part in parts)
    assert all(line.startswith(" " * 11) for line in lines[1:])
    long = reports.packed(" " * 11, ["robust_verdict failed: " + "a reason that goes on " * 12], 11)
    assert len(long) > 1 and all(len(line) <= reports.WIDTH for line in long)


def test_a_failed_range_is_every_session_times_the_tickers_between_in_the_universes_order():
    universe = ["^GSPC", "AAPL", "^IXIC", "MSFT"]
    assert runs.failed_partitions("2018-12-31|QQQ", universe) == ["2018-12-31|QQQ"]
    assert runs.failed_partitions("2018-12-21|AAPL...2018-12-26|^IXIC", universe) == [
        "2018-12-21|AAPL", "2018-12-21|^IXIC", "2018-12-24|AAPL", "2018-12-24|^IXIC", "2018-12-26|AAPL",
        "2018-12-26|^IXIC"]  # Christmas is not a session
    assert runs.failed_partitions("2018-12-24...2018-12-27", universe) == ["2018-12-24", "2018-12-26", "2018-12-27"]
    assert runs.failed_partitions("2018-12-24|QQQ...2018-12-24|QQQ", universe) == ["2018-12-24|QQQ"]  # removed since
