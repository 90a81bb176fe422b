"""``%hybrid`` and ``%%hybrid``: the lab, one subcommand at a time, from a notebook cell.

``%load_ext hybridnb`` registers :class:`HybridMagics`.  ``%hybrid SUBCOMMAND ...`` looks the
subcommand up in a small router (one handler per subcommand, the way jupysql's ``%sqlcmd``
does it); each handler parses its own arguments with argparse, calls :class:`hybridnb.Lab`
and returns an object that renders itself (the status table, the plan, the apply result…).

* There is one subcommand per endpoint kind of the registry (``%hybrid container NAME
  --image …``, ``%hybrid vm NAME --memory …``, ``%hybrid host NAME``); their options are
  generated from the kind's fields (:mod:`hybridnb.options`), so a field a kind module
  declares is an option here without any edit.  ``%hybrid kinds`` lists them all.
* ``%hybrid help`` is generated from the subcommands' parsers (usage) and handlers' docstrings
  (what they do), so it cannot drift from what the parsers accept.

* The *current lab* lives on the magics instance: ``create`` (or ``open``, or ``%%hybrid``
  with a YAML lab in the cell) sets it; any other subcommand reopens the lab named by
  ``HybridMagics.lab`` from its saved state when there is none yet.
* Options: ``%config HybridMagics.backend = "dry-run"`` (also ``lab``, ``state_dir``,
  ``sandbox``).
* ``-o NAME`` on any subcommand also stores the result in the user namespace as ``NAME``.
* ``$name`` is expanded by IPython on the line; in a ``%%hybrid`` cell body ``$name`` and
  ``${name}`` are replaced by user variables too (``$$`` is a literal ``$``).
* Every :class:`~hybridnb.errors.HybridError` and every argument error becomes a
  :class:`~IPython.core.error.UsageError` carrying the message and its hint — never a
  traceback from the library.

This module imports only the standard library, IPython, traitlets and the (pure, light) kinds
registry at load time, so ``%load_ext hybridnb`` stays fast; the Lab, widgets and plots are
imported on use.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import re
import shlex
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Unicode

from hybridnb.backends import BACKENDS, DEFAULT_RULE
from hybridnb.errors import HybridError


class _Exit(Exception):
    """argparse wanted to exit (after printing -h/--help)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing to stderr and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\nusage: {self.format_usage().strip()[7:]}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if status:
            raise UsageError(f"{self.prog}: {message or 'error'}")
        raise _Exit()


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_vars(text: str, namespace: dict[str, Any]) -> str:
    """Replace ``$name`` and ``${name}`` by ``str(namespace[name])``; unknown names stay as
    they are, ``$$`` becomes ``$``."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(2)
        return str(namespace[name]) if name in namespace else m.group(0)
    return _VAR.sub(sub, text)


def _usage_error(exc: HybridError) -> UsageError:
    return UsageError(str(exc))


def active_magics(shell: Any = None) -> "HybridMagics | None":
    """The HybridMagics registered in ``shell`` (default: the running IPython), if any."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return None
    found = shell.magics_manager.registry.get("HybridMagics")
    return found if isinstance(found, HybridMagics) else None


#: The subcommands in the order ``help`` lists them; ``KINDS`` stands for one subcommand per
#: endpoint kind of the registry (``container``, ``vm``, ``host``).
SUBCOMMANDS = ("create", "open", "KINDS", "remove", "status", "plan", "apply", "test",
               "validate", "dns", "policy", "links", "graph", "monitor", "capture", "doctor",
               "logs", "report", "destroy", "sandbox", "kinds", "yaml", "help")


def _sandbox_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sandbox", metavar="NAME",
                   help="sandbox name (default: HybridMagics.sandbox, else $HYBRIDNB_SANDBOX, "
                        "else default)")


def _help_of(method: Any) -> str:
    return (method.__doc__ or "").strip().splitlines()[0]


