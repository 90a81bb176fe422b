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
    """The reference lists exactly the keys the registries know, each with a type and a
    meaning: the lab file's sections, the network keys, and every field of every kind."""
    from hybridnb.core import spec
    from hybridnb.core.kinds import kinds

    listed = [(section, f.key) for section, _, fields in gen.lab_file_fields() for f in fields]
    want = [("top", s.key) for s in spec.sections()]
    for section in spec.sections():              # in order: hosts (5), network (10), ...
        want += [(section.key, row[0]) for row in section.reference_rows()]
        if section.key == "endpoints":
            want += [("endpoints", "kind")] + [("endpoints", f.name)
                                               for f in kinds()[0].fields() if f.common]
            want += [(k.name, f.name) for k in kinds() for f in k.fields() if not f.common]
    assert listed == want
    assert [k for s, k in listed if s == "network"] == list(spec._NET_KEYS)
    assert set(spec._NET_HELP) == set(spec._NET_KEYS), "a network key described but gone"
    for _, title, fields in gen.lab_file_fields():
        assert all(f.doc and f.type for f in fields), title


def test_a_registered_section_and_a_new_kind_field_reach_the_reference(monkeypatch):
    """What another part of hybridnb registers shows up with no edit here; a section or
    field without a description stops the generator."""
    from hybridnb.core import sections as lab_sections
    from hybridnb.core.kinds import get

    class Recipes(lab_sections.Section):
        """image recipes the lab's endpoints can name (``image: recipe:NAME``)"""

        key = "recipes"
        order = 40

        def parse(self, c, raw, parsed):
            return raw

        def reference_rows(self):
            return (("packages", "list of strings", "", "Debian packages to install"),)

    lab_sections.register(Recipes())
    try:
        parts = {s: fields for s, _, fields in gen.lab_file_fields()}
        top = {f.key: f for f in parts["top"]}
        assert top["recipes"].doc.startswith("image recipes the lab's endpoints can name")
        assert [f.key for f in parts["recipes"]] == ["packages"]
        text = gen.render_lab_file()
        assert "## recipes" in text and "(see [recipes](#recipes))" in text

        class Bare(Recipes):
            key = "bare"

            def reference_rows(self):
                return (("thing", "string", "", ""),)

        Bare.__doc__ = None
        lab_sections.register(Bare())
        with pytest.raises(ValueError, match="without a description in 'Top level': bare"):
            gen.lab_file_fields()
    finally:
        lab_sections.unregister("recipes")
        lab_sections.unregister("bare")
    workdir = next(f for f in get("container").fields() if f.name == "workdir")
    row = next(f for s, _, fields in gen.lab_file_fields() if s == "container"
               for f in fields if f.key == "workdir")
    assert (row.type, row.doc) == ("path", workdir.help)


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
    from hybridnb.core.kinds import KINDS
    from hybridnb.notebook.magics import HybridMagics

    text = (DOCS / "magics.md").read_text()
    listed = re.findall(r"^## `%hybrid (\w+)`", text, re.M)
    assert listed == list(HybridMagics(shell=None).handlers)
    assert set(KINDS) <= set(listed) and "report" in listed


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


def test_every_doctor_check_has_one_troubleshooting_entry():
    """The doctor's registry of checks (every registered group) and the page's ``check-ID``
    entries are the same: a new check without an entry (or an entry of a check that is gone)
    fails here.  (The page lists them in the doctor's order; a new group's go after it.)"""
    from hybridnb.services.doctor import all_checks

    ids = [c.id for c in all_checks()]
    assert len(ids) == len(set(ids)) and len(ids) >= 16
    assert gen.doctor_entries() == sorted(ids), set(gen.doctor_entries()) ^ set(ids)


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
