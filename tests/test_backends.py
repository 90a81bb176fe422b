"""Which backend a lab gets when none is named: ``$HYBRIDNB_BACKEND``, else the sandbox as
root and the dry-run backend otherwise (the notebooks' parameter default relies on it)."""

from __future__ import annotations

import pytest

from hybridnb.backends import default_backend, resolve_backend


@pytest.mark.parametrize("env, euid, want", [
    (None, 0, "sandbox"), (None, 1000, "dry-run"), ("", 1000, "dry-run"),
    ("dry-run", 0, "dry-run"), ("sandbox", 1000, "sandbox"), ("host", 0, "host")])
def test_default_backend(monkeypatch, env, euid, want):
    if env is None:
        monkeypatch.delenv("HYBRIDNB_BACKEND", raising=False)
    else:
        monkeypatch.setenv("HYBRIDNB_BACKEND", env)
    monkeypatch.setattr("os.geteuid", lambda: euid)
    assert default_backend() == want


def test_an_explicit_backend_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("HYBRIDNB_BACKEND", "sandbox")
    assert resolve_backend("dry-run", state_dir=tmp_path).name == "dry-run"
    monkeypatch.setenv("HYBRIDNB_BACKEND", "dry-run")
    assert resolve_backend(None, state_dir=tmp_path).name == "dry-run"
