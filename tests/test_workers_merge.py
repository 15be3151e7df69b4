"""Workers' registries merged into one: counters summed, histograms bucket by bucket."""

from __future__ import annotations

import json

from router.admin import metrics_json
from router.metrics import Metrics
from router.workers.merge import MergedMetrics, export


def worker(requests: int, latencies: list[float], lb_size: int, conns: int) -> Metrics:
    m = Metrics()
    s = m.scope("rt", "outgoing", "server", "127.0.0.1", "4140")
    s.counter("requests").incr(requests)
    h = s.histogram("request_latency_ms")
    for v in latencies:
        h.add(v)
    c = m.scope("rt", "outgoing", "client", "#/io.l5d.fs/web")
    c.gauge(lambda: lb_size, "loadbalancer", "size")
    c.gauge(lambda: conns, "connections")
    return m


def test_counters_sum_gauges_combine_and_histograms_merge_exactly() -> None:
    a_vals = [float(i) for i in range(1, 101)]
    b_vals = [float(i) for i in range(200, 401)]
    a, b = worker(100, a_vals, 3, 5), worker(201, b_vals, 3, 7)
    for m in (a, b):
        m.snapshot_histograms()
    local = Metrics()
    local.scope("namer", "io.l5d.fs").counter("updates").incr(4)
    merged = MergedMetrics(local)
    # exports cross a socket as JSON
    merged.update([(0, json.loads(json.dumps(export(a)))),
                   (1, json.loads(json.dumps(export(b))))])
    flat = metrics_json.flat(merged)
    assert flat is not None
    server = "rt/outgoing/server/127.0.0.1/4140"
    assert flat[f"{server}/requests"] == 301
    assert flat[f"workers/0/{server}/requests"] == 100
    assert flat[f"workers/1/{server}/requests"] == 201
    assert flat["namer/io.l5d.fs/updates"] == 4  # the supervisor's own metrics stay
    client = "rt/outgoing/client/#/io.l5d.fs/web"
    assert flat[f"{client}/loadbalancer/size"] == 3  # each worker sees the whole set
    assert flat[f"{client}/connections"] == 12

    one = Metrics()  # the same values in one process
    h = one.scope("x").histogram("h")
    for v in a_vals + b_vals:
        h.add(v)
    expected = h.snapshot()
    for field, value in expected.items():
        assert flat[f"{server}/request_latency_ms.{field}"] == value, field

    # Prometheus reads one router: no per-worker copies
    assert all(k[0] != "workers" for k, _ in merged.items())
    # a second update replaces, never accumulates
    merged.update([(0, export(a))])
    assert metrics_json.flat(merged)[f"{server}/requests"] == 100
