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
}


def namer_kinds() -> list[str]:
    return list(NAMERS)


def build_namer(params: dict[str, Any]) -> Namer:
    """Build the namer for one `namers:` entry; ParamError("kind") for an unknown kind."""
    kind = params.get("kind")
    builder = NAMERS.get(kind) if isinstance(kind, str) else None
    if builder is None:
        raise ParamError("kind", f"unknown namer kind {kind!r}; known: {', '.join(NAMERS)}")
    return builder(params)
