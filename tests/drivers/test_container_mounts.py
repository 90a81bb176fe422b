"""Containers' ``mounts:`` (directories of this machine bound in) and a recipe container's
failure marker read by the container driver."""

from __future__ import annotations

import pytest

from hybridnb.drivers.docker import _failed, check_mounts
from hybridnb.errors import NotFoundError


def test_a_missing_mount_source_is_refused(tmp_path) -> None:
    check_mounts({"endpoint": "a", "host_config": {"binds": [f"{tmp_path}:/data:ro"]}})
    check_mounts({"endpoint": "a", "host_config": {}})
    with pytest.raises(NotFoundError, match=f"container a: mount source {tmp_path}/no does not "
                                            "exist"):
        check_mounts({"endpoint": "a", "host_config": {"binds": [f"{tmp_path}/no:/x:rw"]}})


def test_the_failure_marker_names_the_service() -> None:
    text = ("hybridnb-init: started\nsleepy: log line\nHYBRIDNB-FAILED name=c service=sleepy "
            "reason=not ready after 2 s (waiting for tcp:9999)\n")
    err = _failed("c", text)
    assert str(err).startswith("container c: service sleepy did not come up: not ready after "
                               "2 s (waiting for tcp:9999)")
    assert "sleepy: log line" in err.console and err.engine == "docker"


@pytest.mark.real
def test_mounts_reach_the_container(sandbox, tmp_path) -> None:
    from hybridnb.lab import Lab

    shared, ro = tmp_path / "shared", tmp_path / "ro"
    shared.mkdir()
    ro.mkdir()
    (ro / "hello").write_text("from the machine\n")
    doc = {"name": "mnt", "network": {"bridge": "hmnt0", "subnet": "10.76.0.0/24"},
           "endpoints": {"c": {"kind": "container", "command": "sleep 3600",
                               "mounts": [f"{ro}:/ro:ro", f"{shared}:/shared"]}}}
    lab = Lab.from_dict(doc, backend="sandbox", sandbox=sandbox.name,
                        state_dir=tmp_path / "state")
    try:
        lab.apply()
        driver = lab.backend.drivers["container"]
        cid = driver.state(lab.name)["c"]["id"]

        def run(cmd: str) -> tuple[int, str]:
            ex = driver.api.exec_create(cid, ["sh", "-c", cmd])
            out = driver.api.exec_start(ex["Id"]).decode()
            return driver.api.exec_inspect(ex["Id"])["ExitCode"], out

        assert run("cat /ro/hello") == (0, "from the machine\n")
        assert run("touch /ro/x")[0] != 0                       # read-only
        assert run("echo back > /shared/out")[0] == 0
        assert (shared / "out").read_text() == "back\n"
        gone = Lab.from_dict({**doc, "endpoints": {"d": {
            "kind": "container", "mounts": [f"{tmp_path}/missing:/m"]}}}, backend="sandbox",
            sandbox=sandbox.name, state_dir=tmp_path / "state")
        with pytest.raises(NotFoundError, match="missing does not exist"):
            gone.apply()
        state = driver.state(lab.name)                # refused in the preflight: nothing
        assert "d" not in state and "c" in state       # made, nothing removed
    finally:
        lab.destroy()
