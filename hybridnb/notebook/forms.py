"""ipywidgets forms: create a network, add a container, a VM or a host — validated as you type.

Each form is a small object around a ``VBox``: one input widget per field with an error line
under it, an apply button, a progress bar and an ``Output`` area of its own.  On every change
the form builds the lab *as it would be* with the entered values and runs the very validation
a lab file goes through (:func:`hybridnb.core.spec.parse_lab`, then address allocation);
each problem is shown next to the field its path points at (``endpoints.web.address`` →
the address field), problems that belong to no field under the button.  The button stays
disabled while anything is wrong.  Clicking it edits the lab (adding, or redefining an
endpoint of the same name), applies it with the progress bar following the actions, and puts
the result — or the error with its hint — into the form's own output area.

An endpoint form's fields come from its kind in the registry (:mod:`hybridnb.core.kinds`):
one widget per declared field, chosen by the field's type (text, number, choice, K=V lines,
comma-separated list), so a field added to a kind module appears here without an edit.

Forms are plain objects that tests drive without a browser::

    form = container_form(lab)
    form.fields["name"].value = "web"
    form.button.click()
    form.result.ok, form.output.outputs

In a notebook, a form displays itself (``form`` as the last expression of a cell).
"""

from __future__ import annotations

import html
from typing import Any, Callable

from hybridnb.errors import HybridError, NotFoundError, ValidationError


def _w() -> Any:
    import ipywidgets

    return ipywidgets


class Form:
    """Shared machinery; subclasses declare fields and what a click does."""

    title = "form"
    action = "Apply"

    def __init__(self, lab: Any = None, *, apply: bool = True) -> None:
        w = _w()
        self.lab = lab
        self.apply_on_click = apply
        self.fields: dict[str, Any] = {}
        self.errors: dict[str, Any] = {}
        self.problems: dict[str, list[str]] = {}
        self.result: Any = None
        self.error: HybridError | None = None
        self._build_fields()
        rows = []
        for key, widget in self.fields.items():
            err = w.HTML(value="", layout=w.Layout(margin="0 0 0 150px"))
            self.errors[key] = err
            rows.append(w.VBox([widget, err]))
        self.general = w.HTML(value="")
        self.button = w.Button(description=self.action, button_style="primary",
                               icon="play")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="progress",
                                      bar_style="info")
        self.progress_label = w.HTML(value="")
        self.status = w.HTML(value="")
        self.output = w.Output()
        self.widget = w.VBox([w.HTML(f"<b>{html.escape(self.title)}</b>"), *rows, self.general,
                              w.HBox([self.button, self.status]),
                              w.HBox([self.progress, self.progress_label]), self.output])
        for widget in self.fields.values():
            widget.observe(self._changed, names="value")
        self.button.on_click(self._clicked)
        self.validate()

    # -- subclass hooks ----------------------------------------------------------------

    def _build_fields(self) -> None:
        raise NotImplementedError

    def _would_be(self) -> tuple[dict[str, Any], Callable[[str], str | None]]:
        """The lab mapping the form would produce, and a function mapping a problem path to
        a field key (or None)."""
        raise NotImplementedError

    def _submit(self) -> Any:
        raise NotImplementedError

    # -- validation ----------------------------------------------------------------------

    def _field_text(self, key: str) -> str:
        return str(self.fields[key].value).strip()

    def _check(self) -> dict[str, list[str]]:
        from hybridnb.core.ipam import assign_addresses
        from hybridnb.core.spec import parse_lab

        problems: dict[str, list[str]] = {}
        try:
            doc, where = self._would_be()
        except _FieldError as exc:
            return {exc.field: [exc.message]}
        try:
            spec = parse_lab(doc)
            previous = {}
            if self.lab is not None:
                previous = self.lab.store.read(self.lab.name).get("addresses", {})
            assign_addresses(spec, previous)
        except ValidationError as exc:
            for p in exc.problems:
                key = where(p.path) or "_"
                text = p.message + (f" — {p.hint}" if p.hint else "")
                problems.setdefault(key, []).append(text)
        return problems

    def validate(self) -> bool:
        """Re-check every field; show the problems; enable the button only when all is well."""
        self.problems = self._check()
        for key, err in self.errors.items():
            msgs = self.problems.get(key, [])
            err.value = "".join(f'<div style="color:#c62828;font-size:90%">✗ '
                                f"{html.escape(m)}</div>" for m in msgs)
        general = self.problems.get("_", [])
        self.general.value = "".join(f'<div style="color:#c62828">✗ {html.escape(m)}</div>'
                                     for m in general)
        self.button.disabled = bool(self.problems)
        return not self.problems

    def _changed(self, change: Any) -> None:
        self.validate()

    # -- running -------------------------------------------------------------------------

    def click(self) -> Any:
        """What clicking the button does (``button.click()`` calls this)."""
        self._clicked(self.button)
        return self.result

    def _say(self, text: str, ok: bool | None) -> None:
        colour = {True: "#2e7d32", False: "#c62828", None: "#555"}[ok]
        self.status.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

    def _clicked(self, _button: Any) -> None:
        from hybridnb.offloop import off_loop

        if not self.validate():
            self._say("fix the fields marked ✗ first", False)
            return
        self.button.disabled = True
        self.error = None
        self.output.outputs = ()
        self.progress.value = 0
        self.progress.bar_style = "info"
        self._say("working…", None)
        try:
            self.result = off_loop(self._submit)
        except HybridError as exc:
            self.error = exc
            self.progress.bar_style = "danger"
            self.output.append_stderr(str(exc) + "\n")
            self._say(exc.message.splitlines()[0], False)
        else:
            if self.result is not None:
                self.output.append_display_data(self.result)
            ok = getattr(self.result, "ok", True)
            self._say("done" if ok else "finished with errors", ok)
        finally:
            self.validate()

    def _apply(self, lab: Any) -> Any:
        from hybridnb.notebook.progress import ProgressBar

        bar = ProgressBar(bar=self.progress, label=self.progress_label)
        try:
            result = lab.apply(progress=bar)
        except HybridError as exc:
            bar.finish(ok=False, message=exc.message.splitlines()[0])
            raise
        bar.finish(ok=result.ok, message=result.plan.headline())
        return result

    # -- display -------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        values = ", ".join(f"{k}={v.value!r}" for k, v in self.fields.items())
        return f"<{type(self).__name__} {values}>"


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _text(w: Any, description: str, value: str = "", placeholder: str = "") -> Any:
    return w.Text(value=value, description=description, placeholder=placeholder,
                  style={"description_width": "140px"},
                  layout=w.Layout(width="480px"))


