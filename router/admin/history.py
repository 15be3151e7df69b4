"""The dashboard's history, kept server-side: a bounded ring of per-second samples.

Linkerd 1's dashboard starts empty on every page load and derives rates from the
difference between two polls. Here the admin samples the registry once a second and
keeps the last `HISTORY_S` seconds, so a page load draws the last minutes at once.

Every number of a sample covers the same window (`WINDOW_S`, said on the page):
requests/s is the request count's growth over the window (smoothed, not a per-poll
difference), success rate is success / (success + failures) over it, and p50/p99 are
percentiles of the latencies recorded in it (from the histogram buckets added in each
second, so the 60 s histogram snapshot does not shape the curve).

Per router, the totals (all its servers), each service and each client (with its
balancer's endpoints and connections) are sampled; entities are found as the metric
subtrees holding a `requests` counter, exactly what `/admin/metrics.json` shows, so a
client or service whose metrics expire after the idle TTL leaves the history too.
Bounded: `HISTORY_S` samples, at most `MAX_ENTITIES` services and clients per router
(the busiest), sparse bucket deltas per second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from router.metrics import _LIMITS, Counter, Gauge, Histogram, Metrics

log = logging.getLogger(__name__)

HISTORY_S = 300  # five minutes of one-second samples
WINDOW_S = 10  # every rate, success rate and percentile covers this many seconds
MAX_ENTITIES = 50  # services and clients per router kept in the history
LATENCY = "request_latency_ms"


def _counter(node: Any, name: str) -> int:
    child = node.children.get(name)
    m = child.metric if child is not None else None
    return m.value if isinstance(m, Counter) else 0


def _gauge(node: Any, *path: str) -> float | None:
    for p in path:
        node = node.children.get(p) if node is not None else None
    m = node.metric if node is not None else None
    if isinstance(m, Gauge):
        try:
            v = float(m.value)
        except Exception:  # a gauge of something closed: no value this second
            return None
        return v if math.isfinite(v) else None
    return None


def _entities(node: Any, prefix: str, out: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    for name, child in node.children.items():
        path = f"{prefix}/{name}" if prefix else name
        if "requests" in child.children and isinstance(child.children["requests"].metric,
                                                       Counter):
            out.append((path, child))
        else:
            _entities(child, path, out)
    return out


class _Series:
    """One entity's cumulative counters per second and its sparse latency deltas."""

    __slots__ = ("samples", "buckets", "counts_ref", "counts_copy", "last_seen")

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int, int, int, dict[int, int]]] = deque(
            maxlen=WINDOW_S + 1)
        self.counts_ref: list[int] | None = None
        self.counts_copy: list[int] = []
        self.last_seen = 0.0

    def latency_delta(self, h: Histogram | None) -> dict[int, int]:
        """Buckets added since the last sample (a histogram snapshot resets them: then
        what was added since the reset)."""
        if h is None:
            return {}
        counts = h.counts
        delta = {}
        old = self.counts_ref
        if (old is not None and old is not counts and h.last_counts is not old
                and len(old) == len(counts)
                and all(c >= b for c, b in zip(counts, self.counts_copy, strict=True))):
            # A new object counting on (a supervisor's merge of its workers'). Not a
            # snapshot: that keeps the list it replaced as `last_counts`, and at a steady
            # rate its fresh buckets can equal the old ones, which read as no traffic.
            old = counts
        if old is not None and old is not counts:
            # A snapshot replaced the list: the old one still holds what was added up to
            # the reset, so nothing recorded between two samples is lost.
            delta = {i: c - b for i, (c, b) in enumerate(zip(old, self.counts_copy,
                                                             strict=True)) if c != b}
            base: list[int] | None = None
        else:
            base = self.counts_copy if old is not None else None
        if base is None:
            for i, c in enumerate(counts):
                if c:
                    delta[i] = delta.get(i, 0) + c
        else:
            delta = {i: c - b for i, (c, b) in enumerate(zip(counts, base, strict=True))
                     if c != b}
        self.counts_ref = counts
        self.counts_copy = list(counts)
        return delta

    def add(self, t: float, req: int, ok: int, fail: int, delta: dict[int, int]) -> dict[str, Any]:
        self.samples.append((t, req, ok, fail, delta))
        self.last_seen = t
        first = self.samples[0]
        span = t - first[0]
        d_req, d_ok, d_fail = req - first[1], ok - first[2], fail - first[3]
        merged: dict[int, int] = {}
        for i, s in enumerate(self.samples):
            if i == 0:
                continue
            for b, c in s[4].items():
                merged[b] = merged.get(b, 0) + c
        return {
            "requests": req,
            "failures": fail,
            "rps": round(d_req / span, 3) if span > 0 else None,
            "sr": round(d_ok / (d_ok + d_fail), 5) if d_ok + d_fail > 0 else None,
            "p50": _percentile(merged, 0.5),
            "p99": _percentile(merged, 0.99),
        }


