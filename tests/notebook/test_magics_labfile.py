"""``%hybrid create FILE`` on input that is not a lab file: one clear UsageError each (issue
11 #7), the same message the CLI and ``Lab.load`` give; an unnamed file is the lab named
after it."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from tests.notebook.conftest import run


@pytest.mark.parametrize("name, data, message", [
    ("adir", None, "is a directory, not a lab file"),
    ("binary.yaml", b"\x7fELF\x00\x01", "binary data, not a YAML lab file"),
    ("latin1.yaml", "name: café\n".encode("latin-1"), "not UTF-8 text"),
    ("empty.yaml", b"", "holds no lab"),
    ("dup.yaml", b"name: d\nendpoints:\n  a: {kind: host}\n  a: {kind: vm}\n",
     "duplicate key 'a' at line 4"),
])
def test_create_from_a_file_that_is_no_lab(shell, tmp_path, name, data, message):
    path = tmp_path / name
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
    with pytest.raises(UsageError, match=message) as info:
        run(shell, f"%hybrid create {path}")
    assert "Traceback" not in str(info.value)
    assert shell.magics_manager.registry["HybridMagics"].current_lab is None


def test_create_from_an_unnamed_file_names_the_lab_after_it(shell, tmp_path):
    path = tmp_path / "webshop.yaml"
    path.write_text("endpoints:\n  web: {kind: host}\n")
    run(shell, f"%hybrid create {path}")
    assert shell.magics_manager.registry["HybridMagics"].current_lab.name == "webshop"
