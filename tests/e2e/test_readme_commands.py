"""Links in the README and docs/ point at files that exist. The README's commands are run as
written by tests/e2e/test_own_tickers.py (its only runnable block is the own-tickers path)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def test_links_in_the_readme_and_docs_point_at_files_in_the_repository():
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://127.0.0.1", "data:")):
                continue
            assert not target.startswith(("http://", "https://", "../")), f"{page.name}: link outside the repository: {target}"
            assert (page.parent / target).exists(), f"{page.name}: {target} does not exist"
