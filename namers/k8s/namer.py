"""`io.l5d.k8s`: a service's endpoints as names (Linkerd's EndpointsNamer, in asyncio).

`/#/io.l5d.k8s/<namespace>/<port name or number>/<service>[/<label value>]/residual`.
The first three (four with `labelSelector`) segments are lowercased, as in
Linkerd. Endpoints come from EndpointSlices (discovery.k8s.io/v1, the slices of
a service merged) or, on clusters without them or with `endpointSource:
endpoints`, from the Endpoints object (see endpoints.py for the decoding and
the ready/serving/terminating rules). Each Address carries the pod's
`nodeName` (and `zone`, topology hints) so the daemonset transformer can find
the router on that node.

A port name is looked up among the endpoints' port names. A port number is
first mapped through the Service (`port` -> `targetPort`, which may itself be
a name); a number no Service port claims is used as is.

Each way of not resolving is a Neg with a reason people can read in the
delegator and the 502 text: the service does not exist, it has no port of
that name, it has no ready endpoints. While the API server is unreachable the
last known answer stays (see watch.py); names nobody observes any more are
dropped after `idleTtlSecs`, which releases their watches.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from dtab.addr import (
    ADDR_PENDING,
    Addr,
    AddrBound,
    AddrNeg,
    BoundName,
)
from dtab.bounded import WeightedLRU, clip
from dtab.errors import ParamError
from dtab.nametree import Leaf, Neg
from dtab.observable import PENDING, Activity, ActivityState, Ok, Unsubscribe, Var
from dtab.path import Path
from namers.k8s.api import ApiTarget
from namers.k8s.endpoints import EndpointSet, endpoint_set_of, resolve_port
from namers.k8s.watch import (
    SOURCES,
    Absent,
    EndpointsLease,
    ObjState,
    Present,
    WatchHub,
    WatchKey,
    WatchLease,
    close_shared_hubs,
    shared_hub,
)

log = logging.getLogger("l5d.k8s")

KIND = "io.l5d.k8s"
DEFAULT_IDLE_TTL = 600.0

# Kubernetes' DNS-1123 label (namespaces, service names) and port names. A
# name that cannot exist is Neg at once: no watch, no API call. This matters
# behind an ingress, where every Host value ("www.hello.world") is tried as
# a service name before the dtab falls back to the domain rules.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?")


@dataclass(frozen=True, slots=True)
class Resolved:
    """What one (ns, port, svc[, label]) resolves to right now."""

    addr: Addr
    neg_reason: str | None  # set: the tree is Neg with this reason


def resolve_endpoints(
    endpoints: ObjState,
    service: ObjState | None,
    port: str,
    where: str,
) -> Resolved | None:
    """The addresses of `port` in a service's endpoints (None while not yet known).

    `endpoints` is an endpoints channel's state: an `EndpointSet` (from EndpointSlices
    or Endpoints), or a raw Endpoints dict. `where` names the service for reasons, e.g.
    `default/hello`. `service` is the Service's state, consulted for numbered ports only.
    Cheap to repeat after an update: each endpoint group caches its answer per port.
    """
    if not isinstance(endpoints, Present | Absent):
        return None
    if isinstance(endpoints, Absent):
        reason = f"k8s service {where} not found (no endpoints)"
        return Resolved(AddrNeg(reason), reason)
    eps = endpoints.obj
    if not isinstance(eps, EndpointSet):
        eps = endpoint_set_of(eps)
    target: int | str
    if port.isdigit():
        if service is not None and not isinstance(service, Present | Absent):
            return None
        target = _target_port(service, int(port))
    else:
        target = port
    res = resolve_port(eps, target)
    if isinstance(target, str) and target not in res.port_names and eps.groups:
        known = ", ".join(sorted(res.port_names)) or "none"
        reason = f"k8s service {where} has no port named '{target}' (ports: {known})"
        return Resolved(AddrNeg(reason), reason)
    if not res.addresses:
        extra = f" ({res.not_ready} not ready)" if res.not_ready else ""
        reason = f"k8s service {where} has no ready endpoints for port {port}{extra}"
        return Resolved(AddrNeg(reason), reason)
    return Resolved(AddrBound(res.addresses), None)


def _target_port(service: ObjState | None, number: int) -> int | str:
    if isinstance(service, Present):
        for p in (service.obj.get("spec") or {}).get("ports") or []:
            if p.get("port") == number:
                tp = p.get("targetPort", number)
                return int(tp) if isinstance(tp, int) or str(tp).isdigit() else str(tp)
    return number


def _set(var: Var[Any], value: Any) -> None:
    """`var.set`, but also refresh a Neg's reason when only the reason changed.

    Negs are equal whatever their reason, so `set` would keep the stale text
    ("not found" after the service was deleted, when it used to say "no ready
    endpoints"); nothing observable changed, so observers are not called.
    """
    old = var.value
    if value is old:
        return
    if isinstance(value, AddrBound) or (isinstance(value, Ok) and isinstance(value.value, Leaf)):
        var.set(value)  # no reason to refresh; and a repr of 10,000 addresses is not free
    elif value == old and repr(value) != repr(old):
        var._value = value
    else:
        var.set(value)


class _Entry:
    """The shared state of one bound id: watches, the addr Var, Activities per residual.

    `watch_keys` and `resolve` say what is watched and how it becomes an Addr; the
    io.l5d.k8s.external namer overrides them (namers/k8s/external.py). A key of kind
    `endpoints` means "this service's endpoints": EndpointSlices or Endpoints, as the
    namer's `endpointSource` says (`WatchHub.acquire_endpoints`)."""

    def __init__(
        self,
        namer: K8sNamer,
        id_: Path,
        ns: str,
        port: str,
        svc: str,
        label: str | None,
    ) -> None:
        self.id = id_
        self.where = f"{ns}/{svc}" + (f" with {namer.label_selector}={label}" if label else "")
        self.port = port
        selector = f"{namer.label_selector}={label}" if label is not None else None
        hub = namer.hub
        source = namer.endpoint_source
        self.leases: list[WatchLease | EndpointsLease] = [
            hub.acquire_endpoints(k.namespace, k.name, k.label_selector, source)
            if k.kind == "endpoints" else hub.acquire(k)
            for k in self.watch_keys(ns, port, svc, selector)]
        self.addr: Var[Addr] = Var(ADDR_PENDING)
        self.resolved: Resolved | None = None
        self.activities: dict[Path, Activity] = {}
        self.names: dict[Path, BoundName] = {}
        self.last_used = time.monotonic()
        self._unsubs: list[Unsubscribe] = [
            lease.state.observe(self._changed) for lease in self.leases
        ]
        self._changed(None)

    def watch_keys(self, ns: str, port: str, svc: str, selector: str | None) -> list[WatchKey]:
        keys = [WatchKey("endpoints", ns, svc, selector)]
        if port.isdigit():
            keys.append(WatchKey("services", ns, svc))
        return keys

    def resolve(self) -> Resolved | None:
        eps = self.leases[0].state.value
        svc = self.leases[1].state.value if len(self.leases) > 1 else None
        return resolve_endpoints(eps, svc, self.port, self.where)

    def _changed(self, _: object) -> None:
        resolved = self.resolve()
        if resolved is None:
            return  # not known yet, or (after an outage) keep the last answer
        _set(self.addr, resolved.addr)
        for residual, act in self.activities.items():
            _set(act, self._tree(resolved, residual))
        self.resolved = resolved

    def _tree(self, resolved: Resolved, residual: Path) -> ActivityState:
        if resolved.neg_reason is not None:
            return Ok(Neg.because(resolved.neg_reason))
        name = self.names.get(residual)
        if name is None:
            name = self.names[residual] = BoundName(self.id, self.addr, residual)
        return Ok(Leaf(name))

    def activity(self, residual: Path) -> Activity:
        self.last_used = time.monotonic()
        act = self.activities.get(residual)
        if act is None:
            resolved = self.resolved
            act = Activity(PENDING if resolved is None else self._tree(resolved, residual))
            self.activities[residual] = act
        return act

    @property
    def in_use(self) -> bool:
        return self.addr.observed or any(a.observed for a in self.activities.values())

    def close(self) -> None:
        for unsub in self._unsubs:
            unsub()
        self._unsubs = []
        for lease in self.leases:
            lease.release()


MAX_ENTRIES = 2000  # names (watches) not observed by any binding beyond this are released
MAX_ENTRY_BYTES = 16 * 1024 * 1024


def _invalid(ns: str, port: str, svc: str) -> str | None:
    """Why these cannot name a Kubernetes service port, or None when they can."""
    if len(ns) > 63 or not _DNS_LABEL.fullmatch(ns):
        return f"'{clip(ns, 80)}' is not a valid Kubernetes namespace"
    if len(svc) > 63 or not _DNS_LABEL.fullmatch(svc):
        return f"'{clip(svc, 80)}' is not a valid Kubernetes service name"
    if port.isdigit():
        if not 0 < int(port) < 65536:
            return f"'{port}' is not a valid port number"
    elif not _PORT_NAME.fullmatch(port):
        return f"'{clip(port, 80)}' is not a valid Kubernetes port name"
    return None


class K8sNamer:
    """The `io.l5d.k8s` namer. `lookup` is cheap to repeat: entries are cached per id.

    Two hooks for its siblings (namers/k8s/ns.py, external.py): `namespace` fixes the
    namespace (`io.l5d.k8s.ns`: paths start at the port), and a subclass may set `kind`
    and `entry_type` (what one id resolves from: endpoints here, a Service's load
    balancer for `io.l5d.k8s.external`); caching, bounds and idle release stay here.
    """

    kind = KIND
    entry_type: Any = _Entry

    def __init__(
        self,
        target: ApiTarget,
        *,
        prefix: Path | None = None,
        label_selector: str | None = None,
        idle_ttl: float = DEFAULT_IDLE_TTL,
        hub: WatchHub | None = None,
        endpoint_source: str = "auto",
        namespace: str | None = None,
    ) -> None:
        self.target = target
        self.endpoint_source = endpoint_source
        self.namespace = namespace
        self.prefix = prefix if prefix is not None else Path.of(self.kind)
        self.label_selector = label_selector
        self.idle_ttl = idle_ttl
        self._hub = hub
        self._owns_hub = False
        # Names come from requests and each entry is a watch on the API server: bounded in
        # number and bytes; entries someone observes are never evicted.
        self._entries: WeightedLRU[tuple[str, str, str, str | None], _Entry] = WeightedLRU(
            MAX_ENTRY_BYTES, max_entries=MAX_ENTRIES, pinned=lambda _k, e: e.in_use,
            on_evict=lambda _k, e: e.close())
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def hub(self) -> WatchHub:
        if self._hub is None:
            self._hub = shared_hub(self.target)
            self._owns_hub = True
        return self._hub

    @property
    def segments(self) -> int:
        return (4 if self.label_selector else 3) - (self.namespace is not None)

    def lookup(self, path: Path) -> Activity:
        n = self.segments
        if len(path) < n:
            form = ("" if self.namespace else "<namespace>/") + "<port>/<service>" + (
                "/<label value>" if self.label_selector else "")
            reason = f"{self.kind} needs /{form}, got {path.show}"
            return Activity.ok(Neg.because(reason))
        elems = [e.lower() for e in path.elems[:n]]
        full = elems if self.namespace is None else [self.namespace, *elems]
        ns, port, svc = full[:3]
        label = full[3] if self.label_selector else None
        invalid = _invalid(ns, port, svc)
        if invalid is not None:
            return Activity.ok(Neg.because(f"{self.kind}: {invalid}"))
        key = (ns, port, svc, label)
        entry = self._entries.get(key)
        if entry is None:
            id_ = Path.of("#", *self.prefix.elems, *elems)
            entry = self.entry_type(self, id_, ns, port, svc, label)
            self._entries.put(key, entry, 4096 + 4 * len(id_.show))
            self._ensure_sweeper()
        return entry.activity(path.drop(n))

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_forever(), name=f"{self.kind} idle sweeper"
            )

    async def _sweep_forever(self) -> None:
        interval = max(0.05, min(self.idle_ttl / 4, 30.0))
        while self._entries:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self) -> None:
        """Drop entries nobody has observed for `idle_ttl` (their watches are released)."""
        now = time.monotonic()
        for key, entry in list(self._entries.items()):
            if entry.in_use:
                entry.last_used = now
            elif now - entry.last_used >= self.idle_ttl:
                log.info("%s: %s idle for %.0fs; releasing", self.kind, entry.id.show,
                         self.idle_ttl)
                self._entries.pop(key)
                entry.close()

    def bound_names(self) -> list[str]:
        """Ids this namer resolves now (for /bound-names.json; it is an enumerating namer)."""
        return sorted(e.id.show for e in self._entries.values())

    def state_json(self) -> dict[str, Any]:
        """What /namer_state/io.l5d.k8s.json shows: each id and its addresses, with
        `error`/`errorAt` while a watch is failing (the addresses are the last known)."""
        out: dict[str, Any] = {}
        for e in self._entries.values():
            j = e.addr.value.to_json()
            failing = [err for lease in e.leases if (err := lease.last_error) is not None]
            if failing:
                j = {**j, "error": failing[0][0], "errorAt": failing[0][1]}
            out[e.id.show] = j
        return out

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        self._entries.clear()  # closes each entry
        if self._owns_hub:
            # Process shutdown: stop every watch of this API server, the
            # transformers' too, so no task outlives the loop.
            await close_shared_hubs()


