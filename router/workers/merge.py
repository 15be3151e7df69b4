"""Many workers' registries read as one router's: counters summed, histograms merged.

A worker `export`s its registry as plain JSON when the supervisor asks (the
admin pulls on each metrics.json or Prometheus request, so totals are exact,
not a second behind). `merge` builds one `Metrics` from the supervisor's own
registry (namers, watches) and every export: counters and gauges are summed
(except gauges that describe a shared thing, e.g. a balancer's size, which
every worker sees whole: their maximum), histograms add their buckets so
percentiles are of all requests, not an average of percentiles. Each worker's
counters are also kept under `workers/<n>/` for metrics.json; Prometheus reads
only the merged tree (one router; `sum()` counts each request once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from router.metrics import Counter, Gauge, Histogram, Key, Metric, Metrics

WORKERS = "workers"
# Gauges of something each worker has a whole copy of: the merged value is the maximum.
_MAX_GAUGES = {("loadbalancer", "size"), ("loadbalancer", "available")}


def _sparse(counts: Sequence[int] | None) -> list[list[int]]:
    return [[i, c] for i, c in enumerate(counts or ()) if c]


def export(metrics: Metrics) -> list[list[Any]]:
    """The registry as `[kind, key, value]` rows (JSON-ready; gauges read now)."""
    rows: list[list[Any]] = []
    for key, m in metrics.items():
        if isinstance(m, Counter):
            rows.append(["c", list(key), m.value])
        elif isinstance(m, Gauge):
            try:
                value = m.value
            except Exception:  # the admin's exporter logs a failing gauge; skip it here
                continue
            if math.isfinite(value):
                rows.append(["g", list(key), value])
        elif isinstance(m, Histogram):
            rows.append(["h", list(key), {
                "n": m.count, "s": m.sum, "b": _sparse(m.counts),
                "mn": m.min if m.count else None, "mx": m.max if m.count else None,
                "tn": m.total_count, "ts": m.total_sum,
                "last": m.last, "lb": _sparse(m.last_counts),
            }])
    return rows


class _Last:
    """The merged last-window summary of one histogram."""

    __slots__ = ("hist",)

    def __init__(self) -> None:
        self.hist = Histogram()

    def add(self, last: dict[str, float], buckets: list[list[int]]) -> None:
        n = int(last.get("count", 0))
        if not n:
            return
        h = self.hist
        for i, c in buckets:
            h.counts[i] += c
        h.count += n
        h.sum += float(last.get("sum", 0.0))
        h.min = min(h.min, float(last.get("min", math.inf)))
        h.max = max(h.max, float(last.get("max", -math.inf)))


def _merge_hist(h: Histogram, data: dict[str, Any]) -> None:
    for i, c in data["b"]:
        h.counts[i] += c
    h.count += data["n"]
    h.sum += data["s"]
    if data["mn"] is not None:
        h.min = min(h.min, data["mn"])
        h.max = max(h.max, data["mx"])
    h.total_count += data["tn"]
    h.total_sum += data["ts"]


class MergedMetrics(Metrics):
    """What the supervisor's admin reads: rebuilt by `update` from fresh exports."""

    def __init__(self, local: Metrics) -> None:
        super().__init__()
        self.local = local
        self.update([])

    def update(self, exports: Sequence[tuple[int, list[list[Any]]]]) -> None:
        fresh = Metrics()
        for key, metric in self.local.items():
            fresh._set(key, metric)
        gauges: dict[Key, float] = {}
        lasts: dict[Key, _Last] = {}
        for n, rows in exports:
            scope = (WORKERS, str(n))
            for kind, raw_key, value in rows:
                key = tuple(raw_key)
                if kind == "c":
                    existing = fresh.get(key)
                    if existing is None or isinstance(existing, Counter):
                        fresh.scope().counter(*key).incr(value)
                        fresh.scope().counter(*scope, *key).incr(value)
                elif kind == "g":
                    if key in gauges and key[-2:] in _MAX_GAUGES:
                        gauges[key] = max(gauges[key], value)
                    else:
                        gauges[key] = gauges.get(key, 0.0) + value
                elif kind == "h":
                    existing = fresh.get(key)
                    if existing is None or isinstance(existing, Histogram):
                        _merge_hist(fresh.scope().histogram(*key), value)
                        lasts.setdefault(key, _Last()).add(value["last"], value["lb"])
        for key, total in gauges.items():
            if fresh.get(key) is None:
                fresh._set(key, Gauge(_constant(total)))
        for key, last in lasts.items():
            hist = fresh.get(key)
            if isinstance(hist, Histogram):
                hist.last = last.hist.summary()
        self._root, self._size = fresh._root, fresh._size

    def items(self) -> Iterator[tuple[Key, Metric]]:
        """The merged metrics without the per-worker copies (what Prometheus exports)."""
        return iter([(k, m) for k, m in super().items() if not k or k[0] != WORKERS])

    def snapshot_histograms(self) -> None:
        """The admin's minute snapshot: of the supervisor's own histograms (each worker
        snapshots its own on the same interval)."""
        self.local.snapshot_histograms()


def _constant(value: float) -> Callable[[], float]:
    """A gauge's function that reads one merged value."""
    return lambda: value
