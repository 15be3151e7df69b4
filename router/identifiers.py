"""Identifiers: a request head -> the logical name it is routed by (`/svc/hello`).

Each kind follows Linkerd's identifier of the same name (reference §1.3),
including its failure reasons, which the data path turns into a 400
`Unknown destination: Request("GET /", from /ip:port) / <reason>`. Every name
is prefixed by the router's `dstPrefix`. Several identifiers are tried in
order; the first that identifies wins, and when none does the reasons are
joined so the 400 says why each one declined.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dtab.bounded import WeightedLRU
from dtab.errors import DtabParseError, ParamError
from dtab.path import Path
from router.request import RequestHead, cache_get


@dataclass(frozen=True, slots=True)
class Identified:
    """The logical name, and the request target to forward instead (None = unchanged)."""

    path: Path
    target: str | None = None


class IdentificationError(Exception):
    """The request cannot be named; `reason` is Linkerd's text for the 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentificationFailure(IdentificationError):
    """The identifier threw (a value that does not parse): Linkerd's RoutingFactory turns
    the exception into the 400 and does not try the next identifier, unlike an
    `UnidentifiedRequest` (router/core/src/main/scala/io/buoyant/router/RoutingFactory.scala).
    """


Identifier = Callable[[RequestHead], Identified]


def _split_target(target: str) -> tuple[str, str]:
    """`/a/b?x=1` -> (`/a/b`, `?x=1`)."""
    i = target.find("?")
    return (target, "") if i < 0 else (target[:i], target[i:])


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


_NAME_CACHE_MAX = 1000
_NAME_CACHE_BYTES = 1024 * 1024
_NAME_CACHED_MAX_LEN = 1024  # longer values are named afresh each time, never kept


class HeaderToken:
    """`/svc/<raw header value>`: not lowercased, port kept (e.g. `/svc/web:8080`).

    A class rather than a closure so that it runs compiled (router/_native.py): the
    default identifier runs on every request."""

    __slots__ = ("prefix", "absent", "key", "spelled", "names")

    def __init__(self, prefix: Path, header: str = "Host") -> None:
        self.prefix = prefix
        self.absent = f"{header} header is absent"
        self.key = header.lower().encode("latin-1")
        self.spelled = header.encode("latin-1")  # as clients mostly send it: no lower()
        # Callers repeat a handful of Host values: the (immutable) result is remembered
        # per raw value, bounded by bytes.
        self.names: WeightedLRU[bytes, Identified] = WeightedLRU(
            _NAME_CACHE_BYTES, max_entries=_NAME_CACHE_MAX)

    def __call__(self, head: RequestHead) -> Identified:
        key = self.key
        spelled = self.spelled
        for k, v in head.headers:  # the first `header`, as RequestHead.header finds it
            if k == spelled or k.lower() == key:
                raw = v
                break
        else:
            raise IdentificationError(self.absent)
        hit = cache_get(self.names, raw)
        if hit is None:
            if not raw:
                raise IdentificationError(self.absent)
            hit = Identified(self.prefix + Path((raw.decode("latin-1"),)))
            if len(raw) <= _NAME_CACHED_MAX_LEN:
                self.names.put(raw, hit, 3 * len(raw) + 400)
        return hit


def header_token(prefix: Path, header: str = "Host") -> Identifier:
    """`/svc/<raw header value>` (HeaderToken)."""
    return HeaderToken(prefix, header)


def method_and_host(prefix: Path, http_uri_in_dst: bool = False) -> Identifier:
    """1.1: `/svc/1.1/<METHOD>/<host lowercased>[/uri]`; 1.0: `/svc/1.0/<METHOD>[/uri]`."""

    def suffix(head: RequestHead) -> Path:
        if not http_uri_in_dst:
            return Path.empty()
        # Linkerd: `Path.read(req.path)`, so `/a//b` and `/a/` fail instead of
        # losing a segment (router/http/.../MethodAndHostIdentifier.scala).
        uri = _split_target(head.target)[0]
        try:
            return Path.read(uri)
        except (DtabParseError, ValueError) as e:
            raise IdentificationFailure(f"request path is not a path: {e}") from None

    def identify(head: RequestHead) -> Identified:
        if head.version == "1.1":
            host = head.host
            if not host:
                raise IdentificationError("HTTP/1.1 request missing hostname")
            return Identified(prefix + Path(("1.1", head.method, host.lower())) + suffix(head))
        if head.version == "1.0":
            return Identified(prefix + Path(("1.0", head.method)) + suffix(head))
        raise IdentificationError("Unknown HTTP version")

    return identify


