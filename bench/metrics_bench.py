"""Micro-benchmark of metric recording on the hot path, and of the exporters.

`python bench/metrics_bench.py` prints nanoseconds per operation for what the
data path does per request (Counter bump, Histogram.add, a whole RequestStats
.record with status counters), and milliseconds per export (metrics.json,
Prometheus) at a registry size like a busy router's. Speed is measured here,
never by timed tests.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.admin import metrics_json, prometheus  # noqa: E402
from router.metrics import Metrics  # noqa: E402
from router.stats import ClientStats, ServerStats, ServiceStats  # noqa: E402


def per_op_ns(stmt, number: int = 200_000, repeat: int = 5) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e9


def main() -> None:
    m = Metrics()
    rt = m.scope("rt", "outgoing")
    c = rt.counter("requests")
    h = rt.histogram("request_latency_ms")
    server = ServerStats(rt, "127.0.0.1", 4140)
    service = ServiceStats(rt, "/svc/hello")
    client = ClientStats(rt, "/#/io.l5d.fs/hello")
    vals = [0.3, 1.7, 12.0, 250.0, 3000.0]

    print(f"Counter.incr()              {per_op_ns(c.incr):8.1f} ns")
    print(f"Histogram.add(v)            {per_op_ns(lambda: h.add(vals[2])):8.1f} ns (incl. lambda)")

    def one_request() -> None:
        server.record(200, 1.5)
        service.record(200, 1.5)
        client.record(200, 1.5)

    print(f"server+service+client record{per_op_ns(one_request, number=100_000):8.1f} ns")

    # Exporters at the size of a busy router: 200 services, 200 clients.
    for i in range(200):
        ServiceStats(rt, f"/svc/s{i}").record(200, 1.0)
        ClientStats(rt, f"/#/io.l5d.fs/s{i}").record(200, 1.0)
    m.snapshot_histograms()
    n = len(m)
    flat = min(timeit.repeat(lambda: metrics_json.render(m, q=None, as_tree=False, pretty=False),
                             number=20, repeat=3)) / 20 * 1e3
    tree = min(timeit.repeat(lambda: metrics_json.render(m, q=None, as_tree=True, pretty=False),
                             number=20, repeat=3)) / 20 * 1e3
    prom = min(timeit.repeat(lambda: prometheus.render(m), number=20, repeat=3)) / 20 * 1e3
    print(f"metrics.json flat ({n} metrics) {flat:7.2f} ms")
    print(f"metrics.json tree ({n} metrics) {tree:7.2f} ms")
    collector = prometheus.RegistryCollector(m)
    on_loop = min(timeit.repeat(lambda: list(collector.collect()), number=20, repeat=3)) / 20 * 1e3
    print(f"prometheus        ({n} metrics) {prom:7.2f} ms in all")
    print(f"  of which on the event loop   {on_loop:7.2f} ms (formatting runs in a thread)")


if __name__ == "__main__":
    main()
