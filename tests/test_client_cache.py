"""ClientCache: one client per bound id, client_state snapshots, idle expiry with metrics."""

from __future__ import annotations

import pytest

from dtab.addr import ADDR_PENDING, Address, AddrNeg, BoundName, bound
from dtab.observable import Var
from dtab.path import Path
from router.client.cache import ClientCache
from router.http.testing import StaticClientConfig, StaticLoadBalancer
from router.metrics import Metrics


def make(idle_s: float = 600.0, kind: str = "p2c"):
    reg = Metrics()
    cache = ClientCache(reg.scope("rt", "out"),
                        lambda _id: StaticClientConfig(StaticLoadBalancer(kind)), idle_s)
    return reg, cache


def keys(reg: Metrics) -> set[str]:
    return {"/".join(k) for k, _ in reg.items()}


def test_one_client_per_bound_id_and_snapshot():
    reg, cache = make(kind="roundRobin")
    var = Var(bound(Address("10.0.0.2", 80), Address("10.0.0.1", 80)))
    a = cache.get(BoundName(Path.read("/#/io.l5d.fs/hello"), var))
    b = cache.get(BoundName(Path.read("/#/io.l5d.fs/hello"), var, Path.read("/x")))
    assert a is b and a.balancer.kind == "roundRobin"
    pending = cache.get(BoundName(Path.read("/#/io.l5d.fs/later"), Var(ADDR_PENDING)))
    cache.get(BoundName(Path.read("/$/inet/nowhere/1"), Var(AddrNeg("no such host"))))
    assert cache.snapshot() == {
        "/#/io.l5d.fs/hello": {"state": "bound", "addresses": ["10.0.0.1:80", "10.0.0.2:80"]},
        "/#/io.l5d.fs/later": {"state": "pending", "addresses": []},
        "/$/inet/nowhere/1": {"state": "neg", "addresses": []},
    }
    pending.bound.addr.set(bound(Address("10.0.0.3", 81)))
    assert cache.snapshot()["/#/io.l5d.fs/later"] == {"state": "bound",
                                                      "addresses": ["10.0.0.3:81"]}
    assert reg.get(("rt", "out", "client", "#/io.l5d.fs/hello", "loadbalancer", "size")).value == 2
    cache.close()


def test_a_rebound_name_with_a_new_var_is_followed():
    _, cache = make()
    old = Var(bound(Address("10.0.0.1", 80)))
    c = cache.get(BoundName(Path.read("/#/x"), old))
    new = Var(bound(Address("10.0.0.9", 80)))
    assert cache.get(BoundName(Path.read("/#/x"), new)) is c
    assert [e.hostport for e in c.balancer.endpoints] == ["10.0.0.9:80"]
    old.set(bound(Address("10.0.0.5", 80)))
    assert [e.hostport for e in c.balancer.endpoints] == ["10.0.0.9:80"]
    cache.close()


def test_idle_clients_expire_with_their_metrics():
    reg, cache = make(idle_s=10)
    c = cache.get(BoundName(Path.read("/#/io.l5d.fs/hello"), Var(bound(Address("h", 1)))))
    c.stats.record(200, 1.0)
    c.stats.services.get("/svc/hello").record(200, 1.0)
    assert "rt/out/client/#/io.l5d.fs/hello/requests" in keys(reg)
    assert "rt/out/client/#/io.l5d.fs/hello/service/svc/hello/requests" in keys(reg)
    assert cache.expire(now=c.last_used + 5) == []
    c.balancer.endpoints[0].pending = 1  # in flight: not expired even when idle long
    assert cache.expire(now=c.last_used + 50) == []
    c.balancer.endpoints[0].pending = 0
    assert cache.expire(now=c.last_used + 50) == ["/#/io.l5d.fs/hello"]
    assert not any(k.startswith("rt/out/client/") for k in keys(reg))
    assert cache.snapshot() == {}


@pytest.mark.timeout(10)
async def test_sweeper_runs_on_the_loop():
    from tests.util import async_wait_until

    reg, cache = make(idle_s=0.1)
    cache.get(BoundName(Path.read("/#/gone"), Var(bound(Address("h", 1)))))
    await async_wait_until(lambda: cache.snapshot() == {}, timeout=5, what="idle expiry")
    cache.close()
