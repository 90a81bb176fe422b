"""``%hybrid monitor|capture|doctor|logs|graph --live`` on the dry-run backend (issue 14,
phase 2): refused with the backend's reason and hint where they would need engines, logs from
hybridnb's journal, durations parsed, and the interactive topology drawing states without
traffic rates (and saying why), its actions answering or refusing on the dry-run driver."""

from __future__ import annotations

import time

import pytest

from tests.notebook.conftest import run as run_cell


def _usage_error(shell, line):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as err:
        run_cell(shell, line)
    return str(err.value)


@pytest.mark.extra("notebook")
def test_magics_watch_a_lab_or_say_why_not(shell):
    run_cell(shell, "%hybrid create --name wm --subnet 10.0.8.0/24")
    run_cell(shell, "%hybrid container web")
    run_cell(shell, "%hybrid host h1")
    run_cell(shell, "%hybrid apply -q")
    for line in ("%hybrid monitor 2s", "%hybrid monitor 2s --wait", "%hybrid capture web",
                 "%hybrid capture h1 --during-test", "%hybrid doctor", "%hybrid doctor --fix"):
        msg = _usage_error(shell, line)
        assert "the dry-run backend cannot" in msg and "hint:" in msg, line
    assert "cannot read the duration 'soon'" in _usage_error(shell, "%hybrid monitor soon")
    assert "--wait needs a DURATION" in _usage_error(shell, "%hybrid monitor 0 --wait")
    assert "no doctor check named 'x'" in _usage_error(shell, "%hybrid doctor --only x")
    logs = run_cell(shell, "%hybrid logs web -n 5 -o hnb_logs")
    assert shell.user_ns["hnb_logs"] is logs
    assert [ln.text.split(" (")[0] for ln in logs.lines] == ["create container web"]
    assert "<table" in logs._repr_html_()
    helptext = repr(run_cell(shell, "%hybrid help"))
    for usage in ("monitor [DURATION]", "capture ", "doctor [--fix]", "logs "):
        assert usage in helptext, usage


@pytest.mark.extra("notebook")
def test_live_graph_on_dry_run_draws_states_without_rates(shell):
    from hybridnb.notebook.topology_widget import TopologyWidget
    run_cell(shell, "%hybrid create --name wg --subnet 10.0.9.0/24")
    run_cell(shell, "%hybrid container web")
    run_cell(shell, "%hybrid apply -q")
    live = run_cell(shell, "%hybrid graph --live --interval 0.05")
    try:
        assert isinstance(live, TopologyWidget)
        deadline = time.monotonic() + 10
        while live.refreshes < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.image.value[:4] == b"\x89PNG" and live.sample is None
        assert "no traffic rates: the dry-run backend cannot show traffic rates" in \
            live.caption.value
        assert live.picker.options == ("web",) and "10.0.9.100" in live.details.value
        live.buttons["stop"].click()                      # the dry-run driver cannot
        assert "cannot be stopped here" in live.result.value
        live.buttons["logs"].click()
        assert live.last.sources == ("hybridnb",)
        live.buttons["capture"].click()
        assert "capture failed: the dry-run backend cannot capture packets" in \
            live.result.value
    finally:
        live.stop()
    assert not live.running and live.button.disabled and "stopped; every" in \
        live.caption.value


@pytest.mark.real
@pytest.mark.extra("notebook")
def test_magics_watch_a_real_lab(sandbox, shell):  # noqa: F811
    """The same subcommands on the sandbox: doctor all ok, a capture during the lab's test,
    the monitor's report while pings fly, logs, the live graph with traffic rates and the
    live monitor's display."""
    import threading

    from hybridnb.notebook import current_lab
    from tests.realengines import SANDBOX_NAME

    run_cell(shell, '%config HybridMagics.backend = "sandbox"')
    run_cell(shell, f'%config HybridMagics.sandbox = "{SANDBOX_NAME}"')
    run_cell(shell, "%hybrid create --name wmreal --subnet 10.0.64.0/24 --bridge hnbwm0")
    run_cell(shell, "%hybrid host h1")
    run_cell(shell, "%hybrid host h2")
    try:
        assert run_cell(shell, "%hybrid apply -q").ok
        lab = current_lab()
        report = run_cell(shell, "%hybrid doctor")
        assert report.exit_code == 0, report
        pcap = run_cell(shell, "%hybrid capture h1 --during-test -f icmp")
        h1 = next(e.address for e in lab.status().endpoints if e.name == "h1")
        assert pcap.captured > 0 and pcap.packets().protocols() == {"ICMP"}
        assert any(p.src == h1 and p.info.startswith("echo request") for p in pcap.packets())
        magics = shell.magics_manager.registry["HybridMagics"]
        assert magics.last_matrix is not None and magics.last_matrix.ok
        pinger = threading.Timer(0.3, lambda: lab.test(("icmp",), count=3))
        pinger.start()
        traffic = run_cell(shell, "%hybrid monitor 1.5s --interval 0.5 --wait")
        pinger.join()
        assert len(traffic.samples) == 3 and {"h1", "h2"} <= set(traffic.top())
        logs = run_cell(shell, "%hybrid logs h1 --since 10m")
        assert set(logs.sources) == {"hybridnb", "dns"} and not logs.errors
        assert any(ln.text.startswith("create host h1") for ln in logs.lines)
        live = run_cell(shell, "%hybrid graph --live --interval 0.2")
        try:
            deadline = time.monotonic() + 10
            while live.refreshes < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert live.sample is not None and not live.no_rates, live.errors
            assert "across the bridge" in live.caption.value
            assert live.endpoint_details("h2")["port"] is not None
        finally:
            live.stop()
        monitor = run_cell(shell, "%hybrid monitor 1s --interval 0.25")   # shown: it runs
        assert len(monitor.wait(10).samples) == 4 and not monitor.running
    finally:
        run_cell(shell, "%hybrid destroy -q")
