"""The accepting side: an asyncio.Protocol per downstream connection, parsed by httptools.

Requests on one connection are served strictly in order. A pipelined request
that arrives while another is in flight is queued (head and body as parsed)
and the socket is paused, so a pipelining client costs at most one read
buffer, never unbounded memory. Absolute-form targets (`GET http://hello/x`,
what `http_proxy` users send) become origin-form with `Host` taken from the
URL. Reading pauses for three independent reasons (queue, body buffer,
backend backpressure), tracked as bits so one resuming does not undo another.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import re
import select
import termios
from collections import deque
from typing import Any

import httptools

from dtab.bounded import LogLimiter, WeightedLRU, approx_size
from router.client.cache import ClientCache
from router.http.dtab_headers import max_dtab_header_bytes
from router.http.errors import ErrorResponse, RouteError
from router.http.headers import HOP_BY_HOP, REQUEST_OWNED
from router.http.proxy import ROUTE_CACHE_BYTES, ROUTE_CACHE_MAX, Exchange, dispatch
from router.identifiers import IdentificationError
from router.policy.retries import DEFAULT_BUFFER_BYTES, ServicePolicy, compile_service
from router.policy.shedding import LoadShedder
from router.request import HeadInfo, NameCodes, RequestHead
from router.session import DEFAULT_SERVER_SESSION, ServerSession
from router.stats import ServerStats, ServiceStats, ServiceStatsCache

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 10.0)  # lines per connection event: clipped, rate-limited

MAX_HEAD_BYTES = 64 * 1024  # whole request head; beyond it the request is refused
LINGER_S = 2.0  # reading (and dropping) an unwanted request body after the response
NAME_CACHE_BYTES = 4 * 1024 * 1024  # service names -> stats, bounded by bytes


class RouterRuntime:
    """What every server of one router shares: the router, its clients and service stats."""

    # fixed attributes (compiled, server.pxd: the proxy reads them as C fields)
    __slots__ = ("router", "clients", "services", "retry_buffer_bytes", "binding_timeout_s",
                 "identification_error", "_sweeper", "idle_s", "routes", "_names",
                 "max_dtab_bytes", "cached_bind", "telemetry", "identify")

    def __init__(self, router: Any) -> None:
        self.router = router
        self.identify = router.identify  # the router's identifier chain, fixed for its life
        cfg = getattr(router, "config", None)
        idle_s = _idle_ttl(cfg)
        self.clients = ClientCache(router.metrics, getattr(router, "client_config", None), idle_s)
        self.services = ServiceStatsCache(lambda name: ServiceStats(router.metrics, name), idle_s)
        kb = getattr(cfg, "stream_after_content_length_kb", None)
        self.retry_buffer_bytes = int(kb) * 1024 if kb is not None else DEFAULT_BUFFER_BYTES
        self.binding_timeout_s = float(getattr(cfg, "binding_timeout_ms", 10_000) or 10_000) / 1000
        self.identification_error: type[Exception] = IdentificationError
        self._sweeper: asyncio.TimerHandle | None = None
        self.idle_s = idle_s
        # Route decisions per (name, local dtab), valid while the bound tree is the same
        # object (see proxy._choose); cleared whenever a client or service expires.
        self.routes: WeightedLRU[Any, Any] = WeightedLRU(ROUTE_CACHE_BYTES,
                                                         max_entries=ROUTE_CACHE_MAX)
        self._names: WeightedLRU[tuple[str, ...], Any] = WeightedLRU(NAME_CACHE_BYTES,
                                                                     max_entries=10_000)
        self.max_dtab_bytes = max_dtab_header_bytes(cfg)
        self.clients.on_expire = self._forget_routes
        self.services.on_evict = self._forget_routes
        # A synchronous cached-binding lookup lets a request skip the task and the extra loop
        # turn when the tree is already bound (`Router.bindings.get`); None = always await bind.
        bindings = getattr(router, "bindings", None)
        self.cached_bind = getattr(bindings, "get", None)
        # router/telemetry's RouterTelemetry (tracing, recent requests, access log), or None:
        # then the exchange runs no telemetry code at all
        self.telemetry: Any = getattr(router, "telemetry", None)

    def service_for(self, name: Any) -> tuple[str, Any, ServicePolicy]:
        """(`/svc/hello`, its ServiceStats, its compiled ServicePolicy) for a name path,
        remembered by its labels (the policy is compiled once per service)."""
        hit = self._names.get(name.elems)
        if hit is None:
            show = name.show
            service_config = getattr(self.router, "service_config", None)
            cfg = service_config(name) if service_config is not None else None
            stats = self.services.get(show)
            policy = compile_service(show, stats.scope, cfg, self.retry_buffer_bytes)
            hit = (show, stats, policy)
            self._names.put(name.elems, hit, 2 * approx_size(show) + 600)
        return hit

    def _forget_routes(self) -> None:
        self.routes.clear()
        self._names.clear()

    def start_sweeping(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(min(self.idle_s / 2, 60.0), 0.05)

        def sweep() -> None:
            try:
                if self.services.expire():
                    self._forget_routes()
            except Exception:
                log.exception("service stats sweep failed")
            self._sweeper = loop.call_later(interval, sweep)

        self._sweeper = loop.call_later(interval, sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.clients.close()


def _idle_ttl(cfg: Any) -> float:
    ttl = getattr(cfg, "binding_cache_idle_ttl_secs", None)
    return float(ttl) if ttl else 600.0


class HttpServer:
    """One `servers:` entry: a listening socket and its connections."""

    __slots__ = ("runtime", "label", "ip", "port", "clear_context", "max_call_depth", "shedder",
                 "session", "tick_s", "timeouts", "stats", "connections", "aserver", "tls")

    def __init__(self, runtime: RouterRuntime, server_cfg: Any) -> None:
        router = runtime.router
        self.runtime = runtime
        self.label = router.label
        self.ip = getattr(server_cfg, "ip", None) or "127.0.0.1"
        self.port = int(server_cfg.port)
        self.clear_context = bool(getattr(server_cfg, "clear_context", False))
        depth = getattr(server_cfg, "max_call_depth", None)
        if depth is None:
            depth = getattr(getattr(router, "config", None), "max_call_depth", None)
        self.max_call_depth = int(depth) if depth is not None else 1000
        limit = getattr(server_cfg, "max_concurrent_requests", None)
        self.shedder: LoadShedder | None = LoadShedder(limit) if limit else None
        self.session: ServerSession = getattr(server_cfg, "session", None) or \
            DEFAULT_SERVER_SESSION
        self.tick_s = self.session.tick_s()
        self.timeouts: dict[str, Any] = {}  # kind -> counter, made in start()
        self.stats: ServerStats | None = None  # named by the bound port, made in start()
        self.connections: set[ServerConnection] = set()
        self.aserver: asyncio.Server | None = None
        self.tls: Any = None  # router.tls.runtime.ServerTlsState: handshake before HTTP
        tls_cfg = getattr(server_cfg, "tls", None)
        if tls_cfg is not None:
            from router.tls.runtime import ServerTlsState

            self.tls = ServerTlsState(tls_cfg, f"{self.label} server {self.ip}:{self.port}")

    async def start(self, sock: Any = None) -> None:
        """Listen; `sock` is an already listening socket to accept from instead (a reload
        taking over a port: router/reload.py)."""
        loop = asyncio.get_running_loop()
        if self.port != 0:
            self.stats = ServerStats(self.runtime.router.metrics, self.ip, self.port)
        factory: Any = lambda: ServerConnection(self)  # noqa: E731
        if self.tls is not None:
            factory = self.tls.protocol_factory(factory)
        if sock is not None:
            self.aserver = await loop.create_server(factory, sock=sock, backlog=1024)
        else:
            self.aserver = await loop.create_server(
                factory, self.ip, self.port, reuse_address=True, backlog=1024,
                reuse_port=getattr(self.runtime.router, "reuse_port", False) or None,
            )
        if self.port == 0:
            self.port = self.aserver.sockets[0].getsockname()[1]
        self.stats = ServerStats(self.runtime.router.metrics, self.ip, self.port)
        # rt/<label>/server/<ip>/<port>/timeouts/<kind>: connections a session timeout ended
        self.timeouts = {k: self.stats.scope.counter("timeouts", k)
                         for k in ("header_read", "idle", "lifetime", "body_progress")}
        if self.tls is not None:
            self.tls.bind(self.stats.scope)

    @property
    def busy(self) -> int:
        return sum(1 for c in self.connections if c.current is not None)

    def stop_accepting(self) -> None:
        if self.aserver is not None:
            self.aserver.close()
        if self.tls is not None:
            self.tls.close()
        for c in list(self.connections):
            c.draining = True
            if c.current is None:
                c.close()

    def close_all(self, grace_ms: float | None = None) -> None:
        """End every connection. A request still waiting for its response head gets a 503
        (with `l5d-err`) first, so the client knows it was not served, not just a reset."""
        if self.tls is not None:
            self.tls.close()
        for c in list(self.connections):
            cur = c.current
            if cur is not None and not cur.head_sent and not cur.finished and grace_ms is not None:
                c.draining = True
                cur.keep_alive = False
                cur.respond_error(RouteError(
                    503, f"Router {self.label} is shutting down: the request did not complete "
                    f"within the {grace_ms:g} ms grace period", "ShutdownGracePeriodExpired"))
                c.queue.clear()
                c.close()  # flushes the 503
            else:
                c.abort()


(_VIA, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _CTX_DTAB, _USER_DTAB, _DROP,
 _PLAIN, _L5D, _HOST, _AMBIGUOUS, _CTX_DEADLINE) = range(13)
_REQUEST_SPECIAL: dict[bytes, int] = {
    b"host": _HOST,
    b"via": _VIA,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
    b"l5d-ctx-dtab": _CTX_DTAB,
    b"l5d-dtab": _USER_DTAB,
    b"l5d-ctx-deadline": _CTX_DEADLINE,  # read, tightened and re-emitted (router/policy)
    **{h: _DROP for h in HOP_BY_HOP - {b"connection", b"content-length", b"transfer-encoding"}},
    **{h: _DROP for h in REQUEST_OWNED},
}
# Headers a `Connection:` token can name that are never forwarded anyway.
_ALREADY_DROPPED = frozenset(
    k for k, c in _REQUEST_SPECIAL.items()
    if c in (_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _DROP)
)
# Raw header name (as the client spelled it) -> its code, so the common headers cost one
# lookup instead of lower() + lookup + prefix test. Names come from clients: bounded.
_NAME_CODES_MAX = 512
_NAME_CODES = NameCodes(_NAME_CODES_MAX)
# Request methods as str, without a decode per request.
_METHOD_NAMES: dict[bytes, str] = {m.encode(): m for m in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT")}


def name_codes() -> list[bytes]:
    """The names the raw-name cache holds (compiled, `_NAME_CODES` is a C-level global)."""
    return _NAME_CODES.names()


def _request_code(name: bytes) -> int:
    lk = name.lower()
    code = _REQUEST_SPECIAL.get(lk)
    if code is None:
        code = _L5D if lk[:4] == b"l5d-" else _PLAIN
        if b"_" in lk and lk.replace(b"_", b"-") in (b"content-length", b"transfer-encoding"):
            # CGI-style servers read `Transfer_Encoding` as Transfer-Encoding: a framing
            # header in disguise, refused rather than forwarded (smuggling)
            code = _AMBIGUOUS
    _NAME_CODES.put(name, code)  # bounded in names and in bytes
    return code


class BadHead(Exception):
    """A request head refused before routing (the connection closes after the answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HeadTooLarge(BadHead):
    """A request line or head past MAX_HEAD_BYTES (414 or 431)."""


# RFC 9110 §7.2 / RFC 3986 §3.2: a Host is a reg-name, IPv4 or [IPv6] literal, optional port.
_HOST_RE = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_GOOD_HOSTS: set[bytes] = set()  # values already checked; bounded, they come from clients
_GOOD_HOSTS_MAX = 1024


def _check_host(value: bytes) -> None:
    if _HOST_RE.fullmatch(value) is None:
        shown = value[:64].decode("latin-1")
        raise BadHead(400, f"Invalid Host header value: {shown!r}")
    if len(_GOOD_HOSTS) < _GOOD_HOSTS_MAX and len(value) <= 256:  # bounded in bytes too
        _GOOD_HOSTS.add(value)


def _peer_state(fd: int) -> tuple[bool, bool, int]:
    """(peer shut down its sending side, connection reset or hung up, bytes queued unread),
    without reading: how a paused connection learns the client went away."""
    p = select.poll()
    p.register(fd, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    events = p.poll(0)
    ev = events[0][1] if events else 0
    buf = bytearray(4)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        queued = int.from_bytes(buf, "little")
    except OSError:
        queued = 0
    return (bool(ev & select.POLLRDHUP), bool(ev & (select.POLLHUP | select.POLLERR)), queued)


# Most requests carry none of the headers HeadInfo tracks: they share this one, and
# on_header makes a request its own HeadInfo before changing anything (never mutate it).
_NO_INFO = HeadInfo()


class ServerConnection:  # an asyncio.Protocol (not a subclass: compiled, server.pxd)
    PAUSE_QUEUE = 1
    PAUSE_BODY = 2
    PAUSE_UPSTREAM = 4

    __slots__ = ("server", "stats", "transport", "parser", "peer", "current", "parsing", "queue",
                 "_url", "_headers", "_head_bytes", "_info", "_paused", "_closed", "draining",
                 "writing_paused", "_broken", "_hosts", "reads", "_heads", "_timer", "_w_mark",
                 "_w_heads", "_w_since", "_w_head", "_born", "_lingering", "_w_idle", "_w_tick",
                 "_idle_reads", "_chunk", "_between", "_fresh", "_at_start", "_clear")

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.stats = server.stats
        self._clear = server.clear_context  # fixed for a server's life
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: tuple[str, int] = ("", 0)
        self.current: Exchange | None = None
        self.parsing: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._info = _NO_INFO
        self._paused = 0
        self._closed = False
        self.draining = False
        self.writing_paused = False
        self._broken = False
        self._lingering = False
        self._hosts = 0
        # Session timeouts (router.session): counters the hot path bumps, sampled by one
        # timer per connection (`_tick`) that compares them with what it saw last time.
        self.reads = 0  # reads from the client, plus drains of its write buffer
        self._heads = 0  # request heads completed
        self._timer: asyncio.TimerHandle | None = None
        self._w_mark = -1
        self._w_heads = 0
        self._w_since = 0.0  # when the tick last saw anything move
        self._w_head: float | None = None  # when a request head was first seen arriving
        self._w_idle: float | None = None  # when the tick first saw the connection idle
        self._w_tick = 0.0
        self._idle_reads = 0  # `reads` when the last exchange ended
        self._born = 0.0
        # Where a request line is, so on_headers_complete can read its version from the
        # bytes: `_between` while the parser is between messages, `_fresh` while a read
        # that came between messages has not begun one, `_at_start` when the message being
        # parsed began at the first byte of `_chunk` (the read being parsed, held only
        # during feed_data).
        self._chunk: bytes | None = None
        self._between = True
        self._fresh = False
        self._at_start = False

    # --- transport events ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        self.server.connections.add(self)
        self.stats.connects.value += 1
        self.stats.open_connections += 1
        tick = self.server.tick_s
        if tick is not None:
            loop = asyncio.get_running_loop()
            self._born = self._w_since = self._w_tick = now = loop.time()
            self._w_head = now  # a connection's first head is timed from accept
            self._timer = loop.call_at(now + tick, self._tick)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.connections.discard(self)
        self.stats.open_connections -= 1
        cur = self.current
        self.current = None
        if cur is not None:
            cur.cancel()
            if self.server.shedder is not None:
                self.server.shedder.release(cur)
        for ex in self.queue:
            ex.finished = True
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.stats.received_bytes.value += len(data)
        self.reads += 1
        if self._broken:
            return
        self._chunk = data
        self._fresh = self._between
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is hop-by-hop and not proxied: serve the request, then close.
            self._broken = True
            if self.parsing is not None:
                self.parsing.keep_alive = False
        except httptools.HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, BadHead):
                self._bad_request(str(cause), cause.status)
            else:
                self._bad_request(f"Invalid HTTP request: {e}")
        finally:
            self._chunk = None  # an idle connection holds no read buffer

    def eof_received(self) -> bool:
        # Half-closed by the client: finish what is in flight, then close.
        if self.current is None or self._lingering:
            return False
        ex = self.parsing
        if ex is not None and not ex.request_done and not self._broken:
            # The body still being read can never be completed now: answer 400 (or reset, if
            # the response already started) and let go of the backend connection.
            self._bad_request("Request body truncated: the client closed its side before "
                              "sending all of it")
            return not self._closed
        self.draining = True
        return True

    def pause_writing(self) -> None:
        self.writing_paused = True
        cur = self.current
        if cur is not None and cur.upstream is not None and cur.upstream.transport is not None:
            cur.upstream.transport.pause_reading()
            cur.upstream_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self.reads += 1  # progress for the body timeout: the client is reading
        cur = self.current
        if cur is not None and cur.upstream_paused:
            cur.upstream_paused = False
            if cur.upstream is not None and cur.upstream.transport is not None:
                cur.upstream.transport.resume_reading()

    # --- writing -------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not self._closed:
            self.stats.sent_bytes.value += len(data)
            self.transport.write(data)  # type: ignore[union-attr]

    def writelines(self, parts: tuple[bytes, ...], n: int) -> None:
        if not self._closed:
            self.stats.sent_bytes.value += n
            self.transport.writelines(parts)  # type: ignore[union-attr]

    def pause_reading(self, reason: int) -> None:
        if not self._paused and not self._closed:
            self.transport.pause_reading()  # type: ignore[union-attr]
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if not self._paused & reason:
            return
        self._paused &= ~reason
        if not self._paused and not self._closed:
            self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        if not self._closed and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if not self._closed and self.transport is not None:
            self.transport.abort()

    # --- httptools callbacks -------------------------------------------------------
    # Each request header is lowercased and classified once, here: framing and hop-by-hop
    # headers are taken out (the proxy re-frames), `l5d-dtab`/`l5d-ctx-dtab` are collected,
    # `Via` hops counted, and with clearContext every `l5d-*` header is dropped on arrival.
    # on_headers_complete hands the head's state to the exchange and starts the next head
    # afresh; a head that fails to parse ends the connection, so its leftovers are never
    # read.
    def on_message_begin(self) -> None:
        self._between = False
        self._at_start = self._fresh
        self._fresh = False

    def on_url(self, url: bytes) -> None:
        self._url = self._url + url if self._url else url  # usually one piece: no copy
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(414, f"Request line longer than {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(431, f"Request head longer than {MAX_HEAD_BYTES} bytes")
        code = _NAME_CODES.get(name)
        if code < 0:
            code = _request_code(name)
        if code == _PLAIN:
            self._headers.append((name, value))
            return
        if code == _HOST:
            self._hosts += 1
            if value not in _GOOD_HOSTS:
                _check_host(value)
            self._headers.append((name, value))
            return
        if code == _L5D:
            if not self._clear:
                self._headers.append((name, value))
            return
        if code == _DROP or (code == _CONNECTION and value == b"keep-alive"):
            return  # hop-by-hop, or set by this router; `keep-alive` names nothing forwarded
        if code == _AMBIGUOUS:
            raise BadHead(400, f"Ambiguous framing header name {name[:64].decode('latin-1')!r}")
        info = self._info
        if info is _NO_INFO:
            info = self._info = HeadInfo()
        if code == _VIA:
            for hop in value.split(b","):
                if hop.strip():
                    info.hops += 1
            self._headers.append((name, value))
        elif code == _CONTENT_LENGTH:
            if info.body_mode == 0:
                info.length = value.strip()
                info.body_mode = 1 if info.length != b"0" else 0
        elif code == _TRANSFER_ENCODING:
            # Only `chunked` is understood (RFC 9112 §6.1: 501 for any other coding); a
            # list such as `gzip, chunked` would be re-framed with its coding lost.
            if value.strip().lower() != b"chunked":
                raise BadHead(501, "Unsupported Transfer-Encoding: "
                              f"{value[:64].decode('latin-1')!r} (only chunked)")
            info.body_mode = 2
        elif code == _CONNECTION:
            tokens = [t.strip().lower() for t in value.split(b",")]
            info.conn_tokens = tokens if info.conn_tokens is None else info.conn_tokens + tokens
        elif code == _EXPECT:
            info.expect = value.strip().lower() == b"100-continue"
        elif self._clear:
            return  # l5d-* from outside the mesh
        elif code == _CTX_DTAB:
            info.ctx_dtabs += (value,)
        elif code == _USER_DTAB:
            info.user_dtabs += (value,)
        elif code == _CTX_DEADLINE:
            if len(info.deadlines) < 16:  # a client cannot make the router hold many
                info.deadlines += (value,)

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers = self._headers
        info = self._info
        method = parser.get_method()
        url = self._url
        version = None
        if self._at_start:
            # The message began at the read's first byte: if the line there is exactly
            # `<method> <url> HTTP/1.x CRLF`, that is the version llhttp read. The parser's
            # get_http_version() formats a new string (~2,800 instructions, 3% of a
            # proxied request); anything else (leading CRLFs, a lenient line) asks it.
            self._at_start = False
            chunk = self._chunk
            n = len(method)
            if (chunk is not None and chunk.startswith(method) and chunk.startswith(b" ", n)
                    and chunk.startswith(url, n + 1)):
                n += len(url) + 1
                if chunk.startswith(b" HTTP/1.1\r\n", n):
                    version = "1.1"
                elif chunk.startswith(b" HTTP/1.0\r\n", n):
                    version = "1.0"
        if version is None:
            version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            if version == "0.9":  # `GET /a` with no version: llhttp reads it as HTTP/0.9
                raise BadHead(400, "HTTP/0.9 request lines are not supported")
            raise BadHead(505, f"HTTP version {version} is not supported")
        if self._hosts > 1:  # RFC 9112 §3.2: more than one Host is a 400
            raise BadHead(400, "More than one Host header")
        self._hosts = 0
        self._heads += 1
        target = url.decode("latin-1")
        if target[:1] != "/" and target != "*":
            target = self._absolute_form(target, headers)
            info = self._info  # may have become its own HeadInfo (bad_target)
        if info.conn_tokens:
            named = set(info.conn_tokens) - _ALREADY_DROPPED  # e.g. `keep-alive`: gone already
            if named:
                headers[:] = [(k, v) for k, v in headers if k.lower() not in named]
        name = _METHOD_NAMES.get(method)
        head = RequestHead(method.decode("latin-1") if name is None else name, target, version,
                           headers, self.peer)
        ex = Exchange(self, head, parser.should_keep_alive() and not self.draining,
                      info.body_mode, info.length, info.expect)
        ex.info = info
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._info = _NO_INFO
        self.parsing = ex
        if self.current is None and not self.queue:
            self._serve(ex)
        else:
            self.queue.append(ex)
            self.pause_reading(self.PAUSE_QUEUE)

    def _absolute_form(self, target: str, headers: list[tuple[bytes, bytes]]) -> str:
        try:
            url = httptools.parse_url(target.encode("latin-1"))
        except httptools.HttpParserInvalidURLError:
            if self._info is _NO_INFO:
                self._info = HeadInfo()
            self._info.bad_target = True  # refused with 400 before routing
            return target
        if url.host:
            host = url.host + (b":%d" % url.port if url.port else b"")
            headers[:] = [(k, v) for k, v in headers if k.lower() != b"host"]
            headers.insert(0, (b"Host", host))
        path = (url.path or b"/").decode("latin-1")
        if url.query:
            path += "?" + url.query.decode("latin-1")
        return path

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        if ex is not None:
            ex.feed_body(body)

    def on_message_complete(self) -> None:
        self._between = True
        ex = self.parsing
        if ex is not None:
            ex.body_complete()
            self.parsing = None

    # --- exchanges ---------------------------------------------------------------------
    def _serve(self, ex: Exchange) -> None:
        self.current = ex
        shed = self.server.shedder
        if shed is not None and not shed.admit(ex):
            ex.respond_error(shed.rejection())
            return
        if ex.expect_continue and not ex.request_done and ex.version == "1.1":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        dispatch(ex)

    def exchange_done(self, ex: Exchange, reusable: bool) -> None:
        """The response is written; next pipelined request, or close."""
        if self.current is not ex:
            return
        self.current = None
        if self.server.shedder is not None:
            self.server.shedder.release(ex)
        self._idle_reads = self.reads
        if self._closed:
            return
        if self._paused:  # backpressure from this exchange's body or backend ends with it
            self.resume_reading(self.PAUSE_BODY | self.PAUSE_UPSTREAM)
        if not (reusable and ex.keep_alive and ex.request_done) or self._broken:
            # Unread request body, Connection: close, or HTTP/1.0: the connection ends here.
            if not ex.request_done and not self._broken:
                self._linger()
            else:
                self.transport.close()  # type: ignore[union-attr]
            return
        if self.queue:
            # On the next loop turn: an exchange can finish synchronously (a router-made
            # error), and a long pipeline must not become a deep recursion.
            asyncio.get_running_loop().call_soon(self._serve_next)
        elif self.draining:
            self.transport.close()  # type: ignore[union-attr]

    def _serve_next(self) -> None:
        if self._closed or self.current is not None or not self.queue:
            return
        nxt = self.queue.popleft()
        if not self.queue:
            self.resume_reading(self.PAUSE_QUEUE)
        self._serve(nxt)

    # --- session timeouts (router.session) ------------------------------------------
    def _tick(self) -> None:
        """Every deadline of this connection, checked by sampling: counters the data path
        bumps anyway are compared with the last tick's, so no request pays for a timer."""
        self._timer = None
        if self._closed or self.transport is None or self.transport.is_closing():
            return
        srv = self.server
        ses = srv.session
        loop = asyncio.get_running_loop()
        now = loop.time()
        prev, self._w_tick = self._w_tick, now
        if self._heads != self._w_heads:  # requests came and went since the last tick
            self._w_heads = self._heads
            self._w_head = self._w_idle = None
        cur = self.current
        up = cur.upstream if cur is not None else None
        mark = self.reads + (up.reads if up is not None else 0)
        if mark != self._w_mark:
            self._w_mark = mark
            self._w_since = now
        if cur is None:
            partial = self.reads != self._idle_reads or self._url or self._head_bytes
            if partial and self._w_head is None:
                self._w_head = prev  # the head began at most one tick ago
            if self._w_head is not None:
                self._w_idle = None
                if ses.header_s is not None and now - self._w_head >= ses.header_s:
                    self._session_timeout("header_read", 408, "Request head not received "
                                          f"within {ses.header_read_timeout_ms} ms")
                    return
            else:
                if self._w_idle is None:
                    self._w_idle = now
                if ses.idle_s is not None and now - self._w_idle >= ses.idle_s:
                    self._session_timeout("idle", 0, "")
                    return
            if ses.life_s is not None and now - self._born >= ses.life_s and not partial:
                self._session_timeout("lifetime", 0, "")
                return
        else:
            self._w_idle = None
            if not cur.request_done and self._paused and self._peer_gone(cur):
                return
            in_body = not cur.request_done or cur.head_sent
            if not in_body:
                self._w_since = now  # waiting for the response head: the service's timeouts
            elif now - self._w_since >= min(ses.body_s or 1e18, cur.backend_body_s()):
                if self._body_stalled(cur, now - self._w_since):
                    return
            if (ses.life_s is not None and now - self._born >= ses.life_s
                    and not self.draining):
                self.draining = True  # the response says Connection: close, then it ends
                srv.timeouts["lifetime"].value += 1
        self._timer = loop.call_at(now + srv.tick_s, self._tick)  # type: ignore[operator]

    def _session_timeout(self, kind: str, status: int, message: str) -> None:
        self.server.timeouts[kind].value += 1
        self._broken = True
        if status and self.reads:  # a connection that never sent a byte is just closed
            _limited.info((self.server.label, kind), "%s: %s from %s:%s", self.server.label,
                          message, *self.peer)
            self.stats.record_failure("RequestHeadTimeout", 0.0, status)
            self.write(ErrorResponse(status, message).encode(
                keep_alive=False, l5d_err=not self.server.clear_context))
        self.close()

    def _body_stalled(self, cur: Exchange, stalled_s: float) -> bool:
        """No body byte moved for a body-progress timeout: end the exchange. True if it ended.
        The request body waits on the backend when the backend stopped reading it (this
        reader is paused for it); the response body waits on the client when the client
        stopped reading it (writes are paused)."""
        ses = self.server.session
        if not cur.request_done:
            backend_side = bool(self._paused & self.PAUSE_UPSTREAM)
        else:
            backend_side = not self.writing_paused
        limit = cur.backend_body_s() if backend_side else (ses.body_s or 1e18)
        if stalled_s < limit:
            return False
        ms = f"{limit * 1000:g}"
        if backend_side:
            cur.body_timed_out(ms)
            return True
        self.server.timeouts["body_progress"].value += 1
        if not cur.request_done and not cur.head_sent:
            self._bad_request(f"Request body made no progress for {ms} ms", 408)
        else:
            log.info("%s: %s:%s stopped reading its response for %s ms", self.server.label,
                     *self.peer, ms)
            cur.cancel()
            self.abort()
        return True

    def _peer_gone(self, cur: Exchange) -> bool:
        """While reading is paused the transport sees no EOF; ask the socket whether the
        client shut down, and whether what it left queued can still complete the body."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return False
        try:
            rdhup, hup, queued = _peer_state(sock.fileno())
        except (OSError, ValueError):
            return False
        if hup:
            log.info("%s: %s:%s went away mid-request", self.server.label, *self.peer)
            cur.cancel()
            self.abort()
            return True
        # Over TLS the queued bytes are records and the TLS layer may hold decrypted ones:
        # no arithmetic there (a reset still counts; the body timeout does the rest).
        if (rdhup and cur.body_mode == 1 and cur.content_length is not None
                and self.transport.get_extra_info("sslcontext") is None):
            try:
                remaining = int(cur.content_length) - cur.body_seen
            except ValueError:
                return False
            if queued < remaining:
                self._bad_request(f"Request body truncated: the client closed its side "
                                  f"{remaining - queued} bytes short")
                return True
        return False

    def _linger(self) -> None:
        """The response went out (announcing `Connection: close`) before the request body was
        all read. Closing now, with unread bytes queued, makes the kernel send a reset that
        can destroy the response before the client reads it; so half-close, read and discard
        what still comes for a short while, then close (nginx's lingering close)."""
        transport = self.transport
        self._broken = self._lingering = True
        self.queue.clear()
        if transport is None or not transport.can_write_eof():
            self.close()
            return
        transport.write_eof()
        self._paused = 0
        transport.resume_reading()
        asyncio.get_running_loop().call_later(LINGER_S, self.close)

    def abort_exchange(self, ex: Exchange) -> None:
        """The backend failed after the response head went out: only a reset says so."""
        if self.current is ex:
            self.current = None
            if self.server.shedder is not None:
                self.server.shedder.release(ex)
        self.queue.clear()
        self.abort()

    def _bad_request(self, message: str, status: int = 400) -> None:
        self._broken = True
        _limited.info((self.server.label, "bad request", status), "%s: %s from %s:%s",
                      self.server.label, message, *self.peer)
        cur = self.current
        if cur is not None and cur is self.parsing and not cur.request_done:
            # The body of the request in flight is malformed: it can never be completed.
            self.queue.clear()
            if cur.head_sent:
                cur.cancel()
                self.abort()
            else:
                cur.respond_error(RouteError(status, message, "BadRequest"))
            return
        if self.current is None and not self.queue:
            self.stats.record_failure("BadRequest", 0.0, status)
            self.write(ErrorResponse(status, message).encode(keep_alive=False,
                                                          l5d_err=not self.server.clear_context))
            self.close()
        else:
            # A response is in flight for an earlier request: let it finish, then close.
            self.draining = True