def path_segments(prefix: Path, segments: int = 1, consume: bool = False) -> Identifier:
    """`/svc/<first N path segments>`; with `consume` they are cut from the forwarded URI."""

    def identify(head: RequestHead) -> Identified:
        path, query = _split_target(head.target)
        segs = _segments(path)
        if len(segs) < segments:
            raise IdentificationError("not enough segments in path")
        name = prefix + Path(tuple(segs[:segments]))
        if not consume:
            return Identified(name)
        rest = segs[segments:]
        if rest:
            new = "/" + "/".join(rest) + ("/" if path.endswith("/") else "")
        else:
            new = "/"
        return Identified(name, new + query)

    return identify


def header_path(prefix: Path, header: str = "l5d-name") -> Identifier:
    """`/svc` + the header's value read as a path (`l5d-name: /hello/v2` -> `/svc/hello/v2`)."""
    absent = f"{header} header is absent"

    def identify(head: RequestHead) -> Identified:
        value = head.header(header)
        if not value:
            raise IdentificationError(absent)
        try:
            return Identified(prefix + Path.read(value))
        except (DtabParseError, ValueError) as e:
            raise IdentificationFailure(f"{header} header is not a path: {e}") from None

    return identify


def static(prefix: Path, path: Path) -> Identifier:
    name = Identified(prefix + path)

    def identify(head: RequestHead) -> Identified:
        return name

    return identify


def composite(identifiers: Sequence[Identifier]) -> Identifier:
    if len(identifiers) == 1:
        return identifiers[0]
    parts = tuple(identifiers)

    def identify(head: RequestHead) -> Identified:
        reasons = []
        for ident in parts:
            try:
                return ident(head)
            except IdentificationFailure:
                raise
            except IdentificationError as e:
                reasons.append(e.reason)
        raise IdentificationError("; ".join(reasons))

    identify.parts = parts  # type: ignore[attr-defined]
    return identify


def with_lifecycle(identify: Identifier) -> list[Any]:
    """The identifiers (inside a composite) that have background work: `start`/`close`."""
    parts = getattr(identify, "parts", (identify,))
    return [p for p in parts if hasattr(p, "start") and hasattr(p, "close")]


# -- building from config -------------------------------------------------------------

# Linkerd 1 identifier kinds l5d-py does not implement -> the nearest it does.
LINKERD_NOT_SUPPORTED: dict[str, str] = {
    "io.l5d.k8s.istio": "io.l5d.header.token",
    "io.l5d.k8s.istio-ingress": "io.l5d.header.token",
    "io.l5d.header.path": "io.l5d.path (io.l5d.header.path is Linkerd's h2 identifier)",
}


def _str(params: Mapping[str, Any], key: str, default: str | None) -> str:
    value = params.get(key, default)
    if not isinstance(value, str) or not value:
        raise ParamError(key, f"expected a non-empty string, got {value!r}")
    return value


def _bool(params: Mapping[str, Any], key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ParamError(key, f"expected true or false, got {value!r}")
    return value


def _only(params: Mapping[str, Any], kind: str, *known: str) -> None:
    for key in params:
        if key != "kind" and key not in known:
            raise ParamError(key, f"unknown parameter for {kind}; known: "
                             + (", ".join(known) or "none"))


def build_identifier(kind: str, params: Mapping[str, Any], prefix: Path) -> Identifier:
    """One identifier from its config; ParamError(key, ...) for a bad parameter."""
    if kind == "io.l5d.header.token":
        _only(params, kind, "header")
        return header_token(prefix, _str(params, "header", "Host"))
    if kind == "io.l5d.methodAndHost":
        _only(params, kind, "httpUriInDst")
        return method_and_host(prefix, _bool(params, "httpUriInDst", False))
    if kind == "io.l5d.path":
        _only(params, kind, "segments", "consume")
        segments = params.get("segments", 1)
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
            raise ParamError("segments", f"expected a positive integer, got {segments!r}")
        return path_segments(prefix, segments, _bool(params, "consume", False))
    if kind == "io.l5d.header":
        _only(params, kind, "header")
        return header_path(prefix, _str(params, "header", "l5d-name"))
    if kind == "io.l5d.static":
        _only(params, kind, "path")
        if "path" not in params:
            raise ParamError("path", "io.l5d.static needs 'path', e.g. /hello")
        text = _str(params, "path", None)
        try:
            path = Path.read(text)
        except (DtabParseError, ValueError) as e:
            raise ParamError("path", f"invalid path {text!r}: {e}") from None
        return static(prefix, path)
    if kind == "io.l5d.ingress":
        from router.ingress import build as build_ingress

        return build_ingress(params, prefix)
    raise ParamError("kind", f"unknown identifier kind {kind!r}")


def build_identifiers(cfgs: Sequence[Any], prefix: Path) -> Identifier:
    """From the router's `identifier` entries (PluginConfig: `.kind`, `.params`), in order."""
    return composite([build_identifier(c.kind, c.params, prefix) for c in cfgs])