# ------------------------------------------------------------------------------ network

class NetworkForm(Form):
    """Create a lab's network (bridge, subnet, gateway, domain) and apply it."""

    title = "Create a network"
    action = "Create & apply"

    def __init__(self, lab: Any = None, *, name: str = "hybrid", backend: str | None = None,
                 state_dir: str | None = None, sandbox: str | None = None,
                 apply: bool = True) -> None:
        from hybridnb.notebook.magics import active_magics

        self.magics = active_magics()
        opts = self.magics.lab_options() if self.magics is not None else {
            "backend": None, "state_dir": None, "sandbox": None}
        from hybridnb.backends import default_backend

        self._defaults = {"name": name,
                          "backend": backend or opts["backend"] or default_backend()}
        self.state_dir = state_dir if state_dir is not None else opts["state_dir"]
        self.sandbox = sandbox or opts["sandbox"]
        super().__init__(lab, apply=apply)

    def _build_fields(self) -> None:
        from hybridnb.core.spec import DEFAULT_BRIDGE, DEFAULT_DOMAIN, DEFAULT_SUBNET
        from hybridnb.notebook.magics import BACKENDS

        w = _w()
        self.fields = {
            "name": _text(w, "lab name", self._defaults["name"]),
            "subnet": _text(w, "subnet", DEFAULT_SUBNET),
            "bridge": _text(w, "bridge", DEFAULT_BRIDGE),
            "gateway": _text(w, "gateway", "", "first address of the subnet"),
            "domain": _text(w, "domain", DEFAULT_DOMAIN),
            "backend": w.Dropdown(options=list(BACKENDS),
                                  value=self._defaults["backend"], description="backend",
                                  style={"description_width": "140px"}),
        }

    def _would_be(self) -> tuple[dict[str, Any], Callable[[str], str | None]]:
        net: dict[str, Any] = {}
        for key in ("subnet", "bridge", "gateway", "domain"):
            if self._field_text(key):
                net[key] = self._field_text(key)
        doc = {"name": self._field_text("name"), "network": net, "endpoints": {}}

        def where(path: str) -> str | None:
            if path == "name":
                return "name"
            key = path.split(".")[1] if path.startswith("network.") else ""
            return key if key in self.fields else None
        return doc, where

    def _submit(self) -> Any:
        from hybridnb.lab import Lab

        t = self._field_text
        lab = Lab(t("name"), subnet=t("subnet") or None, bridge=t("bridge") or None,
                  gateway=t("gateway") or None, domain=t("domain") or None,
                  backend=self.fields["backend"].value, state_dir=self.state_dir,
                  sandbox=self.sandbox)
        self.lab = lab
        if self.magics is not None:
            self.magics.current_lab = lab
        return self._apply(lab) if self.apply_on_click else None


