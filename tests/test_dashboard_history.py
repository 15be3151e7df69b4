"""The dashboard's server-side history (router/admin/history.py) against a real registry:
one window for every number, latencies from the buckets of that window (a histogram
snapshot loses nothing), entities leaving with their metrics, bounded rings."""

from __future__ import annotations

from router.admin.history import WINDOW_S, History
from router.metrics import Metrics


def _entity(metrics: Metrics, *key: str) -> dict:
    scope = metrics.scope(*key)
    return {"requests": scope.counter("requests"), "success": scope.counter("success"),
            "failures": scope.counter("failures"),
            "latency": scope.histogram("request_latency_ms"), "scope": scope}


def _traffic(e: dict, ok: int, failed: int, ms: float) -> None:
    e["requests"].incr(ok + failed)
    e["success"].incr(ok)
    e["failures"].incr(failed)
    for _ in range(ok + failed):
        e["latency"].add(ms)


def test_rates_success_and_latency_share_one_window() -> None:
    m = Metrics()
    server = _entity(m, "rt", "web", "server", "127.0.0.1", "4140")
    svc = _entity(m, "rt", "web", "service", "svc", "web")
    client = _entity(m, "rt", "web", "client", "#", "io.l5d.fs", "a")
    client["scope"].gauge(lambda: 2, "loadbalancer", "size")
    client["scope"].gauge(lambda: 1, "loadbalancer", "available")
    client["scope"].gauge(lambda: 3, "connections")
    h = History(m)
    t = 1000.0
    h.sample(t)
    for i in range(1, 31):  # 30 s: 10 req/s at 5 ms, then 20 req/s at 50 ms with 25% failing
        if i <= 15:
            for e in (server, svc, client):
                _traffic(e, 10, 0, 5.0)
        else:
            for e in (server, svc, client):
                _traffic(e, 15, 5, 50.0)
        if i == 20:
            m.snapshot_histograms()  # Linkerd's minutely snapshot resets the buckets
        last = h.sample(t + i)
        if i == 15:
            web = last["routers"]["web"]["total"]
            assert web["rps"] == 10.0 and web["sr"] == 1.0 and web["p99"] == 5.0
    web = last["routers"]["web"]
    assert web["total"]["rps"] == 20.0  # over the last WINDOW_S seconds only
    assert web["total"]["sr"] == 0.75
    assert web["total"]["p50"] == 50.0 and web["total"]["p99"] == 50.0
    assert web["total"]["requests"] == 15 * 10 + 15 * 20
    assert web["servers"] == ["127.0.0.1/4140"]
    assert web["services"]["/svc/web"]["sr"] == 0.75
    c = web["clients"]["/#/io.l5d.fs/a"]
    assert (c["endpoints"], c["size"], c["connections"]) == (1.0, 2.0, 3.0)
    # the snapshot at i == 20 lost nothing: the window across it still counts 200 requests
    assert sum(1 for s in h.samples) == 31


def test_an_expired_client_leaves_the_history_and_the_ring_is_bounded() -> None:
    m = Metrics()
    client = _entity(m, "rt", "web", "client", "#", "io.l5d.fs", "a")
    h = History(m, length=50)
    for i in range(120):
        _traffic(client, 1, 0, 1.0)
        h.sample(1000.0 + i)
    assert len(h.samples) == 50 and len(h._series) == 2  # the router total and the client
    assert "/#/io.l5d.fs/a" in h.samples[-1]["routers"]["web"]["clients"]
    client["scope"].remove()  # what the client cache does after the idle TTL
    h.sample(2000.0)
    assert h.samples[-1]["routers"].get("web", {}).get("clients", {}) == {}
    assert h._series == {}
    assert [s["t"] for s in h.since(1117.0)] == [1118.0, 1119.0, 2000.0]
    assert WINDOW_S == 10


def test_steady_traffic_across_a_snapshot_every_second_keeps_its_latency() -> None:
    """Snapshots as often as samples (the tests' L5D_HISTOGRAM_SNAPSHOT_SECS=1): each new
    window's buckets equal the last one's at a steady rate, which once read as a merged
    histogram counting on with nothing added, so the dashboard's p50/p99 stayed blank."""
    m = Metrics()
    server = _entity(m, "rt", "web", "server", "127.0.0.1", "4140")
    h = History(m)
    t = 1000.0
    h.sample(t)
    for i in range(1, 2 * WINDOW_S):
        _traffic(server, 10, 0, 5.0)
        last = h.sample(t + i)["routers"]["web"]["total"]
        assert last["p50"] == 5.0 and last["p99"] == 5.0, (i, last)
        m.snapshot_histograms()
