"""The syntax of Finagle's global `/$/` names, shared by the router and `python -m dtab`.

Pure (no I/O): which `/$/<name>` exist, how `/$/inet`, `/$/fixedinet` and
`/$/io.buoyant.rinet` split into a bound id, host, port and residual, and the
error for a `/$/` path nothing serves. Finagle's `Namer.global`
(finagle-core/src/main/scala/com/twitter/finagle/Namer.scala) matches
`/$/inet/<host>/<port>/rest...` first, then `/$/inet/<port>/rest...` (no host:
localhost); anything else under `/$/<kind>` is looked up as a class, so a
malformed `/$/inet/host` or an unknown `/$/foo` fails the lookup with a
ClassNotFoundException instead of resolving to nothing (~). Linkerd's `rinet`
(namer/core/src/main/scala/io/buoyant/rinet.scala) keeps its own id,
`/$/io.buoyant.rinet/<port>/<host>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtab.path import Path

LOCALHOST = "127.0.0.1"

INET_KINDS = ("inet", "fixedinet")
RINET = "io.buoyant.rinet"

#: Every `/$/<name>` l5d-py serves (the inet family, fail/nil and Linkerd's rewriters).
GLOBAL_NAMERS = frozenset({
    "inet", "fixedinet", RINET, "fail", "nil",
    "io.buoyant.http.anyMethod", "io.buoyant.http.anyMethodPfx",
    "io.buoyant.http.anyHost", "io.buoyant.http.anyHostPfx",
    "io.buoyant.http.subdomainOf", "io.buoyant.http.subdomainOfPfx",
    "io.buoyant.http.domainToPath", "io.buoyant.http.domainToPathPfx",
    "io.buoyant.hostportPfx", "io.buoyant.porthostPfx",
})


class UnknownNamerError(LookupError):
    """`/$/<kind>/...` that no global namer serves (Finagle: ClassNotFoundException)."""

    def __init__(self, path: Path, detail: str = "") -> None:
        kind = path.elems[1] if len(path) > 1 else ""
        msg = f"unknown namer {kind!r} for {path.show} (ClassNotFoundException: {kind})"
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.path = path


@dataclass(frozen=True, slots=True)
class InetName:
    """A parsed `/$/inet`-family name: `id` is the bound id, `residual` the rest."""

    kind: str
    host: str
    port: int
    id: Path
    residual: Path


def _port(text: str) -> int | None:
    # Finagle's IntegerString is `s.toInt`: digits with an optional sign.
    body = text[1:] if text[:1] in "+-" else text
    return int(text) if body.isdigit() else None


def _checked(kind: str, host: str, port: int, id_: Path, residual: Path, path: Path) -> InetName:
    if not 0 < port < 65536:
        raise UnknownNamerError(path, f"port {port} out of range")
    return InetName(kind, host, port, id_, residual)


def parse_inet(path: Path) -> InetName | None:
    """`path` is the whole `/$/...` path; None when it is not an inet-family name.

    Raises UnknownNamerError for `/$/inet`, `/$/inet/<host>` (no port) and
    the like, as Finagle does.
    """
    e = path.elems
    if len(e) < 2 or e[0] != "$":
        return None
    kind = e[1]
    if kind in INET_KINDS:
        if len(e) >= 4 and (port := _port(e[3])) is not None:
            return _checked(kind, e[2], port, path.take(4), path.drop(4), path)
        if len(e) >= 3 and (port := _port(e[2])) is not None:
            return _checked(kind, LOCALHOST, port, path.take(3), path.drop(3), path)
        raise UnknownNamerError(path, f"/$/{kind} needs /<host>/<port> or /<port>")
    if kind == RINET:
        if len(e) >= 4 and (port := _port(e[2])) is not None:
            return _checked(kind, e[3], port, path.take(4), path.drop(4), path)
        raise UnknownNamerError(path, f"/$/{RINET} needs /<port>/<host>")
    return None


def check_global(path: Path) -> None:
    """Raise UnknownNamerError when `path` (`/$/...`) names no global namer."""
    if len(path) < 2 or path.elems[1] not in GLOBAL_NAMERS:
        raise UnknownNamerError(path)
