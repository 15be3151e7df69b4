"""The built-in `/$/<name>/...` namers (Finagle's global namers plus Linkerd's rewriters).

`inet` binds `/$/inet/<host>/<port>[/residual]` (and `/$/inet/<port>`: localhost)
to an address: IP literals at once, host names by an asynchronous DNS lookup that
fills (and refreshes) the address Var, so binding never blocks the event loop. The `io.buoyant.*`
rewriters return Path leaves that the binder evaluates against the dtab again
(`/$/io.buoyant.http.domainToPathPfx/pfx/foo.example.com` -> `/pfx/com/example/foo`).
`fail` and `nil` are `!` and `$`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Callable

from dtab.addr import Addr, AddrBound, Address, AddrFailed, AddrNeg, AddrPending, BoundName
from dtab.bounded import LogLimiter, WeightedLRU
from dtab.globalnames import RINET, UnknownNamerError, parse_inet
from dtab.nametree import Empty, Fail, Leaf, NameTree, Neg
from dtab.observable import Activity, Failed, Var
from dtab.path import Path

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 60.0)  # clipped, at most one line per key a minute
INET_CACHE_BYTES = 4 * 1024 * 1024

DNS_REFRESH_S = 5.0
DNS_STOP_UNOBSERVED_S = 60.0

_HOST = re.compile(r"^[A-Za-z0-9.:_-]+$")
_METHOD = re.compile(r"^[A-Z]+$")
_DNS_LABEL = re.compile(r"^[a-z0-9][-a-z0-9]*[a-z0-9]?$")


def _const(tree: NameTree) -> Activity:
    return Activity.ok(tree)


# ---------------------------------------------------------------------------
# inet


class _Dns:
    """One host name's addresses, resolved off the loop and refreshed while observed."""

    def __init__(self, host: str, port: int, refresh_s: float | None) -> None:
        self.host = host
        self.port = port
        self.refresh_s = refresh_s
        self.addr: Var[Addr] = Var(AddrPending())
        self.task: asyncio.Task[None] | None = None

    def ensure_running(self) -> None:
        if self.task is not None and not self.task.done():
            return
        if self.refresh_s is None and isinstance(self.addr.value, AddrBound):
            return  # fixedinet: the first answer is kept (a failed lookup is tried again)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): resolve inline once
            self.addr.set(self._result(_getaddrinfo_sync(self.host, self.port)))
            return
        self.task = loop.create_task(self._run(), name=f"dns {self.host}:{self.port}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        unobserved_since: float | None = None
        while True:
            try:
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
                result = self._result(infos)
            except socket.gaierror as e:
                result = AddrNeg(f"DNS lookup of {self.host} failed: {e.strerror or e}")
            except OSError as e:
                result = AddrFailed(f"DNS lookup of {self.host} failed: {e}")
            if result != self.addr.value:
                # a resolution that fails is keyed by its kind, not its host: a flood of
                # unknown names (Host values) is one line a minute, not one per name
                key = (self.host, self.port) if isinstance(result, AddrBound) else type(result)
                _limited.info(("inet", key), "inet: %s:%s -> %s", self.host, self.port, result)
            self.addr.set(result)
            if self.refresh_s is None:
                return  # fixedinet: resolved once
            await asyncio.sleep(self.refresh_s)
            now = loop.time()
            if self.addr.observed:
                unobserved_since = None
            elif unobserved_since is None:
                unobserved_since = now
            elif now - unobserved_since >= DNS_STOP_UNOBSERVED_S:
                return  # nobody has followed it for a while: stop until the next lookup

    def _result(self, infos: list) -> Addr:
        # Prefer IPv4 when a name has both (e.g. localhost): backends on loopback
        # usually listen on 127.0.0.1 only, and Finagle's order is not ours to copy.
        v4 = {Address(i[4][0], self.port) for i in infos if i[0] == socket.AF_INET}
        v6 = {Address(i[4][0], self.port) for i in infos if i[0] == socket.AF_INET6}
        addrs = v4 or v6
        if not addrs:
            return AddrNeg(f"DNS lookup of {self.host} returned no addresses")
        return AddrBound(frozenset(addrs))

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _getaddrinfo_sync(host: str, port: int) -> list:
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []


class InetNamer:
    """`/$/inet/<host>/<port>[/residual]` and `/$/inet/<port>` (localhost), as Finagle binds them.

    `fixedinet` is the same with the DNS answer kept (Finagle's FixedInetResolver:
    resolved once, never refreshed); `io.buoyant.rinet` keeps its own id. The
    syntax (ids, residuals, the error for a malformed name) is dtab.globalnames'.
    """

    def __init__(self, refresh_s: float = DNS_REFRESH_S) -> None:
        self.refresh_s = refresh_s
        # keyed by names from requests: bounded by bytes, names someone follows kept
        self._dns: WeightedLRU[tuple[str, int, bool], _Dns] = WeightedLRU(
            INET_CACHE_BYTES, pinned=lambda _k, d: d.addr.observed,
            on_evict=lambda _k, d: d.cancel())
        self._literal: WeightedLRU[tuple[str, int], Var[Addr]] = WeightedLRU(
            INET_CACHE_BYTES, pinned=lambda _k, v: v.observed)

    def lookup_global(self, path: Path) -> Activity:
        """`path` is the whole `/$/<kind>/...` path of an inet-family name."""
        try:
            name = parse_inet(path)
        except UnknownNamerError as e:
            return Activity(Failed(e))
        if name is None:
            return Activity(Failed(UnknownNamerError(path)))
        return _const(Leaf(BoundName(name.id, self.addr(name.host, name.port,
                                                        fixed=name.kind == "fixedinet"),
                                     name.residual)))

    def addr(self, host: str, port: int, *, fixed: bool = False) -> Var[Addr]:
        """The address Var of host:port (shared by every name that resolves it)."""
        if _is_ip(host):
            var = self._literal.get((host, port))
            if var is None:
                var = Var(AddrBound(frozenset((Address(host, port),))))
                self._literal.put((host, port), var, 600 + 2 * len(host))
            return var
        key = (host, port, fixed)
        dns = self._dns.get(key)
        if dns is None:
            dns = _Dns(host, port, None if fixed else self.refresh_s)
            self._dns.put(key, dns, 2000 + 2 * len(host))
        dns.ensure_running()
        return dns.addr

    def close(self) -> None:
        for dns in self._dns.values():
            dns.cancel()


class _InetKind:
    """One of `/$/inet`, `/$/fixedinet`, `/$/io.buoyant.rinet` in the dispatch table."""

    def __init__(self, inet: InetNamer, kind: str) -> None:
        self.inet = inet
        self.prefix = Path.of("$", kind)

    def lookup(self, path: Path) -> Activity:
        return self.inet.lookup_global(self.prefix + path)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------
# Rewriting namers (Linkerd's io.buoyant.http.* and hostport helpers)


class RewritingNamer:
    """A namer whose answer is another path to evaluate (Neg when it does not apply)."""

    def __init__(self, name: str, rewrite: Callable[[Path], Path | None], form: str) -> None:
        self.name = name
        self._rewrite = rewrite
        self.form = form

    def lookup(self, path: Path) -> Activity:
        out = self._rewrite(path) if len(path) else None
        if out is None:
            return _const(Neg.because(f"{self.name} expects {self.form}, got {path.show}"))
        return _const(Leaf(out))


def _drop_port(host: str) -> str:
    i = host.find(":")
    return host[:i] if i > 0 else host


def _subdomain(domain: str, host: str) -> str | None:
    sfx = "." + domain
    h = _drop_port(host)
    sub = h[: -len(sfx)] if h.endswith(sfx) else None
    return sub or None


def _host_colon_port(label: str) -> tuple[str, str] | None:
    parts = label.split(":")
    if len(parts) == 2 and _DNS_LABEL.match(parts[1]) and len(parts[1]) <= 63 and parts[0]:
        return parts[0], parts[1]
    return None


def _any_method(p: Path) -> Path | None:
    return p.drop(1) if _METHOD.match(p.elems[0]) else None


def _any_method_pfx(p: Path) -> Path | None:
    if len(p) >= 2 and _METHOD.match(p.elems[1]):
        return Path.of(p.elems[0]) + p.drop(2)
    return None


def _any_host(p: Path) -> Path | None:
    return p.drop(1) if _HOST.match(p.elems[0]) else None


def _any_host_pfx(p: Path) -> Path | None:
    if len(p) >= 2 and _HOST.match(p.elems[1]):
        return Path.of(p.elems[0]) + p.drop(2)
    return None


def _subdomain_of(p: Path) -> Path | None:
    if len(p) >= 2 and _HOST.match(p.elems[0]) and _HOST.match(p.elems[1]):
        sub = _subdomain(p.elems[0], p.elems[1])
        return Path.of(sub) + p.drop(2) if sub else None
    return None


def _subdomain_of_pfx(p: Path) -> Path | None:
    if len(p) >= 3 and _HOST.match(p.elems[0]) and _HOST.match(p.elems[2]):
        sub = _subdomain(p.elems[0], p.elems[2])
        return Path.of(p.elems[1], sub) + p.drop(3) if sub else None
    return None


def _domain_labels(host: str) -> list[str] | None:
    labels = [x for x in host.split(".") if x]  # "a..b" would give empty labels
    return list(reversed(labels)) if labels else None


def _domain_to_path(p: Path) -> Path | None:
    if not _HOST.match(p.elems[0]):
        return None
    labels = _domain_labels(p.elems[0])
    return Path.of(*labels) + p.drop(1) if labels else None


def _domain_to_path_pfx(p: Path) -> Path | None:
    if len(p) < 2 or not _HOST.match(p.elems[1]):
        return None
    labels = _domain_labels(p.elems[1])
    return Path.of(p.elems[0], *labels) + p.drop(2) if labels else None


def _hostport_pfx(p: Path) -> Path | None:
    hp = _host_colon_port(p.elems[1]) if len(p) >= 2 else None
    return Path.of(p.elems[0], hp[0], hp[1]) + p.drop(2) if hp else None


def _porthost_pfx(p: Path) -> Path | None:
    hp = _host_colon_port(p.elems[1]) if len(p) >= 2 else None
    return Path.of(p.elems[0], hp[1], hp[0]) + p.drop(2) if hp else None


class _ConstNamer:
    def __init__(self, tree: NameTree) -> None:
        self._activity = Activity.ok(tree)

    def lookup(self, path: Path) -> Activity:
        return self._activity


class BuiltinNamers:
    """Dispatch for `/$/<name>/...`; one per process (DNS entries are shared)."""

    def __init__(self, dns_refresh_s: float = DNS_REFRESH_S) -> None:
        self.inet = InetNamer(dns_refresh_s)
        http = "io.buoyant.http."
        rewriters = {
            http + "anyMethod": (_any_method, "/<METHOD>/rest"),
            http + "anyMethodPfx": (_any_method_pfx, "/<pfx>/<METHOD>/rest"),
            http + "anyHost": (_any_host, "/<host>/rest"),
            http + "anyHostPfx": (_any_host_pfx, "/<pfx>/<host>/rest"),
            http + "subdomainOf": (_subdomain_of, "/<domain>/<host>/rest with host in domain"),
            http + "subdomainOfPfx": (
                _subdomain_of_pfx, "/<domain>/<pfx>/<host>/rest with host in domain"),
            http + "domainToPath": (_domain_to_path, "/<host>/rest"),
            http + "domainToPathPfx": (_domain_to_path_pfx, "/<pfx>/<host>/rest"),
            "io.buoyant.hostportPfx": (_hostport_pfx, "/<pfx>/<host>:<port>/rest"),
            "io.buoyant.porthostPfx": (_porthost_pfx, "/<pfx>/<host>:<port>/rest"),
        }
        self.namers: dict[str, object] = {
            "inet": _InetKind(self.inet, "inet"),
            "fixedinet": _InetKind(self.inet, "fixedinet"),
            RINET: _InetKind(self.inet, RINET),
            "fail": _ConstNamer(Fail),
            "nil": _ConstNamer(Empty),
        }
        for name, (fn, form) in rewriters.items():
            self.namers[name] = RewritingNamer(name, fn, form)

    def names(self) -> list[str]:
        return sorted(self.namers)

    def lookup(self, path: Path) -> Activity:
        """`path` is what follows `/$`: `/<name>/rest`.

        A name no built-in serves fails the lookup (Finagle's `Namer.global` tries
        it as a class name: ClassNotFoundException), so the delegator and the 502
        say "unknown namer" instead of a silent ~.
        """
        namer = self.namers.get(path.elems[0]) if path.elems else None
        if namer is None:
            return Activity(Failed(UnknownNamerError(Path.of("$") + path)))
        return namer.lookup(path.drop(1))  # type: ignore[attr-defined]

    def close(self) -> None:
        self.inet.close()

