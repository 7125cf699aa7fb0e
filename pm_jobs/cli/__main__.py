"""`python -m pm_jobs.cli`: the same as `pm`."""

import sys

from pm_jobs.cli import main

sys.exit(main())
