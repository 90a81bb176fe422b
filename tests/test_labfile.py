"""Bounded, honest lab-file input (issue 11 #5, #7 and the validation part of #13).

* #5: alias bombs, duplicate keys, oversize files, deep nesting — refused while reading, each
  as a ValidationError problem with a path and a hint.  The bombs run the real CLI in a
  subprocess under an address-space limit, so a regression cannot eat the machine.
* #7: what is not a lab file — a directory, binary data, Latin-1, an empty file — is one clear
  error (exit 2) from the CLI, ``Lab.load`` and ``%hybrid create`` alike; a lab without ``name:``
  is named after its file (two unnamed files are two labs), or refused with a hint.
* #13: 210 near-identical problems are one line of the message, in natural order, while
  ``problems`` keeps all of them.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from hybridnb.cli import main
from hybridnb.errors import NotFoundError, Problem, ValidationError, natural_key
from hybridnb.lab import Lab
from hybridnb.labfile import (MAX_ALIAS_NODES, MAX_BYTES, MAX_DEPTH, MAX_NODES,
                              load_lab_document, parse_yaml)

ROOT = Path(__file__).resolve().parents[1]
LIMIT_AS = 1 << 30          # a bomb that got through would die here, not take the machine


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def bomb(where: str, levels: int = 9) -> str:
    """A billion-laughs lab aimed at ``where``: 9 levels of 9 aliases (9**9 strings once
    expanded), defined in env/labels/pools and, for services and upstream, expanded there.
    Without the bound, building the spec grows to gigabytes; with it, reading stops at the
    5th level, before the field is reached."""
    rows = ['      a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        rows.append(f"      a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    anchors = "\n".join(rows)
    body = {
        "env": f"  web:\n    kind: container\n    env:\n{anchors}",
        "labels": f"  web:\n    kind: container\n    labels:\n{anchors}",
        "services": f"  web:\n    kind: host\n    labels:\n{anchors}\n    services: *a{levels - 1}",
        "upstream": None,
    }[where]
    if where == "upstream":
        rows = [r.replace("      ", "    ", 1) for r in rows]
        return ("name: bomb\nnetwork:\n  pools:\n" + "\n".join(rows)
                + f"\n  upstream: *a{levels - 1}\nendpoints: {{}}\n")
    return f"name: bomb\nendpoints:\n{body}\n"


def run_cli_limited(path: Path, state: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))

    return subprocess.run([sys.executable, "-m", "hybridnb.cli", "plan", str(path), "--dry-run",
                           "--state-dir", str(state)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, cwd=ROOT)


# ------------------------------------------------------------------------------ #5

@pytest.mark.parametrize("where", ["env", "labels", "services", "upstream"])
def test_alias_bomb_is_refused_while_reading(where, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(where))
    r = run_cli_limited(path, tmp_path / "state")
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"aliases expand to more than {MAX_ALIAS_NODES} values" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("hybridnb: error:") == 1


def test_aliases_within_the_budget_still_work(state_dir):
    text = ("name: ok\nendpoints:\n"
            "  web: &base {kind: container, image: nginx, env: {A: '1'}, labels: {team: x}}\n"
            "  api: {<<: *base, address: 10.0.1.150}\n"
            "  db: *base\n")
    lab = Lab.from_yaml(text, backend="dry-run", state_dir=state_dir)
    assert {e.name: e.image for e in lab.spec.endpoints} == {"api": "nginx", "db": "nginx",
                                                             "web": "nginx"}
    assert str(lab.spec.endpoint("api").address) == "10.0.1.150"


BOTH = pytest.mark.parametrize("libyaml", [True, False], ids=["libyaml", "python"])


@BOTH
def test_merge_bomb_is_refused(libyaml):
    rows = ["a0: &a0 {k: v}"] + [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 9)}]}}"
                                 for i in range(1, 9)]
    with pytest.raises(ValidationError, match="aliases expand to more than"):
        parse_yaml("\n".join(rows) + "\n", libyaml=libyaml)


@BOTH
def test_recursive_alias_and_deep_nesting_are_refused(libyaml):
    with pytest.raises(ValidationError, match="refers to a node that contains it"):
        parse_yaml("a: &a [1, *a]\n", libyaml=libyaml)
    with pytest.raises(ValidationError, match=f"nesting deeper than {MAX_DEPTH} levels"):
        parse_yaml("a: " + "[" * 200 + "]" * 200 + "\n", libyaml=libyaml)
    chain = "".join(f"a{i}: &a{i} [[[[*a{i - 1}]]]]\n" for i in range(1, 12))
    with pytest.raises(ValidationError, match="nesting deeper"):          # deep only via aliases
        parse_yaml("a0: &a0 [x]\n" + chain, libyaml=libyaml)


def test_too_many_values_are_refused():
    with pytest.raises(ValidationError, match=f"more than {MAX_NODES} values"):
        parse_yaml("x:\n" + "- a\n" * (MAX_NODES + 1))


@BOTH
def test_duplicate_keys_are_refused_everywhere_and_all_reported(libyaml):
    text = ("name: d\n"
            "endpoints:\n"
            "  web: {kind: host}\n"
            "  db: {kind: container, env: {A: '1', A: '2'}}\n"
            "  web: {kind: container}\n"
            "name: e\n")
    with pytest.raises(ValidationError) as info:
        parse_yaml(text, source="d.yaml", libyaml=libyaml)
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("endpoints.db.env.A", "duplicate key 'A' at line 4, column 39 (first at line 4, "
                               "column 31)"),
        ("endpoints.web", "duplicate key 'web' at line 5, column 3 (first at line 3, column 3)"),
        ("name", "duplicate key 'name' at line 6, column 1 (first at line 1, column 1)")]
    assert all(p.hint for p in info.value.problems)


def test_a_merge_may_override_a_key():
    assert parse_yaml("b: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n")["c"] == {"x": 3, "y": 2}


def test_oversize_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\n" + "#" * MAX_BYTES + "\n")
    with pytest.raises(ValidationError) as info:
        load_lab_document(path)
    (problem,) = info.value.problems
    assert problem.path == "(file)" and "at most 1,048,576 bytes (1 MiB)" in problem.message
    assert problem.hint


def test_values_yaml_cannot_build_are_problems_not_tracebacks():
    with pytest.raises(ValidationError, match="day is out of range"):
        parse_yaml("image: 2023-02-30\n")
    with pytest.raises(ValidationError, match="Exceeds the limit"):
        parse_yaml("mtu: " + "1" * 5000 + "\n")
    with pytest.raises(ValidationError, match="no tags"):
        parse_yaml("a: !!python/object/apply:os.system [true]\n")


@BOTH
def test_control_characters_are_a_problem_at_their_place(libyaml):
    with pytest.raises(ValidationError) as info:
        parse_yaml("a: b\x01\n", libyaml=libyaml)
    assert [(p.path, p.message) for p in info.value.problems] == [
        ("line 1, column 5", "control character U+0001 in the text")]


# ------------------------------------------------------------------------------ #7

NOT_LAB_FILES = {
    "a-directory": (None, "is a directory, not a lab file"),
    "binary.yaml": (b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), "binary data"),
    "latin1.yaml": ("name: café\n".encode("latin-1"), "not UTF-8 text: byte 0xe9 at line 1"),
    "empty.yaml": (b"", "holds no lab"),
    "comments.yaml": (b"# nothing here\n\n", "holds no lab"),
}


def _make(tmp_path: Path, name: str) -> Path:
    data, _ = NOT_LAB_FILES[name]
    path = tmp_path / name
    if data is None:
        path.mkdir()
        (path / "lab.yaml").write_text("name: x\n")
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(NOT_LAB_FILES))
def test_not_a_lab_file_is_one_clear_error_from_the_cli(name, tmp_path, capsys, state_dir):
    path = _make(tmp_path, name)
    code, out, err = cli(capsys, "plan", str(path), "--dry-run", "--state-dir", str(state_dir))
    assert code == 2 and out == ""
    assert err.startswith("hybridnb: error:") and err.count("hybridnb: error:") == 1
    assert NOT_LAB_FILES[name][1] in err and "hint" in err and "Traceback" not in err


@pytest.mark.parametrize("name", sorted(NOT_LAB_FILES))
def test_not_a_lab_file_is_one_clear_error_from_the_api(name, tmp_path, state_dir):
    path = _make(tmp_path, name)
    for load in (Lab.load,):
        with pytest.raises((ValidationError, NotFoundError), match=NOT_LAB_FILES[name][1]) as info:
            load(str(path), backend="dry-run", state_dir=state_dir)
        assert info.value.exit_code == 2


def test_a_lab_without_a_name_is_named_after_its_file(tmp_path, state_dir):
    for name in ("web", "db"):
        (tmp_path / f"{name}.yaml").write_text("endpoints:\n  a: {kind: host}\n")
    web = Lab.load(tmp_path / "web.yaml", backend="dry-run", state_dir=state_dir)
    db = Lab.load(tmp_path / "db.yaml", backend="dry-run", state_dir=state_dir)
    assert (web.name, db.name) == ("web", "db")
    web.apply()
    assert not db.plan().empty                      # the other file is another lab
    db.apply()
    assert {"db", "web"} <= {p.stem for p in (Path(state_dir) / "dry-run").glob("*.json")}
    assert web.to_dict()["name"] == "web"           # saved with its name


def test_a_file_name_that_is_no_lab_name_needs_name(tmp_path, state_dir, capsys):
    path = tmp_path / "My Lab.v2.yaml"
    path.write_text("endpoints:\n  a: {kind: host}\n")
    with pytest.raises(ValidationError) as info:
        Lab.load(path, backend="dry-run", state_dir=state_dir)
    (problem,) = info.value.problems
    assert problem.path == "name" and "'My Lab.v2' is not a valid lab name" in problem.message
    assert "add 'name: my-lab-v2'" in problem.hint
    code, _, err = cli(capsys, "plan", str(path), "--dry-run", "--state-dir", str(state_dir))
    assert code == 2 and "name: my-lab-v2" in err


def test_a_named_file_keeps_its_name(tmp_path, state_dir):
    path = tmp_path / "whatever.yaml"
    path.write_text("name: kept\n")
    assert Lab.load(path, backend="dry-run", state_dir=state_dir).name == "kept"


def test_utf8_with_a_bom_and_utf16_are_read(tmp_path):
    (tmp_path / "a.yaml").write_bytes(b"\xef\xbb\xbfname: bom\n")
    (tmp_path / "b.yaml").write_bytes("name: wide\n".encode("utf-16"))
    assert load_lab_document(tmp_path / "a.yaml").data == {"name": "bom"}
    assert load_lab_document(tmp_path / "b.yaml").data == {"name": "wide"}


def test_unreadable_file(tmp_path, capsys, state_dir):
    """A path that cannot be read (here a symlink loop: unreadable even for root)."""
    path = tmp_path / "loop.yaml"
    path.symlink_to(path)
    with pytest.raises(ValidationError, match="cannot be read: Too many levels of symbolic"):
        load_lab_document(path)
    code, _, err = cli(capsys, "plan", str(path), "--dry-run", "--state-dir", str(state_dir))
    assert code == 2 and "(file): cannot be read" in err


# ----------------------------------------------------------------------------- #13

def test_near_identical_problems_are_grouped_in_natural_order(state_dir):
    eps = {f"h{i}": {"kind": "host", "address": f"10.0.2.{i}"} for i in range(10, 220)}
    eps["h2"] = {"kind": "host", "address": "10.0.1.300"}
    eps["h3"] = {"kind": "container", "image": ""}
    with pytest.raises(ValidationError) as info:
        Lab.from_dict({"name": "big", "endpoints": eps}, backend="dry-run", state_dir=state_dir)
    err = info.value
    assert len(err.problems) == 212                                    # complete for programs
    assert [p.path for p in err.problems[:3]] == ["endpoints.h2.address", "endpoints.h3.image",
                                                  "endpoints.h10.address"]
    assert str(err).splitlines() == [
        "212 problems:",
        "  - endpoints.h2.address: '10.0.1.300' is not an IPv4 address (hint: write it like "
        "10.0.1.100)",
        "  - endpoints.h3.image: image is empty (hint: e.g. busybox or nginx:alpine)",
        "  - endpoints.h10..h219.address (210 problems): 10.0.2.10..10.0.2.219 is outside the "
        "lab subnet 10.0.1.0/24 (hint: use an address inside the subnet, or leave it out to get "
        "one allocated)"]


def test_two_alike_problems_stay_two_lines():
    problems = [Problem(f"endpoints.h{i}.image", "image is empty", "x") for i in (1, 2)]
    assert str(ValidationError(problems)).count("\n") == 2


def test_natural_key():
    names = ["h10", "h2", "h1", "web", "h02", "h" + "9" * 5000]
    assert sorted(names, key=natural_key) == ["h1", "h02", "h2", "h10", names[-1], "web"]
