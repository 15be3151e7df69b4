"""Namer kinds: `kind` name -> builder.

A builder takes the namer's config entry as a plain dict (`kind`, `prefix` —
always present, default `/<kind>` —, `experimental`, and its own params; not
`transformers`, which the interpreter applies) and returns a Namer. It raises
`dtab.errors.ParamError(key, message)` for a bad parameter so the config
loader can point at the line. Builders are imported lazily so loading a
config does not import every plugin's dependencies.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from dtab.errors import ParamError
from namers.base import Namer

Builder = Callable[[dict[str, Any]], Namer]


def _lazy(module: str, attr: str = "build") -> Builder:
    def build(params: dict[str, Any]) -> Namer:
        return getattr(importlib.import_module(module), attr)(params)

    build.__qualname__ = f"{module}.{attr}"
    return build


NAMERS: dict[str, Builder] = {
    "io.l5d.fs": _lazy("namers.fs"),
    "io.l5d.k8s": _lazy("namers.k8s.namer"),
    "io.l5d.k8s.ns": _lazy("namers.k8s.ns"),
    "io.l5d.k8s.external": _lazy("namers.k8s.external"),
    "io.l5d.rewrite": _lazy("namers.rewrite"),
}


# Linkerd 1 namer kinds l5d-py does not implement -> the nearest one it does ("" = none).
# A Linkerd config naming one is refused with this, never with "unknown kind".
LINKERD_NOT_SUPPORTED: dict[str, str] = {
    "io.l5d.consul": "io.l5d.k8s (Kubernetes services) or io.l5d.fs (files)",
    "io.l5d.marathon": "io.l5d.k8s or io.l5d.fs",
    "io.l5d.serversets": "io.l5d.fs (ZooKeeper is not supported)",
    "io.l5d.zkLeader": "io.l5d.fs (ZooKeeper is not supported)",
    "io.l5d.curator": "io.l5d.fs (ZooKeeper is not supported)",
    "io.l5d.dnssrv": "/$/inet/<host>/<port> in the dtab (A/AAAA records, no SRV)",
    "io.l5d.rancher": "io.l5d.fs",
    "io.l5d.k8s.istio": "io.l5d.k8s",
}


class HostCheckError(ParamError):
    """A parameter that is valid but does not hold on *this* machine (a missing rootDir).

    `built` is the plugin built anyway, so `l5d --validate` on a laptop can warn and go
    on while starting the router with it stays an error."""

    def __init__(self, key: str, message: str, built: Any) -> None:
        super().__init__(key, message)
        self.built = built


def namer_kinds() -> list[str]:
    return list(NAMERS)


def not_supported(kind: str) -> str | None:
    """The refusal for a Linkerd namer kind l5d-py does not implement; None otherwise."""
    return not_supported_message("namer", kind, LINKERD_NOT_SUPPORTED)


def not_supported_message(what: str, kind: str, table: dict[str, str]) -> str | None:
    if kind not in table:
        return None
    alt = table[kind]
    return (f"{kind} is a Linkerd {what} that is not supported by l5d-py"
            + (f"; nearest supported: {alt}" if alt else ""))


def build_namer(params: dict[str, Any]) -> Namer:
    """Build the namer for one `namers:` entry; ParamError("kind") for an unknown kind."""
    kind = params.get("kind")
    builder = NAMERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        refusal = not_supported(kind) if isinstance(kind, str) else None
        raise ParamError("kind", refusal or f"unknown namer kind {kind!r}; known: "
                         + ", ".join(NAMERS))
    return builder(params)
