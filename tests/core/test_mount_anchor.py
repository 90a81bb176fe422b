"""Relative host paths in a lab file's ``mounts:`` are the lab file's neighbours."""

from __future__ import annotations

import pytest

from hybridnb.core.kinds import anchor_paths
from hybridnb.core.kinds.container import anchor_mount
from hybridnb.errors import ValidationError
from hybridnb.lab import Lab


def test_relative_host_paths_are_anchored_at_the_file() -> None:
    assert anchor_mount("app:/app", "/srv/lab") == "/srv/lab/app:/app"
    assert anchor_mount("./app:/app:ro", "/srv/lab") == "/srv/lab/app:/app:ro"
    assert anchor_mount("../shared:/data", "/srv/lab") == "/srv/shared:/data"
    assert anchor_mount("/abs:/x", "/srv/lab") == "/abs:/x"          # absolute: left
    assert anchor_mount("no-colon", "/srv/lab") == "no-colon"        # malformed: for the parser
    assert anchor_mount(7, "/srv/lab") == 7


def test_only_container_mounts_move_and_malformed_documents_pass_through() -> None:
    doc = {"endpoints": {"c": {"kind": "container", "mounts": ["app:/app"], "command": "x:y"},
                         "v": {"kind": "vm", "mounts": ["app:/app"]},
                         "odd": "not a mapping", "k": {"kind": "nosuch"},
                         "l": {"kind": ["container"], "mounts": ["a:/b"]}}}
    out = anchor_paths(doc, "/l")
    assert out["endpoints"]["c"] == {"kind": "container", "mounts": ["/l/app:/app"],
                                     "command": "x:y"}
    assert out["endpoints"]["v"] == doc["endpoints"]["v"]          # the vm kind has no paths
    assert out["endpoints"]["odd"] == "not a mapping"
    assert out["endpoints"]["k"] == {"kind": "nosuch"}
    assert out["endpoints"]["l"] == doc["endpoints"]["l"]          # a bad kind: for the parser
    assert anchor_paths([1], "/l") == [1]
    assert anchor_paths({"endpoints": 3}, "/l")["endpoints"] == 3
    assert doc["endpoints"]["c"]["mounts"] == ["app:/app"]          # the input is not changed


def test_lab_load_anchors_and_from_dict_refuses_relative(tmp_path) -> None:
    (tmp_path / "src").mkdir()
    path = tmp_path / "dev.yaml"
    path.write_text("endpoints:\n  web: {kind: container, mounts: ['src:/app', './src:/ro:ro']}\n")
    lab = Lab.load(path, backend="dry-run", state_dir=tmp_path / "state")
    assert lab.to_dict()["endpoints"]["web"]["mounts"] == [f"{tmp_path}/src:/app",
                                                           f"{tmp_path}/src:/ro:ro"]
    with pytest.raises(ValidationError, match="not a bind mount"):
        Lab.from_dict({"name": "x", "endpoints": {"web": {"kind": "container",
                                                          "mounts": ["src:/app"]}}},
                      backend="dry-run", state_dir=tmp_path / "state")
