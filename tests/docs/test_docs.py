"""The user guide cannot drift: the reference pages are what ``docs/generate.py`` makes from
the code today, every lab-file key is described, every link lands, and the troubleshooting
page keeps its one-entry-per-check shape."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("hnb_docs_generate", DOCS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module              # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = _generator()


@pytest.mark.parametrize("name", sorted(gen.GENERATED))
def test_reference_page_is_what_the_code_says(name):
    pytest.importorskip("IPython")
    committed = (DOCS / name).read_text()
    assert committed == gen.GENERATED[name](), f"docs/{name} is out of date: run `make docs`"


def test_every_lab_file_key_is_described_and_no_description_is_stale():
    from hybridnb.core import spec

    listed = [(section, f.key) for section, _, fields in gen.lab_file_fields() for f in fields]
    want = [("top", k) for k in spec._TOP_KEYS] + [("network", k) for k in spec._NET_KEYS]
    want += [("endpoints", k) for k in spec._COMMON_KEYS]
    want += [(kind, k) for kind in spec.KINDS for k in spec._KIND_KEYS[kind]
             if k not in spec._COMMON_KEYS]
    assert listed == want
    used = {("endpoint" if s == "endpoints" else s, k) for s, k in listed}
    assert set(gen._DOCS) == used, set(gen._DOCS) ^ used


def test_cli_reference_covers_every_command_and_option():
    from hybridnb.cli import build_parser

    text = (DOCS / "cli.md").read_text()
    for name, parser, _ in gen._subcommands(build_parser()):
        assert f"## `hybridnb {name}`" in text
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"{flag}" in text


def test_magics_reference_covers_every_subcommand():
    pytest.importorskip("IPython")
    from hybridnb.notebook.magics import USAGE

    text = (DOCS / "magics.md").read_text()
    assert [m for m in re.findall(r"^## `%hybrid (\w+)`", text, re.M)] == list(USAGE)


def test_troubleshooting_entries_have_symptom_check_fix():
    entries = gen.troubleshooting_entries()
    text = (DOCS / "troubleshooting.md").read_text()
    assert len(entries) == text.count('<a id="'), "an anchor the parser did not read"
    for anchor, body in entries.items():
        assert body.lstrip().startswith("### "), anchor
        parts = [m for m in re.findall(r"^\*\*(Symptom|Check|Fix)\.\*\*", body, re.M)]
        assert parts == ["Symptom", "Check", "Fix"], (anchor, parts)
        if anchor.startswith("check-"):
            assert body.splitlines()[0].rstrip().endswith(f"`{anchor[6:]}`"), anchor
    # one entry per doctor check: the names a doctor's check list is compared with
    assert gen.doctor_entries() == sorted(
        ["forward-drop", "br-netfilter", "ip-forward", "mtu", "duplicate-ip", "neighbour-cap",
         "dns", "engines", "kvm", "route-overlap", "leftovers", "drift", "policy-kernel",
         "link-kernel", "policy-table", "policy-drops"])


def _anchors(path: Path) -> set[str]:
    text = path.read_text()
    out = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for title in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.lower().replace("`", "")).strip().replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")) + [ROOT / "README.md"],
                         ids=lambda p: p.name)
def test_links_land(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target}"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name}: {target}"


def test_readme_links_into_the_guide():
    readme = (ROOT / "README.md").read_text()
    for page in ("docs/index.md", "docs/getting-started.md", "docs/lab-file.md", "docs/cli.md",
                 "docs/magics.md", "docs/troubleshooting.md"):
        assert f"]({page})" in readme, page
