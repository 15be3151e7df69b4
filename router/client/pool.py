"""Keep-alive HTTP/1.1 connections to one endpoint, and the protocol that reads responses.

The pool is per endpoint (one `Address`); the balancer owns the endpoints.
An `UpstreamConnection` serves one exchange at a time (no pipelining towards
backends): it parses the response with httptools and hands head, body chunks
and completion straight to the exchange's sink, which writes them downstream
as they arrive, so no body is ever held whole. Backpressure runs both ways:
when this connection's write buffer fills, the sink pauses the downstream
reader; when the downstream write buffer fills, the sink pauses this reader.
"""

from __future__ import annotations

import asyncio
import logging
import select
import ssl
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Protocol

import httptools

from dtab.addr import Address
from router.request import NameCodes

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """A backend failed mid-exchange: reset, closed early, or sent something that is not HTTP."""

    def __init__(self, endpoint: str, message: str, cause: str = "ChannelClosedException",
                 *, requeueable: bool = False) -> None:
        super().__init__(f"{message} (endpoint {endpoint})")
        self.endpoint = endpoint
        self.cause = cause
        # A pooled connection the backend had already closed: nothing was received, so the
        # request can go out again on another connection (Linkerd's requeue).
        self.requeueable = requeueable


class ConnectFailed(Exception):
    def __init__(self, endpoint: str, error: BaseException, tls_failure: str | None = None
                 ) -> None:
        super().__init__(tls_failure or f"Unable to establish connection to {endpoint}: {error}")
        self.endpoint = endpoint
        self.error = error
        self.tls_failure = tls_failure  # what a failed TLS handshake says (for l5d-err)


class ResponseSink(Protocol):
    """What an upstream connection reports to; implemented by the proxy's exchange."""

    def on_response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], has_body: bool,
        content_length: bytes | None, conn_tokens: list[bytes] | None, has_l5d: bool,
        l5d_err: bool, success_class: bytes | None, retryable: bool,
    ) -> None:
        """`headers` come without framing and hop-by-hop ones (except those `conn_tokens`
        name); `content_length` is None for chunked or read-until-close bodies. The next
        hop's verdict comes apart: `success_class` is the last `l5d-success-class` value
        (taken out of `headers`: this hop sets its own), `retryable` whether an
        `l5d-retryable: true` came (left in)."""

    def on_response_body(self, chunk: bytes) -> None: ...

    def on_response_complete(self, keep_alive: bool) -> None: ...

    def on_upstream_error(self, error: UpstreamError) -> None: ...

    def upstream_pause_writing(self) -> None: ...

    def upstream_resume_writing(self) -> None: ...


# The reason phrase is advisory (RFC 9112 §4); the standard one is sent downstream, which
# spares a parser callback per response.
_REASONS: dict[int, bytes] = {int(s): s.phrase.encode() for s in HTTPStatus}
MAX_RESPONSE_HEAD_BYTES = 64 * 1024  # a backend cannot make the router hold an endless head
(_R_LENGTH, _R_CHUNKED, _R_CONNECTION, _R_DROP, _R_PLAIN, _R_L5D, _R_L5D_ERR,
 _R_SUCCESS_CLASS, _R_RETRYABLE) = range(9)
_RESPONSE_SPECIAL: dict[bytes, int] = {
    b"content-length": _R_LENGTH,
    b"transfer-encoding": _R_CHUNKED,
    b"connection": _R_CONNECTION,
    # the other hop-by-hop headers (router.http.headers.HOP_BY_HOP; not imported here so
    # the client package does not depend on the server side)
    **{h: _R_DROP for h in (b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade",
                            b"proxy-authorization", b"proxy-authenticate")},
}
# The `l5d-*` headers read here (any other is _R_L5D).
_L5D_RESPONSE: dict[bytes, int] = {
    b"l5d-err": _R_L5D_ERR,
    b"l5d-success-class": _R_SUCCESS_CLASS,
    b"l5d-retryable": _R_RETRYABLE,
}
# Raw header name (as the backend spelled it) -> its code: one lookup per header instead
# of lower() + lookup + prefix tests. Bounded, since backends choose the names.
_NAME_CODES_MAX = 512
_NAME_CODES = NameCodes(_NAME_CODES_MAX)