@magics_class
class HybridMagics(Magics):
    """``%hybrid SUBCOMMAND ...`` — build, apply, test and destroy a hybrid lab."""

    backend = Unicode("", config=True,
                      help="Backend for new labs: dry-run, sandbox or host "
                           f"(empty: {DEFAULT_RULE}).")
    lab = Unicode("hybrid", config=True,
                  help="Name of the lab to reopen from its state when no lab is current.")
    state_dir = Unicode("", config=True,
                        help="State directory (empty: $HYBRIDNB_STATE_DIR or "
                             "$XDG_STATE_HOME/hybridnb).")
    sandbox = Unicode("", config=True, help="Name of the sandbox the sandbox backend uses "
                                            "(empty: $HYBRIDNB_SANDBOX, else default).")

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.current_lab: Any = None
        self.last_matrix: Any = None
        self._parsers: dict[str, _Parser] = {}
        self.handlers: dict[str, Callable[[argparse.Namespace], Any]] = {}
        self.descriptions: dict[str, str] = {}
        for name in SUBCOMMANDS:
            if name == "KINDS":
                from hybridnb.core.kinds import kinds

                for kind in kinds():
                    self.handlers[kind.name] = functools.partial(self._cmd_endpoint, kind.name)
                    self.descriptions[kind.name] = f"add (or redefine) {kind.description}"
                continue
            method = getattr(self, f"_cmd_{name}")
            self.handlers[name] = method
            self.descriptions[name] = _help_of(method)

    # ------------------------------------------------------------------ plumbing

    def sandbox_name(self) -> str:
        from hybridnb.target import default_sandbox

        return self.sandbox or default_sandbox()

    def lab_options(self, backend: str | None = None, sandbox: str | None = None
                    ) -> dict[str, Any]:
        """Keyword arguments for a new Lab from the configured options (``backend`` and
        ``sandbox`` given on the line win; none named: the Lab's default, or the sandbox an
        applied lab's state records)."""
        return {"backend": backend or self.backend or None,
                "state_dir": self.state_dir or None, "sandbox": sandbox or self.sandbox or None}

    def require_lab(self) -> Any:
        if self.current_lab is None:
            from hybridnb.lab import Lab

            try:
                self.current_lab = Lab.load(self.lab, **self.lab_options())
            except HybridError:
                raise UsageError(
                    f"no current lab, and no applied lab named {self.lab!r} to reopen\n"
                    "  hint: start one with `%hybrid create --name NAME` (or a lab file), "
                    "or `%hybrid open NAME`") from None
        return self.current_lab

    def _parser(self, cmd: str) -> _Parser:
        parser = self._parsers.get(cmd)
        if parser is None:
            parser = _Parser(prog=f"%hybrid {cmd}", description=self.descriptions[cmd],
                             add_help=True)
            parser.add_argument("-o", "--output", metavar="NAME",
                                help="also store the result in this variable")
            self._arguments(cmd, parser)
            self._parsers[cmd] = parser
        return parser

    def _arguments(self, cmd: str, parser: _Parser) -> None:
        from hybridnb.core.kinds import REGISTRY

        if cmd in REGISTRY:
            from hybridnb.options import add_field_options

            add_field_options(parser, REGISTRY[cmd])
            return
        add = vars(type(self)).get(f"_args_{cmd}")
        if add is not None:
            add.__func__(parser)

    def usage(self) -> tuple[tuple[str, str], ...]:
        """(usage, help) of every subcommand, generated from its parser."""
        from hybridnb.options import usage

        return tuple((f"{cmd} {usage(self._parser(cmd))}".rstrip(), self.descriptions[cmd])
                     for cmd in self.handlers)

    def run(self, line: str, cell: str | None = None) -> Any:
        """Route one ``%hybrid`` line (``cell``: the body of ``%%hybrid``)."""
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%hybrid: cannot parse the line: {exc}") from None
        if cell is not None:
            return self._cell(argv, cell)
        if not argv:
            return self._cmd_help(argparse.Namespace())
        cmd, rest = argv[0], argv[1:]
        if cmd in ("-h", "--help"):
            cmd = "help"
        handler = self.handlers.get(cmd)
        if handler is None:
            close = difflib.get_close_matches(cmd, list(self.handlers), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"%hybrid: unknown subcommand {cmd!r}\n  hint: {hint}"
                             f"see `%hybrid help` for the subcommands")
        try:
            args = self._parser(cmd).parse_args(rest)
        except _Exit:
            return None
        from hybridnb.offloop import off_loop

        try:
            result = off_loop(lambda: handler(args))
        except HybridError as exc:
            raise _usage_error(exc) from None
        if getattr(args, "output", None):
            self.shell.user_ns[args.output] = result
        return result

    @line_cell_magic
    def hybrid(self, line: str = "", cell: str | None = None) -> Any:
        """Build and test a hybrid lab: ``%hybrid help`` lists the subcommands;
        ``%%hybrid [--apply]`` takes a YAML lab in the cell body."""
        return self.run(line, cell)

    # ------------------------------------------------------------------ %%hybrid

    def _cell(self, argv: list[str], body: str) -> Any:
        if argv and argv[0] == "create":
            argv = argv[1:]
        parser = _Parser(prog="%%hybrid", description="a YAML lab in the cell body")
        parser.add_argument("-o", "--output", metavar="NAME")
        parser.add_argument("--apply", action="store_true", help="apply the lab at once")
        parser.add_argument("--backend", choices=BACKENDS, default=None)
        _sandbox_option(parser)
        parser.add_argument("-q", "--quiet", action="store_true")
        try:
            args = parser.parse_args(argv)
        except _Exit:
            return None
        from hybridnb.lab import Lab
        from hybridnb.notebook.results import LabSummary
        from hybridnb.offloop import off_loop

        text = expand_vars(body, self.shell.user_ns)
        try:
            opts = self.lab_options(args.backend, args.sandbox)
            lab = Lab.from_yaml(text, source="%%hybrid cell", **opts)
            self.current_lab = lab
            result: Any = off_loop(lambda: self._apply(lab, args.quiet) if args.apply
                                   else LabSummary.of(lab))
        except HybridError as exc:
            raise _usage_error(exc) from None
        if args.output:
            self.shell.user_ns[args.output] = result
        return result

    # ------------------------------------------------------------------ lab editing

    @staticmethod
    def _args_create(p: _Parser) -> None:
        p.add_argument("labfile", nargs="?", metavar="LABFILE", help="a YAML lab file")
        p.add_argument("--name", help="lab name (default: the lab file's, else "
                                      "HybridMagics.lab)")
        p.add_argument("--subnet")
        p.add_argument("--bridge")
        p.add_argument("--gateway")
        p.add_argument("--domain")
        p.add_argument("--mtu", type=int)
        p.add_argument("--backend", choices=BACKENDS)
        _sandbox_option(p)
        p.add_argument("--apply", action="store_true", help="apply it at once")
        p.add_argument("-q", "--quiet", action="store_true")

    def _cmd_create(self, a: argparse.Namespace) -> Any:
        """start a lab from flags or a YAML lab file; it becomes the current lab"""
        from hybridnb.lab import Lab
        from hybridnb.notebook.results import LabSummary

        opts = self.lab_options(a.backend, a.sandbox)
        if a.labfile:
            flags = [f for f in ("subnet", "bridge", "gateway", "domain", "mtu")
                     if getattr(a, f) is not None]
            if flags:
                raise UsageError(f"%hybrid create: --{flags[0]} cannot be combined with a lab "
                                 "file\n  hint: edit the network section of the file instead")
            lab = Lab.load(a.labfile, **opts)
            if a.name and a.name != lab.name:       # the file's lab under another name
                lab = Lab.from_dict({**lab.to_dict(), "name": a.name}, **opts)
        else:
            lab = Lab(a.name or self.lab, subnet=a.subnet, bridge=a.bridge, gateway=a.gateway,
                      domain=a.domain, mtu=a.mtu, **opts)
        self.current_lab = lab
        if a.apply:
            return self._apply(lab, a.quiet)
        return LabSummary.of(lab, note="created (nothing applied yet)")

    @staticmethod
    def _args_open(p: _Parser) -> None:
        p.add_argument("lab", metavar="NAME|LABFILE")
        p.add_argument("--backend", choices=BACKENDS)
        _sandbox_option(p)

    def _cmd_open(self, a: argparse.Namespace) -> Any:
        """reopen an applied lab by name (from its state) or a lab file"""
        from hybridnb.lab import Lab
        from hybridnb.notebook.results import LabSummary

        self.current_lab = Lab.load(a.lab, **self.lab_options(a.backend, a.sandbox))
        return LabSummary.of(self.current_lab, note="opened")

    def _cmd_endpoint(self, kind: str, a: argparse.Namespace) -> Any:
        """add (or redefine) an endpoint of ``kind`` with the fields given as options"""
        from hybridnb.core.kinds import get
        from hybridnb.notebook.results import LabSummary
        from hybridnb.options import field_values

        lab = self.require_lab()
        values = field_values(get(kind), a)
        outcome = upsert_endpoint(lab, a.name,
                                  lambda lab: lab.add(kind, a.name, replace=True, **values))
        return LabSummary.of(lab, note=f"{kind} {a.name} {outcome}")

    @staticmethod
    def _args_remove(p: _Parser) -> None:
        p.add_argument("name")

    def _cmd_remove(self, a: argparse.Namespace) -> Any:
        """take an endpoint out of the lab (apply deletes it)"""
        from hybridnb.notebook.results import LabSummary

        lab = self.require_lab()
        lab.remove(a.name)
        return LabSummary.of(lab, note=f"removed {a.name} (apply to delete it)")

    def _cmd_yaml(self, a: argparse.Namespace) -> Any:
        """the current lab as a YAML lab file"""
        from IPython.display import Code

        return Code(self.require_lab().to_yaml(), language="yaml")

    @staticmethod
    def _args_kinds(p: _Parser) -> None:
        p.add_argument("kind", nargs="*", metavar="KIND", help="only these kinds")

    def _cmd_kinds(self, a: argparse.Namespace) -> Any:
        """the endpoint kinds and every field they take (YAML key, option, default)"""
        from hybridnb.core.kinds import KINDS
        from hybridnb.core.kinds.reference import KindReference

        unknown = [k for k in a.kind if k not in KINDS]
        if unknown:
            raise UsageError(f"%hybrid kinds: unknown kind {unknown[0]!r}\n  hint: the kinds "
                             f"are {', '.join(KINDS)}")
        return KindReference.of(a.kind or None)

    # ------------------------------------------------------------------ engines

    def _cmd_status(self, a: argparse.Namespace) -> Any:
        """every endpoint as the engines see it (and its host), the lab MTU and why"""
        return self.require_lab().status()

    def _cmd_plan(self, a: argparse.Namespace) -> Any:
        """what apply would do, without doing it"""
        return self.require_lab().plan()

    def _apply(self, lab: Any, quiet: bool, *, destroy: bool = False) -> Any:
        from hybridnb.notebook.progress import ProgressBar

        bar = None if quiet else ProgressBar(title="destroy" if destroy else "apply").show()
        run = lab.destroy if destroy else lab.apply
        try:
            result = run(progress=bar)
        except HybridError as exc:
            if bar is not None:
                bar.finish(ok=False, message=exc.message)
            raise
        if bar is not None:
            bar.finish(ok=result.ok, message=result.plan.headline())
        return result

    @staticmethod
    def _args_apply(p: _Parser) -> None:
        p.add_argument("-q", "--quiet", action="store_true", help="no progress display")

    def _cmd_apply(self, a: argparse.Namespace) -> Any:
        """make the engines match the lab (progress bar while it runs)"""
        return self._apply(self.require_lab(), a.quiet)

    _args_destroy = _args_apply

    def _cmd_destroy(self, a: argparse.Namespace) -> Any:
        """remove everything the lab owns"""
        return self._apply(self.require_lab(), a.quiet, destroy=True)

    # ------------------------------------------------------------------ probes and DNS

    @staticmethod
    def _args_test(p: _Parser) -> None:
        p.add_argument("--checks", metavar="CHECKS",
                       help="comma-separated: icmp,tcp,udp,http,dns,tcp/PORT (default: all "
                            "the lab supports)")
        p.add_argument("--timeout", type=float, default=1.0, metavar="S",
                       help="seconds (one deadline for the whole run)")
        p.add_argument("--count", type=int, default=3, metavar="N", help="attempts per pair")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="every grid (by default a lab of more than 10 endpoints shows a "
                            "table per check and its failures)")

    def _cmd_test(self, a: argparse.Namespace) -> Any:
        """probe every endpoint pair: the connectivity matrix"""
        lab = self.require_lab()
        checks = tuple(c.strip() for c in a.checks.split(",") if c.strip()) if a.checks else None
        matrix = lab.test(checks, timeout=a.timeout, count=a.count)
        self.last_matrix = dataclasses.replace(matrix, verbose=True) if a.verbose else matrix
        return self.last_matrix

    @staticmethod
    def _args_validate(p: _Parser) -> None:
        p.add_argument("--timeout", type=float, default=1.0, metavar="S")
        p.add_argument("--count", type=int, default=2, metavar="N")

    def _cmd_validate(self, a: argparse.Namespace) -> Any:
        """check the lab's expect: lines against a fresh probe run"""
        lab = self.require_lab()
        if not lab.spec.expect:
            raise UsageError(f"%hybrid validate: lab {lab.name} has no expect: lines\n  hint: "
                             "add lines like 'web -> db tcp/5432 ok' under expect: in the lab")
        return lab.validate(timeout=a.timeout, count=a.count)

    @staticmethod
    def _args_dns(p: _Parser) -> None:
        p.add_argument("what", nargs="?", choices=["records", "query-log"], default="records")
        p.add_argument("-n", "--limit", type=int, default=50, metavar="N",
                       help="with query-log: how many queries")

    def _cmd_dns(self, a: argparse.Namespace) -> Any:
        """the names the lab's DNS serves; its query log"""
        lab = self.require_lab()
        if a.what == "records":
            return lab.dns()
        return lab.dns_query_log(a.limit)

    @staticmethod
    def _args_policy(p: _Parser) -> None:
        p.add_argument("source", nargs="?", metavar="FROM", help="source endpoint")
        p.add_argument("target", nargs="?", metavar="TO", help="target endpoint or gateway")
        p.add_argument("check", nargs="?", metavar="PROTO/PORT", default="icmp",
                       help="tcp/PORT, udp/PORT, http[/PORT], icmp or dns (default icmp)")

    def _cmd_policy(self, a: argparse.Namespace) -> Any:
        """the policy's rules with hit counters; FROM TO [PROTO/PORT]: the deciding rule"""
        lab = self.require_lab()
        if a.source is None:
            return lab.policy()
        if a.target is None:
            raise UsageError("%hybrid policy: name the target too: FROM TO [PROTO/PORT]\n"
                             "  hint: e.g. %hybrid policy web db tcp/5432")
        return lab.explain(a.source, a.target, a.check)

    def _cmd_links(self, a: argparse.Namespace) -> Any:
        """the link impairments: what each endpoint's link does and where it is applied"""
        return self.require_lab().links()

    @staticmethod
    def _args_graph(p: _Parser) -> None:
        p.add_argument("--matrix", metavar="VAR",
                       help="variable holding a connectivity matrix (default: the last test)")
        p.add_argument("--no-matrix", action="store_true", help="do not mark failed pairs")
        p.add_argument("--live", action="store_true",
                       help="the interactive topology: redrawn every --interval seconds with "
                            "traffic rates on the links, an endpoint's details and actions")
        p.add_argument("--interval", type=float, default=2.0, metavar="S")

    def _cmd_graph(self, a: argparse.Namespace) -> Any:
        """topology drawing: kinds, states, failed and policy-denied pairs (--live: interactive,
        traffic)"""
        from hybridnb.render.topology import draw_topology

        lab = self.require_lab()
        matrix = None
        if a.matrix:
            if a.matrix not in self.shell.user_ns:
                raise UsageError(f"%hybrid graph: no variable named {a.matrix!r}")
            matrix = self.shell.user_ns[a.matrix]
        elif not a.no_matrix:
            matrix = self.last_matrix
        if a.live:
            from hybridnb.notebook.topology_widget import TopologyWidget

            return TopologyWidget(lab, interval=a.interval, autostart=True,
                                  matrix=matrix if a.matrix else (
                                      None if a.no_matrix else (lambda: self.last_matrix)),
                                  layout=_layout_for(self, lab.name))
        return draw_topology(lab.status(), matrix, layout=_layout_for(self, lab.name))

    # ------------------------------------------------------------------ report

    @staticmethod
    def _args_report(p: _Parser) -> None:
        p.add_argument("files", nargs="*", metavar="FILE",
                       help="also save it: FILE.html, FILE.md (pictures in FILE_files/) or "
                            "FILE.json")
        p.add_argument("--no-probe", action="store_true",
                       help="send nothing into the lab (no probe run, no doctor); the "
                            "notebook's last test of this lab is shown if there was one")
        p.add_argument("--monitor", type=float, default=0.0, metavar="S",
                       help="also record the lab's traffic for S seconds")

    def _cmd_report(self, a: argparse.Namespace) -> Any:
        """the lab in one document: shown here, saved as HTML, Markdown or JSON"""
        from hybridnb.render.report.render import format_for

        for path in a.files:
            format_for(path)                    # a name that says no format: before any work
        lab = self.require_lab()
        matrix = self.last_matrix
        names = {e.name for e in lab.spec.endpoints} | {"gateway"}
        if matrix is not None and not set(matrix.sources) <= names:
            matrix = None                                # a test of another lab
        report = lab.report(probe=not a.no_probe, matrix=matrix if a.no_probe else None,
                            monitor=a.monitor)
        for path in a.files:
            report.save(path)
        return report
    # ------------------------------------------------------------------ watching

    @staticmethod
    def _args_monitor(p: _Parser) -> None:
        p.add_argument("duration", nargs="?", default="30s", metavar="DURATION",
                       help="how long: 30s, 2m, 1h or seconds (0: until Stop)")
        p.add_argument("--interval", type=float, default=1.0, metavar="S",
                       help="seconds between samples")
        p.add_argument("--top", type=int, default=6, metavar="N",
                       help="how many of the busiest endpoints the plot shows")
        p.add_argument("--wait", action="store_true",
                       help="block until DURATION is over and return the recorded report "
                            "instead of the live display")

    def _cmd_monitor(self, a: argparse.Namespace) -> Any:
        """live traffic per endpoint: a plot and table updated in place, stoppable"""
        lab = self.require_lab()
        seconds = parse_seconds(a.duration, "monitor")
        if a.wait:
            if not seconds:
                raise UsageError("%hybrid monitor: --wait needs a DURATION")
            return lab.monitor(a.interval, seconds)
        from hybridnb.notebook.monitor import LiveMonitor

        return LiveMonitor(lab, interval=a.interval, duration=seconds or None, top=a.top)

    @staticmethod
    def _args_capture(p: _Parser) -> None:
        p.add_argument("endpoint", metavar="ENDPOINT|bridge", help="an endpoint, or bridge")
        p.add_argument("-f", "--filter", metavar="BPF", default="",
                       help="capture filter in tcpdump syntax, e.g. 'icmp or port 53'")
        p.add_argument("--count", type=int, metavar="N", help="stop after N packets")
        p.add_argument("--duration", metavar="S", default=None,
                       help="stop after S (10s, 1m; default 10s, or the test run with "
                            "--during-test)")
        p.add_argument("-w", "--write", metavar="FILE.pcap",
                       help="where the pcap goes (default: beside the lab state)")
        p.add_argument("--during-test", action="store_true",
                       help="run the lab's test while capturing and stop when it ends (the "
                            "matrix becomes the last test, for graph)")

    def _cmd_capture(self, a: argparse.Namespace) -> Any:
        """capture on an endpoint's bridge port (or the bridge): the decoded packets"""
        lab = self.require_lab()
        seconds = parse_seconds(a.duration, "capture") if a.duration else None
        if a.during_test:
            with lab.capturing(a.endpoint, bpf=a.filter, count=a.count, duration=seconds,
                               path=a.write) as cap:
                self.last_matrix = lab.test()
            return cap.result
        if seconds is None and not a.count:
            seconds = 10.0
        return lab.capture(a.endpoint, bpf=a.filter, count=a.count, duration=seconds,
                           path=a.write)

    @staticmethod
    def _args_doctor(p: _Parser) -> None:
        p.add_argument("--fix", action="store_true",
                       help="apply the targeted fixes it printed (only those; leftovers of "
                            "labs from another state directory count as leftovers), then "
                            "check again")
        p.add_argument("--only", metavar="CHECKS", help="comma-separated checks or groups")
        p.add_argument("--skip", metavar="CHECKS",
                       help="comma-separated checks or groups to leave out, e.g. leftovers")

    def _cmd_doctor(self, a: argparse.Namespace) -> Any:
        """what is wrong on the lab host and in the lab, why, and the fixing commands"""
        def names(text: str | None) -> list[str] | None:
            return [w for w in text.replace(",", " ").split() if w] if text else None
        return self.require_lab().doctor(a.fix, checks=names(a.only), skip=names(a.skip) or [])

    @staticmethod
    def _args_logs(p: _Parser) -> None:
        p.add_argument("endpoints", nargs="*", metavar="ENDPOINT",
                       help="only lines of these endpoints")
        p.add_argument("--since", metavar="TIME",
                       help="30s, 5m, 2h, 1d ago, epoch seconds or an ISO time")
        p.add_argument("-n", "--lines", type=int, metavar="N", help="only the newest N lines")

    def _cmd_logs(self, a: argparse.Namespace) -> Any:
        """one time-ordered log: DNS queries, container output, VM consoles, hybridnb's actions"""
        return self.require_lab().logs(*a.endpoints, since=a.since, limit=a.lines)

    # ------------------------------------------------------------------ sandbox and help

    @staticmethod
    def _args_sandbox(p: _Parser) -> None:
        p.add_argument("action", choices=["up", "down", "status"])
        _sandbox_option(p)
        p.add_argument("--name", dest="sandbox", help=argparse.SUPPRESS)   # the old spelling
        p.add_argument("--purge", action="store_true", help="with down: delete images and data")
        p.add_argument("-q", "--quiet", action="store_true")

    def _cmd_sandbox(self, a: argparse.Namespace) -> Any:
        """the isolated lab host with private engines"""
        from hybridnb.sandbox import Sandbox

        box = Sandbox(a.sandbox or self.sandbox_name())
        if a.action == "up":
            box.up(progress=None if a.quiet else print)
        elif a.action == "down":
            box.down(purge=a.purge)
        return box.status()

    def _cmd_help(self, a: argparse.Namespace) -> Any:
        """this list"""
        from hybridnb.notebook.results import HelpText

        return HelpText(self.usage())


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")


