"""Endpoints and EndpointSlices decoded into one compact, source-agnostic form.

A service's endpoints arrive as EndpointSlices (discovery.k8s.io/v1: several
objects per service, joined by the `kubernetes.io/service-name` label) or as
one Endpoints object (v1: `subsets`). Both are groups of endpoints that share
a port list, so both decode into `EndpointGroup`s, and a service's state is an
`EndpointSet`: its groups by name (a slice's name, or `<endpoints>#<subset>`).

Why this shape:
- memory: the raw JSON of an address is ~1-2 KB of dicts; an `EndpointRecord`
  (ip, conditions, one shared metadata mapping) and its `Address` are ~300 bytes;
- incremental updates: a watch event replaces one slice, i.e. one group; the
  other groups are the same objects, and each group caches its address sets per
  port, so resolving a 10,000-address service after a change in one slice costs
  one slice's decode plus a frozenset union in C;
- conditions (EndpointSlice `ready`/`serving`/`terminating`): ready endpoints are
  routed to; when a service has none, the serving-but-terminating ones are (what
  kube-proxy does for graceful drains, KEP-1669). Endpoints objects say only
  ready (`addresses`) or not (`notReadyAddresses`).
- `nodeName`, `zone` and topology hints (`hints.forZones`) become Address
  metadata, one shared mapping per distinct combination.
"""

from __future__ import annotations

import sys
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from dtab.addr import Address
from namers.k8s.pieces import PIECE_STEPS, _note

SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_META_CACHE: dict[tuple[Any, ...], Mapping[str, Any]] = {}
_MAX_META = 65536


def _meta(node: str | None, zone: str | None, hints: tuple[str, ...] | None,
          terminating: bool) -> Mapping[str, Any]:
    """One shared read-only mapping per distinct (node, zone, hints, terminating)."""
    key = (node, zone, hints, terminating)
    m = _META_CACHE.get(key)
    if m is None:
        d: dict[str, Any] = {}
        if node:
            d["nodeName"] = sys.intern(node)
        if zone:
            d["zone"] = sys.intern(zone)
        if hints:
            d["hints"] = {"forZones": list(hints)}
        if terminating:
            d["terminating"] = True
        m = MappingProxyType(d)
        if len(_META_CACHE) < _MAX_META:
            _META_CACHE[key] = m
    return m


class EndpointRecord:
    """One endpoint address of a group. `addr` is its last Address (for one port), which
    a later decode of the same endpoint reuses: unchanged endpoints keep the identical
    Address across updates, so set comparisons and the balancer's diff stay in C."""

    __slots__ = ("ip", "ready", "serving", "terminating", "meta", "addr")

    def __init__(self, ip: str, ready: bool, serving: bool, terminating: bool,
                 meta: Mapping[str, Any]) -> None:
        self.ip = ip
        self.ready = ready
        self.serving = serving
        self.terminating = terminating
        self.meta = meta
        self.addr: Address | None = None

    def address(self, port: int) -> Address:
        a = self.addr
        if a is None or a.port != port:
            a = self.addr = Address(self.ip, port, meta=self.meta)
        return a

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EndpointRecord) and self.ip == other.ip
                and self.ready == other.ready and self.serving == other.serving
                and self.terminating == other.terminating and self.meta == other.meta)

    def __hash__(self) -> int:
        return hash(self.ip)

    def __repr__(self) -> str:
        return (f"EndpointRecord({self.ip}, ready={self.ready}, serving={self.serving}, "
                f"terminating={self.terminating}, {dict(self.meta)})")


@dataclass(frozen=True, slots=True)
class PortAddrs:
    """A group's addresses for one port: routable now, and the drain fallback."""

    ready: frozenset[Address]
    fallback: frozenset[Address]  # serving and terminating (used only when nothing is ready)
    not_ready: int
    has_port: bool


_NO_ADDRS: frozenset[Address] = frozenset()


