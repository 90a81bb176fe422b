"""The ``hybridnb`` command line: the notebook's operations from a shell.

A thin layer: parse arguments, call :class:`hybridnb.Lab` (or the sandbox), print the result
object's text.  Every command that talks to a sandbox takes ``--sandbox NAME`` (default:
``$HYBRIDNB_SANDBOX``, else ``default``); ``--backend`` defaults to ``$HYBRIDNB_BACKEND``, else
the sandbox as root and the dry-run backend otherwise (:func:`hybridnb.backends.default_backend`);
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
import contextlib
import json
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

from hybridnb.backends import BACKENDS, DEFAULT_RULE
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
        print(json.dumps(status.to_dict(), indent=2))
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


def cmd_policy(args: argparse.Namespace) -> int:
    lab = _lab(args)
    if args.source is None:
        table = lab.policy()
        print(table.to_json() if args.json else table.to_text())
        return EXIT_OK
    if args.target is None:
        raise HybridError("policy: name the target too: hybridnb policy LAB FROM TO "
                          "[PROTO/PORT]", hint="e.g. hybridnb policy lab.yaml web db tcp/5432")
    decision = lab.explain(args.source, args.target, args.check)
    if args.json:
        print(json.dumps({"source": decision.flow.source, "target": decision.flow.target,
                          "check": decision.flow.check, "verdict": decision.verdict,
                          "decided_by": decision.decided_by, "why": decision.why}, indent=2))
    else:
        print(str(decision))
    return EXIT_OK if decision.allowed else EXIT_PENDING


def cmd_links(args: argparse.Namespace) -> int:
    view = _lab(args).links()
    print(json.dumps(view.records(), indent=2) if args.json else view.to_text())
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from hybridnb.render.report.render import format_for

    for output in args.output:
        format_for(output)                  # a name that says no format: before any work
    report = _lab(args).report(probe=not args.no_probe, monitor=args.monitor)
    for output in args.output:
        for path in report.save(output):
            print(path)
    return EXIT_OK


# ------------------------------------------------------- watching: monitor, capture, doctor, logs

@contextlib.contextmanager
def _stop_on_interrupt(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C sets ``stop`` (the running watch ends cleanly and prints what it has) instead
    of raising in the middle of it; the previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_monitor(args: argparse.Namespace) -> int:
    import shutil

    from hybridnb.render.traffic import top_screen

    lab = _lab(args)
    tty = sys.stdout.isatty()
    rows = max(5, shutil.get_terminal_size().lines - 5) if tty else None

    def show(sample: Any) -> None:
        if args.json:
            print(json.dumps(sample.to_dict(), sort_keys=True), flush=True)
        else:
            print(top_screen(sample, tty=tty, limit=rows), end="", flush=True)
    stop = threading.Event()
    with _stop_on_interrupt(stop):
        report = lab.monitor(args.interval, args.duration or None, stop=stop, on_sample=show)
    if args.json:
        print(json.dumps({k: v for k, v in report.to_dict().items() if k != "samples"},
                         sort_keys=True))
    else:
        print(report.to_text())
    return EXIT_OK


def cmd_capture(args: argparse.Namespace) -> int:
    cap = _lab(args).capturing(args.endpoint, bpf=args.filter or "", count=args.count,
                               duration=args.duration, path=args.write)
    stop = threading.Event()
    with _stop_on_interrupt(stop):
        cap.start()
        ends = " or ".join(w for w in (f"{args.count} packets" if args.count else "",
                                       f"{args.duration:g}s" if args.duration else "") if w)
        print(f"capturing on {cap.interface} into {cap.path}; "
              f"{'ends after ' + ends + ', ' if ends else ''}Ctrl-C stops",
              file=sys.stderr, flush=True)
        result = cap.wait(args.duration + 10.0 if args.duration else None, stop=stop)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.to_text())
    return EXIT_OK


def _names(text: str | None) -> list[str] | None:
    return [w for w in text.replace(",", " ").split() if w] if text else None


def cmd_doctor(args: argparse.Namespace) -> int:
    only, skip = _names(args.only), _names(args.skip) or []
    if args.lab:
        report = _lab(args).doctor(args.fix, checks=only, skip=skip)
    else:
        from hybridnb.lab import host_doctor

        report = host_doctor("dry-run" if args.dry_run else args.backend, fix=args.fix,
                             state_dir=args.state_dir, sandbox=args.sandbox, checks=only,
                             skip=skip)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return int(report.exit_code)


def cmd_logs(args: argparse.Namespace) -> int:
    lab = _lab(args)
    if not args.follow:
        view = lab.logs(*args.endpoints, since=args.since, limit=args.lines)
        print(view.to_json() if args.json else view.to_text())
        return EXIT_OK
    from hybridnb.render.logs import line_text

    stop = threading.Event()
    with _stop_on_interrupt(stop):
        for line in lab.follow_logs(*args.endpoints, since=args.since, stop=stop):
            print(json.dumps(line.to_dict(), sort_keys=True) if args.json
                  else line_text(line), flush=True)
    return EXIT_OK


DOCTOR_HELP = """\
Check what hybridnb needs on the lab host and, given LAB, the lab itself: FORWARD policy and
br_netfilter, ip_forward, the neighbour-table cap, the bridge and its ports' MTU, routes
overlapping the subnet, duplicate addresses, endpoints stopped, missing or answering with
another MAC, the lab's DNS server and names, the engines (Docker, libvirt, QEMU; KVM or TCG)
and leftovers. Each finding is ok, warn or fail, with what was found, why it matters and the
command that fixes it; the exit code is 0 all ok, 1 warnings, 2 failures. Without LAB only
the host-level checks run (the engines, KVM or TCG, leftovers).

