"""Per-server, per-service and per-client request stats, named as Linkerd names them (§4.2).

Each stats object fetches its metric objects once, when the entity appears;
per request the hot path only bumps attributes (`record`). Services and
per-client service scopes come and go with traffic (a flood of Host values
must not grow memory), so `ServiceStatsCache` expires idle ones and removes
their metrics from the registry.
"""

from __future__ import annotations

import time

from dtab.bounded import WeightedLRU
from router.metrics import Counter, Histogram, Scope, bucket_index


def scope_name(path_show: str) -> str:
    """`/svc/hello` -> `svc/hello`: Linkerd drops the leading slash of names in scopes."""
    return path_show[1:] if path_show.startswith("/") else path_show


class RequestStats:
    """requests / success / failures / failures/<cause> / request_latency_ms [/ status/*]."""

    __slots__ = ("scope", "requests", "success", "failures", "latency", "with_status",
                 "_status", "_causes", "last_used")

    def __init__(self, scope: Scope, *, with_status: bool = True) -> None:
        self.scope = scope
        self.requests: Counter = scope.counter("requests")
        self.success: Counter = scope.counter("success")
        self.failures: Counter = scope.counter("failures")
        self.latency: Histogram = scope.histogram("request_latency_ms")
        self.with_status = with_status
        self._status: dict[int, tuple[Counter, Counter]] = {}
        self._causes: dict[str, Counter] = {}
        self.last_used = time.monotonic()

    def _status_counters(self, status: int) -> tuple[Counter, Counter]:
        pair = self._status.get(status)
        if pair is None:
            pair = self._status[status] = (
                self.scope.counter("status", str(status)),
                self.scope.counter("status", f"{status // 100}XX"),
            )
        return pair

    def record(self, status: int, latency_ms: float) -> None:
        """One finished response; 5XX counts as a failure (nonRetryable5XX classifier)."""
        self.requests.value += 1
        if status >= 500:
            self.failures.value += 1
        else:
            self.success.value += 1
        self.latency.add(latency_ms)
        if self.with_status:
            pair = self._status.get(status) or self._status_counters(status)
            pair[0].value += 1
            pair[1].value += 1

    def record_failure(self, cause: str, latency_ms: float, status: int | None = None) -> None:
        """A request that failed with an exception (and maybe a router-made status)."""
        self.requests.value += 1
        self.failures.value += 1
        c = self._causes.get(cause)
        if c is None:
            c = self._causes[cause] = self.scope.counter("failures", cause)
        c.value += 1
        self.latency.add(latency_ms)
        if self.with_status:
            if status is None:
                self.scope.counter("status", "error").value += 1
            else:
                code, klass = self._status_counters(status)
                code.value += 1
                klass.value += 1

    def remove(self) -> None:
        self.scope.remove()


def record_all(group: tuple[RequestStats, ...], status: int, latency_ms: float,
               now: float, ok: bool) -> None:
    """`s.record(status, latency_ms)` and `s.last_used = now` for every `s` in `group`.

    A proxied response lands in four stats (server, service, client, client/service)
    with one latency: one call that finds the histogram bucket once and does
    `Histogram.add_at`'s work in line (a call per stats object less) costs well under
    half of four `record` calls. `ok` is the service classifier's verdict (router/policy).
    """
    i = bucket_index(latency_ms)
    for s in group:
        s.last_used = now
        s.requests.value += 1
        if ok:
            s.success.value += 1
        else:
            s.failures.value += 1
        h = s.latency  # Histogram.add_at, in line
        h.counts[i] += 1
        h.count += 1
        h.sum += latency_ms
        if latency_ms < h.min:
            h.min = latency_ms
        if latency_ms > h.max:
            h.max = latency_ms
        if s.with_status:
            code, klass = s._status.get(status) or s._status_counters(status)
            code.value += 1
            klass.value += 1


class ServerStats(RequestStats):
    """`rt/<label>/server/<ip>/<port>/...` plus connection and byte counts."""

    __slots__ = ("connects", "sent_bytes", "received_bytes", "open_connections")

    def __init__(self, router_scope: Scope, ip: str, port: int) -> None:
        super().__init__(router_scope.scope("server", ip, str(port)))
        self.connects: Counter = self.scope.counter("connects")
        self.sent_bytes: Counter = self.scope.counter("sent_bytes")
        self.received_bytes: Counter = self.scope.counter("received_bytes")
        self.open_connections = 0
        self.scope.gauge(lambda: self.open_connections, "connections")


class ServiceStats(RequestStats):
    """`rt/<label>/service/<name without leading />/...`."""

    __slots__ = ()

    def __init__(self, router_scope: Scope, name: str) -> None:
        super().__init__(router_scope.scope("service", scope_name(name)), with_status=False)


# One service's stats (counters, a latency histogram, their registry entries) hold
# about 9 KB (tracemalloc); the caches below are bounded by that estimate.
STATS_BYTES = 9 * 1024
SERVICE_STATS_BYTES = 16 * 1024 * 1024  # ~1,800 services per router
CLIENT_SERVICE_STATS_BYTES = 4 * 1024 * 1024  # ~450 services per client


class ServiceStatsCache:
    """Stats by name, expiring (with their metrics) after `idle_s` without traffic.

    Also bounded by approximate bytes (`max_bytes`) and `max_entries`: past them the
    least recently used are dropped at once, so a flood of distinct names (Host
    values) costs bounded memory even within the idle window. `on_evict` tells
    holders of stats objects to let go of them.
    """

    def __init__(self, factory, idle_s: float = 600.0,  # noqa: ANN001
                 max_entries: int = 10_000, max_bytes: int = SERVICE_STATS_BYTES) -> None:
        self._factory = factory
        self._stats: WeightedLRU[str, RequestStats] = WeightedLRU(
            max_bytes, max_entries=max_entries, on_evict=lambda _n, st: st.remove())
        self.idle_s = idle_s
        self.on_evict = None  # Callable[[], None] | None

    @property
    def max_entries(self) -> int | None:
        return self._stats.max_entries

    @max_entries.setter
    def max_entries(self, n: int) -> None:
        self._stats.max_entries = n

    def get(self, name: str) -> RequestStats:
        st = self._stats.get(name)
        if st is None:
            before = self._stats.evictions
            st = self._factory(name)
            if not self._stats.put(name, st, STATS_BYTES + 4 * len(name)):
                st.remove()  # a name too long to keep stats for: counted nowhere
            if self._stats.evictions != before and self.on_evict is not None:
                self.on_evict()
        return st

    def expire(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        idle_s = self.idle_s
        return self._stats.evict_where(lambda _n, s: now - s.last_used > idle_s)

    def clear(self) -> None:
        self._stats.clear()

    def __len__(self) -> int:
        return len(self._stats)

    def __contains__(self, name: str) -> bool:
        return name in self._stats

    @property
    def weight(self) -> int:
        return self._stats.weight


class ClientStats(RequestStats):
    """`rt/<label>/client/<id without leading />/...`, with per-service sub-scopes."""

    __slots__ = ("connect_latency", "services", "connects")

    def __init__(self, router_scope: Scope, client_id: str, idle_s: float = 600.0) -> None:
        super().__init__(router_scope.scope("client", scope_name(client_id)))
        self.connect_latency: Histogram = self.scope.histogram("connect_latency_ms")
        self.connects: Counter = self.scope.counter("connects")
        scope = self.scope
        self.services = ServiceStatsCache(
            lambda name: RequestStats(scope.scope("service", scope_name(name)), with_status=False),
            idle_s, max_bytes=CLIENT_SERVICE_STATS_BYTES,
        )
