"""The Dagster instance `pm` works on: the project's `.dagster_home` unless DAGSTER_HOME names
another, and the warnings of Dagster's own that are noise at a terminal."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from pm_domain import settings
from pm_jobs.large_instance import load_instance_env

PROJECT_ROOT = settings.PROJECT_ROOT

# What a command needs of the instance, as its parser's `set_defaults(instance=...)` says: most
# say on stderr which instance they use; the reports a script reads (summary, failures, book) use
# it quietly; `pm postgres` builds an instance of its own and touches none.
ANNOUNCE, QUIET, NO_INSTANCE = "announce", "quiet", "none"


class InstanceError(RuntimeError):
    """No Dagster instance to use."""


def use_project_instance() -> str:
    """Point DAGSTER_HOME at the project's `.dagster_home` when it is unset; return the instance
    in use and why. Dagster's own advice (`export DAGSTER_HOME=~/dagster_home`) would be an empty one.

    The one place `pm` sets an environment variable (docs/operations.md): Dagster reads
    DAGSTER_HOME itself, in this process and in the ones it starts."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        loaded = load_instance_env(Path(home))
        return f"{home} (DAGSTER_HOME" + (f"; {len(loaded)} settings from instance.env)" if loaded else ")")
    project_home = PROJECT_ROOT / ".dagster_home"
    if not (project_home / "dagster.yaml").is_file():
        raise InstanceError(f"DAGSTER_HOME is unset and {project_home}/dagster.yaml is missing: "
                            "run pm from the project's checkout, or export DAGSTER_HOME=/path/to/instance")
    os.environ["DAGSTER_HOME"] = str(project_home)
    return f"{project_home} (the project's; DAGSTER_HOME is unset)"


def dagster_instance():
    """The instance DAGSTER_HOME names (call use_project_instance first)."""
    from dagster import DagsterInstance  # dagster takes seconds to import: not for `pm --help`

    return DagsterInstance.get()


def quiet_dagster_notices() -> None:
    """Hide Dagster's beta, preview and supersession notices (about its own APIs, not about what
    `pm` does); every other warning still shows."""
    from dagster import BetaWarning, PreviewWarning, SupersessionWarning  # seconds to import: not for `pm --help`

    for category in (BetaWarning, PreviewWarning, SupersessionWarning):
        warnings.filterwarnings("ignore", category=category)
