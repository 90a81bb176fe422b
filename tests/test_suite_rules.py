"""The test suite's own rules, checked so they stay true.

* No two helper modules under ``tests/`` share a name (``netlab.py`` twice made imports
  ambiguous to read and to grep).
* No timed assertion in the unit suite: a test that asserts on elapsed wall-clock time
  (``time.monotonic()``/``time.perf_counter()``, or a value named like ``elapsed``/``took``/
  ``duration``) is marked ``real`` — it runs on the real machine under its lock, not in
  ``make unit`` on a loaded laptop.  Fake clocks are fine.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CLOCKS = {"monotonic", "perf_counter", "monotonic_ns", "perf_counter_ns"}
TIME_WORDS = ("elapsed", "took", "duration", "seconds")


def test_helper_module_names_are_unique():
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name in ("__init__.py", "conftest.py") or path.name.startswith("test_"):
            continue
        seen[path.name].append(str(path.relative_to(TESTS.parent)))
    twice = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not twice, f"helper modules with the same name: {twice}"


def _is_real_mark(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "real" for n in ast.walk(node))


def _reads_clock(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "attr", None) in CLOCKS
               for n in ast.walk(node))


def timed_assertions(tree: ast.Module) -> list[tuple[str, int]]:
    """(test name, line) of every assertion on elapsed time in tests not marked real."""
    module_real = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark"
                                                         for t in n.targets)
                      and _is_real_mark(n.value) for n in tree.body)
    if module_real:
        return []
    found = []
    for fn in tree.body:
        if not isinstance(fn, ast.FunctionDef) or not fn.name.startswith("test"):
            continue
        if any(_is_real_mark(d) for d in fn.decorator_list):
            continue
        timed = {t.id for n in ast.walk(fn) if isinstance(n, ast.Assign) and _reads_clock(n.value)
                 for t in n.targets if isinstance(t, ast.Name)}
        timed |= {n.func.value.id for n in ast.walk(fn)           # times.append(clock() - t)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and isinstance(n.func.value, ast.Name) and n.func.attr not in CLOCKS
                  and any(_reads_clock(arg) for arg in n.args)}
        for node in ast.walk(fn):
            if not isinstance(node, ast.Assert):
                continue
            names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node.test) if isinstance(n, ast.Attribute)}
            if (_reads_clock(node.test) or names & timed
                    or any(w in name for name in names for w in TIME_WORDS)):
                found.append((fn.name, node.lineno))
    return found


def test_no_timed_assertion_in_the_unit_suite():
    bad = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for name, line in timed_assertions(ast.parse(path.read_text())):
            bad.append(f"{path.relative_to(TESTS.parent)}:{line} ({name})")
    assert not bad, ("assertions on elapsed time in unit tests — mark them real (or use a fake "
                     "clock):\n  " + "\n  ".join(bad))


def test_the_timed_assertion_check_finds_them():
    src = ("import time, pytest\n"
           "def test_a():\n    t = time.monotonic()\n    took = time.monotonic() - t\n"
           "    assert took < 1\n"
           "def test_b():\n    assert m.duration < 0.5\n"
           "@pytest.mark.real\ndef test_c():\n    assert time.perf_counter() < 5\n"
           "def test_d(clock):\n    assert clock.slept < 0.5\n"
           "def test_e():\n    ts = []\n    ts.append(time.perf_counter() - 1)\n"
           "    assert max(ts) < 1\n")
    assert timed_assertions(ast.parse(src)) == [("test_a", 5), ("test_b", 7), ("test_e", 16)]
