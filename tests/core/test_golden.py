"""Golden tests: lab files → plan text, invalid lab files → error text.

``tests/golden/plans/NAME.yaml`` is planned against an empty dry-run backend (or, when
``NAME.before.yaml`` exists, after applying that one first) and compared with ``NAME.plan``.
``tests/golden/invalid/NAME.yaml`` must be refused with the text in ``NAME.err``.
Regenerate with ``UPDATE_GOLDEN=1 pytest tests/core/test_golden.py`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridnb.errors import ValidationError
from hybridnb.lab import Lab
from tests.golden import check_golden

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
PLANS = sorted(p for p in (GOLDEN / "plans").glob("*.yaml") if not p.name.endswith(".before.yaml"))
INVALID = sorted((GOLDEN / "invalid").glob("*.yaml"))


def test_enough_golden_files():
    assert len(PLANS) >= 10
    assert len(INVALID) >= 25


@pytest.mark.parametrize("path", PLANS, ids=lambda p: p.stem)
def test_plan_golden(path: Path, state_dir: Path) -> None:
    before = path.with_name(path.stem + ".before.yaml")
    if before.exists():
        Lab.from_yaml(before.read_text(), backend="dry-run", state_dir=state_dir,
                      source=before.name).apply()
    lab = Lab.from_yaml(path.read_text(), backend="dry-run", state_dir=state_dir,
                        source=path.name)
    check_golden(path.with_suffix(".plan"), lab.plan().to_text())


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_golden(path: Path, state_dir: Path) -> None:
    with pytest.raises(ValidationError) as info:
        Lab.from_yaml(path.read_text(), backend="dry-run", state_dir=state_dir,
                      source=path.name).plan()
    text = str(info.value)
    for problem in info.value.problems:          # every error names a path and a fix
        assert problem.path and problem.hint, problem
    check_golden(path.with_suffix(".err"), text)
