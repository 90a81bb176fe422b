"""The version of hybridnb: the installed package's metadata, read once on first use.

``hybridnb.__version__``, ``hybridnb --version`` and the lab report's environment section all
ask here, so a source tree that is not installed still has one answer (the fallback).
"""

from __future__ import annotations

from functools import lru_cache

#: The version when hybridnb runs from a source tree that is not installed.
FALLBACK_VERSION = "0.1.0"


@lru_cache(maxsize=1)
def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as metadata_version

    try:
        return metadata_version("hybridnb")
    except PackageNotFoundError:
        return FALLBACK_VERSION
