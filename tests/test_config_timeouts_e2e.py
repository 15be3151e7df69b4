"""The timeouts the config docs promise are enforced, through the real config -> Linker ->
data path: service `totalTimeoutMs` and client `requestAttemptTimeoutMs` (io.l5d.static,
matched by name) answer 503 with Finagle's text; other names are not limited."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from urllib.parse import unquote

import pytest

from router.config import parse
from router.router import Linker
from tests.util import free_port


@pytest.fixture
async def stalling_backend() -> AsyncIterator[int]:
    """Accepts, reads, never answers."""
    held: list[asyncio.StreamWriter] = []

    async def on_conn(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


async def _get(port: int, host: str) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    finally:
        writer.close()
    lines = head.split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}


async def test_service_total_and_client_attempt_timeouts_from_the_config(
    stalling_backend: int,
) -> None:
    port = free_port()
    linker = Linker(parse(textwrap.dedent(f"""\
        admin: {{port: {free_port()}}}
        routers:
        - protocol: http
          dtab: |
            /svc => /$/inet/127.0.0.1/{stalling_backend} ;
          service:
            kind: io.l5d.static
            configs:
            - prefix: /svc/total
              totalTimeoutMs: 200
          client:
            kind: io.l5d.static
            configs:
            - prefix: /$/inet/127.0.0.1/{stalling_backend}
              requestAttemptTimeoutMs: 300
          servers: [{{port: {port}}}]
        """), "timeouts.yaml"))
    await linker.start(admin=False)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        status, headers = await _get(port, "total")
        took = loop.time() - t0
        assert status == 503 and took >= 0.15, took  # the service's 200 ms, not sooner
        assert unquote(headers["l5d-err"]).startswith("exceeded 200.milliseconds to unspecified")
        t0 = loop.time()
        status, headers = await _get(port, "other")
        took = loop.time() - t0
        assert status == 503 and took >= 0.25, took  # only the client's 300 ms applies
        assert unquote(headers["l5d-err"]).startswith(
            f"exceeded 300.milliseconds to /$/inet/127.0.0.1/{stalling_backend} while waiting "
            "for a response for an individual request")
    finally:
        await linker.shutdown(0)
