"""`/admin/metrics/prometheus`: our registry in Linkerd's label form (reference §4.3).

A prometheus-client Collector walks the registry on each scrape. Scope segments
join with `:`, characters outside `[a-zA-Z0-9:]` become `_`, the telemeter's
`prefix` goes in front, and the router, server, service and client scopes are
lifted into labels: `rt:server:requests{rt="outgoing",server="127.0.0.1/4140"}`.
`failures/<exn>` becomes `...:failures{exception="a:b"}` and `exn/<exn>`
`...:exceptions{exception=...}`, Linkerd's names. Linkerd also wrote the total as the
unlabelled `...:failures` next to those, so `sum(rt:server:failures)` counted every
failure that had an exception twice. Here the family is a partition: the unlabelled
series is the failures that have no exception (a 5XX response, a classifier's verdict),
each `exception` series the ones that have that one, so `sum()` over the family is
the total (what metrics.json's `failures` says) and each failure is counted once.

Counters and gauges are untyped, as Linkerd exported them (so the names stay
exactly Linkerd's). A histogram is a summary: quantiles and `_avg` come from
the last minute snapshot, while `_count`/`_sum` are cumulative so `rate()` works.
Metrics removed between scrapes (expired clients) simply stop appearing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from router.admin.metrics_json import gauge_value
from router.metrics import Counter, Gauge, Histogram, Key, Metrics

if TYPE_CHECKING:  # imported at the first scrape: 57 modules, ~3 MB until then
    from prometheus_client.core import Metric as PromMetric

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DISALLOWED = re.compile(r"[^a-zA-Z0-9:]")
_QUANTILES = (
    ("0", "min"),
    ("0.5", "p50"),
    ("0.9", "p90"),
    ("0.95", "p95"),
    ("0.99", "p99"),
    ("0.999", "p9990"),
    ("0.9999", "p9999"),
    ("1", "max"),
)
_LIFTS = {
    ("rt",): "rt",
    ("rt", "service"): "service",
    ("rt", "client"): "client",
    ("rt", "client", "service"): "service",
    ("rt", "server"): "server",
}


def lift(key: Key) -> tuple[list[str], dict[str, str]]:
    """Split a registry key into name segments and labels, Linkerd's way."""
    prefix: list[str] = []
    labels: dict[str, str] = {}
    segs = list(key)
    i = 0
    while i < len(segs):
        seg = segs[i]
        label = _LIFTS.get(tuple(prefix))
        if label is not None and label not in labels and i < len(segs) - 1:
            if label == "server" and i + 2 < len(segs) and segs[i + 1].isdigit():
                seg = f"{seg}/{segs[i + 1]}"  # ServerStats scopes ip and port separately
                i += 1
            labels[label] = seg
        elif seg in ("failures", "exn") and 0 < len(segs) - 1 - i and "exception" not in labels:
            prefix.append("failures" if seg == "failures" else "exceptions")
            labels["exception"] = ":".join(segs[i + 1 :])
            break
        else:
            prefix.append(seg)
        i += 1
    return prefix, labels


def metric_name(prefix: str, segments: list[str]) -> str:
    name = prefix + _DISALLOWED.sub("_", ":".join(segments))
    if not name or name[0].isdigit():
        name = "_" + name
    return name


class RegistryCollector:
    """A prometheus-client collector over our own registry (no copies kept).

    `collect()` reads live values, so it runs on the event loop that owns the
    registry; `render_async` then leaves the text formatting, the larger part of
    a scrape, to a worker thread so a scrape of many clients does not stall
    requests (Linkerd issue #1990).
    """

    def __init__(self, metrics: Metrics, prefix: str = "") -> None:
        self.metrics = metrics
        self.prefix = prefix
        self._names: dict[Key, tuple[str, dict[str, str]]] = {}

    def _name(self, key: Key) -> tuple[str, dict[str, str]]:
        cached = self._names.get(key)
        if cached is None:
            if len(self._names) > 4 * len(self.metrics) + 1000:
                self._names.clear()  # keys of expired metrics must not pile up
            segments, labels = lift(key)
            cached = self._names[key] = (metric_name(self.prefix, segments), labels)
        return cached

    def collect(self) -> Iterator[PromMetric]:
        from prometheus_client.core import Metric as PromMetric

        families: dict[str, PromMetric] = {}
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

        def family(name: str, kind: str) -> PromMetric | None:
            fam = families.get(name)
            if fam is None:
                fam = families[name] = PromMetric(name, f"l5d metric {name}", kind)
            elif fam.type != kind:
                return None
            return fam

        def sample(fam: PromMetric, name: str, labels: dict[str, str], value: float) -> None:
            ident = (name, tuple(labels.items()))
            if ident in seen:
                return
            seen.add(ident)
            fam.add_sample(name, labels, value)

        items = list(self.metrics.items())
        # `failures` minus its per-exception children: what no `exception` series counts.
        by_exception: dict[Key, int] = {}
        for key, metric in items:
            if len(key) > 1 and key[-2] == "failures" and isinstance(metric, Counter):
                parent = key[:-1]
                by_exception[parent] = by_exception.get(parent, 0) + metric.value
        for key, metric in items:
            name, labels = self._name(key)
            if isinstance(metric, Counter):
                fam = family(name, "unknown")
                if fam is not None:
                    value = metric.value
                    if key in by_exception:
                        value = max(0, value - by_exception[key])
                    sample(fam, name, labels, value)
            elif isinstance(metric, Gauge):
                reading = gauge_value(key, metric)
                fam = family(name, "unknown")
                if fam is not None and reading is not None:
                    sample(fam, name, labels, reading)
            elif isinstance(metric, Histogram):
                fam = family(name, "summary")
                if fam is None:
                    continue
                last = metric.last
                if last.get("count", 0):
                    for q, field in _QUANTILES:
                        sample(fam, name, {**labels, "quantile": q}, last[field])
                    avg = family(name + "_avg", "unknown")
                    if avg is not None:
                        sample(avg, name + "_avg", labels, last["avg"])
                sample(fam, name + "_count", labels, metric.total_count + metric.count)
                sample(fam, name + "_sum", labels, metric.total_sum + metric.sum)
        yield from families.values()


class _Frozen:
    """Families already collected, for formatting off the event loop."""

    def __init__(self, families: list[PromMetric]) -> None:
        self.families = families

    def collect(self) -> Iterator[PromMetric]:
        return iter(self.families)


def _format(families: list[PromMetric]) -> bytes:
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Frozen(families))
    return generate_latest(registry)


def render(metrics: Metrics, prefix: str = "") -> bytes:
    return _format(list(RegistryCollector(metrics, prefix).collect()))


async def render_async(collector: RegistryCollector) -> bytes:
    families = list(collector.collect())  # on the loop: the registry is not thread-safe
    return await asyncio.get_running_loop().run_in_executor(None, _format, families)
