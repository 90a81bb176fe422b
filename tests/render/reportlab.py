"""A lab to report on without engines: the dry-run backend, plus a connectivity matrix and an
expectation report built from the real result classes (as a probe run would return them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LAB = {
    "name": "rpt",
    "network": {"subnet": "10.0.7.0/24", "bridge": "hnbrpt0"},
    "endpoints": {
        "web": {"kind": "container", "image": "busybox", "services": ["http/80"]},
        "db": {"kind": "vm", "template": "test", "memory": 128},
        "probe": {"kind": "host"},
    },
    "expect": ["web -> db icmp ok", "probe -> web tcp/80 ok", "probe -> db tcp/5432 blocked"],
}


def sample_matrix(names: list[str]) -> Any:
    """A full mesh of icmp/tcp/dns results over ``names`` + gateway, one pair failing."""
    from hybridnb.services.probe import ConnectivityMatrix, ProbeResult

    targets = names + ["gateway"]
    results = []
    for check in ("icmp", "tcp", "dns"):
        for i, src in enumerate(names):
            for j, dst in enumerate(targets):
                if src == dst:
                    continue
                base = 0.00002 * (1 + i + 2 * j) * (40 if "db" in (src, dst) else 1)
                if check == "tcp" and (src, dst) == ("probe", "db"):
                    results.append(ProbeResult(check, src, dst, False, "refused", sent=3,
                                               port=5432, address="10.0.7.200"))
                    continue
                rtts = tuple(base * (1 + k / 10) for k in range(3))
                results.append(ProbeResult(check, src, dst, True, rtts=rtts, sent=3,
                                           received=3, port=80 if check == "tcp" else None,
                                           address="10.0.7.1", detail="HTTP 200"
                                           if check == "tcp" else ""))
    return ConnectivityMatrix.from_results(results, sources=names, targets=targets,
                                           duration=0.8125, timeout=1.0, count=3)


def dry_lab(state_dir: Path, applied: bool = True) -> Any:
    from hybridnb.lab import Lab

    lab = Lab.from_dict(LAB, backend="dry-run", state_dir=state_dir)
    if applied:
        lab.apply()
    return lab


def results_for(lab: Any) -> dict[str, Any]:
    """``matrix`` and ``validation`` keywords for :func:`collect_report`."""
    from hybridnb.core.expect import evaluate, parse_expectations

    matrix = sample_matrix(sorted(e.name for e in lab.spec.endpoints))
    exps = parse_expectations(lab.spec.expect, names=[e.name for e in lab.spec.endpoints])
    return {"matrix": matrix, "validation": evaluate(exps, matrix)}


def sample_doctor(lab: str = "rpt") -> Any:
    """A doctor report as ``diagnose`` returns it, from the doctor's own checks: one failure
    with a fix ``--fix`` applies, one warning, the rest ok."""
    from hybridnb.services.doctor import FAIL, OK, WARN, DoctorReport, all_checks

    findings = []
    for check in all_checks():
        if check.id == "forward-drop":
            findings.append(check.finding(
                FAIL, "FORWARD policy DROP drops frames between ports of hnbrpt0",
                fix_command="iptables -I DOCKER-USER -i hnbrpt0 -o hnbrpt0 -j ACCEPT",
                fixable=True, data={"verdict": "DROP", "by": "policy"}))
        elif check.id == "mtu":
            findings.append(check.finding(WARN, "port vethrpt1 has MTU 1450, the bridge 1500",
                                          fix_command="ip link set vethrpt1 mtu 1500"))
        else:
            findings.append(check.finding(OK, f"{check.title}: fine"))
    return DoctorReport(lab, "sandbox rp", tuple(findings), seconds=0.25)


def sample_traffic(names: list[str], lab: str = "rpt", bridge: str = "hnbrpt0") -> Any:
    """A monitor recording as ``TrafficMonitor.record`` returns it: four one-second samples,
    ``names[0]`` talking to ``names[1]``, the gateway answering DNS."""
    from hybridnb.services.monitor import PortRates, TrafficReport, TrafficSample

    samples = []
    for i in range(4):
        busy = 125_000.0 * (i + 1)
        ports = tuple(PortRates(n, "host", f"veth{n}", tx_bytes_s=busy if k == 0 else 0.0,
                                rx_bytes_s=busy if k == 1 else 40.0,
                                tx_packets_s=100.0 if k == 0 else 0.0,
                                rx_packets_s=100.0 if k == 1 else 1.0,
                                tx_bytes=int(busy if k == 0 else 0),
                                rx_bytes=int(busy if k == 1 else 40))
                      for k, n in enumerate(names))
        gateway = PortRates("gateway", "bridge", bridge, tx_bytes_s=80.0, rx_bytes_s=60.0,
                            tx_bytes=80, rx_bytes=60)
        samples.append(TrafficSample(lab, bridge, 1_767_225_600.0 + i, 1.0, ports, gateway,
                                     missing=(("db", "not running"),) if i == 0 else ()))
    return TrafficReport(lab, bridge, tuple(samples))


class ObservedLab:
    """A lab that also offers ``doctor()`` and ``monitor()`` (what ``Lab`` offers once the
    watching services are wired into it): ``doctor``/``traffic`` are the results they return
    (an exception is raised), and every call is counted in ``calls``."""

    def __init__(self, lab: Any, doctor: Any, traffic: Any) -> None:
        self._lab, self._doctor, self._traffic = lab, doctor, traffic
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lab, name)

    def _give(self, value: Any) -> Any:
        if isinstance(value, Exception):
            raise value
        return value

    def doctor(self, **kw: Any) -> Any:
        self.calls.append(("doctor", kw))
        return self._give(self._doctor)

    def monitor(self, **kw: Any) -> Any:
        self.calls.append(("monitor", kw))
        return self._give(self._traffic)
