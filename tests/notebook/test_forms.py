"""The ipywidgets forms, driven through their widget objects (set values, click) on the
dry-run backend: inline validation next to the right field, apply with progress, output in
the form's own area."""

from __future__ import annotations

import pytest

from hybridnb.errors import NotFoundError
from hybridnb.lab import Lab
from hybridnb.notebook.forms import container_form, host_form, network_form, vm_form

pytestmark = pytest.mark.extra("notebook")


@pytest.fixture
def lab(tmp_path, shell):
    lab = Lab("forms", subnet="10.0.7.0/24", backend="dry-run", state_dir=tmp_path / "state")
    shell.magics_manager.registry["HybridMagics"].current_lab = lab
    return lab


def outputs_text(form) -> str:
    parts = []
    for out in form.output.outputs:
        parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def test_network_form_validates_inline_and_applies(shell):
    form = network_form(name="net1")
    assert form.fields["backend"].value == "dry-run"            # from %config
    assert not form.button.disabled and form.problems == {}
    form.fields["subnet"].value = "10.0.1.5/24"
    assert form.button.disabled
    assert "did you mean 10.0.1.0/24" in form.errors["subnet"].value
    assert form.errors["name"].value == ""
    form.fields["gateway"].value = "10.9.9.9"
    form.fields["subnet"].value = "10.0.8.0/24"
    assert "outside the subnet" in form.errors["gateway"].value
    form.fields["gateway"].value = ""
    form.fields["name"].value = "No Spaces"
    assert "not a valid lab name" in form.errors["name"].value
    form.fields["name"].value = "net1"
    assert not form.button.disabled
    form.button.click()
    assert form.error is None and form.result.ok
    assert form.result.plan.count("create") == 3                # bridge, firewall, dns
    assert (form.progress.value, form.progress.max, form.progress.bar_style) == (3, 3, "success")
    assert "Plan for lab net1" in outputs_text(form)
    assert "done" in form.status.value
    # it became the current lab of the magics
    from hybridnb.notebook import current_lab

    assert current_lab() is form.lab and form.lab.status().up


@pytest.mark.parametrize("env, root, want", [("host", True, "host"), ("", True, "sandbox"),
                                             ("", False, "dry-run")])
def test_network_form_backend_defaults_as_the_environment_says(shell, monkeypatch, env, root,
                                                                want):
    """Nothing configured: the form offers what ``default_backend()`` would use."""
    shell.run_cell('%config HybridMagics.backend = ""')
    monkeypatch.setenv("HYBRIDNB_BACKEND", env)
    monkeypatch.setattr("os.geteuid", lambda: 0 if root else 1000)
    assert network_form(name="net2").fields["backend"].value == want


def test_container_form_field_errors(lab):
    form = container_form()
    assert form.lab is lab
    assert "a name is required" in form.errors["name"].value and form.button.disabled
    form.fields["name"].value = "web"
    assert not form.button.disabled
    checks = [
        ("address", "10.0.7.1", "is the gateway address"),
        ("address", "10.0.99.5", "outside the lab subnet"),
        ("address", "nonsense", "is not an IPv4 address"),
        ("env", "A=1\nno-equals", "is not KEY=VALUE"),
        ("env", "1BAD=x", "not a valid variable name"),
        ("ports", "8080:80, 70000", "is not a port mapping"),
        ("image", " ", "image is empty"),
        ("name", "Web_1", "not a valid endpoint name"),
    ]
    for key, value, message in checks:
        good = form.fields[key].value
        form.fields[key].value = value
        assert message in form.errors[key].value, (key, value, form.problems)
        assert form.button.disabled
        others = {k for k in form.problems if k != key}
        assert not others, form.problems                         # shown next to that field only
        form.fields[key].value = good
        assert not form.button.disabled, form.problems


def test_container_form_applies_and_redefines(lab):
    form = container_form()
    form.fields["name"].value = "web"
    form.fields["command"].value = "httpd -f -p 80"
    form.fields["env"].value = "MODE=demo\n"
    form.fields["ports"].value = "8080:80/tcp"
    result = form.click()
    assert result.ok and [a.name for a in result.plan.actions if a.kind == "container"] == ["web"]
    spec = lab.spec.endpoint("web")
    assert spec.command == ("httpd", "-f", "-p", "80") and dict(spec.env) == {"MODE": "demo"}
    assert lab.status().up
    assert "container" in outputs_text(form)
    # clicking again with a changed image redefines the endpoint (replace), no error
    form.fields["image"].value = "nginx:alpine"
    again = form.click()
    assert again.ok and again.plan.count("replace") == 1
    assert lab.spec.endpoint("web").image == "nginx:alpine"


def test_address_taken_by_another_endpoint_shows_on_address(lab):
    lab.add_host("zz", address="10.0.7.50")
    form = host_form()
    form.fields["name"].value = "aa"            # sorts first: the problem lands on zz's path
    form.fields["address"].value = "10.0.7.50"
    assert "already used by endpoint" in form.errors["address"].value
    form.fields["name"].value = "zzz"
    assert "already used by endpoint" in form.errors["address"].value
    form.fields["address"].value = ""
    assert form.click().ok and str(lab.addresses()["zzz"]).startswith("10.0.7.")


def test_vm_form_validation_and_apply_failure_is_shown(lab):
    form = vm_form()
    form.fields["name"].value = "vm1"
    form.fields["memory"].value = 32
    assert "too little" in form.errors["memory"].value
    form.fields["memory"].value = 128
    form.fields["vcpus"].value = 0
    assert "out of range" in form.errors["vcpus"].value
    form.fields["vcpus"].value = 2
    form.fields["template"].value = "base"                 # a recipe: no kernel of its own
    form.fields["kernel"].value = "/boot/vmlinuz"
    assert form.button.disabled and "apply only to the &#x27;test&#x27; template" in \
        form.errors["kernel"].value
    form.fields["kernel"].value = ""
    form.fields["template"].value = "test"
    engine = lab.backend.extras["engine"]
    engine.fail_on.add("create vm/vm1")
    form.button.click()
    assert form.result is None and form.error is not None
    assert "injected failure" in form.error.message
    assert form.progress.bar_style == "danger"
    assert "injected failure" in outputs_text(form)
    assert "injected failure" in form.status.value
    engine.fail_on.clear()
    assert form.click().ok                     # retry converges
    assert {e.name: e.state for e in lab.status().endpoints} == {"vm1": "up"}


def test_forms_without_a_lab_say_so(shell):
    with pytest.raises(NotFoundError, match="no lab to add to"):
        container_form()


def test_forms_render_as_widgets(lab):
    bundle = host_form()._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_endpoint_forms_have_one_widget_per_field_of_their_kind(lab):
    from hybridnb.core.kinds import kinds
    from hybridnb.notebook.forms import endpoint_form

    for kind in kinds():
        form = endpoint_form(kind.name)
        assert list(form.fields) == ["name"] + [f.name for f in kind.fields() if f.info.form], \
            kind.name
        assert form.title == f"Add a {kind.title} to lab forms"
    form = container_form()
    form.fields["name"].value = "api"
    form.fields["services"].value = "http/8080, dns/53/udp"
    form.fields["labels"].value = "tier=back\n"
    assert form.click().ok
    ep = lab.spec.endpoint("api")
    assert [str(s) for s in ep.services] == ["http/8080", "dns/53/udp"]
    assert dict(ep.labels) == {"tier": "back"}
    assert vm_form().fields["template"].options == ("test", "base", "docker", "observer")
