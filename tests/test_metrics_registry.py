"""The metrics registry: tree storage, removal, bounded growth, exporters coping with removal."""

from __future__ import annotations

import json

from router.admin import metrics_json, prometheus
from router.metrics import Counter, Histogram, Metrics
from router.stats import ServerStats, ServiceStats


def test_scoped_keys_and_flat_names() -> None:
    m = Metrics()
    rt = m.scope("rt", "outgoing")
    rt.scope("service", "svc/hello").counter("requests").incr(3)
    rt.scope("server", "127.0.0.1", "4140").counter("requests").incr()
    assert m.get(("rt", "outgoing", "service", "svc/hello", "requests")).value == 3
    flat = metrics_json.flat(m)
    assert flat == {
        "rt/outgoing/service/svc/hello/requests": 3,
        "rt/outgoing/server/127.0.0.1/4140/requests": 1,
    }
    assert len(m) == 2


def test_same_key_returns_same_metric() -> None:
    m = Metrics()
    a = m.scope("a").counter("c")
    b = m.scope("a").counter("c")
    assert a is b and isinstance(a, Counter)


def test_remove_scope_prunes_empty_branches() -> None:
    m = Metrics()
    rt = m.scope("rt", "outgoing")
    rt.counter("keep")
    svc = rt.scope("service", "svc/x")
    svc.counter("requests")
    svc.histogram("request_latency_ms")
    assert len(m) == 3
    svc.remove()
    assert len(m) == 1
    assert m.resolve(["rt", "outgoing", "service"]) is None  # no empty "service" branch left
    assert [k for k, _ in m.items()] == [("rt", "outgoing", "keep")]


def test_flood_of_service_scopes_leaves_registry_bounded() -> None:
    """A flood of distinct Host values: each service scope expires, memory returns to baseline."""
    m = Metrics()
    router = m.scope("rt", "outgoing")
    ServerStats(router, "127.0.0.1", 4140)
    baseline = len(m)
    for i in range(5000):
        st = ServiceStats(router, f"/svc/host-{i}.example")
        st.record(200, 1.0)
        st.remove()
    assert len(m) == baseline
    assert sum(1 for _ in m.items()) == baseline
    assert m.resolve(["rt", "outgoing", "service"]) is None
    assert not any("service" in k for k, _ in m.items())


def test_exporters_cope_with_metrics_vanishing_between_reads() -> None:
    m = Metrics()
    router = m.scope("rt", "outgoing")
    st = ServiceStats(router, "/svc/gone")
    st.record(200, 5.0)
    m.snapshot_histograms()
    before = metrics_json.flat(m)
    assert before["rt/outgoing/service/svc/gone/requests"] == 1
    assert b'service="svc/gone"' in prometheus.render(m)
    st.remove()
    assert metrics_json.flat(m) == {}
    assert b"svc/gone" not in prometheus.render(m)
    # A stale reference the data path still holds can be bumped harmlessly.
    st.record(200, 1.0)
    assert metrics_json.flat(m) == {}


def test_histogram_snapshot_fields_and_tree() -> None:
    m = Metrics()
    h = m.scope("rt", "r").histogram("request_latency_ms")
    for v in range(1, 101):
        h.add(v)
    flat = metrics_json.flat(m)
    assert flat == {"rt/r/request_latency_ms.count": 0}  # nothing until the snapshot
    m.snapshot_histograms()
    flat = metrics_json.flat(m)
    assert flat["rt/r/request_latency_ms.count"] == 100
    assert set(flat) == {
        f"rt/r/request_latency_ms.{f}"
        for f in ("count", "max", "min", "p50", "p90", "p95", "p99", "p9990", "p9999", "sum", "avg")
    }
    assert flat["rt/r/request_latency_ms.p50"] == 50
    assert flat["rt/r/request_latency_ms.max"] == 100
    tree = metrics_json.tree(m)
    assert tree["rt"]["r"]["request_latency_ms"]["stat.count"] == 100
    assert isinstance(h, Histogram) and h.count == 0 and h.total_count == 100


def test_failing_gauge_is_left_out_not_fatal() -> None:
    m = Metrics()
    m.scope("a").gauge(lambda: 1 / 0, "broken")
    m.scope("a").gauge(lambda: 2.5, "ok")
    assert metrics_json.flat(m) == {"a/ok": 2.5}
    assert b"a:ok 2.5" in prometheus.render(m)


def test_render_query_and_errors() -> None:
    m = Metrics()
    m.scope("rt", "outgoing", "server", "127.0.0.1", "4140").counter("requests").incr(7)
    m.scope("rt", "outgoing", "service", "svc/hello").counter("requests").incr(2)
    status, body = metrics_json.render(m, q="rt/outgoing/service/svc/hello", as_tree=False,
                                       pretty=False)
    assert status == 200 and json.loads(body) == {"requests": 2}
    status, body = metrics_json.render(m, q="rt/outgoing/server", as_tree=True, pretty=False)
    assert json.loads(body) == {"127.0.0.1": {"4140": {"requests": {"counter": 7}}}}
    status, body = metrics_json.render(m, q="rt/nope", as_tree=False, pretty=False)
    assert status == 404 and json.loads(body) == {"error": "No such subtree: rt/nope"}
    status, body = metrics_json.render(m, q=None, as_tree=False, pretty=True)
    assert body.startswith("{\n")
    assert json.loads(body)["rt/outgoing/server/127.0.0.1/4140/requests"] == 7