class EndpointGroup:
    """Endpoints sharing one port list (an EndpointSlice, or an Endpoints subset)."""

    __slots__ = ("ports", "endpoints", "_cache")

    def __init__(self, ports: tuple[tuple[str, int], ...],
                 endpoints: tuple[EndpointRecord, ...]) -> None:
        self.ports = ports  # (name, number); an unnamed port has name ""
        self.endpoints = endpoints
        self._cache: dict[int | str, PortAddrs] = {}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, EndpointGroup) and self.ports == other.ports
                and self.endpoints == other.endpoints)

    __hash__ = None  # type: ignore[assignment]

    @property
    def port_names(self) -> list[str]:
        return [n or str(p) for n, p in self.ports]

    def addrs(self, target: int | str) -> PortAddrs:
        """Addresses for a port number (used as is) or a port name (looked up here)."""
        cached = self._cache.get(target)
        if cached is not None:
            return cached
        gen = self.addrs_pieces(target, len(self.endpoints) + 1)
        try:
            while True:
                next(gen)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _number(self, target: int | str) -> int | None:
        if isinstance(target, int):
            return target
        return next((p for n, p in self.ports if n == target), None)

    def addrs_pieces(self, target: int | str, piece: int = PIECE_STEPS
                     ) -> Generator[None, None, PortAddrs]:
        """`addrs`, `piece` endpoints at a time (a 10,000-endpoint Endpoints subset)."""
        cached = self._cache.get(target)
        if cached is not None:
            return cached
        number = self._number(target)
        if number is None:
            out = PortAddrs(_NO_ADDRS, _NO_ADDRS, 0, False)
        else:
            # Sets built as we go: frozenset(set) then copies the stored hashes instead
            # of calling Address.__hash__ (Python) again for every endpoint.
            ready: set[Address] = set()
            fallback: set[Address] = set()
            not_ready = 0
            eps = self.endpoints
            for start in range(0, len(eps), piece):
                for e in eps[start:start + piece]:
                    if e.ready:
                        ready.add(e.address(number))
                    else:
                        not_ready += 1
                        if e.serving and e.terminating:
                            fallback.add(e.address(number))
                if start + piece < len(eps):
                    _note(piece, 0)
                    yield
            out = PortAddrs(frozenset(ready), frozenset(fallback), not_ready, True)
        if len(self._cache) < 16:
            self._cache[target] = out
        return out

    def warm_pieces(self, piece: int = PIECE_STEPS) -> Generator[None, None, None]:
        """Build the address sets of every port this group names (by name and number:
        the same sets), so resolving it later is a cache hit, not a long block."""
        for name, number in self.ports:
            pa = yield from self.addrs_pieces(number, piece)
            if name and len(self._cache) < 16:
                self._cache[name] = pa


class EndpointSet:
    """A service's endpoint groups by name; what an endpoints watch publishes.

    Immutable once published: an update is a new EndpointSet sharing the
    unchanged groups (and their per-port caches).
    """

    __slots__ = ("groups", "source")

    def __init__(self, groups: Mapping[str, EndpointGroup], source: str) -> None:
        self.groups = groups
        self.source = source  # "endpointslices" or "endpoints"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EndpointSet):
            return False
        if self.groups is other.groups:
            return True
        if self.groups.keys() != other.groups.keys():
            return False
        return all(g is other.groups[k] or g == other.groups[k]
                   for k, g in self.groups.items())

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return sum(len(g.endpoints) for g in self.groups.values())

    def __repr__(self) -> str:
        return f"EndpointSet({self.source}, {len(self.groups)} groups, {len(self)} endpoints)"


def _ports(raw: Any) -> tuple[tuple[str, int], ...]:
    out = []
    for p in raw or ():
        number = p.get("port")
        if isinstance(number, int):
            out.append((sys.intern(str(p.get("name") or "")), number))
    return tuple(out)


def slice_group(obj: Mapping[str, Any]) -> EndpointGroup:
    """An EndpointSlice's endpoints. Only IPv4/IPv6 slices carry IPs we can dial (FQDN
    slices are skipped by the caller). `ready` unset means ready, as the API says;
    `serving` unset follows `ready`; `terminating` unset is false."""
    recs: list[EndpointRecord] = []
    for e in obj.get("endpoints") or ():
        addrs = e.get("addresses") or ()
        if not addrs:
            continue
        cond = e.get("conditions") or {}
        ready = cond.get("ready")
        ready = True if ready is None else bool(ready)
        serving = cond.get("serving")
        serving = ready if serving is None else bool(serving)
        terminating = bool(cond.get("terminating") or False)
        hints_raw = (e.get("hints") or {}).get("forZones") or ()
        hints = tuple(sorted(str(z.get("name")) for z in hints_raw if z.get("name"))) or None
        meta = _meta(e.get("nodeName"), e.get("zone"), hints, terminating)
        # Kubernetes puts one address per endpoint today (the field is a list for later).
        recs.append(EndpointRecord(addrs[0], ready and not terminating, serving,
                                   terminating, meta))
    return EndpointGroup(_ports(obj.get("ports")), tuple(recs))