doctor only reads. --fix applies the targeted fixes it printed as "(doctor --fix applies
it)" — one accept rule for the lab bridge, a sysctl inside the lab host's namespace (never the
machine's own), the lab's DNS server restarted, an MTU set, an intruding port detached,
a stopped or missing endpoint started or re-made, leftovers deleted — and nothing else;
fixes it only prints (a route, the machine-wide neighbour cap, an endpoint answering with
another identity) are yours to run. Then it checks again and reports that second run.

Leftovers are objects with hybridnb's marks that no lab of THIS state directory owns. A lab
applied with another --state-dir (or $HYBRIDNB_STATE_DIR) counts as a leftover here, and
--fix deletes it: run doctor with that lab's --state-dir, or add --skip leftovers."""


def _add_watch_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``monitor``, ``capture``, ``doctor`` and ``logs`` (issue 14)."""
    p = sub.add_parser("monitor", parents=[common],
                       help="live traffic per endpoint: rates both ways, top talkers",
                       description="Samples every endpoint's bridge port (and the gateway) "
                                   "each --interval: a refreshing table on a terminal, plain "
                                   "timestamped blocks otherwise, then the run's summary.")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between samples (default 1)")
    p.add_argument("--duration", type=float, default=30.0, metavar="S",
                   help="seconds to watch (default 30; 0: until Ctrl-C)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per sample, then one with the run's summary")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("capture", parents=[common],
                       help="capture packets on an endpoint's bridge port or the bridge",
                       description="tcpdump inside the lab host on ENDPOINT's port (a veth "
                                   "or a VM's tap) or on the whole bridge (of every host, "
                                   "merged; a remote host's captured by its agent), until "
                                   "--count packets, --duration seconds or Ctrl-C; then the "
                                   "decoded summary (time, source, destination, protocol, "
                                   "info).")
    p.add_argument("endpoint", metavar="ENDPOINT|bridge", help="an endpoint, or bridge")
    p.add_argument("-f", "--filter", metavar="BPF", default="",
                   help="capture filter in tcpdump syntax, e.g. 'icmp or port 53'")
    p.add_argument("--count", type=int, default=None, metavar="N", help="stop after N packets")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: at Ctrl-C)")
    p.add_argument("-w", "--write", metavar="FILE.pcap", default=None,
                   help="where the pcap goes (default: beside the lab state, "
                        "captures/LAB/ENDPOINT-TIME.pcap)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_capture)

    where = argparse.ArgumentParser(add_help=False)
    for action in common._actions:
        if action.dest != "lab":
            where._add_action(action)
    p = sub.add_parser("doctor", parents=[where],
                       help="what is wrong on this host and in the lab, and the fixes "
                            "(exit 0 ok, 1 warnings, 2 failures)",
                       description=DOCTOR_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lab", metavar="LAB", nargs="?", default=None,
                   help="lab file or the name of an applied lab (default: host checks only)")
    p.add_argument("--fix", action="store_true",
                   help="apply the targeted fixes it printed (only those), then check again")
    p.add_argument("--only", metavar="CHECKS", default=None,
                   help="comma-separated check names or groups to run (default: all)")
    p.add_argument("--skip", metavar="CHECKS", default=None,
                   help="comma-separated check names or groups to leave out, e.g. leftovers")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("logs", parents=[common],
                       help="one time-ordered log: DNS queries, container output, VM "
                            "consoles, hybridnb's actions",
                       description="Merges the lab DNS server's query log, each container's "
                                   "output, each VM's serial console and hybridnb's own "
                                   "action journal, each line tagged by its source.")
    p.add_argument("endpoints", metavar="ENDPOINT", nargs="*",
                   help="only lines of these endpoints (default: all)")
    p.add_argument("--since", metavar="TIME", default=None,
                   help="only lines since TIME: 30s, 5m, 2h, 1d ago, epoch seconds or an "
                        "ISO time")
    p.add_argument("-n", "--lines", type=int, default=None, metavar="N",
                   help="only the newest N lines")
    p.add_argument("--follow", action="store_true",
                   help="keep printing new lines as they come, until Ctrl-C")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_logs)


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
    from hybridnb.images import recipes, testvm

    if args.action == "list":
        listing = recipes.list_images()
        print(json.dumps(listing.records(), indent=2) if args.json else listing.to_text())
        return EXIT_OK
    if args.action == "prune":
        print(recipes.prune(everything=args.all).to_text())
        for url in args.docker or ():
            from hybridnb.remote.agentbox import remove_from

            gone = remove_from(url)
            print(f"{url}: removed {', '.join(gone)}" if gone else f"{url}: no hybridnb agent")
        return EXIT_OK
    if not args.what:
        image = testvm.build(progress=None if args.quiet else
                             (lambda event, _fraction=None: _say(str(event))))
        print(f"test VM image {image.version}: kernel {image.kernel}, initrd {image.initrd}")
        return EXIT_OK
    show = None if args.quiet else (lambda event: _say(str(event)))
    for name, (recipe, shapes) in _wanted_images(args.what).items():
        shape = "vm" if "vm" in shapes else "rootfs"
        ref = recipes.ensure_image(recipe, None, shape, show, refresh=args.refresh,
                                   force=args.force)
        what = f"VM disk {ref.disk}" if shape == "vm" else f"rootfs {ref.rootfs}"
        note = " (+ container: docker import on first use)" if "container" in shapes else ""
        print(f"image {name}: {what}{note}")
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


def _wanted_images(what: Sequence[str]) -> dict[str, Any]:
    """Recipes named on the command line: lab files (read and validated like any lab file:
    their images and the built-in ones their endpoints use) or built-in recipe names."""
    import os

    from hybridnb.core.recipe import builtin_recipes
    from hybridnb.core.sections.images import used_images
    from hybridnb.core.spec import parse_lab
    from hybridnb.errors import NotFoundError
    from hybridnb.labfile import load_lab_document

    out: dict[str, Any] = {}
    builtin = builtin_recipes()
    for item in what:
        if os.path.isfile(item):
            data, source, default_name = load_lab_document(item)
            if default_name is not None and isinstance(data, dict):
                data = {"name": default_name, **data}
            out.update(used_images(parse_lab(data, source=source)))
        elif item in builtin:
            out[item] = (builtin[item], ("vm",))
        else:
            raise NotFoundError(f"{item!r} is neither a lab file nor a built-in image",
                                hint=f"built-in images: {', '.join(sorted(builtin))}")
    return out


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
                        help=f"where the lab lives (default: {DEFAULT_RULE})")
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
    p = sub.add_parser("status", parents=[common],
                       help="endpoints as the engines see them (and the host each runs on), the "
                            "lab MTU and why")
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
    p = sub.add_parser("report", parents=[common],
                       help="write a self-contained report of the lab (HTML, Markdown, JSON)",
                       description="One document of the lab as it is now: lab file and plan, "
                                   "environment, topology, endpoints, connectivity and latency "
                                   "(a fresh probe run), DNS, expectations, doctor findings, "
                                   "traffic, what apply did. The format follows the file's "
                                   "suffix; a Markdown report's pictures go to FILE_files/ "
                                   "beside it. Prints the paths written.")
    p.add_argument("-o", "--output", action="append", required=True, metavar="FILE",
                   help="FILE.html, FILE.md or FILE.json (repeat for several formats of one "
                        "report)")
    p.add_argument("--no-probe", action="store_true",
                   help="send nothing into the lab: no probe run, no doctor")
    p.add_argument("--monitor", type=float, default=0.0, metavar="SECONDS",
                   help="also record the lab's traffic for SECONDS")
    p.set_defaults(func=cmd_report)
    _add_watch_commands(sub, common)

    p = sub.add_parser(
        "policy", parents=[common],
        help="the lab's policy with hit counters; with FROM TO: would FROM reach TO? (exit 0 "
             "allowed, 1 denied)",
        description="Without FROM TO: the rules of the lab's policy as a table, with the "
                    "packets each decided since the last change. With FROM TO [CHECK]: the "
                    "decision for that flow and the rule that makes it (from the lab file; "
                    "nothing is sent).")
    p.add_argument("source", nargs="?", metavar="FROM", help="source endpoint")
    p.add_argument("target", nargs="?", metavar="TO", help="target endpoint or gateway")
    p.add_argument("check", nargs="?", metavar="PROTO/PORT", default="icmp",
                   help="tcp/PORT, udp/PORT, http[/PORT], icmp or dns (default icmp)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_policy)
    p = sub.add_parser("links", parents=[common],
                       help="the lab's link impairments: what, where applied, loss counters")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_links)

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

    p = sub.add_parser(
        "images", help="build, list and prune the images labs use",
        description="build: with no argument the small test VM; with lab files, the images "
                    "their images: section defines and the built-in ones (base, docker, "
                    "observer) their endpoints name, from Debian packages (cached: an "
                    "unchanged recipe with unchanged package versions is not rebuilt); "
                    "with built-in names, those. list: the cache. prune: remove superseded "
                    "builds and leftovers (--all: everything).")
    p.add_argument("action", choices=["build", "list", "prune"])
    p.add_argument("what", nargs="*", metavar="LAB|IMAGE",
                   help="lab files or built-in image names (build)")
    p.add_argument("--refresh", action="store_true",
                   help="refresh the package lists now (default: when older than a day)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    p.add_argument("--all", action="store_true", help="with prune: remove every image")
    p.add_argument("--json", action="store_true", help="with list: machine-readable output")
    p.add_argument("--docker", action="append", metavar="URL",
                   help="with prune: also remove hybridnb's agent container and images from "
                        "the Docker engine at URL (a remote host's; repeatable)")
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


def _drop_half_built(unraisable: Any) -> None:
    """``sys.unraisablehook`` after Ctrl-C.  The interrupt can land inside a constructor —
    pyroute2 makes an asyncio loop for each netlink socket — and the half-built object's
    ``__del__`` then fails with AttributeError when it is collected, printing a traceback
    after our one line.  Only that is dropped; anything else is printed as before."""
    finalizer = getattr(unraisable.object, "__name__", "") == "__del__"
    if not (finalizer and unraisable.exc_type is AttributeError):
        sys.__unraisablehook__(unraisable)


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
        sys.unraisablehook = _drop_half_built
        _say("hybridnb: interrupted; the next command finishes the record of what was in "
             "flight")
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
