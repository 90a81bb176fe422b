"""Gathering a report: ask the lab once for each result, let every section take what it needs.

:func:`collect_report` takes anything shaped like :class:`hybridnb.Lab` — it calls only its
public API (``name``, ``spec``, ``source``, ``to_yaml()``, ``resources()``, ``status()``,
``plan()``, ``test()``, ``validate()``, ``dns()``, ``dns_query_log()``, ``backend``, ``store``,
and — where the lab offers them — ``doctor()`` and ``monitor()``) and never imports
:mod:`hybridnb.lab` — and returns a plain :class:`~hybridnb.render.report.model.ReportData`.

A :class:`Context` stands between the sections and the lab: each lab call is made at most
once (the topology and the endpoint table share one ``status()``), and a call that raises a
:class:`~hybridnb.errors.HybridError` becomes a note on the sections that needed it (the
dry-run backend sends no packets; a lab that is not up has nothing to validate) instead of
failing the report.  Results the caller already has — the matrix of a test just run, an
apply's result, a doctor's report, a monitor's recording — are handed in and not asked for
again.  A feature's section asks for its result with :meth:`Context.offer`, which also
copes with a lab that has no such method (the section is then left out).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Callable, Iterable

from hybridnb.errors import HybridError
from hybridnb.render.report.model import ReportData, SectionData

_MISSING = object()


class Context:
    """The lab's answers for one report, each asked once.

    ``probe=False`` leaves the network alone (no ``test()``/``validate()``/``doctor()`` run;
    only results handed in are shown).  ``monitor``: seconds of traffic to record with the
    lab's ``monitor()`` (0: none, unless a recording is handed in as ``traffic``).
    """

    def __init__(self, lab: Any, *, probe: bool = True, matrix: Any = None,
                 validation: Any = None, apply_result: Any = None, doctor: Any = None,
                 traffic: Any = None, monitor: float = 0.0,
                 dns_log_limit: int = 1000) -> None:
        self.lab = lab
        self.probe = probe
        self.monitor = monitor
        self.dns_log_limit = dns_log_limit
        self._cache: dict[str, Any] = {}
        #: why a result is missing, by name ("matrix": "the dry-run backend sends no packets")
        self.missing: dict[str, str] = {}
        if matrix is not None:
            self._cache["matrix"] = matrix
        if validation is not None:
            self._cache["validation"] = validation
        if apply_result is not None:
            self._cache["apply"] = {**apply_result.to_record(), "at": None}
        if doctor is not None:
            self._cache["doctor"] = doctor
        if traffic is not None:
            self._cache["monitor"] = traffic

    def ask(self, name: str, call: Callable[[], Any]) -> Any:
        """``call()``'s value, cached under ``name``; None (and a reason) if it raised."""
        value = self._cache.get(name, _MISSING)
        if value is _MISSING:
            try:
                value = call()
            except HybridError as exc:
                value = None
                self.missing[name] = exc.message + (f" ({exc.hint})" if exc.hint else "")
            self._cache[name] = value
        return value

    def why(self, name: str, default: str = "") -> str:
        return self.missing.get(name, default)

    def offers(self, method: str) -> bool:
        """Whether the lab has ``method`` (a feature this hybridnb may not have), or its
        result was handed in."""
        return method in self._cache or callable(getattr(self.lab, method, None))

    def offer(self, method: str, *args: Any, **kw: Any) -> Any:
        """The lab's ``method(*args, **kw)``, asked once (cached under ``method``): None, and a
        reason in :meth:`why`, when it raised a HybridError; None without a reason when the
        lab has no such method."""
        if not self.offers(method):
            return None
        return self.ask(method, lambda: getattr(self.lab, method)(*args, **kw))

    # -- the lab's results ---------------------------------------------------------------

    @property
    def status(self) -> Any:
        return self.ask("status", self.lab.status)

    @property
    def plan(self) -> Any:
        return self.ask("plan", self.lab.plan)

    @property
    def resources(self) -> list[Any]:
        return self.ask("resources", self.lab.resources) or []

    @property
    def matrix(self) -> Any:
        if "matrix" not in self._cache:
            status = self.status
            if not self.probe:
                self.missing["matrix"] = "no probe run was asked for this report"
                self._cache["matrix"] = None
            elif status is None or not any(e.state == "up" for e in status.endpoints):
                self.missing["matrix"] = "no endpoint is up: nothing to probe"
                self._cache["matrix"] = None
        return self.ask("matrix", self.lab.test)

    @property
    def validation(self) -> Any:
        if "validation" not in self._cache:
            if not self.lab.spec.expect:
                self.missing["validation"] = "the lab file has no expect: lines"
                self._cache["validation"] = None
            elif not self.probe:
                self.missing["validation"] = "no probe run was asked for this report"
                self._cache["validation"] = None
        return self.ask("validation", self.lab.validate)

    @property
    def dns(self) -> Any:
        return self.ask("dns", self.lab.dns)

    @property
    def dns_log(self) -> Any:
        return self.ask("dns_log", lambda: self.lab.dns_query_log(self.dns_log_limit))

    @property
    def doctor(self) -> Any:
        """What the lab's doctor finds (not run when the report may not probe: its checks
        send ARP and DNS queries in the lab)."""
        if "doctor" not in self._cache and self.offers("doctor") and not self.probe:
            self.missing["doctor"] = "no probe run was asked for this report"
            self._cache["doctor"] = None
        return self.offer("doctor")

    @property
    def traffic(self) -> Any:
        """The lab's traffic over ``monitor`` seconds (or the recording handed in)."""
        if "monitor" not in self._cache and self.offers("monitor") and self.monitor <= 0:
            self.missing["monitor"] = ("no traffic was recorded for this report (hybridnb "
                                       "report --monitor SECONDS records some)")
            self._cache["monitor"] = None
        return self.offer("monitor", duration=self.monitor)

    @property
    def last_apply(self) -> dict[str, Any] | None:
        """The last apply's timeline: the one handed in, else the one the state keeps."""
        if "apply" not in self._cache:
            record = self.lab.store.read(self.lab.name).get("last_apply")
            if not record:
                self.missing["apply"] = "no apply of this lab is on record"
            self._cache["apply"] = record or None
        return self._cache["apply"]


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def collect_report(lab: Any, *, probe: bool = True, matrix: Any = None,
                   validation: Any = None, apply_result: Any = None, doctor: Any = None,
                   traffic: Any = None, monitor: float = 0.0,
                   sections: Iterable[str] | None = None, generated: str | None = None,
                   dns_log_limit: int = 1000) -> ReportData:
    """Every registered section (or those named in ``sections``) for ``lab``, as it is now.

    ``matrix``/``validation``/``apply_result``/``doctor``/``traffic``: results already at
    hand (not asked again); ``probe``: whether the report may run a probe round (and the
    doctor) itself; ``monitor``: seconds of traffic to record; ``generated``: the timestamp
    to print (default: now, UTC).
    """
    from hybridnb.render.report.sections import registered
    from hybridnb.version import version

    ctx = Context(lab, probe=probe, matrix=matrix, validation=validation,
                  apply_result=apply_result, doctor=doctor, traffic=traffic, monitor=monitor,
                  dns_log_limit=dns_log_limit)
    wanted = set(sections) if sections is not None else None
    out: list[SectionData] = []
    for section in registered():
        if wanted is not None and section.key not in wanted:
            continue
        got = section.collect(ctx)
        if got is not None:
            out.append(got)
    return ReportData(lab.name, generated or now_utc(), version(), tuple(out))


__all__ = ["Context", "collect_report", "now_utc"]
