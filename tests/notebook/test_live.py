"""The live topology widget: refresh in place, only re-send changed pictures, stop cleanly."""

from __future__ import annotations

import time

import pytest

from hybridnb.lab import Lab
from hybridnb.notebook.live import LiveTopology

pytestmark = pytest.mark.extra("notebook")


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture
def lab(tmp_path):
    return Lab("live", backend="dry-run", state_dir=tmp_path / "state").add_host("h1")


def test_refresh_updates_one_image_in_place(lab):
    live = LiveTopology(lab, interval=0.05, autostart=False)
    assert live.refresh() and live.image.value[:4] == b"\x89PNG"
    first = live.image.value
    assert not live.refresh() and live.updates == 1             # same picture: not re-sent
    lab.apply()
    assert live.refresh() and live.image.value != first and live.updates == 2
    assert "1 endpoints, up" in live.caption.value


def test_background_loop_follows_changes_and_stops(lab):
    live = LiveTopology(lab, interval=0.02, autostart=False).start()
    try:
        wait_for(lambda: live.refreshes >= 2)
        lab.apply()
        wait_for(lambda: live.last_status is not None and live.last_status.up)
        wait_for(lambda: live.updates >= 2)
        pos = dict(live.layout.slots)
        lab.add_container("web")
        wait_for(lambda: "web" in live.layout.slots)
        assert all(live.layout.slots[k] == v for k, v in pos.items())   # nobody moved
    finally:
        live.stop()
    assert not live._thread.is_alive() and not live.running
    count = live.refreshes
    time.sleep(0.1)
    assert live.refreshes == count                                   # really stopped
    assert live.button.disabled


def test_stop_button_and_display_autostart(lab):
    live = LiveTopology(lab, interval=0.02)
    bundle = live._repr_mimebundle_()                                 # displaying starts it
    assert "application/vnd.jupyter.widget-view+json" in bundle
    wait_for(lambda: live.refreshes >= 1)
    live.button.click()
    live._thread.join(5)
    assert not live._thread.is_alive()


def test_refresh_errors_are_shown_not_raised(tmp_path):
    lab = Lab("gone", backend="sandbox", sandbox="hnb-absent-unit", state_dir=tmp_path)
    live = LiveTopology(lab, interval=0.02, autostart=False)
    assert live.refresh() is False
    assert "refresh failed" in live.caption.value and "not running" in live.errors[0]
