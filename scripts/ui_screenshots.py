"""Screenshots of the real Dagster UI on the demo's instance, for the README and docs/ui.md.

    make demo && make screenshots           # or: python scripts/ui_screenshots.py OUT_DIR

Starts `pm ui` on a free loopback port against the instance and store in use (the project's
`.dagster_home` and `data/pm.duckdb` unless DAGSTER_HOME / PM_DUCKDB_PATH say otherwise), drives
Debian's Chromium with Playwright through the pages the UI tour names, writes docs/images/*.png,
and stops the UI's whole process group. Needs `chromium` (apt-get install chromium) and the
`dev` extra's playwright (make installs it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file: the project's tests/ helpers are importable

from tests.support.local_server import free_port, stop_process_group, wait_until_answering  # noqa: E402
IMAGES = ROOT / "docs" / "images"
CHROMIUM = os.environ.get("PM_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's hosts, which a closed
# network refuses many times a second.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
DEMO_PARTITION = "2018-12-31%7C%5EGSPC"  # 2018-12-31|^GSPC, URL-encoded
STARTUP_SECONDS = 180


def start_ui(port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PM_PRICE_SOURCE": os.environ.get("PM_PRICE_SOURCE", "sample"),
           "PM_LLM_MODE": os.environ.get("PM_LLM_MODE", "fallback"), "DAGSTER_DISABLE_TELEMETRY": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "pm_jobs.cli", "ui", "--port", str(port)], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/server_info", process, log, STARTUP_SECONDS, "pm ui", 1.0)
    except RuntimeError as exc:
        stop_process_group(process)
        raise SystemExit(str(exc)) from None
    return process


def show_markdown(row: str) -> Callable:
    """Open the metadata row's markdown (a plot or a table): the UI shows it in a dialog."""
    def action(page) -> None:
        cell = page.locator("tr").filter(has=page.get_by_text(row, exact=True)).get_by_text("[Show Markdown]")
        cell.first.scroll_into_view_if_needed()
        cell.first.click()
        page.wait_for_timeout(2000)
    return action


def scroll_to(text: str) -> Callable:
    def action(page) -> None:
        page.get_by_text(text, exact=True).first.scroll_into_view_if_needed()
        page.wait_for_timeout(1500)
    return action


# (file, path, what to do before the shot, text the page must show): the tour of docs/ui.md, in
# its order. A page without its text fails the run, so a screenshot never shows an error page.
SHOTS = [
    ("lineage.png", "/assets/backtests?view=lineage&lineageScope=upstream", None, "llm_signals"),
    ("backtests-partition.png", f"/assets/backtests?view=partitions&partition={DEMO_PARTITION}", None,
     "run_date_range"),
    ("backtests-equity-curve.png", f"/assets/backtests?view=partitions&partition={DEMO_PARTITION}",
     show_markdown("equity_curve"), "strategy equity against buy and hold"),
    ("llm-signals-partition.png", f"/assets/llm_signals?view=partitions&partition={DEMO_PARTITION}",
     scroll_to("run_preview"), "llm_source"),
    ("llm-signals-checks.png", "/assets/llm_signals?view=checks", None, "validation_structure"),
    ("automation.png", "/automation", None, "nightly_research"),
]


def main(out_dir: Path = IMAGES) -> int:
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set PM_CHROMIUM)", file=sys.stderr)
        return 2
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    from pm_jobs.cli.instance import use_project_instance

    print(f"instance: {use_project_instance()}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = Path(os.environ["DAGSTER_HOME"]) / "screenshots-ui.log"
    process = start_ui(port, log)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(90_000)  # a loaded machine (the test suite beside it) renders slowly; a bound, not a timing
            # Dagster's first-visit community dialog covers the page whenever it opens (a second or,
            # on a busy machine, many after the first page): Skip it before any click, and before a shot.
            skip = page.get_by_role("button", name="Skip")
            page.add_locator_handler(skip, lambda button: button.click())
            page.goto(f"http://127.0.0.1:{port}/overview", wait_until="networkidle")
            page.wait_for_timeout(2000)
            for name, path, before, expected in SHOTS:
                page.goto(f"http://127.0.0.1:{port}{path}", wait_until="networkidle")
                page.wait_for_timeout(3000)
                if before:
                    before(page)
                try:  # the graph and the tables render after the data arrives: slower on a busy machine
                    page.wait_for_function("text => document.documentElement.innerHTML.includes(text)",
                                           arg=expected, timeout=90_000)
                except PlaywrightTimeout:
                    page.screenshot(path=str(out_dir / f"failed-{name}"))
                    raise SystemExit(f"{path}: the page does not show {expected!r} (see {log} and "
                                     f"{out_dir / f'failed-{name}'})") from None
                page.wait_for_timeout(1000)
                page.locator("body").hover()  # an action, so the handler Skips the dialog if it is open
                page.screenshot(path=str(out_dir / name))
                print(f"{out_dir / name}  <- {path}", flush=True)
            browser.close()
    finally:
        stop_process_group(process)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else IMAGES))
