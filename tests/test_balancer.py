"""Balancers: p2c least-loaded, roundRobin, peak EWMA, and following address changes."""

from __future__ import annotations

import random
from collections import Counter

from dtab.addr import ADDR_NEG, ADDR_PENDING, Address, bound
from dtab.observable import Var
from router.client.balancer import P2CLeastLoaded, PeakEwma, RoundRobin, build_balancer


def addrs(*ports: int, weight: float = 1.0) -> Var:
    return Var(bound(*(Address("127.0.0.1", p, weight) for p in ports)))


def test_p2c_prefers_the_least_loaded():
    bal = P2CLeastLoaded(addrs(1, 2), rng=random.Random(1))
    busy, idle = bal.endpoints
    for _ in range(5):
        bal.started(busy)
    assert {bal.pick().port for _ in range(50)} == {idle.port}
    # with equal load both get traffic
    for _ in range(5):
        bal.finished(busy, 1.0)
    assert {bal.pick().port for _ in range(50)} == {1, 2}


def test_p2c_avoids_down_endpoints_while_others_are_up():
    bal = P2CLeastLoaded(addrs(1, 2, 3), rng=random.Random(2))
    bal.endpoints[0].down = True
    assert 1 not in {bal.pick().port for _ in range(100)}
    assert bal.available == 2 and bal.size == 3
    for e in bal.endpoints:
        e.down = True
    assert bal.pick() is not None  # everything down: still try something


def test_round_robin_cycles_in_order():
    bal = RoundRobin(addrs(3, 1, 2))
    assert [bal.pick().port for _ in range(6)] == [1, 2, 3, 1, 2, 3]


def test_ewma_prefers_the_faster_endpoint_and_peaks_at_once():
    bal = PeakEwma(addrs(1, 2), decay_time_ms=10_000, rng=random.Random(3))
    fast, slow = bal.endpoints
    for _ in range(10):
        bal.started(fast)
        bal.finished(fast, 1.0)
        bal.started(slow)
        bal.finished(slow, 50.0)
    picks = Counter(bal.pick().port for _ in range(200))
    assert picks[1] == 200, picks
    # one slow sample on the fast endpoint raises its cost to that sample immediately
    bal.started(fast)
    bal.finished(fast, 200.0)
    assert fast.cost == 200.0
    assert Counter(bal.pick().port for _ in range(200))[2] == 200
    # and it decays back toward faster samples over time
    bal.observe(fast, 1.0, now=fast.stamp + 30.0)
    assert fast.cost < 20.0


def test_ewma_penalises_unmeasured_endpoints_with_work_in_flight():
    bal = PeakEwma(addrs(1, 2), rng=random.Random(4))
    a, b = bal.endpoints
    bal.started(a)
    b.cost = 5.0
    assert bal.load(a) > bal.load(b)


def test_build_balancer_from_config_objects_and_dicts():
    from router.http.testing import StaticLoadBalancer

    assert build_balancer("roundRobin", addrs(1)).kind == "roundRobin"
    b = build_balancer("ewma", addrs(1), StaticLoadBalancer("ewma", decay_time_ms=500))
    assert isinstance(b, PeakEwma) and b.decay_s == 0.5
    b = build_balancer("ewma", addrs(1), {"kind": "ewma", "decayTimeMs": 2000})
    assert b.decay_s == 2.0
    assert build_balancer("p2c", addrs(1)).kind == "p2c"


def test_endpoint_set_follows_the_addr_var():
    var = addrs(1, 2)
    bal = P2CLeastLoaded(var)
    first = {e.port: e for e in bal.endpoints}
    var.set(bound(Address("127.0.0.1", 2), Address("127.0.0.1", 3)))
    assert [e.port for e in bal.endpoints] == [2, 3]
    assert bal.endpoints[0] is first[2]  # a surviving endpoint keeps its state and pool
    assert first[1].removed  # a departed one is closed
    var.set(ADDR_PENDING)
    assert [e.port for e in bal.endpoints] == [2, 3]  # pending keeps the last good set
    var.set(ADDR_NEG)
    assert bal.endpoints == [] and bal.pick() is None
    bal.close()
    var.set(bound(Address("127.0.0.1", 9)))
    assert bal.endpoints == []  # closed balancers stop following


def test_weighted_endpoints_take_proportional_load():
    var = Var(bound(Address("127.0.0.1", 1, 3.0), Address("127.0.0.1", 2, 1.0)))
    bal = P2CLeastLoaded(var, rng=random.Random(5))
    heavy, light = bal.endpoints
    for _ in range(2):
        bal.started(heavy)
    bal.started(light)
    # load = pending / weight: 2/3 < 1/1
    assert bal.pick() is heavy


def test_heap_always_picks_the_least_loaded_per_unit_of_weight():
    """Finagle's heap balancer: the least loaded node every time (no sampling), so
    in-flight requests spread evenly, and a weight-2 endpoint carries twice the load."""
    from router.client.balancer import Heap

    bal = Heap(addrs(1, 2, 3, 4), rng=random.Random(5))
    for _ in range(40):  # 40 requests started, none finished
        bal.started(bal.pick())
    assert sorted(e.pending for e in bal.endpoints) == [10, 10, 10, 10]
    a = bal.endpoints[0]
    for _ in range(6):
        bal.finished(a, 1.0)  # six of a's requests complete: the next six picks are all a
    picks = []
    for _ in range(6):
        picks.append(bal.pick())
        bal.started(picks[-1])
    assert picks == [a] * 6 and a.pending == 10
    heavy = Heap(Var(bound(Address("127.0.0.1", 1, 2.0), Address("127.0.0.1", 2, 1.0))))
    for _ in range(30):
        heavy.started(heavy.pick())
    assert {e.port: e.pending for e in heavy.endpoints} == {1: 20, 2: 10}


class StepClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_aperture_uses_a_subset_that_widens_under_load_and_narrows_after():
    """Finagle's aperture (LoadBand): at rest a small window of the endpoints takes all the
    traffic; as requests pile up (load per endpoint in the window >= highLoad) it widens
    one endpoint at a time; when the load falls (<= lowLoad) it narrows again."""
    from router.client.balancer import Aperture

    clock = StepClock()
    bal = Aperture(addrs(*range(1, 11)), smooth_window_ms=1000, low_load=0.5, high_load=2.0,
                   min_aperture=1, clock=clock, rng=random.Random(6))
    # light load: one request at a time, each finished before the next: one endpoint only
    seen = set()
    for _ in range(50):
        clock.t += 0.1
        ep = bal.pick()
        seen.add(ep.port)
        bal.started(ep)
        bal.finished(ep, 1.0)
    assert len(seen) == 1 and bal.aperture == 1
    # heavy load: requests start and none finish; the smoothed load rises, the window widens
    inflight = []
    sizes = []
    for _ in range(60):
        clock.t += 0.2
        ep = bal.pick()
        bal.started(ep)
        inflight.append(ep)
        sizes.append(bal.aperture)
    assert sizes == sorted(sizes) and sizes[-1] >= 8, sizes  # it only grew, to most of them
    used = {e.port for e in inflight}
    assert len(used) >= 8
    # and only endpoints in the window got traffic: never more distinct ones than its size
    assert len(used) <= max(sizes)
    # the load goes away: the window narrows back, one endpoint per pick
    for ep in inflight:
        bal.finished(ep, 1.0)
    for _ in range(30):
        clock.t += 2.0
        bal.pick()
    assert bal.aperture == 1
