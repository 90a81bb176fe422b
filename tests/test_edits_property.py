"""Issue 11's property on the dry-run backend: any valid edit of any field converges with one
apply (the plan afterwards is empty and the engine holds exactly the compiled lab), and the
edit generator covers every declared field.  The same sequences on the real sandbox:
``tests/integration/test_edits_property_real.py``."""

from __future__ import annotations

import collections
import os
import re

from hybridnb.core import kinds as registry
from hybridnb.core.kinds import base
from hybridnb.core.spec import _NET_KEYS
from hybridnb.lab import Lab
from tests.helpers import edits

SEQUENCES, EDITS = 100, 5
FIRST_SEED = int(os.environ.get("HYBRIDNB_EDIT_SEED", "1000"))


def test_every_field_has_a_way_to_be_edited():
    """A new field, field type or network key needs a way to be edited or a stated reason."""
    for kind in registry.kinds():
        for f in kind.fields():
            key = (kind.name, f.name)
            assert key in edits.NOT_EDITED or key in edits.BY_FIELD or \
                type(f.type) in edits.BY_TYPE, f"no way to edit {kind.name}.{f.name}"
    for key in _NET_KEYS:
        assert key in edits.NETWORK or ("network", key) in edits.NOT_EDITED, key
    types = {t for t in vars(base).values()
             if isinstance(t, type) and issubclass(t, base.FieldType) and t is not base.FieldType}
    assert types <= set(edits.BY_TYPE), types - set(edits.BY_TYPE)


def what_was_edited(sequences) -> collections.Counter:
    """``network.KEY`` / ``KIND.FIELD`` / ``add`` / ``remove`` per edit."""
    kinds = {n: k for k, names in edits.NAMES.items() for n in names}
    out: collections.Counter = collections.Counter()
    for seq in sequences:
        for step in seq.steps[1:]:
            m = re.match(r"endpoints\.(\w+)\.(\w+) =", step)
            out[f"{kinds[m.group(1)]}.{m.group(2)}" if m else step.split(" ")[0]] += 1
    return out


def test_edits_converge_on_the_dry_run_backend(tmp_path):
    state = tmp_path / "state"

    def check(lab, doc):
        assert lab.plan().empty, lab.plan().to_text()
        engine = lab.backend.extras["engine"]
        want = {(r.kind, r.name): dict(r.spec) for r in lab.resources()}
        got = {(k, n): s for k, names in engine.specs.get(lab.name, {}).items()
               for n, s in names.items()}
        assert got == want

    done = [edits.run_sequence(
        FIRST_SEED + i, edits=EDITS, vm_chance=2, kernel=("/boot/vmlinux-t", "/boot/initrd-t"),
        make_lab=lambda doc: Lab.from_dict(doc, backend="dry-run", state_dir=state),
        check=check) for i in range(SEQUENCES)]
    what = what_was_edited(done)
    wanted = {f"network.{k}" for k in edits.NETWORK} | {"add", "remove"} | {
        f"{kind.name}.{f.name}" for kind in registry.kinds() for f in edits.edited_fields(kind)}
    assert not wanted - set(what), (sorted(wanted - set(what)), what)
