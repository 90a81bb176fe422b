"""Recipes the image tests build (shared through the image cache by every test module).

They are the recipes of the example lab files (``examples/recipes.yaml``,
``examples/cloud-init.yaml``), so the examples are what the tests prove: ``pg`` runs as the VM
``db`` and as the container ``api`` (it has postgresql-client, and its own server lets the VM
query a container service back); ``web`` runs as a container and as a VM serving a page
templated with each one's name; ``cloud`` is configured by cloud-init.  The built-in
``base``, ``docker`` and ``observer`` recipes are booted as they are (``examples/templates.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hybridnb.core.recipe import Recipe, builtin_recipes, parse_recipe
from hybridnb.labfile import load_lab_document

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> dict[str, Any]:
    """The lab file ``examples/<name>.yaml`` as data (read like any lab file)."""
    return dict(load_lab_document(EXAMPLES / f"{name}.yaml").data)


PG: dict[str, Any] = example("recipes")["images"]["pg"]
WEB: dict[str, Any] = example("recipes")["images"]["web"]
CLOUD: dict[str, Any] = example("cloud-init")["images"]["cloud"]
#: pg's rootfs with a service that dies at once (only the guest layer differs: no rebuild)
BROKEN = {**PG, "services": ["postgresql", {"name": "broken", "command": "echo oops; exit 3",
                                            "port": 9}]}
#: web's rootfs with a service that never listens, and a 2 s readiness timeout
SLEEPY = {**WEB, "services": ["nginx", {"name": "sleepy", "command": "sleep 600",
                                        "port": 9999}],
          "env": {"HYBRIDNB_SERVICE_TIMEOUT": "2"}}
TEST_RECIPES = {"pg": PG, "web": WEB, "cloud": CLOUD, "broken": BROKEN, "sleepy": SLEEPY}


def recipe(name: str) -> Recipe:
    if name in TEST_RECIPES:
        return parse_recipe(name, TEST_RECIPES[name])
    return builtin_recipes()[name]
