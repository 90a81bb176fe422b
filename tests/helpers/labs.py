"""Labs a real test made, destroyed after it whatever happened (a test that failed half way
leaves its labs): ``made = LabsMade()``, ``made.append(lab)``, and an autouse fixture that
calls ``made.destroy_all()`` after each test."""

from __future__ import annotations

from typing import Any


class LabsMade(list):
    """The labs of the running test, newest last."""

    def destroy_all(self) -> None:
        """Destroy each lab, newest first; an error is swallowed: the test's own failure is
        the one worth reading."""
        while self:
            lab: Any = self.pop()
            try:
                lab.destroy()
            except Exception:  # noqa: BLE001
                pass
