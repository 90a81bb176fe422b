"""``status`` reads the lab bridge's MTU from the kernel and flags it when it is not the lab's
(issue 17: the MTU chosen is shown in status; drift is worth saying).  One namespace host on
the session's sandbox; the bridge's MTU is changed by hand inside the sandbox namespace."""

from __future__ import annotations

import pytest

from hybridnb.drivers import nsutil
from hybridnb.lab import Lab
from tests.realengines import SANDBOX_NAME

pytestmark = pytest.mark.real


def test_status_shows_the_bridge_mtu_it_observes_and_flags_drift(sandbox, state_dir):
    lab = Lab("mhviews", subnet="10.0.61.0/24", backend="sandbox", sandbox=SANDBOX_NAME,
              state_dir=state_dir)
    lab._edit(lambda doc: doc["network"].update({"dns": False, "bridge": "hnbmhv0"}))
    lab.add_host("h1")
    try:
        assert lab.apply().ok
        st = lab.status()
        assert st.up and st.mtu == 1500 and st.bridge_mtu == 1500
        assert "mtu 1500 (network.mtu)" in st.headline() and "drift" not in st.to_text()
        with nsutil.iproute(sandbox.target().netns) as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="hnbmhv0")[0], mtu=1400)
        st = lab.status()
        assert st.bridge_mtu == 1400 and st.to_dict()["bridge_mtu"] == 1400
        assert "drift: bridge hnbmhv0 has MTU 1400, not the lab's 1500" in st.to_text()
        assert st.up                      # flagged, not a pending change: the bridge is ours
    finally:
        lab.destroy()
