"""Measurements the tests make, one line each: printed, and kept for a summary.

``record(line)`` prints the line (shown with ``pytest -s``) and, when the environment
variable PGDBLINK_SAFE_REPORT names a file, appends it there, so that a run can end with
every measured figure in one place: ``PGDBLINK_SAFE_REPORT=report.txt pytest ...``.
"""

import os

REPORT_ENV = "PGDBLINK_SAFE_REPORT"


def record(line: str) -> None:
    """Print ``line`` and append it to the file named by $PGDBLINK_SAFE_REPORT, if set."""
    line = line.rstrip("\n")
    print(line)
    path = os.environ.get(REPORT_ENV)
    if path:
        # One write per line in append mode: lines from concurrent writers do not interleave.
        with open(path, "a", encoding="utf-8") as report:
            report.write(line + "\n")