def _int_param(params: dict[str, Any], key: str, default: int | None) -> int | None:
    value = params.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ParamError(key, f"expected a port number (1-65535), got {value!r}")
    return value


def target_from_params(
    params: dict[str, Any], host_key: str = "host", port_key: str = "port"
) -> ApiTarget:
    """host/port (kubectl proxy), kubeconfig, or neither (in-cluster)."""
    host = params.get(host_key)
    if host is not None and (not isinstance(host, str) or not host):
        raise ParamError(host_key, f"expected a host name, got {host!r}")
    port = _int_param(params, port_key, None)
    kubeconfig = params.get("kubeconfig")
    if kubeconfig is not None and (not isinstance(kubeconfig, str) or not kubeconfig):
        raise ParamError("kubeconfig", f"expected a file path, got {kubeconfig!r}")
    return ApiTarget(host=host, port=port, kubeconfig=kubeconfig)


KNOWN_PARAMS = {"kind", "prefix", "experimental", "transformers", "host", "port",
                "labelSelector", "kubeconfig", "idleTtlSecs", "endpointSource"}


def source_param(params: dict[str, Any], key: str = "endpointSource") -> str:
    """`endpointSource`: auto (API discovery: EndpointSlices when served), endpointSlices,
    or endpoints (old clusters)."""
    value = params.get(key, "auto")
    by_lower = {s.lower(): s for s in SOURCES}
    if not isinstance(value, str) or value.lower() not in by_lower:
        raise ParamError(key, f"expected auto, endpointSlices or endpoints, got {value!r}")
    return by_lower[value.lower()]


