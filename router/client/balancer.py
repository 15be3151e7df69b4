"""Load balancers over a client's endpoints, following `BoundName.addr` as it changes.

Kinds, as Linkerd names them (reference §1.7):
- `p2c` (default): power of two choices, least loaded (in-flight requests / weight);
- `roundRobin`: each endpoint in turn (an endpoint of weight 3 gets three turns);
- `ewma`: p2c on peak-EWMA cost (latency estimate x (in-flight + 1)), decayed over `decayTimeMs`;
- `heap`: always the least loaded endpoint (Finagle's heap balancer);
- `aperture`: p2c over a window of endpoints that widens when the load per endpoint
  passes `highLoad` and narrows below `lowLoad` (smoothed over `smoothWindowMs`).

Endpoint weights from namers (`ip port * 3` in an fs file) shape every choice:
p2c and ewma draw their two candidates in proportion to weight and compare
load per unit of weight, so at rest too an endpoint of weight 3 gets ~3x the
traffic (as Finagle's weight classes do).

`endpoints` is the live set: endpoints that failure accrual marked `dead` leave
it (and come back to be probed); if every endpoint is dead all are used, as
Finagle does when no node is open. Endpoints whose last connection attempt
failed are `down` and avoided while any other endpoint is up. The balancer
keeps the last good endpoint set while the address is Pending.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import random
import time
from collections.abc import Callable

from dtab.addr import Addr, AddrBound, Address, AddrPending
from dtab.observable import Var
from router.client.pool import Endpoint


def _endpoint_order(e: Endpoint) -> tuple[str, int]:
    return (e.host, e.port)


_dead = operator.attrgetter("dead")
_weight = operator.attrgetter("weight")


# Finagle's PeakEwma penalty for an endpoint with no latency sample yet but work in flight.
_PENALTY = float(2**47)


class Balancer:
    """Base: endpoint set maintenance; subclasses pick."""

    kind = "base"

    def __init__(self, addr: Var[Addr], *, max_effort: int = 5,
                 rng: random.Random | None = None) -> None:
        self.max_effort = max_effort
        self.rng = rng or random.Random()
        self.endpoints: list[Endpoint] = []  # live: what pick() chooses from
        self.all: list[Endpoint] = []
        self._cum: list[float] | None = None  # cumulative weights when they differ
        self._by_addr: dict[tuple[str, int], Endpoint] = {}
        self._addresses: frozenset[Address] | None = None  # the last set applied
        self.on_new_endpoint: Callable[[Endpoint], None] | None = None
        # The value of `_addr` as last seen by `_update` (observers run synchronously, so
        # always its current value): the proxy reads it on every request without calling
        # the Var's property.
        self.state: Addr = addr.value
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
        self.state = addr
        if isinstance(addr, AddrPending):
            return
        addresses: frozenset[Address] = (
            addr.addresses if isinstance(addr, AddrBound) else frozenset()
        )
        prev, self._addresses = self._addresses, addresses
        if prev is not None and self._apply_diff(prev, addresses):
            return
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
        self.all = sorted(new.values(), key=lambda e: (e.host, e.port))
        self.refresh()

    def _apply_diff(self, prev: frozenset[Address], addresses: frozenset[Address]) -> bool:
        """Add and remove only what changed (a 1% change of 10,000 endpoints must not
        rebuild 10,000 of them); False when most changed and a rebuild is cheaper."""
        added = addresses - prev
        removed = prev - addresses
        if len(added) + len(removed) > max(8, len(addresses) // 2):
            return False
        by_addr = self._by_addr
        added_keys = {(a.host, a.port): a for a in added}
        gone: list[Endpoint] = []
        for a in removed:
            key = (a.host, a.port)
            if key not in added_keys:
                ep = by_addr.pop(key, None)
                if ep is not None:
                    gone.append(ep)
        fresh: list[Endpoint] = []
        for key, a in added_keys.items():
            ep = by_addr.get(key)
            if ep is not None and ep.weight == (a.weight if a.weight > 0 else 1.0):
                continue  # only metadata changed
            if ep is not None:
                gone.append(ep)
            ep = by_addr[key] = Endpoint(a)
            if self.on_new_endpoint is not None:
                self.on_new_endpoint(ep)
            fresh.append(ep)
        if not gone and not fresh:
            return True
        all_ = list(self.all)  # sorted by (host, port): find and insert by bisection
        for ep in gone:
            ep.close()
            i = bisect.bisect_left(all_, (ep.host, ep.port), key=_endpoint_order)
            while i < len(all_) and all_[i] is not ep and _endpoint_order(all_[i]) == (
                    ep.host, ep.port):
                i += 1
            if i < len(all_) and all_[i] is ep:
                del all_[i]
        for ep in fresh:
            bisect.insort(all_, ep, key=_endpoint_order)
        self.all = all_
        self.refresh()
        return True

    def refresh(self) -> None:
        """Recompute the live set (failure accrual calls this when it removes or probes)."""
        # (C-level iteration: this runs on every address change of a 10,000-endpoint client)
        live = list(itertools.filterfalse(_dead, self.all)) or self.all
        self.endpoints = live
        weights = list(map(_weight, live))
        self._cum = (list(itertools.accumulate(weights))
                     if weights and min(weights) != max(weights) else None)
        self.changed()

    def _draw(self, n: int) -> int:
        """An index into `endpoints`, uniform or in proportion to weight."""
        cum = self._cum
        if cum is None:
            return self.rng.randrange(n)
        return min(bisect.bisect_right(cum, self.rng.random() * cum[-1]), n - 1)

    def changed(self) -> None:
        """Hook for subclasses when the endpoint list is replaced."""

    @property
    def size(self) -> int:
        return len(self.all)

    @property
    def available(self) -> int:
        return sum(1 for e in self.all if not e.down and not e.dead)

    def pick(self) -> Endpoint | None:
        raise NotImplementedError

    # Load accounting, called by the proxy around each request.
    def started(self, ep: Endpoint) -> None:
        ep.pending += 1
        if ep.probe_open:  # the one request a recovering endpoint gets (failure accrual)
            acc = ep.accrual
            acc.owner.probe_taken(acc)  # type: ignore[attr-defined]

    def finished(self, ep: Endpoint, latency_ms: float) -> None:
        ep.pending -= 1

    def close(self) -> None:
        self._unsubscribe()
        for ep in self.all:
            ep.close()
        self.endpoints = []
        self.all = []
        self._by_addr = {}
        self._addresses = None


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
        weighted = self._cum is not None
        for _ in range(self.max_effort):
            if weighted:
                i = self._draw(n)
                j = self._draw(n)
                if i == j:
                    j = (i + 1 + rng.randrange(n - 1)) % n
            else:
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
        self._turns: list[Endpoint] = []
        super().__init__(addr, **kw)

    def changed(self) -> None:
        """Turns: each endpoint as often as its (rounded) weight, interleaved."""
        if self._cum is None:
            self._turns = self.endpoints
            return
        counts = {e: max(1, round(e.weight)) for e in self.endpoints}
        turns: list[Endpoint] = []
        while counts:
            for e in list(counts):
                turns.append(e)
                counts[e] -= 1
                if not counts[e]:
                    del counts[e]
        self._turns = turns

    def pick(self) -> Endpoint | None:
        eps = self._turns
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


class Heap(P2CLeastLoaded):
    """Finagle's heap balancer: the least loaded endpoint (in flight / weight), every time."""

    kind = "heap"

    def pick(self) -> Endpoint | None:
        eps = self.endpoints
        if not eps:
            return None
        best = None
        best_load = 0.0
        for e in eps:
            if e.down:
                continue
            load = e.pending / e.weight
            if best is None or load < best_load:
                best, best_load = e, load
        return best if best is not None else eps[self.rng.randrange(len(eps))]


