"""Fields of the container kind in the notebook fronts: ``workdir`` from ``%hybrid container``
and from the container form, onto the lab and into the applied (dry-run) resource."""

from __future__ import annotations

from hybridnb.notebook.forms import container_form
from tests.notebook.conftest import run


def test_workdir_from_the_magic(shell):
    run(shell, "%hybrid create --name wd")
    run(shell, "%hybrid container web --workdir /srv")
    lab = shell.magics_manager.registry["HybridMagics"].current_lab
    assert lab.spec.endpoint("web").workdir == "/srv"
    assert "workdir: /srv" in run(shell, "%hybrid yaml").data
    run(shell, "%hybrid apply -q")
    engine = lab.backend.extras["engine"]
    assert engine.specs["wd"]["container"]["web"]["create"]["working_dir"] == "/srv"
    help_line = next(u for u, _ in run(shell, "%hybrid help").usage
                     if u.startswith("container "))
    assert "[--workdir WORKDIR]" in help_line


def test_workdir_from_the_form(shell):
    run(shell, "%hybrid create --name wdf")
    form = container_form()
    form.fields["name"].value = "web"
    form.fields["workdir"].value = "relative/dir"
    assert "is not an absolute path" in form.errors["workdir"].value and form.button.disabled
    form.fields["workdir"].value = "/srv"
    assert form.click().ok
    assert form.lab.spec.endpoint("web").workdir == "/srv"
