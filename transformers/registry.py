"""`kind` -> transformer builder; the interpreter calls `build_transformer` for each config entry.

Builders validate their params and raise `dtab.errors.ParamError(key, message)`
(the config loader adds the file and line); they do no I/O that needs an
event loop, so `l5d --validate` works without a cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtab.errors import ParamError
from transformers.base import Transformer
from transformers.simple import (
    build_const,
    build_localhost,
    build_port,
    build_replace,
    build_specific_host,
)


def build_daemonset(params: dict[str, Any]) -> Any:
    """transformers.k8s imports the k8s namer (~2 MB): only for a config that uses it."""
    from transformers.k8s import build_daemonset

    return build_daemonset(params)


def build_localnode(params: dict[str, Any]) -> Any:
    from transformers.k8s import build_localnode

    return build_localnode(params)


BUILDERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "io.l5d.k8s.daemonset": build_daemonset,
    "io.l5d.k8s.localnode": build_localnode,
    "io.l5d.port": build_port,
    "io.l5d.replace": build_replace,
    "io.l5d.const": build_const,
    "io.l5d.specificHost": build_specific_host,
    "io.l5d.localhost": build_localhost,
}


def build_transformer(kind: str, params: dict[str, Any]) -> Transformer:
    """Build one transformer; `params` is the config mapping (it may include `kind`)."""
    builder = BUILDERS.get(kind)
    if builder is None:
        raise ParamError("kind", f"unknown transformer kind {kind!r}; known: "
                         + ", ".join(sorted(BUILDERS)))
    return builder(dict(params))
