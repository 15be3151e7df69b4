"""Large bodies stream through the router in both directions without being held whole."""

from __future__ import annotations

import asyncio
import hashlib

import httptools
import pytest

from router.http import start_http_router
from router.http.testing import Backend, StaticRouter, StaticServerConfig
from tests.util import async_wait_until

pytestmark = pytest.mark.timeout(60)

MB = 1024 * 1024


@pytest.fixture
async def setup():
    backend = await Backend("b1").start()
    dtab = f"/svc/hello => /$/inet/127.0.0.1/{backend.port}"
    router = StaticRouter([StaticServerConfig(0)], dtab)
    handle = await start_http_router(router)
    try:
        yield backend, handle, handle.servers[0].port
    finally:
        await handle.close(0.5)
        await backend.close()


def router_buffered(handle) -> int:
    """Bytes the router holds for in-flight bodies: socket write buffers and pre-route buffers."""
    total = 0
    for s in handle.servers:
        for c in s.connections:
            total += c.transport.get_write_buffer_size()
            if c.current is not None:
                total += c.current.body_buffered
                up = c.current.upstream
                if up is not None and up.transport is not None:
                    total += up.transport.get_write_buffer_size()
    return total


async def test_large_chunked_response_to_a_slow_consumer(setup):
    backend, handle, port = setup
    total = 64 * MB
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /chunked?n=1024&size=65536 HTTP/1.1\r\nHost: hello\r\n\r\n")
        # The client reads nothing: the backend must be stopped by backpressure long before
        # it has sent everything, and the router must hold only a bounded amount.
        last = -1
        for _ in range(100):
            await asyncio.sleep(0.05)
            if backend.sent_body_bytes == last and last > 0:
                break
            last = backend.sent_body_bytes
        assert 0 < backend.sent_body_bytes < total // 3, backend.sent_body_bytes
        assert router_buffered(handle) < 4 * MB, router_buffered(handle)

        body = bytearray()
        done = asyncio.Event()
        digest = hashlib.sha256()
        count = 0

        class P:
            def on_body(self, b: bytes) -> None:
                nonlocal count
                count += len(b)
                digest.update(b)

            def on_message_complete(self) -> None:
                done.set()

        parser = httptools.HttpResponseParser(P())
        while not done.is_set():
            data = await reader.read(1 << 20)
            assert data, "connection closed before the body ended"
            parser.feed_data(data)
        assert parser.get_status_code() == 200
        assert count == total
        assert digest.hexdigest() == hashlib.sha256(b"x" * total).hexdigest()
        del body
    finally:
        writer.transport.abort()


async def test_large_chunked_upload_to_a_slow_backend(setup):
    backend, handle, port = setup
    backend.read_gate = asyncio.Event()
    total = 64 * MB
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    block = b"y" * 65536

    async def upload() -> None:
        nonlocal sent
        writer.write(b"POST /upload HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: chunked\r\n\r\n")
        while sent < total:
            writer.write(b"%x\r\n" % len(block) + block + b"\r\n")
            await writer.drain()
            sent += len(block)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    task = asyncio.create_task(upload())
    try:
        await async_wait_until(lambda: len(backend.requests) == 1, what="request head at backend")
        last = -1
        for _ in range(100):
            await asyncio.sleep(0.05)
            if sent == last:
                break
            last = sent
        assert sent < total // 3, sent  # the uploader is held back by the unread backend
        assert router_buffered(handle) < 4 * MB, router_buffered(handle)
        backend.read_gate.set()
        await asyncio.wait_for(task, 30)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200")
        assert backend.requests[0]["body_len"] == total
        assert ("Transfer-Encoding", "chunked") in backend.requests[0]["headers"]
    finally:
        task.cancel()
        writer.transport.abort()


async def test_client_leaving_mid_stream_aborts_the_backend_and_is_counted(setup):
    backend, handle, port = setup
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /chunked?n=1024&size=65536 HTTP/1.1\r\nHost: hello\r\n\r\n")
    await reader.readexactly(200_000)
    writer.transport.abort()
    await async_wait_until(lambda: not backend.writers, what="backend connection aborted")
    stats = handle.servers[0].stats
    await async_wait_until(lambda: stats.failures.value == 1, what="failure recorded")
    assert backend.sent_body_bytes < 1024 * 65536
    # and the router still serves
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    try:
        w2.write(b"GET /echo HTTP/1.1\r\nHost: hello\r\n\r\n")
        assert (await r2.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    finally:
        w2.transport.abort()
