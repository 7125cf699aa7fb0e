"""`pm materialize` (runs in this process) and `pm backfill` (through the running webserver): the
same selection, checked before anything runs. The engines are pm_jobs/materialize.py and
pm_jobs/backfill.py."""

from __future__ import annotations

import argparse
import io
import json
import re
import sys

from pm_jobs.cli.instance import dagster_instance


def add_parser(commands) -> None:
    materialize = commands.add_parser(
        "materialize", help="run assets over dates x tickers in this process (checked first)",
        description="Run assets over a date range and tickers in this process, one run per block of tickers "
                    "adjacent in the universe. Holidays, reversed or out-of-range dates, unknown assets and "
                    "tickers not in the universe are refused in one line before anything runs.")
    selection_arguments(materialize)
    materialize.add_argument("--config-json", default=None, metavar="JSON",
                             help="run config, as the launchpad takes it, e.g. "
                                  "'{\"ops\": {\"ts_forecasts\": {\"config\": {\"refit_every\": 20}}}}'")
    materialize.add_argument("--parallel", type=parallel_processes, default=1, metavar="N",
                             help="run the tickers as N processes at once, each its share of adjacent tickers "
                                  "(default 1; use the cores for a long range: docs/scale.md)")
    materialize.set_defaults(func=run_materialize)
    backfill = commands.add_parser("backfill", help="launch a backfill on the running webserver (as the UI does)",
                                   description="Launch an asset backfill through the running webserver (make ui); "
                                               "the daemon runs it. Checked like pm materialize.")
    selection_arguments(backfill)
    backfill.add_argument("--url", default=None,
                          help="the webserver (default: the one `make ui` started, else http://127.0.0.1:3000)")
    backfill.add_argument("--parallel", type=parallel_processes, default=1, metavar="N",
                          help="split the tickers into N ranges of adjacent tickers, one run each, which the daemon "
                               "runs side by side (default 1)")
    backfill.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                          help="follow the backfill until it finishes, at most this long; print failed steps' errors")
    backfill.set_defaults(func=run_backfill)


class TerminalLines(io.TextIOBase):
    """The stream `pm` gives the engine's Progress: the steps' lines as they come, tidied. A line
    that repeats its step's name (`  backtests: backtests: ^GSPC done`) says it once; Ollama found
    unreachable is said once a command, in one short line (each LLM stage finds it)."""

    STEP_LINE = re.compile(r"^(\s+)([\w.-]+): ((?:WARNING|ERROR): )?(.*)$")
    UNREACHABLE = re.compile(r"Ollama unreachable at (\S+): ")

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.pending = ""
        self.said_unreachable = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            tidy = self.tidy(line)
            if tidy is not None:
                self.out.write(tidy + "\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def tidy(self, line: str) -> str | None:
        step = self.STEP_LINE.match(line)
        if step is None:
            return line
        indent, name, level, message = step.groups()
        message = message.removeprefix(f"{name}: ")
        unreachable = self.UNREACHABLE.search(message)
        if unreachable:
            if self.said_unreachable:
                return None
            self.said_unreachable = True
            return (f"{indent}{name}: {level or ''}Ollama unreachable at {unreachable[1]}: "
                    "writing labelled rule-based fallback rows")
        return f"{indent}{name}: {level or ''}{message}"


def parallel_processes(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= 32:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number of processes from 1 to 32")
    return number


def selection_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--assets", required=True, help="comma-separated asset names, e.g. prices,features")
    command.add_argument("--tickers", default=None,
                         help="comma-separated (default: every ticker in the universe; none for portfolio_backtests)")
    command.add_argument("--from", dest="start", default=None, help="first trading day, YYYY-MM-DD")
    command.add_argument("--to", dest="end", default=None, help="last trading day, YYYY-MM-DD (default: --from)")


def names(value: str | None) -> list[str]:
    """`a, b,,c` -> ['a', 'b', 'c']."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def run_materialize(args: argparse.Namespace) -> int:
    """The selection checked, then one in-process run per block of tickers."""
    # the engine imports the definitions (dagster, every asset): not for `pm --help`
    from pm_jobs.materialize import Progress, ensure_store_tables, plan_selection, run_selection

    run_config = None
    if args.config_json:
        try:
            run_config = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            print(f"pm: --config-json is not JSON: {exc}", file=sys.stderr)
            return 2
    instance = dagster_instance()
    selection = plan_selection(instance, names(args.assets), names(args.tickers), args.start, args.end)
    progress = Progress(stream=TerminalLines())
    ensure_store_tables()
    progress.line(f"materializing {selection.describe()} ...")
    if args.parallel > 1 and len(selection.tickers) > 1:
        return run_in_processes(instance, selection, args.parallel, args.config_json, progress.line)
    for outcome in run_selection(instance, selection, progress, run_config):
        if not outcome.success:
            print(f"pm: run {outcome.run_id[:8]} failed at {outcome.failure} "
                  "(recorded in run_failures: pm failures)", file=sys.stderr)
            return 1
        progress.line(f"run {outcome.run_id[:8]} succeeded in {outcome.seconds:.1f} s")
    return 0


def run_in_processes(instance, selection, parts: int, config_json: str | None, say) -> int:
    from pm_jobs.parallel import make_room, run_shares

    make_room(instance, parts, say)
    outcomes = run_shares(selection, parts, config_json, say)
    failed = [o for o in outcomes if o.returncode != 0]
    for outcome in failed:
        print(f"pm: share {outcome.share} ({outcome.tickers[0]}..{outcome.tickers[-1]}) failed: {outcome.last_line}",
              file=sys.stderr)
    if not failed:
        say(f"{len(outcomes)} processes succeeded")
    return 1 if failed else 0


def run_backfill(args: argparse.Namespace) -> int:
    """The selection checked, then one backfill of a range per block of tickers; with --wait, followed."""
    # the engines import dagster and the definitions: not for `pm --help`
    from pm_assets.partitions import RANGE_END_TAG, RANGE_START_TAG, range_tags
    from pm_jobs.backfill import BackfillError, launch_backfill, ui_url, wait_for_backfill
    from pm_jobs.materialize import plan_selection
    from pm_jobs.selection import BY_DATE, SelectionError

    url = args.url or ui_url()
    try:
        instance = dagster_instance()
        selection = plan_selection(instance, names(args.assets), names(args.tickers), args.start, args.end)
        if selection.start is None:
            raise SelectionError(f"{', '.join(selection.assets)}: not partitioned, nothing to backfill "
                                 "(pm materialize builds them)")
        blocks = selection.ticker_blocks
        if args.parallel > 1 and selection.partitioning != BY_DATE:
            from pm_jobs.parallel import make_room

            make_room(instance, args.parallel, lambda line: print(line, flush=True))
            blocks = tuple(selection.share_blocks(args.parallel))
        ranges = []
        for block in blocks:
            tags = range_tags(None if selection.partitioning == BY_DATE else block, selection.start, selection.end)
            ranges.append((tags[RANGE_START_TAG], tags[RANGE_END_TAG]))
        backfill_id = launch_backfill(url, list(selection.assets), ranges)
        print(f"backfill {backfill_id}: {selection.describe()} -> {url}/runs/b/{backfill_id}", flush=True)
        if not args.wait:
            return 0
        progress = wait_for_backfill(url, backfill_id, args.wait,
                                     report=lambda p: print(f"  {p.describe()}", flush=True))
    except (BackfillError, SelectionError) as exc:
        print(f"pm: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, BackfillError) else 2
    for line in progress.failures:
        print(f"pm: {line}", file=sys.stderr)
    return 0 if progress.succeeded else 1
