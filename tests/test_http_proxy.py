"""The HTTP data path on real sockets: a router (static test double for binding) between
real clients (curl, a raw-socket client) and a real backend."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from urllib.parse import unquote

import httptools
import pytest

from dtab.path import Path
from router.http import start_http_router
from router.http.testing import Backend, StaticRouter, StaticServerConfig

pytestmark = pytest.mark.timeout(30)


class Response:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.body = b""
        self.done = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> dict:
        return json.loads(self.body)

    def sent_header(self, name: str) -> list[str]:
        """Values of `name` in the request the backend saw (from an /echo body)."""
        return [v for k, v in self.json()["headers"] if k.lower() == name.lower()]


class RawClient:
    """One TCP connection; sends bytes and parses responses one at a time with httptools."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._done: deque[Response] = deque()
        self._cur: Response | None = None
        self._head_seen = False
        self._head_mode = False

    async def connect(self) -> RawClient:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aenter__(self) -> RawClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(self, method: str = "GET", target: str = "/echo", host: str | None = "hello",
                      headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                      version: str = "1.1") -> Response:
        self.send(build(method, target, host, headers, body, version))
        return await self.response(head=method == "HEAD")

    async def response(self, head: bool = False) -> Response:
        """The next response. One parser lives across responses, so pipelined responses
        that arrive in one read are all kept; a HEAD response ends at its head."""
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self._head_mode = head
        while not self._done:
            data = await self.reader.read(65536)
            if not data:
                cur = self._cur
                if cur is not None and self._head_seen:
                    # read-until-close bodies end here; anything else is truncated
                    cur.truncated = True  # type: ignore[attr-defined]
                    self._cur = None
                    self._head_seen = False
                    self._done.append(cur)
                break
            self._parser.feed_data(data)
        if not self._done:
            return Response()  # closed before any response: status 0
        return self._done.popleft()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._cur = Response()
        self._head_seen = False

    def on_header(self, k: bytes, v: bytes) -> None:
        self._cur.headers.append((k.decode("latin-1"), v.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._head_seen = True
        self._cur.status = self._parser.get_status_code()
        if self._head_mode:
            self._cur.done = True
            self._done.append(self._cur)
            self._cur = None
            self._parser = None  # llhttp would wait for the announced body

    def on_body(self, b: bytes) -> None:
        if self._cur is not None:
            self._cur.body += b

    def on_message_complete(self) -> None:
        if self._cur is not None:
            self._cur.done = True
            self._done.append(self._cur)
            self._cur = None
            self._head_seen = False

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return data == b""

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


def build(method: str, target: str, host: str | None, headers: list[tuple[str, str]] | None,
          body: bytes, version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    for k, v in headers or []:
        lines.append(f"{k}: {v}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def curl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "10", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode("latin-1"), err.decode()


@pytest.fixture
async def backend():
    b = await Backend("b1").start()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def backend2():
    b = await Backend("b2").start()
    try:
        yield b
    finally:
        await b.close()


class Routers:
    def __init__(self) -> None:
        self.handles: list = []

    async def start(self, dtab: str, **kw) -> tuple[StaticRouter, int]:
        server_kw = {k: kw.pop(k) for k in ("clear_context", "max_call_depth", "session")
                     if k in kw}
        router = StaticRouter([StaticServerConfig(0, **server_kw)], dtab, **kw)
        handle = await start_http_router(router)
        self.handles.append(handle)
        router.handle = handle  # type: ignore[attr-defined]
        return router, handle.servers[0].port


@pytest.fixture
async def routers():
    r = Routers()
    try:
        yield r
    finally:
        for h in r.handles:
            await h.close(0.5)


def inet(b: Backend) -> str:
    return f"/$/inet/127.0.0.1/{b.port}"


async def test_absolute_form_via_curl_proxy_and_l5d_headers(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    rc, out, err = await curl("-i", "-x", f"http://127.0.0.1:{port}", "http://hello/echo?x=1")
    assert rc == 0, err
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    assert "Via: 1.1 linkerd" in head
    seen = json.loads(body)
    assert seen["target"] == "/echo?x=1"  # origin form at the backend
    hdrs = {k.lower(): v for k, v in seen["headers"]}
    assert hdrs["host"] == "hello"
    assert hdrs["via"] == "1.1 linkerd"
    assert hdrs["l5d-dst-service"] == "/svc/hello"
    assert hdrs["l5d-dst-client"] == inet(backend)
    assert "l5d-dst-residual" not in hdrs
    assert len(hdrs["l5d-reqid"]) == 16
    assert "l5d-ctx-dtab" not in hdrs  # no local dtab, none forwarded
    assert "proxy-connection" not in hdrs


async def test_keep_alive_pool_reuse_and_pipelining(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        for i in range(5):
            r = await c.request(target=f"/echo/{i}")
            assert r.status == 200 and r.json()["target"] == f"/echo/{i}"
        # two pipelined requests in one write come back in order
        c.send(build("GET", "/echo/p1", "hello", None, b"") +
               build("POST", "/echo/p2", "hello", None, b"payload"))
        r1, r2 = await c.response(), await c.response()
        assert (r1.json()["target"], r2.json()["target"]) == ("/echo/p1", "/echo/p2")
        assert r2.json()["body_len"] == 7
    assert backend.connections == 1  # one pooled backend connection served all seven


async def test_hop_by_hop_dropped_both_ways_and_via(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        r = await c.request(headers=[
            ("Connection", "keep-alive, X-Drop-Me"), ("X-Drop-Me", "1"), ("Keep-Alive", "300"),
            ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Upgrade", "websocket"),
            ("Proxy-Authorization", "Basic Zm9v"), ("X-Keep", "yes"), ("Via", "1.1 upstream"),
        ])
        sent = {k.lower() for k, _ in r.json()["headers"]}
        for h in ("connection", "x-drop-me", "keep-alive", "proxy-connection", "te", "upgrade",
                  "proxy-authorization"):
            assert h not in sent, h
        assert r.sent_header("x-keep") == ["yes"]
        assert r.sent_header("via") == ["1.1 upstream", "1.1 linkerd"]
        r = await c.request(target="/hop")
        names = {k.lower() for k, _ in r.headers}
        assert {"x-hop", "keep-alive", "proxy-connection"}.isdisjoint(names)
        assert r.header("x-end") == "kept" and r.header("via") == "1.1 linkerd"
        assert r.header("l5d-success-class") == "1.0"  # kept without clearContext
        assert r.body == b"ok"


async def test_bad_l5d_dtab_is_400_naming_the_position(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        r = await c.request(headers=[("l5d-dtab", "/svc/hello =>")])
        assert r.status == 400
        msg = unquote(r.header("l5d-err"))
        assert "l5d-dtab" in msg and "line 1, column 14" in msg, msg
        assert r.body.decode() == msg
        assert r.header("content-type") == "text/plain"
        # the connection stays usable after a router-made error
        assert (await c.request()).status == 200
    assert backend.requests and len(backend.requests) == 1


async def test_l5d_dtab_override_two_hops_deep_and_ctx_propagation(backend, backend2, routers):
    _, inner = await routers.start(
        f"/svc/hello => /srv/v1; /srv/v1 => {inet(backend)}; /srv/v2 => {inet(backend2)}",
        label="incoming",
    )
    _, outer = await routers.start(f"/svc => /$/inet/127.0.0.1/{inner}", label="outgoing")
    async with RawClient(outer) as c:
        r = await c.request()
        assert r.json()["backend"] == "b1"
        r = await c.request(headers=[("l5d-dtab", "/srv/v1 => /srv/v2"),
                                     ("l5d-ctx-trace", "abc"), ("l5d-ctx-user", "u1")])
        assert r.json()["backend"] == "b2"
        assert r.sent_header("l5d-ctx-dtab") == ["/srv/v1=>/srv/v2"]
        assert r.sent_header("l5d-dtab") == []
        assert r.sent_header("l5d-ctx-user") == ["u1"]
        assert r.sent_header("l5d-ctx-trace") == ["abc"]
        assert r.sent_header("via") == ["1.1 linkerd", "1.1 linkerd"]
        # the outer hop's residual went out as l5d-dst-residual to the inner router
        assert r.header("via") == "1.1 linkerd, 1.1 linkerd" or r.headers.count(
            ("Via", "1.1 linkerd")) == 2


async def test_residual_header(backend, routers):
    _, port = await routers.start(f"/svc => {inet(backend)}/extra")
    async with RawClient(port) as c:
        r = await c.request()
        assert r.sent_header("l5d-dst-residual") == ["/extra/hello"]
        assert r.sent_header("l5d-dst-client") == [inet(backend)]


async def test_clear_context_inbound_and_on_responses(backend, backend2, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}", clear_context=True)
    async with RawClient(port) as c:
        r = await c.request(headers=[("l5d-dtab", f"/svc/hello => {inet(backend2)}"),
                                     ("l5d-ctx-user", "u1"), ("l5d-sample", "1")])
        assert r.json()["backend"] == "b1"  # the override was stripped, not applied
        assert not any(k.lower().startswith("l5d-ctx-user") for k, _ in r.json()["headers"])
        assert r.sent_header("l5d-sample") == []
        r = await c.request(target="/l5derr")
        assert r.status == 502
        assert not any(k.lower().startswith("l5d-") for k, _ in r.headers)
        assert r.body == b""  # an l5d-err body is emptied
        r = await c.request(target="/hop")
        assert r.header("l5d-success-class") is None and r.body == b"ok"
        # and a router-made error loses l5d-err and its body too
        r = await c.request(host="nope")
        assert r.status == 502 and r.header("l5d-err") is None and r.body == b""


async def test_neg_is_502_with_dtabs(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        r = await c.request(host="nope", headers=[("l5d-dtab", "/svc/other => /$/nil")])
        assert r.status == 502
        text = r.body.decode()
        assert unquote(r.header("l5d-err")) == text
        assert text == (
            "Unable to route request!\n\n"
            "service name: /svc/nope\n"
            f"dtab:\n  /svc/hello => {inet(backend)}\n  /svc/other => /$/nil\n"
            f"base dtab:\n  /svc/hello => {inet(backend)}\n"
            "override dtab:\n  /svc/other => /$/nil\n"
        )


async def test_identification_failure_is_400(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        r = await c.request(host=None, version="1.0", target="/x")
        assert r.status == 400
        local = c.writer.get_extra_info("sockname")
        assert unquote(r.header("l5d-err")) == (
            f'Unknown destination: Request("GET /x", from /127.0.0.1:{local[1]}) / no host header'
        )
        assert await c.closed()  # HTTP/1.0 without keep-alive


async def test_connection_refused_is_502_naming_the_address(routers):
    from tests.util import free_port

    dead = free_port()
    _, port = await routers.start(f"/svc/hello => /$/inet/127.0.0.1/{dead}")
    async with RawClient(port) as c:
        r = await c.request()
        assert r.status == 502
        text = unquote(r.header("l5d-err"))
        assert text.startswith(f"Unable to establish connection to 127.0.0.1:{dead}.\n\n")
        assert "service name: /svc/hello\n" in text
        assert f"client name: /$/inet/127.0.0.1/{dead}\n" in text
        assert f"addresses: [127.0.0.1:{dead}]\n" in text
        assert f"selected address: 127.0.0.1:{dead}\n" in text


async def test_max_call_depth_counts_via_hops(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}", max_call_depth=2)
    async with RawClient(port) as c:
        assert (await c.request(headers=[("Via", "1.1 a, 1.1 b")])).status == 200
        r = await c.request(headers=[("Via", "1.1 a, 1.1 b"), ("Via", "1.1 c")])
        assert r.status == 400
        assert unquote(r.header("l5d-err")) == (
            "Maximum number of calls (2) has been exceeded. Please check for proxy loops."
        )


async def test_backend_dying_mid_response_fails_only_that_request(backend, routers):
    router, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        r = await c.request(target="/die")
        assert r.status == 200 and not r.done and len(r.body) < 1000  # cut off, not faked
        assert await c.closed()
    async with RawClient(port) as c:
        assert (await c.request()).status == 200
        r = await c.request(target="/garbage")
        assert r.status == 502
        assert "invalid HTTP response" in unquote(r.header("l5d-err"))
        r = await c.request(target="/bighead")
        assert r.status == 502
        assert "response head longer than 65536 bytes" in unquote(r.header("l5d-err"))
        r = await c.request(target="/reset")
        assert r.status == 502
        assert "closed before responding" in unquote(r.header("l5d-err"))
        assert (await c.request()).status == 200


async def test_stalled_backend_does_not_block_others(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    stalled = await RawClient(port).connect()
    other = await RawClient(port).connect()
    try:
        stalled.send(build("GET", "/stall", "hello", None, b""))
        r = await asyncio.wait_for(other.request(), 5)
        assert r.status == 200
    finally:
        stalled.close()
        other.close()


async def test_http10_head_and_read_until_close(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        r = await c.request(method="HEAD", target="/echo")
        assert r.status == 200 and r.body == b""
        assert int(r.header("content-length")) > 0
        r = await c.request(target="/close")
        assert r.body == b"until-eof-body" and r.header("transfer-encoding") == "chunked"
        r = await c.request(target="/echo")  # the downstream connection survived both
        assert r.status == 200
    async with RawClient(port) as c:
        r = await c.request(target="/chunked?n=3&size=5", version="1.0")
        assert r.body == b"x" * 15 and r.header("transfer-encoding") is None
        assert await c.closed()


async def test_weighted_union_splits_traffic(backend, backend2, routers):
    _, port = await routers.start(
        f"/svc/hello => 3 * {inet(backend)} & 1 * {inet(backend2)}"
    )
    async with RawClient(port) as c:
        for _ in range(400):
            await c.request()
    n1, n2 = len(backend.requests), len(backend2.requests)
    assert n1 + n2 == 400
    assert 0.65 < n1 / 400 < 0.85, (n1, n2)


async def test_curl_upload_with_expect_continue(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    import os
    import tempfile

    with tempfile.NamedTemporaryFile() as f:
        f.write(os.urandom(3 * 1024 * 1024))
        f.flush()
        rc, out, err = await curl("-x", f"http://127.0.0.1:{port}", "-H",
                                  "Transfer-Encoding: chunked", "--data-binary", f"@{f.name}",
                                  "http://hello/echo")
    assert rc == 0, err
    assert json.loads(out)["body_len"] == 3 * 1024 * 1024


async def test_endpoint_changes_via_the_addr_var_and_round_robin(backend, backend2, routers):
    from dtab.addr import ADDR_NEG, Address, BoundName, bound
    from dtab.observable import Var
    from dtab.path import Path

    var = Var(bound(Address("127.0.0.1", backend.port)))
    names = {"/#/io.l5d.fs/hello": BoundName(Path.read("/#/io.l5d.fs/hello"), var)}
    router, port = await routers.start("/svc/hello => /#/io.l5d.fs/hello", names=names,
                                       load_balancer="roundRobin")
    async with RawClient(port) as c:
        assert (await c.request()).json()["backend"] == "b1"
        var.set(bound(Address("127.0.0.1", backend.port), Address("127.0.0.1", backend2.port)))
        seen = [(await c.request()).json()["backend"] for _ in range(4)]
        assert sorted(seen) == ["b1", "b1", "b2", "b2"]
        assert seen[0] != seen[1] and seen[1] != seen[2]  # round robin alternates
        var.set(bound(Address("127.0.0.1", backend2.port)))
        assert {(await c.request()).json()["backend"] for _ in range(4)} == {"b2"}
        # b1's pooled connection was closed when b1 left the set
        await async_wait(lambda: not backend.writers, "b1 connection closed")
        var.set(ADDR_NEG)
        r = await c.request()
        assert r.status == 502 and "Unable to route request!" in r.body.decode()
        snap = router.handle.clients.snapshot()
        assert snap == {"/#/io.l5d.fs/hello": {"state": "neg", "addresses": []}}


async def async_wait(pred, what: str) -> None:
    from tests.util import async_wait_until

    await async_wait_until(pred, timeout=5, what=what)


async def test_close_drains_in_flight_requests_then_refuses(backend, routers):
    router, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        c.send(build("GET", "/slow?ms=300", "hello", None, b""))
        await async_wait(lambda: len(backend.requests) == 1, "request at backend")
        closing = asyncio.create_task(router.handle.close(5.0))
        r = await c.response()
        assert r.status == 200 and r.body == b"slow"
        assert r.header("connection") == "close"  # the client learns the connection ends
        await asyncio.wait_for(closing, 5)
        assert await c.closed()
    from tests.util import port_open

    assert not port_open(port)


async def test_a_pooled_connection_closed_by_the_backend_is_requeued(backend, routers):
    router, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        assert (await c.request(target="/echo?drop_next=1")).status == 200
        r = await c.request(target="/echo/again")
        assert r.status == 200 and r.json()["target"] == "/echo/again"
        assert backend.connections == 2
        # a request with a body is not sent twice: it fails with 502
        assert (await c.request(target="/echo?drop_next=1")).status == 200
        r = await c.request(method="POST", target="/echo", body=b"data")
        assert r.status == 502 and "closed before responding" in unquote(r.header("l5d-err"))
    key = ("rt", "test", "client", f"$/inet/127.0.0.1/{backend.port}", "retries", "requeues")
    assert router.registry.get(key).value == 1


async def test_a_post_never_goes_out_on_a_pooled_connection_already_closed(backend, routers):
    """The backend closed an idle pooled connection and its FIN is in the router's socket,
    but the loop has not read it yet (under load it handles the client's request first; here
    the pooled connection's reading is paused to hold that moment). A request with a body
    cannot be re-sent once written, so the router checks first and takes a fresh one."""
    router, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        assert (await c.request(target="/echo")).status == 200
        (ep,) = router.handle.clients.get(
            router.inet[Path.read(inet(backend))]).balancer.endpoints
        (pooled,) = ep.idle
        pooled.transport.pause_reading()
        for w in list(backend.writers):
            w.transport.close()
        await asyncio.sleep(0.2)  # the FIN has arrived; the router has not looked
        assert not pooled.closed
        r = await asyncio.wait_for(c.request(method="POST", target="/echo", body=b"data"), 5)
        assert r.status == 200 and r.json()["body_len"] == 4
    assert backend.connections == 2


async def test_malformed_request_body_mid_stream_is_400_and_frees_the_backend(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        c.send(b"POST /upload HTTP/1.1\r\nHost: hello\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n")
        await async_wait(lambda: len(backend.requests) == 1, "request head at backend")
        c.send(b"zz-not-a-chunk-size\r\n")
        r = await c.response()
        assert r.status == 400 and "Invalid HTTP request" in unquote(r.header("l5d-err"))
        assert await c.closed()
        await async_wait(lambda: not backend.writers, "backend connection aborted")


async def test_http10_keep_alive_and_absolute_form_with_port(backend, routers):
    _, port = await routers.start(f"/svc/hello:8080 => {inet(backend)}")
    async with RawClient(port) as c:
        for _ in range(2):
            r = await c.request(target="http://hello:8080/a?b=c", host="ignored", version="1.0",
                                headers=[("Connection", "keep-alive")])
            assert r.status == 200 and r.header("connection") == "keep-alive"
            seen = r.json()
            assert seen["target"] == "/a?b=c"
            assert r.sent_header("host") == ["hello:8080"]  # the URL's authority wins
    assert backend.connections == 1


def _versioned(version: str) -> bytes:
    return build("GET", f"/echo/{version}", "hello",
                 [("Connection", "keep-alive")] if version == "1.0" else None, b"", version)


@pytest.mark.parametrize("how", ["one read each", "line split", "split before version",
                                 "leading CRLF", "pipelined", "absolute form"])
async def test_request_version_however_the_request_line_arrives(backend, routers, how):
    """The server reads a request's version from the line's bytes when the message starts
    a read, else asks the parser: every way a line can arrive gives the version sent (a
    1.0 keep-alive answer says `Connection: keep-alive`, a 1.1 one says nothing)."""
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    versions = ["1.1", "1.0", "1.1", "1.0", "1.0", "1.1"]
    async with RawClient(port) as c:
        if how == "pipelined":
            c.send(b"".join(_versioned(v) for v in versions))
            got = [await c.response() for _ in versions]
        else:
            got = []
            for v in versions:
                req = _versioned(v)
                if how == "absolute form":
                    req = req.replace(b"GET /", b"GET http://hello/", 1)
                if how == "leading CRLF":
                    req = b"\r\n" + req
                cut = {"line split": 7, "split before version": req.index(b"HTTP/")}.get(how)
                if cut is not None:
                    c.send(req[:cut])
                    await c.writer.drain()
                    await asyncio.sleep(0.02)  # two reads at the router
                    req = req[cut:]
                c.send(req)
                got.append(await c.response())
    for v, r in zip(versions, got, strict=True):
        assert r.status == 200 and r.json()["target"] == f"/echo/{v}", (v, r.status)
        assert r.header("connection") == ("keep-alive" if v == "1.0" else None), v


async def test_total_and_attempt_timeouts_are_503(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}", total_timeout_ms=200)
    async with RawClient(port) as c:
        r = await asyncio.wait_for(c.request(target="/slow?ms=3000"), 2)
        assert r.status == 503
        assert unquote(r.header("l5d-err")) == (
            "exceeded 200.milliseconds to unspecified while waiting for a response for the "
            "request, including retries (if applicable). Remote Info: Not Available")
        assert r.body.decode().splitlines()[:2] == [unquote(r.header("l5d-err")),
                                                    "service name: /svc/hello"]
        assert (await c.request(target="/slow?ms=50")).status == 200  # under the limit
    _, port = await routers.start(f"/svc/hello => {inet(backend)}", attempt_timeout_ms=150)
    async with RawClient(port) as c:
        r = await asyncio.wait_for(c.request(target="/stall"), 2)
        assert r.status == 503
        assert unquote(r.header("l5d-err")).startswith(
            f"exceeded 150.milliseconds to {inet(backend)} while waiting for a response for an "
            "individual request")
        # a streaming response that started in time is not cut by the timeout
        r = await c.request(target="/chunked?n=3&size=10")
        assert r.status == 200 and r.body == b"x" * 30


async def test_a_long_pipeline_of_router_errors_and_successes(backend, routers):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        n = 1500
        c.send(b"".join(build("GET", f"/echo/{i}", "hello" if i % 3 == 0 else "nope", None, b"")
                        for i in range(n)))
        statuses = [(await c.response()).status for _ in range(n)]
        assert statuses == [200 if i % 3 == 0 else 502 for i in range(n)]


@pytest.mark.parametrize(
    ("raw", "status", "text"),
    [
        (b"GARBAGE\r\n\r\n", 400, "Invalid HTTP request: Invalid method encountered"),
        (b"GET / HTTP/1.1\r\nHost: hello\r\nContent-Length: 5\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "Invalid HTTP request: "),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: hello\r\n\r\n", 414,
         "Request line longer than 65536 bytes"),
        (b"GET / HTTP/1.1\r\nHost: hello\r\nX: " + b"b" * 70000 + b"\r\n\r\n", 431,
         "Request head longer than 65536 bytes"),
        (b"GET http://[::1/ HTTP/1.1\r\nHost: hello\r\n\r\n", 400,
         "Invalid request target: http://[::1/"),
    ],
)
async def test_malformed_requests_are_refused_with_a_reason(backend, routers, raw, status, text):
    _, port = await routers.start(f"/svc/hello => {inet(backend)}")
    async with RawClient(port) as c:
        c.send(raw)
        r = await c.response()
        assert r.status == status
        assert unquote(r.header("l5d-err")).startswith(text)
    assert backend.requests == []
    async with RawClient(port) as c:
        assert (await c.request()).status == 200


async def test_server_session_idle_and_life_time(backend, routers):
    from router.session import ServerSession

    router, port = await routers.start(f"/svc/hello => {inet(backend)}",
                                       session=ServerSession(idle_time_ms=300))
    async with RawClient(port) as c:
        assert (await c.request()).status == 200
        t0 = asyncio.get_running_loop().time()
        assert await c.closed(3)  # idle 300 ms: closed (within a tick of 75 ms more)
        assert asyncio.get_running_loop().time() - t0 < 1.5
    key = ("rt", "test", "server", "127.0.0.1", str(port), "timeouts", "idle")
    assert router.registry.get(key).value == 1

    router, port = await routers.start(f"/svc/hello => {inet(backend)}",
                                       session=ServerSession(life_time_ms=400))
    async with RawClient(port) as c:
        for _ in range(30):  # busy all along: the response after 400 ms says close
            r = await c.request(target="/slow?ms=50")
            if r.header("connection") == "close":
                break
        assert r.status == 200 and r.header("connection") == "close"
        assert await c.closed(2)
    key = ("rt", "test", "server", "127.0.0.1", str(port), "timeouts", "lifetime")
    assert router.registry.get(key).value == 1


async def test_client_session_idle_and_life_time(backend, routers):
    from router.session import ClientSession

    _, port = await routers.start(f"/svc/hello => {inet(backend)}",
                                  client_session=ClientSession(idle_time_ms=200))
    async with RawClient(port) as c:
        assert (await c.request()).status == 200
        await async_wait(lambda: not backend.writers, "idle pooled connection closed")
        assert (await c.request()).status == 200
    assert backend.connections == 2

    _, port = await routers.start(f"/svc/hello => {inet(backend)}",
                                  client_session=ClientSession(life_time_ms=200))
    async with RawClient(port) as c:
        assert (await c.request()).status == 200
        assert (await c.request()).status == 200  # young: reused
        assert backend.connections == 3
        await async_wait(lambda: not backend.writers, "pooled connection past its lifetime")
        assert (await c.request()).status == 200
        assert (await c.request()).status == 200
    assert backend.connections == 4


async def test_idle_timeout_counts_from_the_last_request_not_an_earlier_idle_spell(backend,
                                                                                     routers):
    from router.session import ServerSession

    router, port = await routers.start(f"/svc/hello => {inet(backend)}",
                                       session=ServerSession(idle_time_ms=400))
    async with RawClient(port) as c:
        for _ in range(8):  # idle 250 ms between requests, never 400: stays open
            assert (await c.request()).status == 200
            await asyncio.sleep(0.25)
        assert (await c.request()).status == 200
    key = ("rt", "test", "server", "127.0.0.1", str(port), "timeouts", "idle")
    assert router.registry.get(key).value == 0
