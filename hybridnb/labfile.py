"""Reading a lab file: bounded, honest input.

A lab file is small UTF-8 YAML text holding one mapping.  :func:`load_lab_document` reads one
from disk and refuses what is not a lab file — a directory, a file over :data:`MAX_BYTES`,
binary data, text that is not UTF-8, an empty file — each with one clear error (exit code 2):
a :class:`~hybridnb.errors.NotFoundError` when there is no file to read, else a
:class:`~hybridnb.errors.ValidationError` whose problem has a path and a hint.  A lab file
without ``name:`` is the lab named after the file (``web.yaml`` → ``web``), so two unnamed
files never share one lab; a file whose name is not a valid lab name must say ``name:``.

:func:`parse_yaml` parses text (a file's, a notebook cell's) with PyYAML's safe loader,
extended so that no input can make a later step explode:

* aliases may add at most :data:`MAX_ALIAS_NODES` nodes in all — a billion-laughs document is
  refused while it is read, before anything is expanded;
* nesting (aliases followed) is at most :data:`MAX_DEPTH` levels, and an alias may not refer
  to the node that contains it;
* a key appears once in a mapping (PyYAML keeps the last one silently; ``<<`` merges may
  still override);
* a value PyYAML cannot build (an integer of 5000 digits, ``2023-02-30`` as a date) is a
  problem at its line, not a traceback.

Reading a file is host access, so this module sits above the pure core, beside ``lab.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

try:                                     # libyaml scans and parses ~4x faster than Python
    from yaml._yaml import CParser
except ImportError:                      # pragma: no cover  (PyYAML built without libyaml)
    CParser = None

from hybridnb.errors import NotFoundError, Problem, ValidationError

MAX_BYTES = 1 << 20                 # 1 MiB: a 1000-endpoint lab is ~100 KiB
MAX_ALIAS_NODES = 10_000            # nodes that aliases may add to the document, in all
MAX_DEPTH = 32                      # nesting levels; a lab file needs about 6
MAX_NODES = 20_000                  # values in all (a 2000-endpoint lab has ~18,000)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32"),
         (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


class LabDocument(NamedTuple):
    """What a lab file holds: its parsed data, where it came from (``source``, for
    messages) and the name the lab takes when the data has no ``name:`` (the file's stem)."""

    data: Any
    source: str
    default_name: str | None


def _short(text: str, limit: int = 60) -> str:
    """``text`` quoted, cut to ``limit`` characters (values in messages can be huge)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _Refused(Exception):
    """A bound was crossed while reading: carries the one problem to report."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class _Measuring(Composer):
    """PyYAML's composer (in Python, on libyaml's events when there are) that measures the
    document while composing it: the expanded size and depth of every node (aliases followed,
    memoised per node, so measuring is linear in the text), and duplicate keys of every
    mapping.  Combined with an event source and the safe constructor in :func:`_loader`."""

    def _start_measuring(self) -> None:
        self.problems: list[Problem] = []
        self._steps: list[str] = []                      # path of the node being composed
        self._measure: dict[int, tuple[int, int]] = {}   # id(node) -> (expanded size, depth)
        self._alias_nodes = 0
        self._nodes = 0

    def _path(self) -> str:
        text = "".join(self._steps).lstrip(".")
        return text or "(top)"

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        if isinstance(index, ScalarNode):
            step = f".{index.value}"
        elif isinstance(index, int):
            step = f"[{index}]"
        else:
            step = "" if parent is None else ".?"       # the top, or a mapping key
        self._steps.append(step)
        try:
            if len(self._steps) > MAX_DEPTH:
                raise self._too_deep(mark)
            node = super().compose_node(parent, index)
            self._nodes += 1
            if self._nodes > MAX_NODES:
                raise _Refused(Problem(_where(mark), f"more than {MAX_NODES} values in one file",
                                       "a lab file describes endpoints, not data: split a lab "
                                       "this large"))
            if alias:
                self._count_alias(node, mark)
            else:
                self._measure_node(node)
            return node
        finally:
            self._steps.pop()

    def _too_deep(self, mark: Any) -> _Refused:
        return _Refused(Problem(_where(mark), f"nesting deeper than {MAX_DEPTH} levels",
                                "a lab file needs a few levels (endpoints → web → env); "
                                "flatten the data"))

    def _count_alias(self, node: Node, mark: Any) -> None:
        measured = self._measure.get(id(node))
        if measured is None:
            raise _Refused(Problem(self._path(), f"the alias at {_where(mark)} refers to a node "
                                   "that contains it",
                                   "an alias must refer to a finished node; write the value out"))
        size, depth = measured
        self._alias_nodes += size
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise _Refused(Problem(
                self._path(), f"aliases expand to more than {MAX_ALIAS_NODES} values "
                f"(at the alias at {_where(mark)})",
                "a lab file needs few aliases; write the values out, or alias smaller pieces"))
        if len(self._steps) - 1 + depth > MAX_DEPTH:
            raise self._too_deep(mark)

    def _measure_node(self, node: Node) -> None:
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
            self._check_duplicates(node)
        else:
            self._measure[id(node)] = (1, 1)
            return
        size, depth = 1, 0
        for child in children:
            measured = self._measure.get(id(child))
            if measured is None:       # a key or item that is an alias of this very node
                raise _Refused(Problem(self._path(), f"the alias at {_where(child.start_mark)} "
                                       "refers to a node that contains it",
                                       "an alias must refer to a finished node; write the "
                                       "value out"))
            size += measured[0]
            depth = max(depth, measured[1])
        self._measure[id(node)] = (size, depth + 1)

    def _check_duplicates(self, node: MappingNode) -> None:
        seen: dict[tuple[str, str], Any] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE_TAG:
                continue
            first = seen.setdefault((key.tag, key.value), key.start_mark)
            if first is not key.start_mark:
                path = self._path()
                path = f"{path}.{key.value}" if path != "(top)" else str(key.value)
                self.problems.append(Problem(
                    path, f"duplicate key {key.value!r} at {_where(key.start_mark)} (first at "
                    f"{_where(first)})",
                    "a key may appear once in a mapping: rename or merge one of them"))

class _Constructing(SafeConstructor):
    """The safe constructor, turning a value it cannot build into a problem at its line."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            what = _short(node.value) if isinstance(node, ScalarNode) else "this value"
            reason = str(exc).split(";")[0][:100]
            raise _Refused(Problem(_where(node.start_mark), f"{what} cannot be read: {reason}",
                                   "quote the value to make it a string")) from None


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.reader.ReaderError):
        head = text[:exc.position] if isinstance(text, str) else ""
        where = f"line {head.count(chr(10)) + 1}, column {len(head) - head.rfind(chr(10))}"
        char = exc.character if isinstance(exc.character, int) else ord(exc.character or "\0")
        return Problem(where, f"control character U+{char:04X} in the text",
                       "a lab file is plain text: remove control characters")
    mark = getattr(exc, "problem_mark", None)
    where = _where(mark) if mark is not None else "(file)"
    problem = getattr(exc, "problem", None) or str(exc)
    context, started = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if isinstance(exc, yaml.constructor.ConstructorError):
        return Problem(where, f"YAML value cannot be read: {problem}",
                       "a lab file holds plain mappings, lists and scalars (no tags)")
    if isinstance(exc, yaml.composer.ComposerError):
        return _composer_problem(where, problem, context, started)
    if mark is not None and _char_at(text, mark) == "\t":
        return Problem(where, "a tab where YAML expects indentation or a value",
                       "indent with spaces, not tabs")
    if context and started is not None and (started.line, started.column) != (
            getattr(mark, "line", None), getattr(mark, "column", None)):
        problem += f" {context} (started at {_where(started)})"
    return Problem(where, f"YAML syntax error: {problem}",
                   "check the indentation and the quoting around it")


def _composer_problem(where: str, problem: str, context: str | None, started: Any) -> Problem:
    first = f" (first at {_where(started)})" if started is not None else ""
    if context and "single document" in context:
        return Problem(where, "more than one YAML document",
                       "a lab file is one document: remove the '---' separator or split the file")
    if context and "duplicate anchor" in context:
        anchor = context.split("anchor", 1)[1].split(";")[0].strip()
        return Problem(where, f"anchor {anchor} is defined twice{first}",
                       "give each anchor its own name")
    return Problem(where, f"YAML syntax error: {problem}",
                   "define an anchor (&name) before its alias (*name) uses it"
                   if "alias" in problem else "check the indentation and the quoting around it")


def _char_at(text: str, mark: Any) -> str:
    lines = text.split("\n", mark.line + 1)
    line = lines[mark.line] if mark.line < len(lines) else ""
    return line[mark.column] if mark.column < len(line) else ""


def _loader(text: str, libyaml: bool = CParser is not None) -> Any:
    """A loader for ``text``: libyaml's (or PyYAML's) scanner and parser, the measuring
    composer, PyYAML's safe constructor and resolver — the parts of ``yaml.CSafeLoader``
    with the composer swapped for one that measures."""
    events = (CParser,) if libyaml else (Reader, Scanner, Parser)
    cls = _LOADERS.get(events)
    if cls is None:
        cls = type("LabFileLoader", (_Measuring, *events, _Constructing, Resolver), {})
        _LOADERS[events] = cls
    loader = cls.__new__(cls)
    if libyaml:
        CParser.__init__(loader, text)
    else:
        Reader.__init__(loader, text)
        Scanner.__init__(loader)
        Parser.__init__(loader)
    Composer.__init__(loader)
    SafeConstructor.__init__(loader)
    Resolver.__init__(loader)
    loader._start_measuring()
    return loader


_LOADERS: dict[tuple[type, ...], type] = {}


def parse_yaml(text: str, *, source: str | None = None,
               libyaml: bool = CParser is not None) -> Any:
    """Parse YAML text into plain data within the bounds above; any problem is one
    :class:`ValidationError` (with every duplicate key, when those are the problems).
    ``libyaml=False`` uses PyYAML's Python scanner (what runs where libyaml is missing)."""
    if len(text) > MAX_BYTES:
        raise ValidationError([_oversize(len(text.encode("utf-8", "replace")))], source=source)
    loader = None
    try:
        loader = _loader(text, libyaml)         # PyYAML's reader checks characters here
        node = loader.get_single_node()
        if loader.problems:
            raise ValidationError(loader.problems, source=source)
        return None if node is None else loader.construct_document(node)
    except _Refused as refused:
        raise ValidationError(loader.problems + [refused.problem], source=source) from None
    except yaml.YAMLError as exc:
        raise ValidationError([_yaml_problem(exc, text)], source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


# ------------------------------------------------------------------------------- files

def _oversize(size: int | None) -> Problem:
    what = f"is {size:,} bytes" if size is not None else f"goes on past {MAX_BYTES:,} bytes"
    return Problem("(file)", f"the file {what}; a lab file may be at most {MAX_BYTES:,} bytes "
                   "(1 MiB)",
                   "a lab file describes endpoints, not data: keep large content in files "
                   "the lab refers to")


def _read_bytes(p: Path) -> bytes:
    if p.is_dir():
        yamls = sorted(x.name for x in p.glob("*.y*ml"))[:3]
        raise NotFoundError(f"{p} is a directory, not a lab file",
                            hint=f"pass a lab file in it, e.g. {p / yamls[0]}" if yamls
                            else "pass the path of a YAML lab file")
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise NotFoundError(f"lab file {p} does not exist",
                            hint="check the path, or create one (see README)") from None
    except OSError as exc:
        raise ValidationError([Problem("(file)", f"cannot be read: {exc.strerror or exc}",
                                       "check that it is a readable file")],
                              source=str(p)) from None
    if len(data) > MAX_BYTES:
        size = p.stat().st_size if p.is_file() else None
        raise ValidationError([_oversize(size)], source=str(p))
    return data


def _decode(data: bytes, source: str) -> str:
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec)
            except UnicodeDecodeError:
                break
    binary = ValidationError([Problem("(file)", "binary data, not a YAML lab file",
                                      "pass the lab's YAML file")], source=source)
    if b"\x00" in data:
        raise binary
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if _control_bytes(data) * 10 > len(data):
            raise binary from None
        head = data[:exc.start]
        line, column = head.count(b"\n") + 1, exc.start - head.rfind(b"\n")
        raise ValidationError([Problem(
            "(file)", f"not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, "
            f"column {column}",
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE)")],
            source=source) from None


def _control_bytes(data: bytes) -> int:
    return sum(1 for b in data if b < 0x20 and b not in (0x09, 0x0A, 0x0D))


_LAB_NAME = re.compile(r"[^a-z0-9-]+")


def _name_from_stem(stem: str, source: str) -> str:
    """The file's stem when it is a valid lab name; else one problem asking for ``name:``."""
    from hybridnb.core.spec import parse_lab

    try:
        parse_lab({"name": stem})
        return stem
    except ValidationError:
        pass
    guess = _LAB_NAME.sub("-", stem.lower()).strip("-")[:24].strip("-") or "demo"
    raise ValidationError([Problem(
        "name", f"missing, and the file name {stem!r} is not a valid lab name to take instead",
        f"add 'name: {guess}' (1-24 lowercase letters, digits and '-'), or rename the file")],
        source=source)


def load_lab_document(path: str | Path) -> LabDocument:
    """Read and parse the lab file at ``path`` within the bounds of this module."""
    p = Path(path)
    source = str(p)
    text = _decode(_read_bytes(p), source)
    data = parse_yaml(text, source=source) if text.strip() else None
    if data is None:
        raise ValidationError([Problem("(file)", "holds no lab: it is empty or only comments",
                                       "a lab file has at least 'endpoints:' (see README)")],
                              source=source)
    default_name = None
    if isinstance(data, dict) and "name" not in data:
        default_name = _name_from_stem(p.stem, source)
    return LabDocument(data, source, default_name)


__all__ = ["MAX_ALIAS_NODES", "MAX_BYTES", "MAX_DEPTH", "LabDocument", "load_lab_document",
           "parse_yaml"]
