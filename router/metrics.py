"""The metrics registry: counters, gauges and histograms keyed by scope.

Recording sits on the request path, so a metric is an object with a plain
attribute that the hot path bumps (`counter.value += 1` via `incr`): no lock
(everything runs on one event loop), no allocation per request. Entities
(servers, services, clients) fetch their metric objects once, when created.

Keys are tuples of scope segments plus the metric name, e.g.
`("rt", "outgoing", "service", "svc/hello", "requests")`; a segment may
itself contain `/`. The flat name joins them with `/`
(`rt/outgoing/service/svc/hello/requests`), as Linkerd's metrics.json does.
Exporters (metrics.json, Prometheus) read the structure, not the flat name.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import os
from collections.abc import Callable, Iterator

Key = tuple[str, ...]
log = logging.getLogger(__name__)

SNAPSHOT_ENV = "L5D_HISTOGRAM_SNAPSHOT_SECS"
DEFAULT_SNAPSHOT_SECS = 60.0


class Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def incr(self, n: int = 1) -> None:
        self.value += n


class Gauge:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], float]) -> None:
        self.fn = fn

    @property
    def value(self) -> float:
        return float(self.fn())


def _bucket_limits() -> list[float]:
    """Log-linear bucket upper bounds: <=1% relative error from 0 to ~1e9."""
    limits: list[float] = [float(i) for i in range(0, 100)]
    v = 100.0
    while v < 2e9:
        limits.append(math.floor(v))
        v *= 1.02
    return sorted(set(limits))


_LIMITS = _bucket_limits()


def bucket_index(value: float) -> int:
    """The histogram bucket `value` falls in (shared by every Histogram). The first 100
    limits are 0.0, 1.0, ... 99.0, so a value up to 99 (nearly every latency in ms) falls
    in bucket ceil(value) without a search."""
    if 0.0 <= value <= 99.0:
        i = int(value)
        return i + 1 if i < value else i
    return bisect.bisect_left(_LIMITS, value)


class Histogram:
    """Counts values into fixed buckets; `snapshot()` summarises and resets.

    Linkerd snapshots histograms once a minute; exporters read the last
    snapshot, while `count`/`sum` totals stay live for Prometheus.
    """

    __slots__ = ("counts", "count", "sum", "min", "max", "total_count", "total_sum", "last",
                 "last_counts")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LIMITS) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.total_count = 0
        self.total_sum = 0.0
        self.last: dict[str, float] = {"count": 0}
        self.last_counts: list[int] | None = None  # the buckets behind `last` (worker merge)

    def add(self, value: float) -> None:
        self.add_at(bucket_index(value), value)

    def add_at(self, bucket: int, value: float) -> None:
        """`add` with the bucket already found (one value recorded in several histograms)."""
        self.counts[bucket] += 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def percentile(self, q: float) -> float:
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                upper = _LIMITS[i] if i < len(_LIMITS) else self.max
                return min(max(upper, self.min), self.max)
        return self.max

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"count": self.count}
        if self.count:
            out.update(
                max=self.max,
                min=self.min,
                p50=self.percentile(0.5),
                p90=self.percentile(0.9),
                p95=self.percentile(0.95),
                p99=self.percentile(0.99),
                p9990=self.percentile(0.999),
                p9999=self.percentile(0.9999),
                sum=self.sum,
                avg=self.sum / self.count,
            )
        return out

    def snapshot(self) -> dict[str, float]:
        """Summarise the current window into `last`, fold it into totals, and reset."""
        self.last = self.summary()
        self.last_counts = self.counts if self.count else None
        self.total_count += self.count
        self.total_sum += self.sum
        self.counts = [0] * (len(_LIMITS) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        return self.last


Metric = Counter | Gauge | Histogram


class _Node:
    """One scope segment in the registry tree: maybe a metric, maybe children."""

    __slots__ = ("metric", "children")

    def __init__(self) -> None:
        self.metric: Metric | None = None
        self.children: dict[str, _Node] = {}


class Metrics:
    """The process-wide registry. Create one per process; pass scopes down.

    Stored as a tree of scope segments so that removing a scope (an idle client
    or service expiring) costs the size of that scope, not of the registry, and
    leaves no empty branches behind: a flood of distinct names that come and go
    cannot grow it without bound. Exporters walk the same tree (`?tree=1`,
    `?q=`, Prometheus label lifting).
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def scope(self, *segments: str) -> Scope:
        return Scope(self, tuple(segments))

    def _node(self, key: Key) -> _Node:
        node = self._root
        for seg in key:
            child = node.children.get(seg)
            if child is None:
                child = node.children[seg] = _Node()
            node = child
        return node

    def _get(self, key: Key, factory: Callable[[], Metric]) -> Metric:
        node = self._node(key)
        if node.metric is None:
            node.metric = factory()
            self._size += 1
        return node.metric

    def _set(self, key: Key, metric: Metric) -> None:
        node = self._node(key)
        if node.metric is None:
            self._size += 1
        node.metric = metric

    def get(self, key: Key) -> Metric | None:
        node: _Node | None = self._root
        for seg in key:
            node = node.children.get(seg) if node else None
        return node.metric if node else None

    def items(self) -> Iterator[tuple[Key, Metric]]:
        """Every (key, metric), depth first; a list copy, so removal while iterating is safe."""
        return iter(list(_walk(self._root, ())))

    def resolve(self, parts: list[str]) -> tuple[Key, _Node] | None:
        """Find the subtree a flat `a/b/c` query names; segments may themselves contain `/`."""
        return _resolve(self._root, (), [p for p in parts if p])

    def remove_prefix(self, prefix: Key) -> None:
        path = [self._root]
        for seg in prefix:
            child = path[-1].children.get(seg)
            if child is None:
                return
            path.append(child)
        if not prefix:
            self._root = _Node()
            self._size = 0
            return
        removed = path.pop()
        self._size -= sum(1 for _ in _walk(removed, ()))
        del path[-1].children[prefix[-1]]
        # Prune ancestors left with neither a metric nor children.
        for depth in range(len(path) - 1, 0, -1):
            node = path[depth]
            if node.metric is not None or node.children:
                break
            del path[depth - 1].children[prefix[depth - 1]]

    def snapshot_histograms(self) -> None:
        for _key, metric in self.items():
            if isinstance(metric, Histogram):
                metric.snapshot()


