"""Golden-file helper: compare text with a file; ``UPDATE_GOLDEN=1`` (re)writes the file.

A missing golden file is a failure, not a silent first write: a test whose expected output
was never committed proves nothing.  Run with ``UPDATE_GOLDEN=1`` to create it, then review
and commit it.
"""

from __future__ import annotations

import os
from pathlib import Path


def check_golden(path: Path, actual: str) -> None:
    actual = actual.rstrip("\n") + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual)
        return
    if not path.exists():
        raise AssertionError(f"golden file {path} is missing: run with UPDATE_GOLDEN=1 to "
                             f"write it, review it and commit it; this run made:\n{actual}")
    expected = path.read_text()
    assert actual == expected, f"{path.name} differs from the golden file:\n{actual}"
