"""Linkerd's h2 identifiers (reference §1.3): the same shapes, on HTTP/2's pseudo-headers.

`io.l5d.header.token` names a request by one header's value, `:authority` by
default (`/svc/hello:4142`); `io.l5d.header.path` reads a header (`:path` by
default) as a path and keeps its first `segments` segments (all if unset), so a
gRPC call `/helloworld.Greeter/SayHello` with `segments: 1` is
`/svc/helloworld.Greeter`. The query string is not part of the name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dtab.errors import ParamError
from dtab.path import Path
from router.identifiers import (
    IdentificationError,
    Identified,
    Identifier,
    _only,
    _str,
    composite,
    header_token,
)
from router.request import RequestHead


def header_path(prefix: Path, header: str = ":path", segments: int | None = None) -> Identifier:
    absent = f"{header} header is absent"
    key = header.lower().encode("latin-1")

    def identify(head: RequestHead) -> Identified:
        for k, v in head.headers:
            if k == key:
                raw = v.decode("latin-1")
                break
        else:
            raise IdentificationError(absent)
        path = raw.split("?", 1)[0]
        segs = [s for s in path.split("/") if s]
        if segments is not None:
            if len(segs) < segments:
                raise IdentificationError(f"{header} has fewer than {segments} segments: "
                                          f"{path[:200]!r}")
            segs = segs[:segments]
        return Identified(prefix + Path(tuple(segs)))

    return identify


def build_h2_identifier(kind: str, params: Mapping[str, Any], prefix: Path) -> Identifier:
    if kind == "io.l5d.header.token":
        _only(params, kind, "header")
        return header_token(prefix, _str(params, "header", ":authority"))
    if kind == "io.l5d.header.path":
        _only(params, kind, "header", "segments")
        segments = params.get("segments")
        if segments is not None and (isinstance(segments, bool) or not isinstance(segments, int)
                                     or segments < 1):
            raise ParamError("segments", f"expected a positive integer, got {segments!r}")
        return header_path(prefix, _str(params, "header", ":path"), segments)
    if kind == "io.l5d.ingress":  # Linkerd's h2 IngressIdentifier: :authority and :path
        from router.ingress import build as build_ingress

        return build_ingress(params, prefix)
    raise ParamError("kind", f"identifier {kind!r} is not an h2 identifier "
                     "(io.l5d.header.token, io.l5d.header.path, io.l5d.ingress)")


def build_h2_identifiers(cfgs: Sequence[Any], prefix: Path) -> Identifier:
    return composite([build_h2_identifier(c.kind, c.params, prefix) for c in cfgs])
