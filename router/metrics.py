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

import bisect
import math
from collections.abc import Callable, Iterator

Key = tuple[str, ...]


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


class Histogram:
    """Counts values into fixed buckets; `snapshot()` summarises and resets.

    Linkerd snapshots histograms once a minute; exporters read the last
    snapshot, while `count`/`sum` totals stay live for Prometheus.
    """

    __slots__ = ("counts", "count", "sum", "min", "max", "total_count", "total_sum", "last")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LIMITS) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.total_count = 0
        self.total_sum = 0.0
        self.last: dict[str, float] = {"count": 0}

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(_LIMITS, value)] += 1
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
        self.total_count += self.count
        self.total_sum += self.sum
        self.counts = [0] * (len(_LIMITS) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        return self.last


Metric = Counter | Gauge | Histogram


class Metrics:
    """The process-wide registry. Create one per process; pass scopes down."""

    def __init__(self) -> None:
        self._metrics: dict[Key, Metric] = {}

    def scope(self, *segments: str) -> Scope:
        return Scope(self, tuple(segments))

    def _get(self, key: Key, factory: Callable[[], Metric]) -> Metric:
        metric = self._metrics.get(key)
        if metric is None:
            metric = self._metrics[key] = factory()
        return metric

    def items(self) -> Iterator[tuple[Key, Metric]]:
        return iter(list(self._metrics.items()))

    def remove_prefix(self, prefix: Key) -> None:
        n = len(prefix)
        for key in [k for k in self._metrics if k[:n] == prefix]:
            del self._metrics[key]

    def snapshot_histograms(self) -> None:
        for metric in list(self._metrics.values()):
            if isinstance(metric, Histogram):
                metric.snapshot()


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
        self.registry._metrics[self.prefix + name] = gauge
        return gauge

    def remove(self) -> None:
        """Drop every metric under this scope (an idle client or service expiring)."""
        self.registry.remove_prefix(self.prefix)
