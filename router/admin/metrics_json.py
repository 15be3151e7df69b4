"""`/admin/metrics.json` in Linkerd's shapes (reference §4.2).

Flat: `{"rt/outgoing/server/127.0.0.1/4140/requests": 12, ...}`; a histogram
`X` is written from its last minute snapshot as `X.count` and, when that is
non-zero, `X.max .min .p50 .p90 .p95 .p99 .p9990 .p9999 .sum .avg`.
`?tree=1` nests by scope (`{"requests": {"counter": 12}}`), `?q=a/b` narrows to a
subtree (names relative to it), `?pretty=1` indents and sorts.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from router.metrics import Counter, Gauge, Histogram, Key, Metric, Metrics, _Node

log = logging.getLogger(__name__)

_STAT_FIELDS = ("max", "min", "p50", "p90", "p95", "p99", "p9990", "p9999", "sum", "avg")
_failed_gauges: set[Key] = set()


def gauge_value(key: Key, gauge: Gauge) -> float | None:
    """A gauge's value, or None (logged once per key) when its function raises."""
    try:
        value = gauge.value
    except Exception:
        if key not in _failed_gauges:
            _failed_gauges.add(key)
            log.exception("gauge %s failed; leaving it out of the export", "/".join(key))
        return None
    return value if math.isfinite(value) else None


def metric_fields(name: str, key: Key, metric: Metric) -> list[tuple[str, float | int]]:
    """The JSON fields one metric contributes, with `name` as the field (prefix)."""
    if isinstance(metric, Counter):
        return [(name, metric.value)]
    if isinstance(metric, Gauge):
        value = gauge_value(key, metric)
        return [] if value is None else [(name, value)]
    if isinstance(metric, Histogram):
        last = metric.last
        count = int(last.get("count", 0))
        out: list[tuple[str, float | int]] = [(f"{name}.count", count)]
        if count:
            out += [(f"{name}.{f}", last[f]) for f in _STAT_FIELDS if f in last]
        return out
    return []


def flat(metrics: Metrics, q: str | None = None) -> dict[str, Any] | None:
    """The flat object, or None when `q` names no subtree."""
    found = _subtree(metrics, q)
    if found is None:
        return None
    base, node = found
    out: dict[str, Any] = {}
    for key, metric in _items(node, ()):
        name = "/".join(key)
        for field, value in metric_fields(name, base + key, metric):
            out[field] = value
    return out


def tree(metrics: Metrics, q: str | None = None) -> dict[str, Any] | None:
    found = _subtree(metrics, q)
    if found is None:
        return None
    return _tree(found[1], found[0])


def _tree(node: _Node, key: Key) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node.metric is not None:
        kind = {Counter: "counter", Gauge: "gauge", Histogram: "stat"}[type(node.metric)]
        out.update(metric_fields(kind, key, node.metric))
    for seg, child in list(node.children.items()):
        out[seg] = _tree(child, key + (seg,))
    return out


def _subtree(metrics: Metrics, q: str | None) -> tuple[Key, _Node] | None:
    if not q:
        return (), metrics._root
    return metrics.resolve(q.split("/"))


def _items(node: _Node, key: Key):
    if node.metric is not None:
        yield key, node.metric
    for seg, child in list(node.children.items()):
        yield from _items(child, key + (seg,))


def render(metrics: Metrics, *, q: str | None, as_tree: bool, pretty: bool) -> tuple[int, str]:
    """(status, body) for a metrics.json request."""
    data = tree(metrics, q) if as_tree else flat(metrics, q)
    if data is None:
        return 404, json.dumps({"error": f"No such subtree: {q}"})
    if pretty:
        return 200, json.dumps(data, indent=2, sort_keys=True)
    return 200, json.dumps(data, separators=(",", ":"))
