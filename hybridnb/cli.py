"""The ``hybridnb`` command line: the notebook's operations from a shell.

A thin layer: parse arguments, call :class:`hybridnb.Lab` (or the sandbox), print the result
object's text.  Every command that talks to a sandbox takes ``--sandbox NAME`` (default:
``$HYBRIDNB_SANDBOX``, else ``default``), like ``--backend`` defaults to ``$HYBRIDNB_BACKEND``;
``hybridnb kinds`` prints the reference of the endpoint kinds and their fields, generated from
the registry.  Errors from the library are printed as one message with its hint — never a
traceback — and mapped to exit codes:

    0    success (status: the lab is up; plan --detailed-exitcode: no changes)
    1    the operation ran but the lab is not as wanted (status: changes pending; plan
         --detailed-exitcode: the plan has changes; test: a probe failed)
    2    the lab description or the command line is wrong (a bad option value too)
    3    the state or the host is in the way (lock held, subnet collides with a route, the
         lab lives on another sandbox)
    4    an engine refused or failed an action
    5    an engine is not available (sandbox not up, daemon missing)
    130  interrupted (Ctrl-C); the next command finishes the record of what was in flight
    141  the output was cut short (``hybridnb ... | head``): ends quietly, like other tools

Long steps say what they do while they do it: every action is printed on stderr when it
starts and when it ends (a VM boot is seconds), still-running ones every 10 s, a wait for
another process's lock and a rollback too; ``-q`` silences them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from hybridnb.backends import BACKENDS
from hybridnb.errors import HybridError

EXIT_OK, EXIT_PENDING, EXIT_USAGE = 0, 1, 2
#: ``plan --detailed-exitcode`` when the plan has changes: the lab is not as wanted (1), not
#: 2 — that is a bad lab file or command line.
EXIT_CHANGES = EXIT_PENDING
EXIT_INTERRUPTED, EXIT_PIPE = 130, 141


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number (use 1 or more)")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def check_list(text: str) -> tuple[str, ...]:
    """argparse type of ``--checks``: comma-separated probe checks, each one valid."""
    from hybridnb.errors import ValidationError
    from hybridnb.services.probe.plan import parse_checks

    checks = tuple(c.strip() for c in text.split(",") if c.strip())
    if not checks:
        raise argparse.ArgumentTypeError("no check given (e.g. icmp,tcp/80)")
    try:
        parse_checks(checks)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(
            "; ".join(f"{p.message} ({p.hint})" if p.hint else p.message
                      for p in exc.problems)) from None
    return checks


def _lab(args: argparse.Namespace) -> Any:
    from hybridnb.lab import Lab

    backend = "dry-run" if args.dry_run else args.backend
    return Lab.load(args.lab, backend=backend, state_dir=args.state_dir, sandbox=args.sandbox)


def _say(text: str) -> None:
    """One progress line on stderr (a closed stderr ends nothing)."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _progress(args: argparse.Namespace) -> Callable[[Any], None] | None:
    """Every event of a run as a line on stderr: an action when it starts and when it ends,
    still-running ones, notes (a lock wait, a rollback)."""
    if args.quiet:
        return None
    return lambda event: _say(str(event))


def cmd_plan(args: argparse.Namespace) -> int:
    plan = _lab(args).plan()
    print(plan.to_text())
    return EXIT_CHANGES if (args.detailed_exitcode and not plan.empty) else EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    print(_lab(args).apply(progress=_progress(args)).to_text())
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    print(_lab(args).destroy(progress=_progress(args)).to_text())
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    status = _lab(args).status()
    if args.json:
        print(json.dumps({"lab": status.lab, "backend": status.backend, "up": status.up,
                          "pending": status.pending, "endpoints": status.records()}, indent=2))
    else:
        print(status.to_text())
    return EXIT_OK if status.up else EXIT_PENDING


def cmd_test(args: argparse.Namespace) -> int:
    matrix = _lab(args).test(args.checks, timeout=args.timeout, count=args.count)
    print(matrix.to_json() if args.json else matrix.to_text(verbose=args.verbose))
    return EXIT_OK if matrix.ok else EXIT_PENDING


def cmd_validate(args: argparse.Namespace) -> int:
    report = _lab(args).validate(timeout=args.timeout)
    print(report.to_json() if args.json else report.to_text())
    return int(report.exit_code)


def cmd_dns(args: argparse.Namespace) -> int:
    lab = _lab(args)
    if args.query_log:
        view = lab.dns_query_log(args.query_log)
        data: Any = {"lab": view.lab, "queries": view.records()}
    else:
        view = lab.dns()
        data = {"lab": view.lab, "domain": view.domain, "server": view.server,
                "records": view.records_list()}
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else view.to_text())
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    from hybridnb.sandbox import Sandbox
    from hybridnb.target import default_sandbox

    box = Sandbox(args.sandbox or default_sandbox())
    progress = None if args.quiet else _say
    if args.action == "up":
        box.up(progress=progress)
    elif args.action == "down":
        if progress is not None:
            progress(f"taking sandbox {box.name} down: its labs end with it")
        box.down(purge=args.purge, progress=progress)
    print(box.status())
    return EXIT_OK


