"""Load balancers over a client's endpoints, following `BoundName.addr` as it changes.

Three kinds, as Linkerd names them (reference §1.7):
- `p2c` (default): power of two choices, least loaded (in-flight requests / weight);
- `roundRobin`: each endpoint in turn;
- `ewma`: p2c on peak-EWMA cost (latency estimate x (in-flight + 1)), decayed over `decayTimeMs`.

Endpoints whose last connection attempt failed are `down` and avoided while any
other endpoint is up (they are retried once everything is down). The balancer
keeps the last good endpoint set while the address is Pending.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from dtab.addr import Addr, AddrBound, Address, AddrPending
from dtab.observable import Var
from router.client.pool import Endpoint

# Finagle's PeakEwma penalty for an endpoint with no latency sample yet but work in flight.
_PENALTY = float(2**47)


class Balancer:
    """Base: endpoint set maintenance; subclasses pick."""

    kind = "base"

    def __init__(self, addr: Var[Addr], *, max_effort: int = 5,
                 rng: random.Random | None = None) -> None:
        self.max_effort = max_effort
        self.rng = rng or random.Random()
        self.endpoints: list[Endpoint] = []
        self._by_addr: dict[tuple[str, int], Endpoint] = {}
        self.on_new_endpoint: Callable[[Endpoint], None] | None = None
        self._addr = addr
        self._unsubscribe = addr.observe(self._update)
        self._update(addr.value)

    def follow(self, addr: Var[Addr]) -> None:
        """Switch to a new address Var (the binding was rebuilt for the same id)."""
        if addr is self._addr:
            return
        self._unsubscribe()
        self._addr = addr
        self._unsubscribe = addr.observe(self._update)
        self._update(addr.value)

    def _update(self, addr: Addr) -> None:
        if isinstance(addr, AddrPending):
            return
        addresses: frozenset[Address] = (
            addr.addresses if isinstance(addr, AddrBound) else frozenset()
        )
        new: dict[tuple[str, int], Endpoint] = {}
        for a in addresses:
            key = (a.host, a.port)
            ep = self._by_addr.get(key)
            if ep is None or ep.weight != (a.weight if a.weight > 0 else 1.0):
                if ep is not None:
                    ep.close()
                ep = Endpoint(a)
                if self.on_new_endpoint is not None:
                    self.on_new_endpoint(ep)
            new[key] = ep
        for key, ep in self._by_addr.items():
            if new.get(key) is not ep:
                ep.close()
        self._by_addr = new
        self.endpoints = sorted(new.values(), key=lambda e: (e.host, e.port))
        self.changed()

    def changed(self) -> None:
        """Hook for subclasses when the endpoint list is replaced."""

    @property
    def size(self) -> int:
        return len(self.endpoints)

    @property
    def available(self) -> int:
        return sum(1 for e in self.endpoints if not e.down)

    def pick(self) -> Endpoint | None:
        raise NotImplementedError

    # Load accounting, called by the proxy around each request.
    def started(self, ep: Endpoint) -> None:
        ep.pending += 1

    def finished(self, ep: Endpoint, latency_ms: float) -> None:
        ep.pending -= 1

    def close(self) -> None:
        self._unsubscribe()
        for ep in self.endpoints:
            ep.close()
        self.endpoints = []
        self._by_addr = {}


class P2CLeastLoaded(Balancer):
    kind = "p2c"

    def load(self, ep: Endpoint) -> float:
        return ep.pending / ep.weight

    def pick(self) -> Endpoint | None:
        eps = self.endpoints
        n = len(eps)
        if n == 0:
            return None
        if n == 1:
            return eps[0]
        rng = self.rng
        for _ in range(self.max_effort):
            i = rng.randrange(n)
            j = rng.randrange(n - 1)
            if j >= i:
                j += 1
            a, b = eps[i], eps[j]
            if a.down and b.down:
                continue
            if a.down:
                return b
            if b.down:
                return a
            return a if self.load(a) <= self.load(b) else b
        up = [e for e in eps if not e.down]
        if up:
            return min(up, key=self.load)
        return eps[rng.randrange(n)]


class RoundRobin(Balancer):
    kind = "roundRobin"

    def __init__(self, addr: Var[Addr], **kw) -> None:  # noqa: ANN003
        self._next = 0
        super().__init__(addr, **kw)

    def pick(self) -> Endpoint | None:
        eps = self.endpoints
        n = len(eps)
        if n == 0:
            return None
        for _ in range(n):
            ep = eps[self._next % n]
            self._next = (self._next + 1) % n
            if not ep.down:
                return ep
        ep = eps[self._next % n]
        self._next = (self._next + 1) % n
        return ep


class PeakEwma(P2CLeastLoaded):
    """Finagle's PeakEwma: cost jumps up to a slow sample at once and decays down slowly."""

    kind = "ewma"

    def __init__(self, addr: Var[Addr], *, decay_time_ms: float = 10_000.0, **kw) -> None:  # noqa: ANN003
        self.decay_s = max(decay_time_ms, 1.0) / 1000.0
        super().__init__(addr, **kw)

    def _decayed(self, ep: Endpoint, now: float) -> float:
        elapsed = max(now - ep.stamp, 0.0)
        return ep.cost * math.exp(-elapsed / self.decay_s)

    def load(self, ep: Endpoint) -> float:
        cost = self._decayed(ep, time.monotonic())
        if cost == 0.0 and ep.pending:
            return _PENALTY + ep.pending
        return cost * (ep.pending + 1) / ep.weight

    def observe(self, ep: Endpoint, rtt_ms: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if rtt_ms > ep.cost:
            ep.cost = rtt_ms
        else:
            elapsed = max(now - ep.stamp, 0.0)
            w = math.exp(-elapsed / self.decay_s)
            ep.cost = ep.cost * w + rtt_ms * (1.0 - w)
        ep.stamp = now

    def finished(self, ep: Endpoint, latency_ms: float) -> None:
        ep.pending -= 1
        self.observe(ep, latency_ms)


def build_balancer(kind: str, addr: Var[Addr], params: object | None = None,
                   rng: random.Random | None = None) -> Balancer:
    """A balancer from a `loadBalancer.kind` name and its params object (or dict)."""

    def param(name: str, snake: str, default: float) -> float:
        if params is None:
            return default
        if isinstance(params, dict):
            return params.get(name, params.get(snake, default))
        return getattr(params, snake, getattr(params, name, default)) or default

    max_effort = int(param("maxEffort", "max_effort", 5))
    if kind == "roundRobin":
        return RoundRobin(addr, max_effort=max_effort, rng=rng)
    if kind == "ewma":
        return PeakEwma(addr, decay_time_ms=param("decayTimeMs", "decay_time_ms", 10_000.0),
                        max_effort=max_effort, rng=rng)
    # p2c, and the kinds we do not implement separately (heap, aperture) fall back to p2c.
    return P2CLeastLoaded(addr, max_effort=max_effort, rng=rng)
