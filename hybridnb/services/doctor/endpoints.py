"""Each endpoint as its engine sees it: running, stopped, missing, or not what the plan says.

The drivers' ``observe`` already says it (a typed :class:`~hybridnb.core.resource.Observation`
per resource): one that does not run is stopped, one whose fingerprint equals the plan's is
"up", another fingerprint means the engine holds an older version (apply would replace it),
none means it is missing.  A stopped container or VM is started by the fix (its driver's
:class:`~hybridnb.drivers.base.Startable` capability); a missing endpoint is made again (the
driver's ``create``, as apply would).
"""

from __future__ import annotations

from typing import Any

from hybridnb.core.resource import Observation
from hybridnb.drivers.base import Startable
from hybridnb.services.doctor.base import FAIL, OK, WARN, Check, DoctorContext, Finding


def _observed(ctx: DoctorContext) -> dict[str, dict[str, Observation]]:
    def read() -> dict[str, dict[str, Observation]]:
        kinds = sorted({r.kind for r in ctx.endpoints()})
        return {k: dict(ctx.drivers[k].observe(ctx.lab)) for k in kinds if k in ctx.drivers}
    return ctx.cached("observed", read)


def _state(seen: Observation | None, want: str) -> str:
    if seen is None:
        return "missing"
    if not seen.running:
        return "stopped"
    return "up" if seen.fingerprint == want else "differs"


class EndpointState(Check):
    id = "endpoint-state"
    title = "every endpoint is running as planned"
    group = "endpoints"
    why = "a stopped or missing endpoint answers nothing: every probe to it fails"

    def _states(self, ctx: DoctorContext) -> dict[str, tuple[str, Any]]:
        observed = _observed(ctx)
        return {r.name: (_state(observed.get(r.kind, {}).get(r.name), r.fingerprint), r)
                for r in ctx.endpoints() if r.kind in ctx.drivers}

    def run(self, ctx: DoctorContext) -> Finding:
        states = self._states(ctx)
        applied = bool(ctx.state.get("resources")) or any(_observed(ctx).values())
        if not applied:
            return self.finding(WARN, f"lab {ctx.lab} is not applied",
                                fix_command=f"hybridnb apply {ctx.lab}")
        bad = {n: s for n, (s, _) in states.items() if s != "up"}
        data = {n: s for n, (s, _) in states.items()}
        if not bad:
            return self.finding(OK, f"all {len(states)} endpoints are up", data=data)
        cmds = []
        for name, st in sorted(bad.items()):
            res = states[name][1]
            cmds.append(self._command(ctx, res, st))
        text = ", ".join(f"{states[n][1].kind} {n} is {s}" for n, s in sorted(bad.items()))
        fixable = any(s in ("stopped", "missing") for s in bad.values())
        status = FAIL if any(s in ("stopped", "missing") for s in bad.values()) else WARN
        return self.finding(status, text, fix_command=" && ".join(dict.fromkeys(cmds)),
                            fixable=fixable, data=data)

    @staticmethod
    def _command(ctx: DoctorContext, res: Any, state: str) -> str:
        if state != "stopped":
            return f"hybridnb apply {ctx.lab}"
        obj = res.spec.get("domain_name") or res.spec.get("container") or res.name
        if res.kind == "vm" and ctx.target.libvirt_uri:
            return f"virsh -c '{ctx.target.libvirt_uri}' start {obj}"
        if res.kind == "container" and ctx.target.docker_url:
            return f"docker -H {ctx.target.docker_url} start {obj}"
        return f"hybridnb apply {ctx.lab}"

    def fix(self, ctx: DoctorContext) -> None:
        for name, (state, res) in sorted(self._states(ctx).items()):
            driver = ctx.drivers[res.kind]
            if state == "stopped" and isinstance(driver, Startable):
                driver.start(ctx.lab, name)
            elif state == "missing":
                driver.create(ctx.lab, res)


CHECKS: list[Any] = [EndpointState()]
