"""The HTTP data path: `await start_http_router(router)` serves every `servers:` entry."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from router.client.cache import ClientCache
from router.http.server import HttpServer, RouterRuntime

log = logging.getLogger(__name__)


class HttpRouterHandle:
    """A running router: its servers and clients, and a graceful `close`."""

    def __init__(self, runtime: RouterRuntime, servers: list[HttpServer]) -> None:
        self.runtime = runtime
        self.servers = servers
        # servers a reload replaced on the same port: no longer listening, their
        # connections finish with the settings they were accepted with (router/reload.py)
        self.retired: list[HttpServer] = []

    @property
    def clients(self) -> ClientCache:
        return self.runtime.clients

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    async def close(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish for up to `grace_s`, then close all:
        a request still without its response head gets a 503 with `l5d-err`."""
        await drain([*self.servers, *self.retired], grace_s)
        self.runtime.close()


async def drain(servers: list[HttpServer], grace_s: float) -> None:
    """Stop `servers` accepting, wait up to `grace_s` for their requests in flight, close."""
    for s in servers:
        s.stop_accepting()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(s.busy for s in servers):
        await asyncio.sleep(0.02)
    for s in servers:
        busy = s.busy
        if busy:
            log.warning("%s: closing %d connections with requests still in flight",
                        s.label, busy)
        s.close_all(grace_s * 1000)
        if s.aserver is not None:
            await s.aserver.wait_closed()


async def start_http_router(router: Any) -> HttpRouterHandle:
    """Listen on each of `router.config.servers`; returns once all are bound."""
    runtime = RouterRuntime(router)
    servers = [HttpServer(runtime, cfg) for cfg in router.config.servers]
    await start_servers(runtime, servers)
    return HttpRouterHandle(runtime, servers)


async def start_servers(runtime: Any, servers: list[Any]) -> None:
    """Bind every server (HTTP/1 or h2); if one cannot, stop the ones started and the
    runtime before re-raising, so a failed start leaves nothing listening."""
    started: list[Any] = []
    try:
        for s in servers:
            await s.start()
            started.append(s)
    except BaseException:
        for s in started:
            s.stop_accepting()
            s.close_all()
        runtime.close()
        raise
    runtime.start_sweeping()


__all__ = ["HttpRouterHandle", "drain", "start_http_router"]