def endpoints_groups(obj: Mapping[str, Any]) -> dict[str, EndpointGroup]:
    """An Endpoints object's subsets as groups named `<name>#<index>`."""
    name = (obj.get("metadata") or {}).get("name", "")
    out: dict[str, EndpointGroup] = {}
    for i, subset in enumerate(obj.get("subsets") or ()):
        recs = [EndpointRecord(a["ip"], True, True, False, _meta(a.get("nodeName"), None,
                                                                   None, False))
                for a in subset.get("addresses") or () if a.get("ip")]
        recs += [EndpointRecord(a["ip"], False, False, False, _meta(a.get("nodeName"), None,
                                                                     None, False))
                 for a in subset.get("notReadyAddresses") or () if a.get("ip")]
        out[f"{name}#{i}"] = EndpointGroup(_ports(subset.get("ports")), tuple(recs))
    return out


def endpoints_size(obj: Mapping[str, Any]) -> int:
    """How many addresses an Endpoints object lists."""
    return sum(len(sub.get("addresses") or ()) + len(sub.get("notReadyAddresses") or ())
               for sub in obj.get("subsets") or ())


def endpoints_groups_pieces(
    obj: Mapping[str, Any], previous: Mapping[str, EndpointGroup] | None = None,
    piece: int = PIECE_STEPS,
) -> Generator[None, None, dict[str, EndpointGroup]]:
    """`endpoints_groups` for a large object, `piece` addresses at a time, its groups'
    address sets built too (`warm_pieces`). The object's address lists are emptied as
    they are read (callers drop the object after). An endpoint the previous state of this
    object had unchanged (ip, readiness, node) is that state's record, with its
    Address: a 1% change leaves 99% of the Address objects identical."""
    name = (obj.get("metadata") or {}).get("name", "")
    index: dict[str, EndpointRecord] = {}
    n = 0
    for g in (previous or {}).values():
        for e in g.endpoints:
            index[e.ip] = e
            n += 1
            if n % piece == 0:
                _note(piece, 0)
                yield
    out: dict[str, EndpointGroup] = {}
    for i, subset in enumerate(obj.get("subsets") or ()):
        recs: list[EndpointRecord] = []
        for ready, field in ((True, "addresses"), (False, "notReadyAddresses")):
            raw = subset.get(field)
            if not isinstance(raw, list):
                continue
            # Consumed as we go: the decoded dicts of a piece are freed with it (freeing
            # a 10,000-address tree at once is itself a 4 ms block here).
            while raw:
                for a in raw[:piece]:
                    ip = a.get("ip")
                    if not ip:
                        continue
                    meta = _meta(a.get("nodeName"), None, None, False)
                    old = index.get(ip)
                    if (old is not None and old.ready is ready and old.serving is ready
                            and not old.terminating and old.meta == meta):
                        recs.append(old)
                    else:
                        recs.append(EndpointRecord(ip, ready, ready, False, meta))
                del raw[:piece]
                if raw:
                    _note(piece, 0)
                    yield
        group = EndpointGroup(_ports(subset.get("ports")), tuple(recs))
        yield from group.warm_pieces(piece)
        out[f"{name}#{i}"] = group
    return out


def endpoint_set_of(obj: Mapping[str, Any]) -> EndpointSet:
    """A raw Endpoints dict as an EndpointSet (for callers that hold raw objects)."""
    return EndpointSet(endpoints_groups(obj), "endpoints")


@dataclass(frozen=True, slots=True)
class PortResolution:
    addresses: frozenset[Address]
    port_names: frozenset[str]
    not_ready: int
    draining: bool  # the addresses are serving-but-terminating ones (nothing is ready)


def resolve_port(eps: EndpointSet, target: int | str) -> PortResolution:
    """The union, over groups, of the addresses of `target`; cheap to repeat because
    each group caches its own answer."""
    ready: list[frozenset[Address]] = []
    fallback: list[frozenset[Address]] = []
    names: set[str] = set()
    not_ready = 0
    for g in eps.groups.values():
        names.update(g.port_names)
        pa = g.addrs(target)
        if not pa.has_port:
            continue
        not_ready += pa.not_ready
        if pa.ready:
            ready.append(pa.ready)
        if pa.fallback:
            fallback.append(pa.fallback)
    if ready:
        return PortResolution(_NO_ADDRS.union(*ready), frozenset(names), not_ready, False)
    if fallback:
        return PortResolution(_NO_ADDRS.union(*fallback), frozenset(names), not_ready, True)
    return PortResolution(_NO_ADDRS, frozenset(names), not_ready, False)