def cmd_images(args: argparse.Namespace) -> int:
    from hybridnb.images import testvm

    image = testvm.build(progress=None if args.quiet else
                         (lambda event, _fraction=None: _say(str(event))))
    print(f"test VM image {image.version}: kernel {image.kernel}, initrd {image.initrd}")
    return EXIT_OK


def cmd_kinds(args: argparse.Namespace) -> int:
    from hybridnb.core.kinds import KINDS
    from hybridnb.core.kinds.reference import KindReference
    from hybridnb.errors import NotFoundError

    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        raise NotFoundError(f"unknown kind {unknown[0]!r}",
                            hint=f"the kinds are {', '.join(KINDS)}")
    print(KindReference.of(args.kinds or None).to_text())
    return EXIT_OK


def _version() -> str:
    from hybridnb.version import version

    return f"hybridnb {version()}"


class _Version(argparse.Action):
    """``--version``, looked up only when asked (package metadata costs an import)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(_version())
        parser.exit()


def _sandbox_option(p: argparse.ArgumentParser, *, alias: bool = False) -> None:
    p.add_argument("--sandbox", metavar="NAME", default=None,
                   help="sandbox name (default: $HYBRIDNB_SANDBOX, else default)")
    if alias:
        p.add_argument("--name", dest="sandbox", help=argparse.SUPPRESS)   # the old spelling


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridnb",
        description="Docker containers and libvirt VMs on one Linux bridge: plan, apply, test "
                    "and destroy a hybrid lab described in a YAML file.",
        epilog="exit codes: 0 ok, 1 lab not as wanted (plan --detailed-exitcode: changes), "
               "2 bad lab file or usage, 3 state/host conflict, 4 engine error, 5 engine "
               "unavailable, 130 interrupted, 141 output cut short (| head)")
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("lab", metavar="LAB", help="lab file (YAML) or the name of an applied lab")
    common.add_argument("--backend", choices=BACKENDS, default=None,
                        help="where the lab lives (default: $HYBRIDNB_BACKEND or sandbox)")
    common.add_argument("--dry-run", action="store_true",
                        help="use the in-memory dry-run backend (same as --backend dry-run)")
    _sandbox_option(common)
    common.add_argument("--state-dir", default=None,
                        help="state directory (default: $HYBRIDNB_STATE_DIR or "
                             "$XDG_STATE_HOME/hybridnb)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("plan", parents=[common], help="show what apply would do")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 1 when the plan has changes, 0 when it has none (2 stays: a "
                        "bad lab file or usage)")
    p.set_defaults(func=cmd_plan)
    sub.add_parser("apply", parents=[common], help="create or converge the lab").set_defaults(func=cmd_apply)
    sub.add_parser("destroy", parents=[common], help="remove everything the lab owns").set_defaults(func=cmd_destroy)
    p = sub.add_parser("status", parents=[common], help="endpoints as the engines see them")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("test", parents=[common],
                       help="probe every endpoint against every other (exit 1 if any fails)")
    p.add_argument("--checks", default=None, type=check_list,
                   help="comma-separated checks: icmp,tcp,udp,http,dns,tcp/PORT (default: all)")
    p.add_argument("--timeout", type=positive_float, default=1.0,
                   help="seconds per probe (default 1)")
    p.add_argument("--count", type=positive_int, default=3,
                   help="attempts per pair (default 3)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="every grid and every failure line (by default a lab of more than 10 "
                        "endpoints prints a table per check and its failures, grouped)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("validate", parents=[common],
                       help="check the lab file's expect: lines (exit 0 all hold, 1 some "
                            "fail, 2 lab not up)")
    p.add_argument("--timeout", type=positive_float, default=1.0,
                   help="seconds per probe (default 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("dns", parents=[common], help="the lab's DNS records, or its query log")
    p.add_argument("--query-log", type=positive_int, metavar="N", default=0,
                   help="show the last N queries the lab's DNS server answered")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_dns)

    p = sub.add_parser(
        "sandbox", help="the isolated lab host with private dockerd and libvirtd",
        description="up: create the namespace and start the engines (a new namespace starts "
                    "without the labs an earlier one held); down: end the labs in it, stop "
                    "the engines, delete the namespace; status: what runs.")
    p.add_argument("action", choices=["up", "down", "status"])
    _sandbox_option(p, alias=True)
    p.add_argument("--purge", action="store_true", help="with down: also delete images and data")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("kinds", help="the endpoint kinds and every field they take")
    p.add_argument("kinds", nargs="*", metavar="KIND", help="only these kinds")
    p.set_defaults(func=cmd_kinds)

    p = sub.add_parser("images", help="build the images labs use (the small test VM)")
    p.add_argument("action", choices=["build"])
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_images)
    return parser


def _stdout_gone() -> int:
    """The reader of our output went away (``| head``): end quietly, as other tools do — the
    rest of the output goes nowhere instead of raising again at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except HybridError as exc:
        _say(f"hybridnb: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("hybridnb: interrupted; the next command finishes the record of what was in "
             "flight")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
