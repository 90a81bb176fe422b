"""hybridnb.apply: how the next apply or destroy waits for calls a dead process left in flight."""

from __future__ import annotations

import time

from hybridnb.apply import observe_settled
from hybridnb.drivers.base import Backend
from hybridnb.target import Target


class Clock:
    """A fake wall clock: ``sleep`` advances it, and the engine's view follows it."""

    def __init__(self) -> None:
        self.t = time.time()
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds


class LateEngine:
    """A driver whose engine shows ``name`` only from ``appears_at`` on (and drops ``gone``
    at ``gone_at``) — a request that was still in flight when its caller died."""

    kind = "network"
    concurrent = True
    settle = 2.0

    def __init__(self, clock: Clock, appears_at: float | None = None,
                 gone_at: float | None = None) -> None:
        self.clock, self.appears_at, self.gone_at = clock, appears_at, gone_at

    def observe(self, lab: str) -> dict[str, str]:
        out = {}
        if self.appears_at is not None and self.clock.t >= self.appears_at:
            out["hnb-lab"] = "fp"
        if self.gone_at is not None and self.clock.t < self.gone_at:
            out["old"] = "fp"
        return out

    def create(self, lab, resource) -> None: ...

    def delete(self, lab, name) -> None: ...


def _settled(clock: Clock, driver, journal):
    backend = Backend("fake", Target("fake"), {"network": driver})
    return observe_settled("lab", backend, journal, clock=lambda: clock.t, sleep=clock.sleep)


def test_a_creation_in_flight_is_waited_for_until_it_lands():
    clock = Clock()
    driver = LateEngine(clock, appears_at=clock.t + 0.35)
    journal = {"network/hnb-lab": {"status": "creating", "fingerprint": "fp", "at": clock.t}}
    assert _settled(clock, driver, journal) == {"network": {"hnb-lab": "fp"}}
    assert 0.35 <= clock.slept < 0.5


def test_a_deletion_in_flight_is_waited_for_until_it_is_gone():
    clock = Clock()
    driver = LateEngine(clock, gone_at=clock.t + 0.2)
    journal = {"network/old": {"status": "deleting", "fingerprint": None, "at": clock.t}}
    assert _settled(clock, driver, journal) == {"network": {}}
    assert 0.2 <= clock.slept < 0.35


def test_a_request_that_never_left_costs_at_most_the_settle_time_from_the_intent():
    clock = Clock()
    driver = LateEngine(clock)                              # never appears
    journal = {"network/hnb-lab": {"status": "creating", "fingerprint": "fp",
                                   "at": clock.t - 1.5}}   # written 1.5 s ago
    assert _settled(clock, driver, journal) == {"network": {}}
    assert 0.4 <= clock.slept <= 0.6


def test_nothing_is_waited_for_without_an_interrupted_call():
    clock = Clock()
    driver = LateEngine(clock)
    for rec in ({"status": "created", "fingerprint": "fp", "at": clock.t},
                {"status": "failed", "fingerprint": "fp", "at": clock.t},        # returned
                {"status": "creating", "fingerprint": "fp", "at": clock.t - 60},  # long ago
                {"status": "creating", "fingerprint": "fp"}):                    # old state
        assert _settled(clock, driver, {"network/hnb-lab": rec}) == {"network": {}}
    assert clock.slept == 0.0
