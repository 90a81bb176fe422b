"""The impairment driver's netlink messages and records, without root.

The tc calls the driver makes are replayed into pyroute2's ``IPBatch`` — which encodes the
netlink messages the kernel would get without sending them — and decoded back: the host-side
netem path (which our own machines' kernels cannot run) is checked down to the bytes.
"""

from __future__ import annotations

import struct

import pytest
from pyroute2 import IPBatch
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from hybridnb.core.impairments import (Capabilities, Impairment, Placement, link_resource,
                                       placement)
from hybridnb.drivers.impairments import (CHILD, CHILD_PARENT, INGRESS, ROOT, Record, TcCall,
                                          capabilities_of, egress_calls, egress_shape,
                                          guest_netem_argv, ifb_name, ingress_calls,
                                          tbf_burst)
from hybridnb.drivers.nftables import Feature

RTM_NEWQDISC, RTM_NEWTFILTER = 36, 44
NLM_F_CREATE, NLM_F_REPLACE, NLM_F_EXCL = 0x400, 0x100, 0x200


def psched_tick_per_us() -> float:
    t2us, us2t = (int(x, 16) for x in open("/proc/net/psched").read().split()[:2])
    return t2us / us2t


def encode(calls: list[TcCall]) -> list[tcmsg]:
    """The netlink messages of ``calls``, as the kernel would receive them, decoded."""
    out = []
    for call in calls:
        batch = IPBatch()
        call.run(batch)
        data = bytes(batch.batch)
        length = struct.unpack("I", data[:4])[0]
        assert length == len(data)
        msg = tcmsg(data)
        msg.decode()
        out.append(msg)
    return out


def test_host_netem_with_rate_messages():
    place = Placement("db", port_netem=(50_000, 5_000), rate=10_000_000, loss=2000)
    netem, tbf = encode(egress_calls(place, 7))
    tick = psched_tick_per_us()
    assert netem["header"]["type"] == RTM_NEWQDISC
    assert netem["header"]["flags"] & (NLM_F_CREATE | NLM_F_REPLACE) == \
        NLM_F_CREATE | NLM_F_REPLACE
    assert (netem["index"], netem["handle"], netem["parent"]) == (7, ROOT, 0xFFFFFFFF)
    assert netem.get_attr("TCA_KIND") == "netem"
    opts = netem.get_attr("TCA_OPTIONS")
    assert opts["delay"] == int(50_000 * tick) and opts["jitter"] == int(5_000 * tick)
    assert opts["loss"] == 0 and opts["limit"] == 10000        # loss goes to nftables
    assert (tbf["handle"], tbf["parent"]) == (CHILD, CHILD_PARENT)
    assert tbf.get_attr("TCA_KIND") == "tbf"
    parms = tbf.get_attr("TCA_OPTIONS").get_attr("TCA_TBF_PARMS")
    assert parms["rate"] == 10_000_000 // 8
    assert egress_shape(place) == ("netem", "tbf")


def test_rate_only_and_nothing():
    (tbf,) = encode(egress_calls(Placement("h", rate=1_000_000), 3))
    assert (tbf.get_attr("TCA_KIND"), tbf["handle"], tbf["parent"]) == \
        ("tbf", ROOT, 0xFFFFFFFF)
    assert egress_calls(Placement("h", loss=5), 3) == [] and egress_shape(Placement("h")) == ()
    (netem,) = encode(egress_calls(Placement("h", port_netem=(1000, 0)), 3))
    assert netem.get_attr("TCA_OPTIONS")["jitter"] == 0


def test_ingress_redirect_messages():
    tbf, ingress, u32 = encode(ingress_calls(10_000_000, 4, 9))
    assert tbf["index"] == 9 and tbf.get_attr("TCA_KIND") == "tbf"
    assert (ingress["index"], ingress["handle"], ingress.get_attr("TCA_KIND")) == \
        (4, INGRESS, "ingress")
    assert u32["header"]["type"] == RTM_NEWTFILTER and u32["index"] == 4
    assert u32["parent"] == INGRESS and u32.get_attr("TCA_KIND") == "u32"
    act = u32.get_attr("TCA_OPTIONS").get_attr("TCA_U32_ACT")
    mirred = act.get_attr("TCA_ACT_PRIO_1")
    assert mirred.get_attr("TCA_ACT_KIND") == "mirred"
    parms = mirred.get_attr("TCA_ACT_OPTIONS").get_attr("TCA_MIRRED_PARMS")
    assert (parms["ifindex"], parms["eaction"]) == (9, 1)      # redirect to the IFB's egress


def test_tbf_burst_and_guest_argv():
    assert tbf_burst(10_000_000) == 12_500 and tbf_burst(100_000) == 3200
    assert guest_netem_argv(50_000, 0) == ["tc", "qdisc", "replace", "dev", "eth0", "root",
                                           "netem", "delay", "50000us", "limit", "10000"]
    assert guest_netem_argv(50_000, 5_000)[8:10] == ["50000us", "5000us"]


def test_record_round_trip():
    rec = Record("lab", "db", "0123456789ab", "vm", "vnet3", 17, True, True, 1500)
    assert Record.parse(rec.text()) == rec
    assert rec.text() == ("hybridnb:lab:db 0123456789ab kind=vm port=vnet3/17 ifb=1 guest=1 "
                          "mtu=1500")
    assert Record.parse("hybridnb:lab:h1 fp kind=host port=hv1/4 ifb=0 guest=0 mtu=-").mtu \
        is None
    for junk in ("", "loss", "hybridnb:lab fp", "hybridnb:a:b fp port=x/y"):
        assert Record.parse(junk) is None


def test_names_and_capabilities():
    assert ifb_name("lab", "db") == ifb_name("lab", "db") and len(ifb_name("l" * 24, "x")) <= 15
    assert ifb_name("lab", "db") != ifb_name("lab", "web")
    caps = capabilities_of([Feature("qdisc tbf", True), Feature("qdisc netem", False),
                            Feature("ifb + ingress redirect", True)])
    assert (caps.netem, caps.tbf, caps.ifb) == (False, True, True)


@pytest.mark.parametrize("kind,extra", [
    ("host", {"veth": "hv1", "netns": "hnb-lab-h"}),
    ("vm", {"mac": "52:54:00:aa:bb:cc", "guest_netem": True}),
    ("container", {}),
])
def test_link_resource(kind, extra):
    ep = {"kind": kind, "veth": "hv1", "netns": "hnb-lab-h", "mac": "52:54:00:aa:bb:cc"}
    res = link_resource("lab", ep, Impairment("h", delay_us=1000, loss=100), bridge="hybr0",
                        default_mtu=1500, guest_netem=True)
    assert res.kind == "link" and res.name == "h" and res.summary == "delay 1ms loss 1%"
    assert res.spec == {"endpoint": "h", "kind": kind, "bridge": "hybr0", "default_mtu": 1500,
                        "delay_us": 1000, "loss": 100, **extra}
    # what check() decides for it on a kernel without netem
    _, probs = placement(Impairment.from_spec("h", res.spec), kind,
                         Capabilities(guest_netem=bool(res.spec.get("guest_netem"))))
    assert bool(probs) == (kind != "vm")
