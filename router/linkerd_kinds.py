"""Linkerd 1 kinds that l5d-py does not implement, and what to use instead.

A Linkerd user's config that names one is refused with "not supported by
l5d-py" and the nearest supported alternative, never "unknown kind" (which
reads like a typo). Each plugin family keeps its own table next to its
registry (namers/registry.py, router/identifiers.py); the protocols, which
have no registry of their own, are here.
"""

from __future__ import annotations

from namers.registry import LINKERD_NOT_SUPPORTED as NAMERS_NOT_SUPPORTED
from namers.registry import not_supported_message
from router.identifiers import LINKERD_NOT_SUPPORTED as IDENTIFIERS_NOT_SUPPORTED

PROTOCOLS_NOT_SUPPORTED: dict[str, str] = {
    "thrift": "",
    "mux": "",
}

_TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "namer": ("namer", NAMERS_NOT_SUPPORTED),
    "identifier": ("identifier", IDENTIFIERS_NOT_SUPPORTED),
    "protocol": ("protocol", PROTOCOLS_NOT_SUPPORTED),
}


def refusal(family: str, kind: str) -> str | None:
    """The message for a Linkerd `kind` of `family` l5d-py does not implement, else None."""
    what, table = _TABLES[family]
    return not_supported_message(what, kind, table)
