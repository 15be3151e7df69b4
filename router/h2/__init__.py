"""The HTTP/2 and gRPC data path: `await start_h2_router(router)` serves `protocol: h2`.

server.py accepts (prior knowledge, h2c upgrade, ALPN h2), exchange.py routes
one stream (identify -> bind -> policy -> balancer -> one backend stream),
client.py keeps one multiplexed connection per endpoint, peer.py bridges flow
control between the two and enforces the per-connection abuse limits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from router.h2.client import H2Endpoints
from router.h2.params import client_limits
from router.h2.server import H2Server
from router.http.server import RouterRuntime

log = logging.getLogger(__name__)

# Linkerd's h2 retryBufferSize.requestBytes default (ClassifiedRetryFilter.DefaultBufferSize)
H2_RETRY_BUFFER_BYTES = 16383


class H2RouterHandle:
    """A running h2 router: its servers and clients, and a graceful `close`."""

    def __init__(self, runtime: Any, servers: list[H2Server]) -> None:
        self.runtime = runtime
        self.servers = servers
        # servers a reload replaced on the same port: no longer listening, their
        # connections finish with the settings they were accepted with (router/reload.py)
        self.retired: list[H2Server] = []

    @property
    def clients(self) -> Any:
        return self.runtime.clients

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    async def close(self, grace_s: float = 10.0) -> None:
        """GOAWAY every connection, let streams in flight finish for up to `grace_s`."""
        servers = [*self.servers, *self.retired]
        for s in servers:
            s.stop_accepting()
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(s.busy for s in servers):
            await asyncio.sleep(0.02)
        for s in servers:
            if s.busy:
                log.warning("%s: closing %d h2 streams still in flight", s.label, s.busy)
            s.close_all()
            if s.aserver is not None:
                await s.aserver.wait_closed()
        self.runtime.h2_endpoints.close()
        self.runtime.close()


class H2Runtime(RouterRuntime):
    """The HTTP/1 routers' RouterRuntime with what h2 adds."""

    __slots__ = ("h2_response_buffers", "h2_endpoints")

    def __init__(self, router: Any) -> None:
        super().__init__(router)
        # service -> (retryBufferSize.responseBytes, classificationTimeoutMs in s)
        self.h2_response_buffers: dict[str, Any] = {}
        self.h2_endpoints = H2Endpoints(router.label, client_limits(router))


def h2_runtime(router: Any) -> H2Runtime:
    """The runtime of an h2 router: its retry buffer default, ALPN h2 for TLS clients,
    per-service response buffers, one connection per endpoint."""
    runtime = H2Runtime(router)
    kb = getattr(getattr(router, "config", None), "stream_after_content_length_kb", None)
    if kb is None or int(kb) == 5:  # unset: Linkerd's h2 default, not HTTP/1's
        runtime.retry_buffer_bytes = H2_RETRY_BUFFER_BYTES
    runtime.clients.alpn = ("h2",)
    return runtime


def carry_endpoints(old_runtime: Any, runtime: Any) -> None:
    """A reload: the new runtime keeps the old one's backend connections (the clients and
    their endpoints carry over, router/reload.py); new connections use the new limits."""
    ends = old_runtime.h2_endpoints
    ends.limits = runtime.h2_endpoints.limits
    runtime.h2_endpoints.close()
    runtime.h2_endpoints = ends


async def start_h2_router(router: Any) -> H2RouterHandle:
    """Listen on each of `router.config.servers`; returns once all are bound."""
    from router.http import start_servers

    runtime = h2_runtime(router)
    servers = [H2Server(runtime, cfg) for cfg in router.config.servers]
    await start_servers(runtime, servers)
    return H2RouterHandle(runtime, servers)


__all__ = ["H2RouterHandle", "H2Server", "carry_endpoints", "h2_runtime", "start_h2_router"]
