"""Hostile clients and failing networks against real `l5d CONFIG` processes: heads RFC 9112
refuses, clients that vanish or stall mid-body, slowloris, backends that stop moving,
early responses to uploads, and SIGTERM with requests in flight (issue 8)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from urllib.parse import unquote

import pytest

from router.http.testing import Backend
from tests import test_http_e2e
from tests.test_http_e2e import L5d
from tests.test_http_proxy import RawClient, curl
from tests.util import async_wait_until

pytestmark = pytest.mark.timeout(60)
env = test_http_e2e.env  # the fixture: backends and l5d processes, stopped afterwards

SESSION = """    serverSession:
      headerReadTimeoutMs: {header}
      bodyProgressTimeoutMs: {body}
"""
CLIENT = """  client:
    clientSession:
      bodyProgressTimeoutMs: {body}
"""


async def metrics(l5d: L5d) -> dict:
    rc, out, err = await curl(f"http://127.0.0.1:{l5d.admin}/admin/metrics.json")
    assert rc == 0, err
    return json.loads(out)


def server_metric(m: dict, l5d: L5d, name: str) -> float:
    return m.get(f"rt/out/server/127.0.0.1/{l5d.port}/{name}", 0)


def client_metric(m: dict, name: str) -> float:
    return sum(v for k, v in m.items() if "/client/" in k and k.endswith("/" + name))


def dtab(b: Backend) -> str:
    return f"/svc/hello => /$/inet/127.0.0.1/{b.port}"


async def raw_exchange(port: int, data: bytes, *, shut_wr: bool = False,
                       timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh connection; everything received until the router closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    if shut_wr:
        writer.write_eof()
    out = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    writer.transport.abort()
    return out


async def test_rfc9112_head_refusals_forward_nothing(env):
    b = await env("backend", "b1")
    l5d = await env("l5d", "out", dtab(b))
    cases = {
        b"GET /echo HTTP/1.1\r\nHost: hello\r\nHost: evil\r\n\r\n": 400,
        b"GET /echo\r\nHost: hello\r\n\r\n": 400,  # HTTP/0.9-shaped line, then headers
        b"GET /echo HTTP/2.0\r\nHost: hello\r\n\r\n": 505,
        b"GET /echo HTTP/1.1\r\nHost: hel lo\r\n\r\n": 400,
        b"GET /echo HTTP/1.1\r\nHost: a/b@c\r\n\r\n": 400,
        b"POST /echo HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n":
            501,
        b"POST /echo HTTP/1.1\r\nHost: hello\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd":
            400,
        b"GET http://hello/echo HTTP/1.1\r\nHost: hello\r\nHost: evil\r\n\r\n": 400,
    }
    for data, status in cases.items():
        out = await raw_exchange(l5d.port, data)
        assert out.startswith(b"HTTP/1.1 %d " % status), (data, out[:200])
        head = out.partition(b"\r\n\r\n")[0].lower()
        assert b"connection: close" in head and b"l5d-err: " in head, (data, head)
    assert b.requests == []  # none of them reached the backend
    # an absolute-form target wins over a disagreeing Host (RFC 9112 §3.2.2): routed on it
    out = await raw_exchange(l5d.port, b"GET http://hello/echo HTTP/1.1\r\nHost: evil\r\n"
                             b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    assert [v for k, v in b.requests[0]["headers"] if k.lower() == "host"] == ["hello"]


async def test_client_gone_mid_upload_frees_both_connections(env):
    """10 MB declared, 300 KB sent, socket closed, while the backend is not reading (the
    router paused reading the client for it and could not see the EOF)."""
    b = await env("backend", "b1")
    b.read_gate = asyncio.Event()  # /upload never reads its body
    l5d = await env("l5d", "out", dtab(b), extra=SESSION.format(header=10000, body=60000))
    s = socket.create_connection(("127.0.0.1", l5d.port))
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: hello\r\nContent-Length: 10000000\r\n\r\n")
    s.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_sendall(s, b"x" * 300_000), 10)
    await async_wait_until(lambda: len(b.requests) == 1, what="backend got the head")
    await asyncio.sleep(0.5)  # the router is now paused behind the backend
    s.close()

    async def freed() -> bool:
        m = await metrics(l5d)
        return (server_metric(m, l5d, "connections") == 0
                and client_metric(m, "connections") == 0)

    deadline = loop.time() + 10
    while not await freed():
        assert loop.time() < deadline, await metrics(l5d)
        await asyncio.sleep(0.2)


async def test_truncated_body_then_half_close_gets_400_and_frees_backend(env):
    b = await env("backend", "b1")  # reads the body it was promised: waits for the rest
    l5d = await env("l5d", "out", dtab(b))
    rc, _, err = await curl("-x", f"http://127.0.0.1:{l5d.port}", "http://hello/echo")
    assert rc == 0, err  # one pooled backend connection, which the next request takes
    out = await raw_exchange(
        l5d.port, b"POST /echo HTTP/1.1\r\nHost: hello\r\nContent-Length: 1000\r\n\r\n" +
        b"y" * 300, shut_wr=True)
    assert out.startswith(b"HTTP/1.1 400 "), out[:300]
    assert "truncated" in unquote(out.decode("latin-1"))
    assert len(b.requests) == 2  # it had reached the backend, which waited for the rest...
    await async_wait_until(lambda: not b.writers, what="backend connection closed")
    m = await metrics(l5d)  # ...until the router let go of that connection
    assert client_metric(m, "connections") == 0


async def test_slowloris_header_timeout_idle_keepalive_untouched(env):
    b = await env("backend", "b1")
    l5d = await env("l5d", "out", dtab(b), extra=SESSION.format(header=800, body=60000))
    # a kept-alive connection that finished a request is idle, not slow: it stays open
    idle = await RawClient(l5d.port).connect()
    assert (await idle.request()).status == 200
    loris = []
    for _ in range(200):
        r, w = await asyncio.open_connection("127.0.0.1", l5d.port)
        w.write(b"GET /echo HTTP/1.1\r\nHost: hello\r\n")
        loris.append((r, w))
    silent = [await asyncio.open_connection("127.0.0.1", l5d.port) for _ in range(5)]
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def trickle(r, w) -> bytes:
        out = b""
        for i in range(40):
            try:
                w.write(b"X-Slow-%d: 1\r\n" % i)
                await w.drain()
            except ConnectionError:
                break
            try:
                out += await asyncio.wait_for(r.read(4096), 0.1)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if out.endswith(b"\r\n\r\n") or not out and r.at_eof():
                break
        return out

    outs = await asyncio.gather(*(trickle(r, w) for r, w in loris))
    elapsed = loop.time() - t0
    assert all(o.startswith(b"HTTP/1.1 408 ") for o in outs), {o[:40] for o in outs}
    assert elapsed < 8, elapsed  # closed by the 800 ms timeout, not by the loop ending
    for r, w in silent:  # accepted, never sent a byte: timed like a head, closed unanswered
        assert await asyncio.wait_for(r.read(100), 3) == b""
        w.transport.abort()
    for _, w in loris:
        w.transport.abort()
    assert (await idle.request()).status == 200  # still open and serving
    idle.close()
    m = await metrics(l5d)
    assert server_metric(m, l5d, "timeouts/header_read") == 205
    assert b.requests and len(b.requests) == 2  # the idle connection's two requests only


async def test_body_progress_timeouts_client_and_backend_side(env):
    b = await env("backend", "b1")
    l5d = await env("l5d", "out", dtab(b), extra=SESSION.format(header=10000, body=600) +
                    CLIENT.format(body=600))
    # client side: promises 1000 bytes, sends 10, stalls -> 408, backend connection freed
    reader, writer = await asyncio.open_connection("127.0.0.1", l5d.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: hello\r\nContent-Length: 1000\r\n\r\n0123456789")
    out = await asyncio.wait_for(reader.read(4096), 5)
    assert out.startswith(b"HTTP/1.1 408 "), out[:200]
    assert await asyncio.wait_for(reader.read(100), 5) == b""
    writer.transport.abort()
    # backend side: /halfbody sends 10 of 1000 bytes and stalls -> the client is reset
    c = await RawClient(l5d.port).connect()
    r = await asyncio.wait_for(c.request(target="/halfbody"), 5)
    assert r.status == 200 and not r.done and r.body == b"0123456789"
    c.close()
    m = await metrics(l5d)
    assert server_metric(m, l5d, "timeouts/body_progress") == 1
    assert client_metric(m, "timeouts/body_progress") == 1
    assert client_metric(m, "connections") == 0


async def test_early_response_to_upload_announces_close_and_lingers(env):
    """The backend answers before reading a 64 KB body. The response either says
    `Connection: close` or the connection stays usable; here: close, announced, and the
    rest of the body is read and dropped, so the client sees a clean end, not a reset."""
    b = await env("backend", "b1")
    l5d = await env("l5d", "out", dtab(b))
    reader, writer = await asyncio.open_connection("127.0.0.1", l5d.port)
    writer.write(b"POST /early HTTP/1.1\r\nHost: hello\r\nContent-Length: 65536\r\n\r\n" +
                 b"z" * 1024)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.lower(), head
    writer.write(b"z" * 64512)  # the rest of the body, after the response
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"early"
    assert await asyncio.wait_for(reader.read(100), 5) == b""  # FIN, not a reset
    writer.transport.abort()


@pytest.mark.parametrize("how", ["SIGTERM", "POST /admin/shutdown"])
async def test_shutdown_answers_unfinished_requests_503(env, how):
    b = await env("backend", "b1")
    l5d = await env("l5d", "out", dtab(b), admin_extra="  shutdownGraceMs: 300\n")
    c = await RawClient(l5d.port).connect()
    c.send(b"GET /stall HTTP/1.1\r\nHost: hello\r\n\r\n")
    await async_wait_until(lambda: len(b.requests) == 1, what="request in flight")
    if how == "SIGTERM":
        l5d.proc.send_signal(signal.SIGTERM)
    else:
        rc, out, err = await curl("-X", "POST", f"http://127.0.0.1:{l5d.admin}/admin/shutdown")
        assert rc == 0 and "shutting down" in out, (out, err)
    r = await asyncio.wait_for(c.response(), 10)
    assert r.status == 503, (r.status, r.headers)
    assert "grace period" in unquote(r.header("l5d-err") or "")
    assert r.header("connection") == "close"
    assert await asyncio.wait_for(l5d.proc.wait(), 10) == 0
    c.close()


def test_header_classification_caches_are_bounded_in_bytes():
    """Host values and header names are remembered to skip re-checking them; clients pick
    them (up to the 64 KB head limit each), so the caches are bounded in bytes, not only
    in entries."""
    from router.client import pool
    from router.http import server

    for i in range(2000):
        server._check_host(b"h%d-" % i + b"x" * 5000)
        server._request_code(b"X-%d-" % i + b"y" * 5000)
        pool._response_code(b"X-%d-" % i + b"z" * 5000)
    assert sum(map(len, server._GOOD_HOSTS)) <= server._GOOD_HOSTS_MAX * 256
    assert sum(map(len, server.name_codes())) <= server._NAME_CODES_MAX * 64
    assert sum(map(len, pool.name_codes())) <= pool._NAME_CODES_MAX * 64