def build(params: dict[str, Any], *, cls: type[K8sNamer] = K8sNamer,
          extra: frozenset[str] = frozenset(), **kwargs: Any) -> K8sNamer:
    """The registry's builder for `kind: io.l5d.k8s`; its siblings pass their class, the
    names of the params they read themselves (`extra`) and the constructor's extra kwargs."""
    known = KNOWN_PARAMS | extra
    for key in params:
        if key not in known:
            raise ParamError(key, f"unknown parameter for {cls.kind}; known: "
                             + ", ".join(sorted(known - {"kind"})))
    label = params.get("labelSelector")
    if label is not None and (not isinstance(label, str) or not label or "=" in label):
        raise ParamError("labelSelector", f"expected a label name such as 'version', got {label!r}")
    idle = params.get("idleTtlSecs", DEFAULT_IDLE_TTL)
    if isinstance(idle, bool) or not isinstance(idle, int | float) or idle <= 0:
        raise ParamError("idleTtlSecs", f"expected a positive number of seconds, got {idle!r}")
    prefix_param = params.get("prefix")
    prefix = None
    if prefix_param is not None:
        if not isinstance(prefix_param, str) or not prefix_param.startswith("/"):
            raise ParamError("prefix", f"expected a path such as /{cls.kind}, "
                             f"got {prefix_param!r}")
        prefix = Path.read(prefix_param)
    return cls(
        target_from_params(params),
        prefix=prefix,
        label_selector=label,
        idle_ttl=float(idle),
        endpoint_source=source_param(params),
        **kwargs,
    )