def _percentile(buckets: dict[int, int], q: float) -> float | None:
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for b in sorted(buckets):
        seen += buckets[b]
        if seen >= rank:
            return float(_LIMITS[b]) if b < len(_LIMITS) else float(_LIMITS[-1])
    return None


class History:
    """`sample()` once a second (`run()`); `since(t)` for the dashboard."""

    def __init__(self, metrics: Metrics, *, length: int = HISTORY_S) -> None:
        self.metrics = metrics
        self.samples: deque[dict[str, Any]] = deque(maxlen=length)
        self._series: dict[tuple[str, ...], _Series] = {}

    def _track(self, key: tuple[str, ...], node: Any, now: float, *, totals: list[Any] | None
               = None) -> dict[str, Any]:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        if totals is None:
            h = node.children.get(LATENCY)
            hist = h.metric if h is not None and isinstance(h.metric, Histogram) else None
            return series.add(now, _counter(node, "requests"), _counter(node, "success"),
                              _counter(node, "failures"), series.latency_delta(hist))
        req = ok = fail = 0
        delta: dict[int, int] = {}
        for name, server in totals:  # a router: the sum of its servers
            req += _counter(server, "requests")
            ok += _counter(server, "success")
            fail += _counter(server, "failures")
            sub = self._series.get((*key, name))
            if sub is None:
                sub = self._series[(*key, name)] = _Series()
            sub.last_seen = now
            h = server.children.get(LATENCY)
            hist = h.metric if h is not None and isinstance(h.metric, Histogram) else None
            for b, c in sub.latency_delta(hist).items():
                delta[b] = delta.get(b, 0) + c
        return series.add(now, req, ok, fail, delta)

    def sample(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        found = self.metrics.resolve(["rt"])
        routers: dict[str, Any] = {}
        if found is not None:
            _, rt = found
            for label, rnode in list(rt.children.items()):
                routers[label] = self._router(label, rnode, now)
        # forget entities whose metrics are gone (expired after the idle TTL)
        for key in [k for k, s in self._series.items() if s.last_seen < now]:
            del self._series[key]
        sample = {"t": round(now, 3), "routers": routers}
        self.samples.append(sample)
        return sample

    def _router(self, label: str, rnode: Any, now: float) -> dict[str, Any]:
        server = rnode.children.get("server")
        servers = _entities(server, "", []) if server is not None else []
        out: dict[str, Any] = {
            "total": self._track(("rt", label), rnode, now, totals=servers),
            "servers": [name for name, _ in servers],
        }
        for kind in ("service", "client"):
            node = rnode.children.get(kind)
            found = _entities(node, "", []) if node is not None else []
            found.sort(key=lambda e: -_counter(e[1], "requests"))
            entries: dict[str, Any] = {}
            for name, enode in found[:MAX_ENTITIES]:
                entry = self._track(("rt", label, kind, name), enode, now)
                if kind == "service":  # the router's own retries (router/policy)
                    retries = enode.children.get("retries")
                    entry["retries"] = _counter(retries, "total") if retries else 0
                if kind == "client":
                    entry["endpoints"] = _gauge(enode, "loadbalancer", "available")
                    entry["size"] = _gauge(enode, "loadbalancer", "size")
                    entry["connections"] = _gauge(enode, "connections")
                entries["/" + name] = entry
            out[kind + "s"] = entries
        return out

    def since(self, t: float | None) -> list[dict[str, Any]]:
        if t is None:
            return list(self.samples)
        return [s for s in self.samples if s["t"] > t]

    async def run(self, interval_s: float = 1.0,
                  refresh: Callable[[], Awaitable[None]] | None = None) -> None:
        """Sample every `interval_s`; `refresh` first (a supervisor pulls its workers')."""
        while True:
            try:
                if refresh is not None:
                    await refresh()
                self.sample()
            except Exception:  # a bug here must not stop the history silently
                log.exception("sampling the dashboard history failed")
            await asyncio.sleep(interval_s)


def history_of(linker: Any) -> History:
    """The linker's history (one per process: it outlives an admin restart on reload)."""
    h = getattr(linker, "history", None)
    if h is None:
        h = History(linker.metrics)
        try:
            linker.history = h
        except AttributeError:
            pass
    return h