# ---------------------------------------------------------------------------- endpoints

def _widget(w: Any, field: Any) -> Any:
    """The input widget of one kind field (its type says which)."""
    t = field.type
    style = {"description_width": "140px"}
    value = t.to_form(field.default)
    if t.form == "int":
        label = field.name if field.metavar == "N" else f"{field.name} ({field.metavar})"
        return w.IntText(value=value, description=label, style=style)
    if t.form == "choice":
        return w.Dropdown(options=list(t.option_choices() or ()), value=field.default,
                          description=field.name, style=style)
    if t.form == "lines":
        return w.Textarea(value=value, description=f"{field.name} (K=V lines)", style=style,
                          layout=w.Layout(width="480px", height="60px"))
    return _text(w, field.name, value, field.info.example)


class EndpointForm(Form):
    """Add (or redefine) one endpoint of ``kind`` in an existing lab, then apply.  The fields
    are the kind's own (:mod:`hybridnb.core.kinds`): a field its module declares shows here."""

    kind = "host"

    def __init__(self, lab: Any = None, *, apply: bool = True, kind: str | None = None) -> None:
        from hybridnb.core.kinds import get

        if kind is not None:
            self.kind = kind
        self._kind = get(self.kind)
        if lab is None:
            from hybridnb.notebook import current_lab

            lab = current_lab()
        if lab is None:
            raise NotFoundError("no lab to add to",
                                hint="create one first (%hybrid create, or network_form())")
        self.title = f"Add a {self._kind.title} to lab {lab.name}"
        super().__init__(lab, apply=apply)

    def _form_fields(self) -> list[Any]:
        return [f for f in self._kind.fields() if f.info.form]

    def _build_fields(self) -> None:
        w = _w()
        self.fields = {"name": _text(w, "name", "", "e.g. " + self._kind.name + "1")}
        for f in self._form_fields():
            self.fields[f.name] = _widget(w, f)

    def _entry(self) -> dict[str, Any]:
        """The endpoint's YAML entry from the widgets (``_FieldError`` for malformed input)."""
        entry: dict[str, Any] = {"kind": self.kind}
        for f in self._form_fields():
            try:
                value = f.type.from_form(self.fields[f.name].value, f)
            except ValueError as exc:
                raise _FieldError(f.name, str(exc)) from None
            if value is not None:
                entry[f.name] = value
        return entry

    def _would_be(self) -> tuple[dict[str, Any], Callable[[str], str | None]]:
        name = self._field_text("name")
        if not name:
            raise _FieldError("name", "a name is required — e.g. web")
        doc = self.lab.to_dict()
        doc.setdefault("endpoints", {})[name] = self._entry()
        prefix = f"endpoints.{name}"

        def where(path: str) -> str | None:
            if path == prefix:
                return "name"
            if path.startswith(prefix + "."):
                key = path[len(prefix) + 1:].split(".")[0].split("[")[0]
                return key if key in self.fields else None
            if path.endswith(".address"):        # another endpoint already has that address
                return "address"
            return None
        return doc, where

    def _add(self, lab: Any) -> Any:
        fields = {k: v for k, v in self._entry().items() if k != "kind"}
        return lab.add(self.kind, self._field_text("name"), replace=True, **fields)

    def _submit(self) -> Any:
        from hybridnb.notebook.magics import upsert_endpoint

        name = self._field_text("name")
        upsert_endpoint(self.lab, name, self._add)
        return self._apply(self.lab) if self.apply_on_click else None


class ContainerForm(EndpointForm):
    kind = "container"


class VMForm(EndpointForm):
    kind = "vm"


class HostForm(EndpointForm):
    kind = "host"


def endpoint_form(kind: str, lab: Any = None, **kw: Any) -> EndpointForm:
    """A form adding an endpoint of any kind of the registry."""
    return EndpointForm(lab, kind=kind, **kw)


def network_form(**kw: Any) -> NetworkForm:
    """A form that creates a lab's network and applies it (it becomes the current lab)."""
    return NetworkForm(**kw)


def container_form(lab: Any = None, **kw: Any) -> ContainerForm:
    return ContainerForm(lab, **kw)


def vm_form(lab: Any = None, **kw: Any) -> VMForm:
    return VMForm(lab, **kw)


def host_form(lab: Any = None, **kw: Any) -> HostForm:
    return HostForm(lab, **kw)


__all__ = ["Form", "NetworkForm", "EndpointForm", "ContainerForm", "VMForm", "HostForm",
           "network_form", "endpoint_form", "container_form", "vm_form", "host_form"]
