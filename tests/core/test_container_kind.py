"""Fields of the container kind, end to end through the pure core and the command line:
``workdir`` (the container's working directory) as the example of a field added in one line."""

from __future__ import annotations

import pytest

from hybridnb.cli import main
from hybridnb.core.compile import compile_lab
from hybridnb.core.ipam import assign_addresses
from hybridnb.core.plan import diff
from hybridnb.core.resource import Observation
from hybridnb.core.spec import lab_to_dict, parse_lab
from hybridnb.errors import ValidationError


def lab(**web):
    return parse_lab({"name": "wd", "endpoints": {"web": {"kind": "container", **web}}})


def container(spec):
    return next(r for r in compile_lab(spec, assign_addresses(spec)) if r.kind == "container")


def test_workdir_in_yaml_and_back():
    spec = lab(workdir="/srv/www")
    assert spec.endpoint("web").workdir == "/srv/www"
    assert lab_to_dict(spec)["endpoints"]["web"] == {"kind": "container", "workdir": "/srv/www"}
    assert lab().endpoint("web").workdir is None
    with pytest.raises(ValidationError) as info:
        lab(workdir="srv")
    (problem,) = info.value.problems
    assert (problem.path, problem.message) == ("endpoints.web.workdir",
                                               "'srv' is not an absolute path")
    assert problem.hint == "start it with '/', e.g. /srv"
    with pytest.raises(ValidationError, match="expected an absolute path, got a number"):
        lab(workdir=7)


def test_workdir_reaches_the_engine_vocabulary_and_leaves_others_alone():
    assert container(lab(workdir="/srv")).spec["create"]["working_dir"] == "/srv"
    plain = container(lab())
    assert "working_dir" not in plain.spec["create"]       # old labs keep their fingerprint


def test_a_changed_workdir_is_named_in_the_plan():
    before, after = container(lab(workdir="/srv")), container(lab(workdir="/data"))
    plan = diff("wd", [after], {"container": {"web": Observation(before.fingerprint)}},
                {("container", "web"): dict(before.spec)})
    assert [(a.op, a.reason) for a in plan.actions] == [("replace", "changed: workdir")]


def test_workdir_in_the_cli_reference(capsys):
    assert main(["kinds", "container"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if " workdir " in ln)
    assert "--workdir WORKDIR" in line and "working directory" in line
