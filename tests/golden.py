"""Golden-file helper: compare text with a file; ``UPDATE_GOLDEN=1`` rewrites the file."""

from __future__ import annotations

import os
from pathlib import Path


def check_golden(path: Path, actual: str) -> None:
    actual = actual.rstrip("\n") + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        if os.environ.get("CI") == "true" and not path.exists():
            raise AssertionError(f"golden file {path} is missing")
        path.write_text(actual)
        return
    expected = path.read_text()
    assert actual == expected, f"{path.name} differs from the golden file:\n{actual}"
