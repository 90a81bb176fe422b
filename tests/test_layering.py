"""The architecture, enforced: who may import whom (docs/architecture.md is the map).

Every module of ``hybridnb`` belongs to a *component* — a top-level package (``core``,
``drivers``, ...) or a top-level module (``lab``, ``cli``, ...) — and every component has a
rank.  A module may import its own component and components of a lower rank, nothing above
or beside it: core ← drivers ← services ← lab ← fronts.  ``render`` is stricter: it takes core
objects and result data and imports only ``core`` and ``errors`` (so it never imports lab).
The pure core imports nothing that touches the host.

Imports are read from the source with ``ast``: top-level, function-level (lazy) and
``TYPE_CHECKING`` imports alike, and ``importlib.import_module("hybridnb...")`` calls.
Known violations are listed in :data:`KNOWN_VIOLATIONS` with their reason; an entry that no
longer occurs fails too, so the list only shrinks (the goal is an empty list).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hybridnb"
DOC = ROOT / "docs" / "architecture.md"

# component -> rank: a module imports its own component and lower ranks only
RANK = {
    "errors": 0, "version": 0,                 # the one error tree; the package version
    "core": 1,                                 # pure model: spec, IPAM, zone, plan
    "target": 2, "daemons": 2,                 # where a lab lives; processes we start
    "drivers": 3,                              # engines behind small protocols
    "render": 4, "images": 4, "state": 4,      # beside services: output, image builds, state
    "services": 5, "sandbox": 5,               # DNS, probes; the isolated lab host
    "offloop": 6, "labfile": 6, "apply": 6, "backends": 6,   # the Lab's own helpers
    "remote": 6,                               # a host reached through its Docker API
    "multihost_apply": 6.5,                    # a lab over several hosts: uses apply, backends
    "lab": 7, "options": 7,                    # the one API; option generation for the fronts
    "cli": 8, "notebook": 8, "demo": 8,        # fronts
    "hybridnb": 9,                             # the package root: lazy public names
}
ONLY = {"render": {"errors", "version", "core"}}          # stricter than the rank
CORE_MAY_NOT_IMPORT = {                        # touches the host, the notebook or plotting
    "os", "pathlib", "shutil", "socket", "subprocess", "tempfile", "ctypes", "fcntl",
    "signal", "threading", "multiprocessing", "select", "selectors", "asyncio", "glob",
    "urllib", "http", "pyroute2", "docker", "libvirt", "libvirt_qemu", "IPython",
    "ipywidgets", "matplotlib", "networkx", "dnslib", "jinja2",
}

# (importer, imported) -> why it is still there; each must disappear, none may be added
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {
    ("hybridnb.drivers.libvirt", "hybridnb.images.testvm"):
        "the libvirt driver builds/looks up the test VM image for template 'test' (lazily); "
        "the kernel/initrd should come in the resource from the layer above",
}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.importer} imports {self.imported}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute names), with the line of the import."""
    module = module_name(path, root)
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, path.name == "__init__.py")
            subs = [f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}", root)]
            found += [(name, node.lineno) for name in subs or [base]]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__")):
            found.append((node.args[0].value, node.lineno))
    return found


def _is_module(name: str, root: Path) -> bool:
    if not name.startswith("hybridnb."):
        return False
    rel = Path(*name.split("."))
    return (root / rel.with_suffix(".py")).exists() or (root / rel / "__init__.py").exists()


def all_edges() -> list[Edge]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported, line in imports_of(path):
            if imported == "hybridnb" or imported.startswith("hybridnb."):
                edges.append(Edge(importer, imported, str(path.relative_to(ROOT)), line))
    return edges


def allowed(importer: str, imported: str) -> bool:
    a, b = component(importer), component(imported)
    if a == b:
        return True
    if a in ONLY:
        return b in ONLY[a]
    return RANK[b] < RANK[a]


def violations() -> list[Edge]:
    return [e for e in all_edges() if not allowed(e.importer, e.imported)]


