"""namerd's metrics: one `router.metrics.Metrics` registry, served by the admin as
`/admin/metrics.json` and `/admin/metrics/prometheus` (the router's exporters), and at
the `path`/`prefix` of an `io.l5d.prometheus` telemeter in namerd's `telemetry`.

Scopes follow Linkerd's namerd (`NamerdConfig`: `dtabstore`, `interface/<kind>`):
- `dtabstore/namespaces` (gauge), `dtabstore/updates` (every state change seen,
  whichever replica wrote it);
- `interface/io.l5d.httpController/{requests, success, failures,
  request_latency_ms, status/<code>}` and `.../watches` (open `?watch=true` streams);
- `interface/io.l5d.mesh/<Service>/<Method>/{requests, success, failures,
  request_latency_ms}` and `.../streams` (open Stream* calls).
A stream counts as a success when it ends cleanly (the client went away or
namerd stopped) and as a failure when it ends with an error status.
"""

from __future__ import annotations

import time
from typing import Any

from router.metrics import Counter, Histogram, Metrics, Scope


class Stat:
    """requests / success / failures / request_latency_ms of one call kind."""

    __slots__ = ("requests", "success", "failures", "latency")

    def __init__(self, scope: Scope) -> None:
        self.requests: Counter = scope.counter("requests")
        self.success: Counter = scope.counter("success")
        self.failures: Counter = scope.counter("failures")
        self.latency: Histogram = scope.histogram("request_latency_ms")

    def start(self) -> float:
        self.requests.incr()
        return time.monotonic()

    def done(self, t0: float, ok: bool, *, timed: bool = True) -> None:
        (self.success if ok else self.failures).incr()
        if timed:
            self.latency.add((time.monotonic() - t0) * 1000)


class Stats:
    """`Stat`s under one scope, made once per name; `streams` counts open streams."""

    def __init__(self, scope: Scope, streams_name: str) -> None:
        self.scope = scope
        self.open_streams = 0
        self._stats: dict[tuple[str, ...], Stat] = {}
        scope.gauge(lambda: self.open_streams, streams_name)

    def of(self, *name: str) -> Stat:
        stat = self._stats.get(name)
        if stat is None:
            stat = self._stats[name] = Stat(self.scope.scope(*name))
        return stat


def watch_store(metrics: Metrics, store: Any) -> Any:
    """`dtabstore/*` for a store; returns the unsubscribe function."""
    scope = metrics.scope("dtabstore")
    scope.gauge(lambda: len(store.state.value), "namespaces")
    updates = scope.counter("updates")
    return store.state.observe(lambda _v: updates.incr())