def parse_seconds(text: str, cmd: str) -> float:
    """``30s``, ``2m``, ``1h``, ``500ms`` or plain seconds, as seconds."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise UsageError(f"%hybrid {cmd}: cannot read the duration {text!r}\n  hint: e.g. "
                         "30s, 2m, 1h or a number of seconds")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]
    return float(m.group(1)) * scale


def upsert_endpoint(lab: Any, name: str, add: Callable[[Any], Any]) -> str:
    """Add an endpoint with ``add(lab)`` — which calls ``lab.add(..., replace=True)`` — so a
    cell or a form that runs twice redefines it instead of failing.  ``Lab`` validates the
    edit atomically (on an error the lab stays as it was).  Returns ``added``, ``redefined``
    or ``unchanged``."""
    from hybridnb.core.kinds import endpoint_to_dict

    old = next((ep for ep in lab.spec.endpoints if ep.name == name), None)
    add(lab)
    if old is None:
        return "added"
    return ("unchanged" if endpoint_to_dict(lab.spec.endpoint(name)) == endpoint_to_dict(old)
            else "redefined")


def _layout_for(magics: HybridMagics, lab: str) -> Any:
    """One layout cache per lab, so ``%hybrid graph`` keeps nodes where they were."""
    cache = magics.__dict__.setdefault("_layouts", {})
    if lab not in cache:
        from hybridnb.render.topology import RingLayout

        cache[lab] = RingLayout()
    return cache[lab]


def load_ipython_extension(ip: Any) -> None:
    """Register :class:`HybridMagics` with ``ip`` (what ``%load_ext hybridnb`` calls)."""
    # %reload_ext: forget the previous instance so %config reaches only the new one
    ip.configurables[:] = [c for c in ip.configurables if type(c).__name__ != "HybridMagics"]
    ip.register_magics(HybridMagics(ip))


def unload_ipython_extension(ip: Any) -> None:
    ip.configurables[:] = [c for c in ip.configurables if type(c).__name__ != "HybridMagics"]
