"""Recipes the image tests build (shared through the image cache by every test module).

``pg`` runs as the VM ``db`` and as the container ``api`` (it has postgresql-client, and its
own server lets the VM query a container service back); ``web`` runs as a container and as a
VM serving a page templated with each one's name; ``cloud`` is configured by cloud-init.
The built-in ``base``, ``docker`` and ``observer`` recipes are booted as they are.
"""

from __future__ import annotations

from hybridnb.core.recipe import Recipe, builtin_recipes, parse_recipe

PG = {"packages": ["postgresql", "postgresql-client", "curl"], "services": ["postgresql"]}
WEB = {"packages": ["curl"], "services": ["nginx"],
       "files": {"/var/www/html/index.html":
                 "hello from {{ name }} at {{address}} ({{fqdn}}, gateway {{gateway}})\n"},
       "env": {"GREETING": "hi there"}}
CLOUD = {"packages": ["curl"], "cloud_init": True}
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
