"""Stats objects and the names they register (reference §4.2), on a real request flow."""

from __future__ import annotations

import pytest

from dtab.path import Path
from router.http import start_http_router
from router.http.testing import Backend, StaticRouter, StaticServerConfig
from router.metrics import Metrics
from router.stats import ServerStats, ServiceStats, ServiceStatsCache
from tests.test_http_proxy import RawClient

pytestmark = pytest.mark.timeout(30)


def values(reg: Metrics) -> dict[str, object]:
    out = {}
    for k, m in reg.items():
        name = "/".join(k)
        out[name] = getattr(m, "value", None) if not hasattr(m, "count") else m
    return out


def test_server_stats_names_and_classes():
    reg = Metrics()
    st = ServerStats(reg.scope("rt", "outgoing"), "0.0.0.0", 4140)
    st.record(200, 3.0)
    st.record(503, 5.0)
    st.record_failure("ConnectionFailedException", 1.0, 502)
    st.record_failure("ChannelClosedException", 1.0, None)
    v = values(reg)
    p = "rt/outgoing/server/0.0.0.0/4140/"
    assert v[p + "requests"] == 4 and v[p + "success"] == 1 and v[p + "failures"] == 3
    assert v[p + "status/200"] == 1 and v[p + "status/2XX"] == 1
    assert v[p + "status/503"] == 1 and v[p + "status/5XX"] == 2 and v[p + "status/502"] == 1
    assert v[p + "failures/ConnectionFailedException"] == 1
    assert v[p + "status/error"] == 1
    assert v[p + "request_latency_ms"].count == 4
    assert v[p + "connections"] == 0.0


def test_service_stats_expire_when_idle():
    reg = Metrics()
    cache = ServiceStatsCache(lambda n: ServiceStats(reg.scope("rt", "r"), n), idle_s=10)
    for i in range(100):
        s = cache.get(f"/svc/h{i}")
        s.record(200, 1.0)
        s.last_used = 0.0 if i < 90 else 100.0
    assert "rt/r/service/svc/h1/requests" in values(reg)
    assert cache.expire(now=105.0) == 90
    assert len(cache) == 10
    assert not any(k.startswith("rt/r/service/svc/h1/") for k in values(reg))
    assert "rt/r/service/svc/h95/requests" in values(reg)


async def test_request_flow_records_server_service_and_client_stats():
    backend = await Backend().start()
    reg = Metrics()
    dtab = f"/svc/hello => /$/inet/127.0.0.1/{backend.port}"
    router = StaticRouter([StaticServerConfig(0)], dtab, label="outgoing", metrics=reg)
    handle = await start_http_router(router)
    port = handle.servers[0].port
    c = await RawClient(port).connect()
    try:
        for _ in range(3):
            assert (await c.request()).status == 200
        assert (await c.request(target="/echo?status=503")).status == 503
        assert (await c.request(host="nope")).status == 502
        v = values(reg)
        s = f"rt/outgoing/server/127.0.0.1/{port}/"
        assert v[s + "requests"] == 5 and v[s + "success"] == 3 and v[s + "failures"] == 2
        assert v[s + "status/200"] == 3 and v[s + "status/502"] == 1 and v[s + "status/503"] == 1
        assert v[s + "failures/NoBrokersAvailableException"] == 1
        assert v[s + "connects"] == 1 and v[s + "connections"] == 1.0
        assert v[s + "received_bytes"] > 0 and v[s + "sent_bytes"] > 0
        svc = "rt/outgoing/service/svc/hello/"
        assert v[svc + "requests"] == 4 and v[svc + "failures"] == 1
        assert v[svc + "request_latency_ms"].count == 4
        assert v["rt/outgoing/service/svc/nope/requests"] == 1
        cl = f"rt/outgoing/client/$/inet/127.0.0.1/{backend.port}/"
        assert v[cl + "requests"] == 4 and v[cl + "success"] == 3
        assert v[cl + "status/503"] == 1
        assert v[cl + "connections"] == 1.0 and v[cl + "connects"] == 1
        assert v[cl + "connect_latency_ms"].count == 1
        assert v[cl + "loadbalancer/size"] == 1.0 and v[cl + "loadbalancer/available"] == 1.0
        assert v[cl + "service/svc/hello/requests"] == 4
        assert handle.clients.snapshot() == {
            f"/$/inet/127.0.0.1/{backend.port}": {
                "state": "bound", "addresses": [f"127.0.0.1:{backend.port}"]}
        }
    finally:
        c.close()
        await handle.close(0.5)
        await backend.close()


def test_service_stats_are_capped_under_a_flood_of_names():
    reg = Metrics()
    evictions = []
    cache = ServiceStatsCache(lambda n: ServiceStats(reg.scope("rt", "r"), n), idle_s=600,
                              max_entries=100)
    cache.on_evict = lambda: evictions.append(1)
    for i in range(1000):
        s = cache.get(f"/svc/flood{i}")
        s.record(200, 1.0)
        s.last_used = float(i)
    assert len(cache) <= 100 and evictions
    assert "/svc/flood999" in cache and "/svc/flood0" not in cache
    assert sum(1 for k, _ in reg.items() if k[3].startswith("svc/flood")) <= 100 * 4


async def test_router_flood_of_hosts_keeps_service_stats_bounded_and_live():
    backend = await Backend().start()
    reg = Metrics()
    dtab = f"/svc/hello => /$/inet/127.0.0.1/{backend.port}"
    router = StaticRouter([StaticServerConfig(0)], dtab, label="r", metrics=reg)
    handle = await start_http_router(router)
    handle.runtime.services.max_entries = 5
    c = await RawClient(handle.servers[0].port).connect()
    try:
        for round_ in range(3):
            assert (await c.request()).status == 200
            for i in range(12):
                assert (await c.request(host=f"flood{round_}-{i}")).status == 502
        assert (await c.request()).status == 200
        services = {k[3] for k, _ in reg.items() if k[2] == "service"}
        assert len(services) <= 5
        # hello's stats were evicted and re-created: the live object is the registered one
        assert reg.get(("rt", "r", "service", "svc/hello", "requests")).value >= 1
        hello = handle.runtime.service_for(Path.read("/svc/hello"))[1]
        assert handle.runtime.services.get("/svc/hello") is hello
    finally:
        c.close()
        await handle.close(0.5)
        await backend.close()


def test_record_all_buckets_a_latency_where_add_would():
    """record_all finds the bucket without a search up to 99 ms: the same bucket as
    Histogram.add for every latency, at the integer edges and past the linear part."""
    from router.metrics import bucket_index
    from router.stats import RequestStats, record_all

    reg = Metrics()
    st = RequestStats(reg.scope("s"))
    ref = reg.scope("r").histogram("h")
    for ms in (0.0, 1e-9, 0.5, 1.0, 1.000001, 41.3, 98.999, 99.0, 99.0001, 99.5, 100.0,
               100.5, 1234.5, 3e9):
        before = list(st.latency.counts)
        record_all((st,), 200, ms, 0.0, True)
        ref.add(ms)
        after = st.latency.counts
        changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
        assert changed == [bucket_index(ms)], ms
    assert st.latency.counts == ref.counts
    assert (st.latency.min, st.latency.max, st.latency.count) == (ref.min, ref.max, ref.count)
