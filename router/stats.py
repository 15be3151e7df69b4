"""Per-server, per-service and per-client request stats, named as Linkerd names them (§4.2).

Each stats object fetches its metric objects once, when the entity appears;
per request the hot path only bumps attributes (`record`). Services and
per-client service scopes come and go with traffic (a flood of Host values
must not grow memory), so `ServiceStatsCache` expires idle ones and removes
their metrics from the registry.
"""

from __future__ import annotations

import time

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
               now: float) -> None:
    """`s.record(status, latency_ms)` and `s.last_used = now` for every `s` in `group`.

    A proxied response lands in four stats (server, service, client, client/service)
    with one latency: one call that finds the histogram bucket once costs about half
    of four `record` calls.
    """
    i = bucket_index(latency_ms)
    ok = status < 500
    for s in group:
        s.last_used = now
        s.requests.value += 1
        if ok:
            s.success.value += 1
        else:
            s.failures.value += 1
        s.latency.add_at(i, latency_ms)
        if s.with_status:
            pair = s._status.get(status) or s._status_counters(status)
            pair[0].value += 1
            pair[1].value += 1


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


class ServiceStatsCache:
    """Stats by name, expiring (with their metrics) after `idle_s` without traffic.

    Also capped at `max_entries`: past it, the least recently used tenth is dropped at
    once, so a flood of distinct names (Host values) costs bounded memory even within
    the idle window. `on_evict` tells holders of stats objects to let go of them.
    """

    def __init__(self, factory, idle_s: float = 600.0,  # noqa: ANN001
                 max_entries: int = 10_000) -> None:
        self._factory = factory
        self._stats: dict[str, RequestStats] = {}
        self.idle_s = idle_s
        self.max_entries = max_entries
        self.on_evict = None  # Callable[[], None] | None

    def get(self, name: str) -> RequestStats:
        st = self._stats.get(name)
        if st is None:
            if len(self._stats) >= self.max_entries:
                self._evict_oldest()
            st = self._stats[name] = self._factory(name)
        return st

    def _evict_oldest(self) -> None:
        by_age = sorted(self._stats.items(), key=lambda kv: kv[1].last_used)
        for name, st in by_age[: max(1, len(by_age) // 10)]:
            del self._stats[name]
            st.remove()
        if self.on_evict is not None:
            self.on_evict()

    def expire(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        dead = [n for n, s in self._stats.items() if now - s.last_used > self.idle_s]
        for n in dead:
            self._stats.pop(n).remove()
        return len(dead)

    def clear(self) -> None:
        for s in self._stats.values():
            s.remove()
        self._stats.clear()

    def __len__(self) -> int:
        return len(self._stats)

    def __contains__(self, name: str) -> bool:
        return name in self._stats


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
            idle_s,
        )
