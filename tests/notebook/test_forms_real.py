"""The forms against the real engines in the session's sandbox: a network, a host, a
container and a VM added by setting widget values and clicking, each applied for real."""

from __future__ import annotations

import pytest

from hybridnb.notebook.forms import container_form, host_form, network_form, vm_form
from tests.realengines import SANDBOX_NAME

pytestmark = pytest.mark.real


def test_forms_build_a_real_lab(sandbox, shell, tmp_path):  # noqa: F811
    net = network_form(name="fmreal", backend="sandbox", sandbox=SANDBOX_NAME,
                       state_dir=str(tmp_path))
    net.fields["subnet"].value = "10.0.62.0/24"
    net.fields["bridge"].value = "hnbfm0"
    lab = None
    try:
        assert net.click() is not None and net.error is None, net.error
        lab = net.lab
        assert net.result.ok and lab.status().infra

        host = host_form(lab)
        host.fields["name"].value = "h1"
        assert host.click().ok, host.error

        web = container_form(lab)
        web.fields["name"].value = "web"
        web.fields["command"].value = "httpd -f -p 80 -h /www"
        assert web.click().ok, web.error

        vm = vm_form(lab)
        vm.fields["name"].value = "vm1"
        result = vm.click()
        assert result is not None and result.ok, vm.error
        assert (vm.progress.value, vm.progress.bar_style) == (vm.progress.max, "success")
        assert any("vm1" in str(o) for o in vm.output.outputs)

        status = lab.status()
        assert status.up, status
        assert {e.name: e.kind for e in status.endpoints} == \
            {"h1": "host", "web": "container", "vm1": "vm"}
        matrix = lab.test(("icmp",), timeout=2.0)
        assert matrix.ok, matrix.failures()
    finally:
        if lab is not None:
            lab.destroy()
    assert {e.state for e in lab.status().endpoints} == {"not applied"}
