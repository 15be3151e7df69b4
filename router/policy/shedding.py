"""Server `maxConcurrentRequests`: beyond it a request is refused at once, never queued.

Linkerd gives a server an `AsyncSemaphore(max, maxWaiters = 0)`: a request over
the limit fails immediately. Here it is a 503 with `l5d-err`, counted as the
server's `load_shed` and as `failures/RejectedExecutionException`.
"""

from __future__ import annotations

from typing import Any

from router.http.errors import RouteError


class LoadShedder:
    __slots__ = ("limit", "active", "shed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: set[Any] = set()
        self.shed: Any = None  # the server's load_shed counter, once its stats exist

    def admit(self, ex: Any) -> bool:
        if len(self.active) >= self.limit:
            if self.shed is None:
                self.shed = ex.server.stats.scope.counter("load_shed")
            self.shed.value += 1
            return False
        self.active.add(ex)
        return True

    def release(self, ex: Any) -> None:
        self.active.discard(ex)

    def rejection(self) -> RouteError:
        return RouteError(503, f"Max concurrent requests exceeded: this server serves at most "
                          f"{self.limit} at once (maxConcurrentRequests); request refused",
                          "RejectedExecutionException")