class Aperture(P2CLeastLoaded):
    """Finagle's aperture with its LoadBand controller: p2c within a window of the endpoints
    (in a random but fixed order). The load offered to the client (requests in flight on
    all its endpoints), exponentially smoothed over `smoothWindowMs`, is divided by the
    window's size: at or above `highLoad` the window widens by one endpoint, at or below
    `lowLoad` it narrows by one (never under `minAperture`). So a lightly loaded client
    talks to few endpoints (few connections), and a busy one spreads over more."""

    kind = "aperture"

    def __init__(self, addr: Var[Addr], *, smooth_window_ms: float = 5000.0,
                 low_load: float = 0.5, high_load: float = 2.0, min_aperture: int = 1,
                 clock: Callable[[], float] = time.monotonic, **kw) -> None:  # noqa: ANN003
        self.smooth_s = max(smooth_window_ms, 1.0) / 1000.0
        self.low_load = low_load
        self.high_load = high_load
        self.min_aperture = max(1, min_aperture)
        self.aperture = self.min_aperture
        self._load = 0.0
        self._clock = clock
        self._stamp = clock()
        self._order: list[Endpoint] = []
        self._full: list[Endpoint] = []
        super().__init__(addr, **kw)

    def changed(self) -> None:
        order = list(self.endpoints)
        self.rng.shuffle(order)
        self._full = order
        self._apply()

    def _apply(self) -> None:
        n = len(self._full)
        self.aperture = min(max(self.aperture, self.min_aperture), max(n, 1))
        window = self._full[: self.aperture]
        weights = [e.weight for e in window]
        self._order = window
        self._cum = (list(itertools.accumulate(weights))
                     if weights and min(weights) != max(weights) else None)

    def _adjust(self) -> None:
        now = self._clock()
        w = math.exp(-max(now - self._stamp, 0.0) / self.smooth_s)
        self._stamp = now
        inflight = sum(e.pending for e in self._full)
        self._load = self._load * w + inflight * (1.0 - w)
        per = self._load / max(self.aperture, 1)
        if per >= self.high_load and self.aperture < len(self._full):
            self.aperture += 1
            self._apply()
        elif per <= self.low_load and self.aperture > self.min_aperture:
            self.aperture -= 1
            self._apply()

    def pick(self) -> Endpoint | None:
        if not self._full:
            return None
        self._adjust()
        eps, self.endpoints = self.endpoints, self._order
        try:
            return super().pick()
        finally:
            self.endpoints = eps


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
    if kind == "heap":
        return Heap(addr, max_effort=max_effort, rng=rng)
    if kind == "aperture":
        return Aperture(addr, smooth_window_ms=param("smoothWindowMs", "smooth_window_ms", 5000.0),
                        low_load=param("lowLoad", "low_load", 0.5),
                        high_load=param("highLoad", "high_load", 2.0),
                        min_aperture=int(param("minAperture", "min_aperture", 1)),
                        max_effort=max_effort, rng=rng)
    return P2CLeastLoaded(addr, max_effort=max_effort, rng=rng)
