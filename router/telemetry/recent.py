"""`io.l5d.recentRequests`: the last `capacity` requests in memory, at the admin's
`/requests` (a page) and `/requests.json`.

`sampleRate` (required, as in Linkerd) picks requests by trace id; `capacity`
(default 10) bounds the ring. Each entry: time, router, method, URI, service,
client, endpoint, status, latency, trace id, source; newest first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from dtab.errors import ParamError
from router.telemetry.params import Params

KIND = "io.l5d.recentRequests"
PAGE = resources.files("router.telemetry") / "static" / "requests.html"


def parse_params(params: dict[str, Any]) -> dict[str, Any]:
    p = Params(params)
    rate = p.rate("sampleRate", None)
    if rate is None:
        raise ParamError("sampleRate", "missing required key 'sampleRate' (a number from 0.0 "
                         "to 1.0: the share of requests kept)")
    out = {"sampleRate": rate, "capacity": p.int("capacity", 10, 1, 100_000)}
    p.finish()
    return out


class RecentRequests:
    kind = KIND

    def __init__(self, params: dict[str, Any], metrics: Any) -> None:
        from router.telemetry.tracer import Sampler

        p = parse_params(params)
        self.sampler = Sampler(p["sampleRate"])
        self.capacity: int = p["capacity"]
        self.entries: deque[dict[str, Any]] = deque(maxlen=self.capacity)

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    def snapshot(self) -> list[dict[str, Any]]:
        return list(reversed(self.entries))


def add_routes(app: Any, telemetry: Any,
               fetch: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> None:
    """`/requests` and `/requests.json` on the admin (aiohttp), when the telemeter is set.
    Under `workers:` the requests are in the workers: `fetch` (the supervisor's
    `recent_requests`) merges theirs, each entry with the `worker` that served it."""
    from aiohttp import web

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")

    async def as_json(_: web.Request) -> web.Response:
        if fetch is not None:
            return web.json_response(await fetch())
        out: list[dict[str, Any]] = []
        for recent in telemetry.recents:
            out += recent.snapshot()
        out.sort(key=lambda e: e["timestamp"], reverse=True)
        return web.json_response({"requests": out})

    app.router.add_get("/requests", page)
    app.router.add_get("/requests.json", as_json)
