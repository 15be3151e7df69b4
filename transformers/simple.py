"""The small transformers (`io.l5d.port`, `.replace`, `.const`, `.specificHost`, `.localhost`)
and `AddrTransformer`, the machinery every address-rewriting transformer shares.

A transformer runs on every re-bind, so `AddrTransformer` keeps one derived
`Var` per original bound id (reused while the original's Var is the same
object) instead of subscribing anew each time, and closes derived Vars that
nobody has observed for `idle_ttl` seconds. The transformed name's id is
`/%` + prefix + the original id (reference §1.6), which is also the client id
metrics and static client configs see.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dtab.addr import AddrBound, Address, AddrNeg, BoundName, bound
from dtab.bounded import LogLimiter
from dtab.errors import ParamError
from dtab.globalnames import UnknownNamerError, parse_inet
from dtab.nametree import Leaf, NameTree, NegTree
from dtab.observable import DerivedVar, Var
from dtab.path import Path

log = logging.getLogger("l5d.transformers")
_limited = LogLimiter(log, 60.0)  # clipped, at most one line per key a minute

DEFAULT_IDLE_TTL = 60.0


@dataclass
class _Derived:
    source: Var[Any]
    var: DerivedVar[Any]
    names: dict[Path, BoundName]
    last_used: float


class AddrTransformer:
    """Rewrites the addresses of every bound leaf; subclasses give `rewrite` (and `sources`)."""

    kind = ""

    def __init__(self, prefix: Path, idle_ttl: float = DEFAULT_IDLE_TTL) -> None:
        self.prefix = prefix
        self.idle_ttl = idle_ttl
        self._derived: dict[Path, _Derived] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None

    # -- what subclasses provide ----------------------------------------------------

    def sources(self) -> tuple[Var[Any], ...]:
        """Other Vars the rewrite depends on (e.g. the daemonset's endpoints)."""
        return ()

    def rewrite(self, addr: Any, *extra: Any) -> Any:
        raise NotImplementedError

    # -- the shared part --------------------------------------------------------------

    def transform(self, tree: NameTree[BoundName]) -> NameTree[BoundName]:
        out = tree.map(self._leaf)
        self._schedule_sweep()
        return out

    def _leaf(self, name: Any) -> Any:
        if not isinstance(name, BoundName):
            return name
        now = time.monotonic()
        d = self._derived.get(name.id)
        if d is not None and d.source is not name.addr:
            d.var.close()  # the namer made a new Var for this id: follow the new one
            d = None
        if d is None:
            extra = self.sources()
            var = Var.combine((name.addr, *extra), lambda vs: self._rewrite_logged(name.id, vs))
            d = self._derived[name.id] = _Derived(name.addr, var, {}, now)
        d.last_used = now
        out = d.names.get(name.residual)
        if out is None:
            new_id = Path.of("%", *self.prefix.elems, *name.id.elems)
            out = d.names[name.residual] = BoundName(new_id, d.var, name.residual)
        return out

    def _rewrite_logged(self, id_: Path, values: list[Any]) -> Any:
        try:
            return self.rewrite(*values)
        except Exception as e:  # a bug must not take routing down silently
            _limited.exception((self.kind, "rewrite"), "%s: rewriting the addresses of %s "
                               "failed", self.kind, id_.show)
            return AddrNeg(f"{self.kind}: {type(e).__name__}: {e}")

    def _schedule_sweep(self) -> None:
        if self._sweep_timer is not None or not self._derived:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sweep_timer = loop.call_later(max(0.05, self.idle_ttl / 2), self._sweep_tick)

    def _sweep_tick(self) -> None:
        self._sweep_timer = None
        self.sweep()
        self._schedule_sweep()

    def sweep(self) -> None:
        """Close derived Vars nobody observes and no re-bind has returned for `idle_ttl`."""
        now = time.monotonic()
        for id_, d in list(self._derived.items()):
            if d.var.observed:
                d.last_used = now
            elif now - d.last_used >= self.idle_ttl:
                d.var.close()
                del self._derived[id_]

    @property
    def live(self) -> int:
        """How many derived Vars are open (for tests and the admin state page)."""
        return len(self._derived)

    def close(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        for d in self._derived.values():
            d.var.close()
        self._derived.clear()


def _map_bound(addr: Any, f: Callable[[Address], Address | None]) -> Any:
    """Apply `f` to each address of a Bound addr (None drops it); others pass through."""
    if not isinstance(addr, AddrBound):
        return addr
    out = {b for a in addr.addresses if (b := f(a)) is not None}
    return AddrBound(frozenset(out), addr.meta)


class PortTransformer(AddrTransformer):
    """`io.l5d.port`: every address gets `port` (e.g. a sidecar's port)."""

    kind = "io.l5d.port"

    def __init__(self, port: int, prefix: Path | None = None) -> None:
        super().__init__(prefix or Path.of(self.kind, str(port)))
        self.port = port

    def rewrite(self, addr: Any, *extra: Any) -> Any:
        return _map_bound(addr, lambda a: a.with_endpoint(a.host, self.port))


class HostFilter(AddrTransformer):
    """`io.l5d.specificHost` / `io.l5d.localhost`: keep addresses whose IP is `ip`."""

    def __init__(self, kind: str, ip: str, prefix: Path) -> None:
        self.kind = kind
        super().__init__(prefix)
        self.ip = ip

    def rewrite(self, addr: Any, *extra: Any) -> Any:
        out = _map_bound(addr, lambda a: a if a.host == self.ip else None)
        if isinstance(out, AddrBound) and not out.addresses and addr.addresses:
            return AddrNeg(f"{self.kind}: none of the addresses is on {self.ip}")
        return out


class TreeReplace:
    """`io.l5d.replace` (bound leaves become `path`; Neg stays) and `io.l5d.const` (always `path`).

    The replacement is bound once, with the global `/$/inet` namer semantics
    (Linkerd binds it with the global namers); its id is `/%` + prefix + path.
    """

    def __init__(self, kind: str, replacement: BoundName, prefix: Path, always: bool) -> None:
        self.kind = kind
        self.prefix = prefix
        self.replacement = replacement
        self.always = always

    def transform(self, tree: NameTree[BoundName]) -> NameTree[BoundName]:
        if self.always:
            return Leaf(self.replacement)
        if isinstance(tree, NegTree):
            return tree
        return tree.map(lambda _: self.replacement)

    def close(self) -> None:
        return None


# -- builders -----------------------------------------------------------------------------


def check_keys(kind: str, params: dict[str, Any], known: set[str]) -> None:
    allowed = known | {"kind", "prefix"}
    for key in params:
        if key not in allowed:
            raise ParamError(key, f"unknown parameter for {kind}; known: "
                             + ", ".join(sorted(allowed - {"kind"})))


def required(params: dict[str, Any], key: str, kind: str) -> Any:
    if params.get(key) is None:
        raise ParamError(key, f"{kind} requires '{key}'")
    return params[key]


def port_param(params: dict[str, Any], key: str, *, default: int | None = None) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ParamError(key, f"expected a port number (1-65535), got {value!r}")
    return value


def prefix_param(params: dict[str, Any], default: Path) -> Path:
    value = params.get("prefix")
    if value is None:
        return default
    if not isinstance(value, str) or not value.startswith("/"):
        raise ParamError("prefix", f"expected a path such as {default.show}, got {value!r}")
    try:
        return Path.read(value)
    except ValueError as e:
        raise ParamError("prefix", str(e)) from None


def resolve_ip(host: str, key: str) -> str:
    """An IP literal as is; a host name resolved once, now (at config load)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(host)
    except OSError as e:
        raise ParamError(key, f"cannot resolve host {host!r}: {e}") from None


def static_bound(path_text: Any, key: str, prefix: Path) -> BoundName:
    """Bind a global inet-family path (`/$/inet/<host>/<port>`, `/$/inet/<port>`,
    `/$/fixedinet/...`, `/$/io.buoyant.rinet/<port>/<host>`, with a residual) now.

    The id is Linkerd's `prefix ++ path`: `/%/io.l5d.const/$/inet/127.1/8080`
    (namer/core/src/main/scala/io/buoyant/namer/ConstTransformer.scala), so the
    client, its metrics and the delegator name the transformer that chose it.
    """
    if not isinstance(path_text, str):
        raise ParamError(key, f"expected a path such as /$/inet/127.0.0.1/8080, got {path_text!r}")
    try:
        path = Path.read(path_text)
    except ValueError as e:
        raise ParamError(key, str(e)) from None
    try:
        name = parse_inet(path)
    except UnknownNamerError as e:
        raise ParamError(key, str(e)) from None
    if name is None:
        raise ParamError(
            key,
            f"{path.show}: only /$/inet, /$/fixedinet and /$/io.buoyant.rinet names "
            "can be bound here (the global namers)",
        )
    ip = resolve_ip(name.host, key)
    id_ = Path.of("%", *prefix.elems, *path.elems)
    return BoundName(id_, Var(bound(Address(ip, name.port))), name.residual)


def build_port(params: dict[str, Any]) -> PortTransformer:
    check_keys("io.l5d.port", params, {"port"})
    required(params, "port", "io.l5d.port")
    port = port_param(params, "port")
    assert port is not None
    return PortTransformer(port, prefix_param(params, Path.of("io.l5d.port", str(port))))


def build_specific_host(params: dict[str, Any]) -> HostFilter:
    kind = "io.l5d.specificHost"
    check_keys(kind, params, {"host"})
    host = required(params, "host", kind)
    if not isinstance(host, str) or not host:
        raise ParamError("host", f"expected a host name or IP, got {host!r}")
    # Linkerd's defaultPrefix is /io.l5d.specificHost, without the host
    # (interpreter/per-host/.../SpecificHostTransformerInitializer.scala).
    return HostFilter(kind, resolve_ip(host, "host"), prefix_param(params, Path.of(kind)))


def build_localhost(params: dict[str, Any]) -> HostFilter:
    kind = "io.l5d.localhost"
    check_keys(kind, params, set())
    ip = resolve_ip(socket.gethostname(), "kind")
    return HostFilter(kind, ip, prefix_param(params, Path.of(kind)))


def build_replace(params: dict[str, Any]) -> TreeReplace:
    kind = "io.l5d.replace"
    check_keys(kind, params, {"path"})
    prefix = prefix_param(params, Path.of(kind))
    rep = static_bound(required(params, "path", kind), "path", prefix)
    return TreeReplace(kind, rep, prefix, always=False)


def build_const(params: dict[str, Any]) -> TreeReplace:
    kind = "io.l5d.const"
    check_keys(kind, params, {"path"})
    prefix = prefix_param(params, Path.of(kind))
    rep = static_bound(required(params, "path", kind), "path", prefix)
    return TreeReplace(kind, rep, prefix, always=True)