def test_every_module_has_a_layer():
    missing = sorted({component(module_name(p)) for p in PACKAGE.rglob("*.py")} - set(RANK))
    assert not missing, (f"components without a layer: {missing} — give each a rank in "
                         "tests/test_layering.py and a line in docs/architecture.md")


def test_import_direction():
    found = violations()
    new = [str(e) for e in found if (e.importer, e.imported) not in KNOWN_VIOLATIONS]
    assert not new, ("imports against the layering (core ← drivers ← services ← lab ← fronts; "
                     "render imports only core and errors):\n  " + "\n  ".join(new))


def test_known_violations_still_exist():
    """A fixed violation leaves the allow-list at once, so it cannot come back unnoticed."""
    found = {(e.importer, e.imported) for e in violations()}
    stale = sorted(set(KNOWN_VIOLATIONS) - found)
    assert not stale, f"fixed — remove from KNOWN_VIOLATIONS: {stale}"


@pytest.mark.parametrize("importer, imported, ok", [
    ("hybridnb.drivers.dns", "hybridnb.services.dns.querylog", False),
    ("hybridnb.render.topology", "hybridnb.lab", False),
    ("hybridnb.core.tables", "hybridnb.drivers.base", False),
    ("hybridnb.core.spec", "hybridnb.drivers.base", False),
    ("hybridnb.cli", "hybridnb.notebook.magics", False),
    ("hybridnb.notebook.forms", "hybridnb.lab", True),
    ("hybridnb.services.probe.matrix", "hybridnb.core.tables", True),
    ("hybridnb.lab", "hybridnb.labfile", True),
])
def test_the_rule_itself(importer, imported, ok):
    assert allowed(importer, imported) is ok


def test_the_scanner_sees_lazy_and_relative_imports(tmp_path):
    core = tmp_path / "hybridnb" / "core"
    core.mkdir(parents=True)
    (core / "naming.py").write_text("")
    src = core / "x.py"
    src.write_text("from . import naming\n"
                   "def f():\n    from hybridnb.core.tables import table\n"
                   "    import importlib\n    importlib.import_module('hybridnb.lab')\n")
    names = {name for name, _ in imports_of(src, tmp_path)}
    assert {"hybridnb.core.naming", "hybridnb.core.tables", "hybridnb.lab"} <= names


# ------------------------------------------------------------------------- the pure core

def test_core_imports_nothing_that_touches_the_host():
    bad = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        for name, line in imports_of(path):
            if name.split(".")[0] in CORE_MAY_NOT_IMPORT:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} calls open()")
    assert not bad, "the pure core touches the host:\n  " + "\n  ".join(bad)


def test_core_modules_pull_in_nothing_heavy_when_imported():
    """What the AST cannot see: a core module importing a library that imports the host."""
    modules = sorted(module_name(p) for p in (PACKAGE / "core").rglob("*.py"))
    forbidden = sorted(CORE_MAY_NOT_IMPORT - {"os", "pathlib", "shutil", "tempfile", "threading",
                                              "signal", "select", "selectors", "fcntl", "glob",
                                              "urllib", "http", "asyncio", "ctypes",
                                              "multiprocessing"})
    code = ("import sys\n"
            f"for m in {modules!r}:\n    __import__(m)\n"
            f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}"
            " or m.startswith(('hybridnb.drivers', 'hybridnb.services', 'hybridnb.lab', "
            "'hybridnb.notebook', 'hybridnb.render', 'hybridnb.sandbox', 'hybridnb.daemons')))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"the pure core pulled in: {out.stdout.strip()}"


def test_import_hybridnb_is_light():
    code = ("import sys, hybridnb\n"
            "heavy = ('docker', 'libvirt', 'pyroute2', 'matplotlib', 'networkx', 'IPython',\n"
            "         'yaml')\n"
            "print(','.join(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


# ----------------------------------------------------------------------------- the map

def test_the_architecture_doc_names_every_package_and_module():
    text = DOC.read_text()
    names = {p.name for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    names |= {str(p.parent.relative_to(PACKAGE)) + "/" for p in PACKAGE.rglob("__init__.py")
              if p.parent != PACKAGE}
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert not missing, f"docs/architecture.md does not name: {missing}"
