"""``%hybrid`` through a real IPython InteractiveShell on the dry-run backend: every
subcommand, ``%%hybrid`` cells, ``-o``, ``$var`` expansion, and the errors users meet."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from hybridnb.apply import ApplyResult
from hybridnb.core.plan import Plan
from hybridnb.lab import LabStatus
from hybridnb.notebook.results import HelpText, LabSummary
from hybridnb.services.dns.results import DnsRecords
from tests.notebook.conftest import run

ROOT = Path(__file__).resolve().parents[2]


def usage_error(ip, source) -> str:
    with pytest.raises(UsageError) as info:
        run(ip, source)
    return str(info.value)


def build(ip, name="demo"):
    run(ip, f"%hybrid create --name {name} --subnet 10.0.5.0/24")
    run(ip, "%hybrid container web --image busybox --env A=1 --port 8080:80")
    run(ip, "%hybrid vm vm1 --memory 128")
    run(ip, "%hybrid host h1 --address 10.0.5.10")


def test_help_lists_every_subcommand(shell):
    text = repr(run(shell, "%hybrid help"))
    for sub in ("create", "container", "vm", "host", "remove", "status", "plan", "apply",
                "test", "validate", "dns", "graph", "destroy", "sandbox", "help"):
        assert f"  {sub}" in text
    assert isinstance(run(shell, "%hybrid"), HelpText)
    assert "<table" in run(shell, "%hybrid help")._repr_html_()


def test_build_plan_apply_status_destroy(shell, capsys):
    build(shell)
    summary = run(shell, "%hybrid status -o hnb_before")
    assert isinstance(summary, LabStatus) and not summary.up
    assert {e.state for e in summary.endpoints} == {"not applied"}
    plan = run(shell, "%hybrid plan")
    assert isinstance(plan, Plan) and plan.count("create") == 7
    result = run(shell, "%hybrid apply")
    assert isinstance(result, ApplyResult) and result.ok
    assert "[7/7]" in capsys.readouterr().out          # text progress outside a kernel
    status = run(shell, "%hybrid status")
    assert status.up and [e.address for e in status.endpoints] == \
        ["10.0.5.10", "10.0.5.200", "10.0.5.100"]
    assert "web.hybrid.local" in status._repr_html_()
    assert run(shell, "%hybrid plan").empty
    assert run(shell, "%hybrid apply -q").plan.empty        # converged: nothing to do
    gone = run(shell, "%hybrid destroy -q")
    assert gone.plan.count("delete") == 7
    assert {e.state for e in run(shell, "%hybrid status").endpoints} == {"not applied"}


def test_editing_is_idempotent_and_atomic(shell):
    build(shell)
    again = run(shell, "%hybrid container web --image busybox --env A=1 --port 8080:80")
    assert isinstance(again, LabSummary) and again.note == "container web unchanged"
    changed = run(shell, "%hybrid container web --image nginx:alpine")
    assert changed.note == "container web redefined"
    assert ("web", "container", "10.0.5.100", "nginx:alpine") in changed.rows
    # a bad redefinition leaves the old one in place
    msg = usage_error(shell, "%hybrid container web --address 10.0.5.10")
    assert "already used by endpoint" in msg
    lab = shell.magics_manager.registry["HybridMagics"].current_lab
    assert lab.spec.endpoint("web").image == "nginx:alpine"
    removed = run(shell, "%hybrid remove h1")
    assert [r[0] for r in removed.rows] == ["vm1", "web"]
    assert "image: nginx:alpine" in run(shell, "%hybrid yaml").data


def test_create_from_file_open_and_reopen(shell, tmp_path):
    labfile = tmp_path / "lab.yaml"
    labfile.write_text(textwrap.dedent("""\
        name: filelab
        network: {subnet: 10.0.9.0/24}
        endpoints:
          web: {kind: container}
          h1: {kind: host}
        """))
    summary = run(shell, f"%hybrid create {labfile} --apply -q")
    assert summary.ok and summary.plan.lab == "filelab"
    with pytest.raises(UsageError, match="cannot be combined"):
        run(shell, f"%hybrid create {labfile} --subnet 10.0.1.0/24")
    # a fresh extension instance reopens the applied lab by name from its state
    from hybridnb.notebook.magics import load_ipython_extension

    load_ipython_extension(shell)
    assert "no current lab" in usage_error(shell, "%hybrid status")
    run(shell, '%config HybridMagics.lab = "filelab"')
    assert run(shell, "%hybrid status").up
    opened = run(shell, "%hybrid open filelab")
    assert opened.lab == "filelab" and len(opened.rows) == 2
    assert "no lab file and no applied lab" in usage_error(shell, "%hybrid open nosuchlab")


def test_output_variable_and_dollar_expansion(shell):
    shell.user_ns["hnb_name"] = "exp"
    shell.user_ns["hnb_net"] = "10.0.6.0/24"
    run(shell, "%hybrid create --name $hnb_name --subnet $hnb_net -o hnb_created")
    assert shell.user_ns["hnb_created"].lab == "exp"
    assert shell.user_ns["hnb_created"].subnet == "10.0.6.0/24"
    shell.user_ns["hnb_ep"] = "db"
    run(shell, "%hybrid host $hnb_ep -o hnb_out")
    assert shell.user_ns["hnb_out"].rows[0][0] == "db"
    # a cell body: $name and ${name} are expanded, $$ is a dollar, unknown names stay
    cell = textwrap.dedent("""\
        %%hybrid -o hnb_cell
        name: ${hnb_name}2
        network: {subnet: $hnb_net}
        endpoints:
          $hnb_ep: {kind: container, env: {PRICE: "$$5", KEEP: "$unknown_var"}}
        """)
    summary = run(shell, cell)
    assert summary is shell.user_ns["hnb_cell"]
    assert summary.lab == "exp2" and summary.subnet == "10.0.6.0/24"
    lab = shell.magics_manager.registry["HybridMagics"].current_lab
    assert dict(lab.spec.endpoint("db").env) == {"KEEP": "$unknown_var", "PRICE": "$5"}


def test_cell_magic_applies_and_reports_problems(shell):
    applied = run(shell, "%%hybrid --apply -q\nname: cell\nendpoints:\n  h1: {kind: host}\n")
    assert applied.ok and applied.plan.count("create") == 4
    assert run(shell, "%hybrid status").up
    msg = usage_error(shell, "%%hybrid\nname: cell\nnetwork: {subnet: 10.0.1.0/33}\n"
                             "endpoints:\n  h1: {kind: hots}\n")
    assert "2 problems" in msg and "network.subnet" in msg and "did you mean 'host'" in msg
    assert "YAML syntax error" in usage_error(shell, "%%hybrid\nname: [unclosed\n")
    assert "unrecognized arguments" in usage_error(shell, "%%hybrid --bogus\nname: x\n")


def test_dns_records_and_query_log(shell):
    build(shell)
    records = run(shell, "%hybrid dns")
    assert isinstance(records, DnsRecords)
    assert records.lookup("web") == ["10.0.5.100"]
    assert records.lookup("gateway") == ["10.0.5.1"]
    assert records.lookup("10.5.0.10.in-addr.arpa.", "PTR") == ["h1.hybrid.local."]
    assert "PTR" in records._repr_html_()
    msg = usage_error(shell, "%hybrid dns query-log -n 5")
    assert "cannot read the DNS query log" in msg and "sends no packets" in msg


def test_test_and_validate_on_dry_run_say_why(shell):
    build(shell)
    run(shell, "%hybrid apply -q")
    msg = usage_error(shell, "%hybrid test --checks icmp,tcp --timeout 0.5")
    assert "dry-run backend sends no packets" in msg and "hint:" in msg
    assert "has no expect: lines" in usage_error(shell, "%hybrid validate")
    run(shell, "%%hybrid\nname: demo\nnetwork: {subnet: 10.0.5.0/24}\nendpoints:\n"
               "  web: {kind: container}\n  h1: {kind: host, address: 10.0.5.10}\n"
               "expect:\n  - h1 -> web icmp ok\n")
    msg = usage_error(shell, "%hybrid validate")
    assert "dry-run backend sends no packets" in msg or "not up" in msg


@pytest.mark.extra("notebook")
def test_graph_and_live_graph(shell):
    from hybridnb.render.topology import Topology
    from hybridnb.services.probe import ConnectivityMatrix, ProbeResult

    build(shell)
    run(shell, "%hybrid apply -q")
    topo = run(shell, "%hybrid graph")
    assert isinstance(topo, Topology)
    assert topo.counts() == {"container": 1, "vm": 1, "host": 1} and topo.failed == []
    assert topo._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    shell.user_ns["hnb_matrix"] = ConnectivityMatrix.from_results([
        ProbeResult("icmp", "h1", "web", True, rtts=(0.0001,), sent=1, received=1),
        ProbeResult("icmp", "web", "vm1", False, "timeout", sent=1)])
    marked = run(shell, "%hybrid graph --matrix hnb_matrix")
    assert marked.failed == [("vm1", "web")]
    assert marked.positions == topo.positions          # same layout cache: nothing moved
    assert "no variable named" in usage_error(shell, "%hybrid graph --matrix hnb_nothing")
    live = run(shell, "%hybrid graph --live --interval 0.05")   # displayed: it starts
    try:
        deadline = time.monotonic() + 10
        while live.refreshes < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.refreshes >= 2 and live.image.value[:4] == b"\x89PNG"
        assert live.updates == 1                   # nothing changed: the image was sent once
    finally:
        live.stop()
    assert not live.running and not live._thread.is_alive()


def test_sandbox_status_reads_only(shell):
    status = run(shell, "%hybrid sandbox status --sandbox hnb-absent-unit")
    assert status.name == "hnb-absent-unit" and not status.up
    assert run(shell, "%hybrid sandbox status --name hnb-absent-unit").name == \
        "hnb-absent-unit"                                   # the old spelling still works
    assert "invalid choice" in usage_error(shell, "%hybrid sandbox sideways")


@pytest.mark.parametrize("line, expected", [
    ("%hybrid create --subnet 10.0.1.0/33", "network.subnet"),
    ("%hybrid create --subnet 10.0.1.5/24", "did you mean 10.0.1.0/24"),
    ("%hybrid frobnicate", "unknown subcommand 'frobnicate'"),
    ("%hybrid stauts", "did you mean 'status'"),
    ("%hybrid create --bogus", "unrecognized arguments: --bogus"),
    ("%hybrid vm v --memory lots", "invalid int value: 'lots'"),
    ("%hybrid container", "the following arguments are required: name"),
    ("%hybrid container web --env NOEQUALS", "is not KEY=VALUE"),
    ("%hybrid create --name 'unbalanced", "cannot parse the line"),
    ("%hybrid create --name Bad_Name", "not a valid lab name"),
])
def test_usage_errors(shell, line, expected):
    assert expected in usage_error(shell, line)


def test_errors_on_the_current_lab(shell):
    build(shell)
    msg = usage_error(shell, "%hybrid remove nope")
    assert "has no endpoint 'nope'" in msg and "hint:" in msg
    assert "is too little" in usage_error(shell, "%hybrid vm tiny --memory 16")
    assert "is outside the lab subnet" in usage_error(shell, "%hybrid host h9 --address 10.9.9.9")
    assert "unknown template" in usage_error(shell, "%hybrid vm v2 --template bsae")


def test_errors_show_no_library_traceback(shell, capsys):
    shell.run_cell("%hybrid create --subnet nonsense")
    out = capsys.readouterr()
    text = out.out + out.err
    assert "UsageError" in text and "network.subnet" in text
    assert "Traceback" not in text and "hybridnb/" not in text


def test_help_flag_prints_usage_and_returns_nothing(shell, capsys):
    assert run(shell, "%hybrid container -h") is None
    assert "--image IMAGE" in capsys.readouterr().out


def _load_ext_in_fresh_python() -> tuple[float, str]:
    """Seconds ``%load_ext hybridnb`` takes with IPython already imported, and the heavy
    libraries (matplotlib, networkx, ipywidgets, engines) it pulled in."""
    code = textwrap.dedent("""\
        import sys, time
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        t = time.perf_counter()
        import hybridnb
        hybridnb.load_ipython_extension(shell)
        took = time.perf_counter() - t
        heavy = [m for m in ("matplotlib", "networkx", "ipywidgets", "docker", "libvirt",
                             "pyroute2", "dnslib", "yaml") if m in sys.modules]
        print(f"{took:.4f} {','.join(heavy)}")
        """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    took, _, heavy = out.stdout.strip().partition(" ")
    return float(took), heavy


def test_load_ext_is_light():
    """``%load_ext hybridnb`` pulls in no heavy library."""
    assert _load_ext_in_fresh_python()[1] == ""


@pytest.mark.real                       # wall-clock time: measured on the real machine only
def test_load_ext_is_fast():
    """``%load_ext hybridnb`` < 300 ms with IPython already imported."""
    took, heavy = _load_ext_in_fresh_python()
    print(f"load_ext: {took * 1000:.1f} ms")
    assert heavy == "" and took < 0.3


def test_each_kind_is_a_subcommand_whose_options_are_its_fields(shell):
    from hybridnb.core.kinds import kinds

    magics = shell.magics_manager.registry["HybridMagics"]
    for kind in kinds():
        parser = magics._parser(kind.name)
        options = {o for a in parser._actions for o in a.option_strings} - {"-h", "--help",
                                                                            "-o", "--output"}
        assert options == {f.option for f in kind.fields()}, kind.name
        assert kind.description in magics.descriptions[kind.name]
    build(shell)
    summary = run(shell, "%hybrid container api --service http/8080 --label tier=back "
                         "--command 'sleep 60' --env A=1 --env B=2")
    ep = magics.current_lab.spec.endpoint("api")
    assert [str(s) for s in ep.services] == ["http/8080"] and dict(ep.labels) == {"tier": "back"}
    assert dict(ep.env) == {"A": "1", "B": "2"} and ep.command == ("sleep", "60")
    assert summary.note == "container api added"


def test_help_is_generated_from_the_parsers(shell):
    usage = dict(run(shell, "%hybrid help").usage)
    container = next(u for u in usage if u.startswith("container "))
    assert container.startswith("container NAME [--image IMAGE] [--command COMMAND]")
    assert "[--port [HOST:]PORT[/PROTO]]" in container
    assert "[--service NAME/PORT[/udp]]" in container
    assert "vm NAME [--template {test,base,docker,observer}] [--memory MiB]" in "\n".join(usage)
    assert "sandbox up|down|status [--sandbox NAME] [--purge] [--quiet]" in usage
    assert "dns [records|query-log] [--limit N]" in usage
    assert usage["kinds [KIND ...]"].startswith("the endpoint kinds")


def test_kinds_reference(shell):
    from hybridnb.core.kinds.reference import KindReference

    ref = run(shell, "%hybrid kinds vm")
    assert isinstance(ref, KindReference) and {r[0] for r in ref.rows} == {"vm"}
    assert "unknown kind 'robot'" in usage_error(shell, "%hybrid kinds robot")


def test_sandbox_name_comes_from_the_environment(shell, monkeypatch):
    monkeypatch.setenv("HYBRIDNB_SANDBOX", "hnb-env-unit")
    magics = shell.magics_manager.registry["HybridMagics"]
    assert magics.sandbox_name() == "hnb-env-unit"
    assert run(shell, "%hybrid sandbox status").name == "hnb-env-unit"
    run(shell, "%hybrid create --name envlab")
    assert magics.current_lab.sandbox == "hnb-env-unit"
    run(shell, "%hybrid create --name envlab --sandbox hnb-line-unit")
    assert magics.current_lab.sandbox == "hnb-line-unit"
    run(shell, "%%hybrid --sandbox hnb-cell-unit\nname: cell\n")
    assert magics.current_lab.sandbox == "hnb-cell-unit"
    run(shell, '%config HybridMagics.sandbox = "hnb-conf-unit"')
    try:
        assert run(shell, "%hybrid sandbox status").name == "hnb-conf-unit"
        assert run(shell, "%hybrid sandbox status --sandbox hnb-flag-unit").name == \
            "hnb-flag-unit"
    finally:
        run(shell, '%config HybridMagics.sandbox = ""')


def test_test_verbose_shows_every_grid(shell, monkeypatch):
    """Issue 11 #13: ``%hybrid test`` on a big lab renders a summary; ``--verbose`` the grids."""
    from hybridnb.lab import Lab
    from tests.helpers.matrices import mesh

    monkeypatch.setattr(Lab, "test", lambda self, checks=None, **kw: mesh())
    build(shell)
    short = run(shell, "%hybrid test")
    assert not short.verbose and "from \\ to" not in repr(short)
    full = run(shell, "%hybrid test --verbose")
    assert full.verbose and repr(full).count("from \\ to") == 2
    assert full._repr_html_().count('<table class="hnb">') == 2