def _walk(node: _Node, key: Key) -> Iterator[tuple[Key, Metric]]:
    if node.metric is not None:
        yield key, node.metric
    for seg, child in list(node.children.items()):
        yield from _walk(child, key + (seg,))


def _resolve(node: _Node, key: Key, parts: list[str]) -> tuple[Key, _Node] | None:
    if not parts:
        return key, node
    for j in range(1, len(parts) + 1):
        child = node.children.get("/".join(parts[:j]))
        if child is not None:
            found = _resolve(child, key + ("/".join(parts[:j]),), parts[j:])
            if found is not None:
                return found
    return None


class Scope:
    """A view of the registry under a fixed prefix of segments."""

    __slots__ = ("registry", "prefix")

    def __init__(self, registry: Metrics, prefix: Key) -> None:
        self.registry = registry
        self.prefix = prefix

    def scope(self, *segments: str) -> Scope:
        return Scope(self.registry, self.prefix + segments)

    def counter(self, *name: str) -> Counter:
        metric = self.registry._get(self.prefix + name, Counter)
        assert isinstance(metric, Counter), f"{'/'.join(self.prefix + name)} is not a counter"
        return metric

    def histogram(self, *name: str) -> Histogram:
        metric = self.registry._get(self.prefix + name, Histogram)
        assert isinstance(metric, Histogram), f"{'/'.join(self.prefix + name)} is not a histogram"
        return metric

    def gauge(self, fn: Callable[[], float], *name: str) -> Gauge:
        gauge = Gauge(fn)
        self.registry._set(self.prefix + name, gauge)
        return gauge

    def remove(self) -> None:
        """Drop every metric under this scope (an idle client or service expiring)."""
        self.registry.remove_prefix(self.prefix)


async def snapshot_loop(metrics: Metrics, interval: float) -> None:
    """Snapshot (and reset) every histogram each `interval` seconds, as Linkerd does
    (the admin runs it; so does each data-path worker, for its own registry)."""
    while True:
        await asyncio.sleep(interval)
        try:
            metrics.snapshot_histograms()
        except Exception:
            log.exception("histogram snapshot failed")


def snapshot_interval() -> float:
    raw = os.environ.get(SNAPSHOT_ENV)
    if not raw:
        return DEFAULT_SNAPSHOT_SECS
    try:
        value = float(raw)
    except ValueError:
        log.error("%s=%r is not a number of seconds; using %s", SNAPSHOT_ENV, raw, 60)
        return DEFAULT_SNAPSHOT_SECS
    return value if value > 0 else DEFAULT_SNAPSHOT_SECS
