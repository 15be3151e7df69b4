"""Serving an aiohttp app on one port (the interfaces and the admin share it)."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from aiohttp import web

log = logging.getLogger("namerd")


class AppHandle:
    def __init__(self, runner: web.AppRunner, name: str, ip: str, port: int) -> None:
        self.runner = runner
        self.name = name
        self.ip = ip
        self.port = port
        self.background: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self.background is not None:
            self.background.cancel()
        await self.runner.cleanup()

    def __repr__(self) -> str:
        return f"{self.name} on {self.ip}:{self.port}"


async def serve_app(app: web.Application, ip: str, port: int, name: str) -> AppHandle:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                           handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, ip, port, reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(e.errno, f"{name} cannot listen on {ip}:{port}: {e.strerror or e}") from e
    server: Any = site._server
    bound = port
    if server is not None and server.sockets:
        sock: socket.socket = server.sockets[0]
        bound = sock.getsockname()[1]
    log.info("%s serving on %s:%d", name, ip, bound)
    return AppHandle(runner, name, ip, bound)