def name_codes() -> list[bytes]:
    """The names the raw-name cache holds (compiled, `_NAME_CODES` is a C-level global)."""
    return _NAME_CODES.names()


def _response_code(name: bytes) -> int:
    lk = name.lower()
    code = _RESPONSE_SPECIAL.get(lk)
    if code is None:
        code = _L5D_RESPONSE.get(lk, _R_L5D) if lk[:4] == b"l5d-" else _R_PLAIN
    _NAME_CODES.put(name, code)  # bounded in names and in bytes
    return code


class UpstreamConnection:  # an asyncio.Protocol (not a subclass: compiled, pool.pxd)
    """One TCP connection to a backend, reused across exchanges while it keeps alive."""

    __slots__ = ("endpoint", "transport", "parser", "sink", "closed", "_headers",
                 "_no_body", "_until_close", "_in_body", "_head_done", "_connected", "reused",
                 "_received", "_length", "_chunked", "_tokens", "_l5d", "_l5d_err",
                 "_success_class", "_retryable",
                 "_head_bytes", "reads", "born", "idle_since", "fd", "_version_seen")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.sink: ResponseSink | None = None
        self.closed = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._no_body = False
        self._until_close = False
        self._in_body = False
        self._head_done = False
        self.reused = False  # served an exchange before (came from the idle list)
        self._received = False  # any byte of the current response arrived
        self.reads = 0  # reads and write-buffer drains: progress, for the body timeout
        self.born = 0.0
        self.idle_since = 0.0
        self.fd = -1
        self._reset_head()

    def _reset_head(self) -> None:
        self._head_bytes = 0
        self._version_seen = False
        self._headers = []
        self._length: bytes | None = None
        self._chunked = False
        self._tokens: list[bytes] | None = None
        self._l5d = False
        self._l5d_err = False
        self._success_class: bytes | None = None
        self._retryable = False

    # --- lifecycle -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.endpoint.open_connections += 1
        self.born = time.monotonic()
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def peer_closed(self) -> bool:
        """Whether an idle pooled connection is already dead although the loop has not seen
        it yet (its FIN or reset queued in the kernel, or stray bytes): checked before a
        request that cannot be re-sent once written (it has a body) goes out on it."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return True
        if self.fd < 0:
            return False
        p = select.poll()
        p.register(self.fd, select.POLLIN | select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        try:
            return bool(p.poll(0))
        except OSError:
            return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.endpoint.open_connections -= 1
        self.endpoint.forget(self)
        sink = self.sink
        if sink is not None:
            self.sink = None
            if self._until_close and self._head_done and exc is None:
                sink.on_response_complete(False)
            else:
                what = "reset" if exc is not None else "closed"
                stage = "mid-response" if self._head_done else "before responding"
                if isinstance(exc, ssl.SSLError):  # e.g. an mTLS server refusing our cert
                    what = f"closed with a TLS error ({exc.reason or exc})"
                elif self.endpoint.tls is not None and not self.reused and not self._received:
                    stage = ("right after the TLS handshake, before responding: the TLS "
                             "server refused the connection (a server that requires a client "
                             "certificate does this to a client without a trusted one)")
                sink.on_upstream_error(
                    UpstreamError(self.endpoint.hostport, f"connection {what} {stage}",
                                  requeueable=self.reused and not self._received)
                )

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost decides what it meant

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.sink = None
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.sink = None
            self.transport.abort()

    # --- one exchange ----------------------------------------------------
    def start(self, sink: ResponseSink, head: bytes, no_body: bool) -> None:
        """Send a request head; the response goes to `sink`. `no_body` for HEAD requests."""
        self.sink = sink
        if self.parser is None:  # reused across keep-alive responses; reset after HEAD
            self.parser = httptools.HttpResponseParser(self)
        self._reset_head()
        self._no_body = no_body
        self._until_close = False
        self._in_body = False
        self._head_done = False
        self._received = False
        self.transport.write(head)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_pause_writing()

    def resume_writing(self) -> None:
        self.reads += 1
        if self.sink is not None:
            self.sink.upstream_resume_writing()

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        if self.sink is None:
            log.warning("unexpected %d bytes from idle connection to %s; closing",
                        len(data), self.endpoint.hostport)
            self.abort()
            return
        self._received = True
        if not self._head_done:
            if not self._head_bytes:
                if not data.startswith(b"HTTP/") and (len(data) >= 5
                                                      or not b"HTTP/".startswith(data)):
                    # llhttp also takes RTSP/ and ICE/ status lines; a backend speaks HTTP.
                    # (A first read shorter than `HTTP/` and a prefix of it: llhttp, having
                    # seen the H, takes nothing but HTTP/ from the next read.)
                    self._fail(UpstreamError(self.endpoint.hostport, "invalid HTTP response: "
                                             f"status line {data[:32]!r}", "ProtocolException"))
                    return
                # The status line's version, read here: the parser's get_http_version()
                # formats a new string (~2,800 instructions, 3% of a proxied request).
                # startswith, not slices: compiled, a C comparison with no new bytes.
                self._version_seen = (data.startswith(b"HTTP/1.1 ")
                                      or data.startswith(b"HTTP/1.0 "))
            # Counted per read, not per header callback: a head still incomplete after
            # MAX_RESPONSE_HEAD_BYTES fails below, so at most one read more is held.
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserError as e:
            detail = e.__context__ if isinstance(e.__context__, ValueError) else e
            self._fail(UpstreamError(self.endpoint.hostport, f"invalid HTTP response: {detail}",
                                     "ProtocolException"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError(self.endpoint.hostport, "unexpected protocol upgrade",
                                     "ProtocolException"))
            return
        if (not self._head_done and self._head_bytes > MAX_RESPONSE_HEAD_BYTES
                and self.sink is not None):
            self._fail(UpstreamError(
                self.endpoint.hostport,
                f"invalid HTTP response: response head longer than {MAX_RESPONSE_HEAD_BYTES} "
                "bytes", "ProtocolException"))

    def _fail(self, err: UpstreamError) -> None:
        sink = self.sink
        self.sink = None
        if self.transport is not None:
            self.transport.abort()
        if sink is not None:
            sink.on_upstream_error(err)

    # --- httptools callbacks ----------------------------------------------
    # Each response header is lowercased and classified once: framing and hop-by-hop
    # headers are taken out here (the exchange re-frames for its client), and whether
    # any `l5d-*` / `l5d-err` header is present is noted for clearContext servers.
    def on_header(self, name: bytes, value: bytes) -> None:
        code = _NAME_CODES.get(name)
        if code < 0:
            code = _response_code(name)
        if code == _R_PLAIN:
            self._headers.append((name, value))
        elif code == _R_L5D or code == _R_L5D_ERR or code == _R_RETRYABLE:
            self._l5d = True
            if code == _R_L5D_ERR:
                self._l5d_err = True
            elif code == _R_RETRYABLE and value.strip().lower() == b"true":
                self._retryable = True
            self._headers.append((name, value))
        elif code == _R_SUCCESS_CLASS:
            self._l5d = True
            self._success_class = value
        elif code == _R_LENGTH:
            self._length = value.strip()
        elif code == _R_CHUNKED:
            # Only `chunked` is re-framed faithfully; `gzip, chunked` would lose its coding
            # and `chunked, gzip` means read-until-close to llhttp but chunked to us.
            if value.strip().lower() != b"chunked":
                raise ValueError(f"unsupported Transfer-Encoding {value[:64]!r}")
            self._chunked = True
        elif code == _R_CONNECTION:
            if value == b"keep-alive":  # (nginx's, on every response) names nothing forwarded
                return
            tokens = [t.strip().lower() for t in value.split(b",")]
            self._tokens = tokens if self._tokens is None else self._tokens + tokens

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()  # type: ignore[union-attr]
        if status > 599:
            raise ValueError(f"status code {status} out of range")
        if self._version_seen:  # 1.1 or 1.0, seen at the start of this head
            self._version_seen = False  # a final response after a 1xx is checked here
        else:
            version = parser.get_http_version()  # type: ignore[union-attr]
            if version != "1.1" and version != "1.0":
                raise ValueError(f"HTTP version {version} in the status line")
        if self._head_bytes > MAX_RESPONSE_HEAD_BYTES and sum(
                len(k) + len(v) for k, v in self._headers) > MAX_RESPONSE_HEAD_BYTES:
            # the whole head came in one big read: measured here instead
            raise ValueError(f"response head longer than {MAX_RESPONSE_HEAD_BYTES} bytes")
        if status < 200:
            # 1xx interim responses are not forwarded (we never send Expect upstream).
            self._reset_head()
            # The next head may start in this very read, so the next read does not start
            # one: its first bytes are not a status line to check (llhttp checks them).
            self._head_bytes = 1
            return
        chunked = self._chunked
        content_length = None if chunked else self._length
        no_body = self._no_body or status in (204, 304)
        self._until_close = not no_body and not chunked and content_length is None
        self._head_done = True
        sink = self.sink
        if sink is None:
            return
        tokens = self._tokens
        if tokens is not None:
            # `Connection: keep-alive` names a header that is never forwarded anyway: only
            # tokens that could name a forwarded header are passed on.
            tokens = [t for t in tokens if t not in _RESPONSE_SPECIAL] or None
        sink.on_response_head(status, _REASONS.get(status, b"Unknown"), self._headers,
                              not no_body, content_length, tokens, self._l5d,
                              self._l5d_err, self._success_class, self._retryable)
        if no_body and self._no_body and self.sink is sink:
            # A HEAD response: llhttp would wait for the announced body, so finish here
            # and give the next exchange a fresh parser.
            self.parser = None
            self._complete(parser.should_keep_alive())  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_response_body(body)

    def on_message_complete(self) -> None:
        if not self._head_done:
            return  # end of a 1xx
        sink = self.sink
        if sink is None:
            if not self._no_body:
                self._head_done = False
            return
        # _complete, inlined: this runs once per proxied response
        self.sink = None
        self._head_done = False
        sink.on_response_complete(
            self.parser.should_keep_alive() and not self._until_close)  # type: ignore[union-attr]

    def _complete(self, keep_alive: bool) -> None:
        sink = self.sink
        self.sink = None
        self._head_done = False
        if sink is not None:
            sink.on_response_complete(keep_alive and not self._until_close)


class Endpoint:
    """One backend address: its idle connections and its load (for the balancer)."""

    __slots__ = ("address", "host", "port", "hostport", "weight", "idle", "pending",
                 "open_connections", "down", "removed", "cost", "stamp", "on_connect",
                 "connect_timeout_s", "idle_s", "life_s", "_sweeper", "tls", "dead", "accrual",
                 "probe_open")

    def __init__(self, address: Address, *, connect_timeout_s: float = 10.0) -> None:
        self.address = address
        self.host = address.host
        self.port = address.port
        self.hostport = address.hostport
        self.weight = address.weight if address.weight > 0 else 1.0
        self.idle: list[UpstreamConnection] = []
        self.pending = 0  # requests in flight (least-loaded / EWMA)
        self.open_connections = 0
        self.down = False  # last connect failed; the balancer avoids it while others are up
        self.removed = False
        self.dead = False  # failure accrual took it out of the balancer (router/policy/accrual)
        self.probe_open = False  # accrual lets one request through to test it (ProbeOpen)
        self.accrual = None  # its EndpointAccrual, or None (failureAccrual: none)
        self.cost = 0.0  # peak-EWMA latency estimate, ms
        self.stamp = time.monotonic()
        self.on_connect = None  # callback(latency_ms) for client stats
        self.connect_timeout_s = connect_timeout_s
        # clientSession idleTimeMs / lifeTimeMs (None: forever, as Linkerd)
        self.idle_s: float | None = None
        self.life_s: float | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.tls = None  # the client's router.tls.runtime.ClientTlsState: connect with TLS

    def take_idle(self, *, checked: bool = False) -> UpstreamConnection | None:
        """An idle connection; `checked`: one the kernel does not already know is dead."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                if checked and conn.peer_closed():
                    conn.abort()
                    continue
                return conn
        return None

    async def connect(self, factory: Callable[[], asyncio.Protocol] | None = None
                      ) -> UpstreamConnection:
        """A new connection (TLS if the client has it); `factory` makes another protocol
        (the h2 client's) instead of an HTTP/1.1 UpstreamConnection."""
        loop = asyncio.get_running_loop()
        make = factory or (lambda: UpstreamConnection(self))
        t0 = time.monotonic()
        tls = self.tls
        try:
            if tls is None:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(make, self.host, self.port),
                    self.connect_timeout_s,
                )
            else:  # never a plaintext fallback: a failed handshake fails the connect
                _, conn = await asyncio.wait_for(
                    loop.create_connection(make, self.host, self.port,
                                           ssl=tls.source.context(),
                                           server_hostname=tls.server_hostname,
                                           ssl_handshake_timeout=self.connect_timeout_s),
                    self.connect_timeout_s,
                )
                tls.connected(conn.transport)
        except ssl.SSLError as e:
            self.down = True
            raise ConnectFailed(self.hostport, e, tls.failed(e, self.hostport)) from e
        except (TimeoutError, OSError) as e:
            self.down = True
            raise ConnectFailed(self.hostport, e) from e
        self.down = False
        if self.on_connect is not None:
            self.on_connect((time.monotonic() - t0) * 1000.0)
        return conn  # type: ignore[return-value]

    def release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """Return a connection after a finished exchange (or close it if it cannot be reused)."""
        if reusable and not conn.closed and not self.removed:
            if self.idle_s is not None or self.life_s is not None:
                now = time.monotonic()
                if self.life_s is not None and now - conn.born >= self.life_s:
                    conn.close()
                    return
                conn.idle_since = now
                if self._sweeper is None:
                    self._sweeper = asyncio.get_running_loop().call_later(
                        self._sweep_every(), self._sweep_idle)
            conn.reused = True
            self.idle.append(conn)
        else:
            conn.close()

    def _sweep_every(self) -> float:
        return min(x for x in (self.idle_s, self.life_s) if x is not None) / 4

    def _sweep_idle(self) -> None:
        """clientSession idleTimeMs / lifeTimeMs: close pooled connections idle that long,
        or that old (a busy one is closed when it is released)."""
        self._sweeper = None
        if self.idle_s is None and self.life_s is None:
            return
        now = time.monotonic()
        idle_s = self.idle_s if self.idle_s is not None else float("inf")
        life_s = self.life_s if self.life_s is not None else float("inf")
        for conn in [c for c in self.idle
                     if now - c.idle_since >= idle_s or now - c.born >= life_s]:
            self.forget(conn)
            conn.close()
        if self.idle and not self.removed:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every(),
                                                                  self._sweep_idle)

    def forget(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close(self) -> None:
        """The endpoint left the address set: close idle connections; busy ones close on release."""
        self.removed = True
        # Drop the accrual too: its `ep` points back here, and that cycle left every removed
        # endpoint (with its state) to the cycle collector, whose full collections of
        # thousands of them stalled the loop for 100+ ms under k8s churn.
        acc, self.accrual = self.accrual, None
        if acc is not None:
            acc.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()

    def __repr__(self) -> str:
        return f"Endpoint({self.hostport}, pending={self.pending}, cost={self.cost:.2f})"
