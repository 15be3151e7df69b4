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
import logging
from collections import deque
from typing import Any

import httptools

from router.client.cache import ClientCache
from router.http.errors import ErrorResponse, RouteError
from router.http.headers import HOP_BY_HOP, REQUEST_OWNED
from router.http.proxy import Exchange, dispatch
from router.identifiers import IdentificationError
from router.request import RequestHead
from router.stats import ServerStats, ServiceStats, ServiceStatsCache

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # whole request head; beyond it the request is refused


class RouterRuntime:
    """What every server of one router shares: the router, its clients and service stats."""

    def __init__(self, router: Any) -> None:
        self.router = router
        cfg = getattr(router, "config", None)
        idle_s = _idle_ttl(cfg)
        self.clients = ClientCache(router.metrics, getattr(router, "client_config", None), idle_s)
        self.services = ServiceStatsCache(lambda name: ServiceStats(router.metrics, name), idle_s)
        self.binding_timeout_s = float(getattr(cfg, "binding_timeout_ms", 10_000) or 10_000) / 1000
        self.identification_error: type[Exception] = IdentificationError
        self._sweeper: asyncio.TimerHandle | None = None
        self.idle_s = idle_s
        # Route decisions per (name, local dtab), valid while the bound tree is the same
        # object (see proxy._choose); cleared whenever a client or service expires.
        self.routes: dict[Any, Any] = {}
        self._names: dict[tuple[str, ...], tuple[str, Any]] = {}
        self.clients.on_expire = self._forget_routes
        self.services.on_evict = self._forget_routes
        # A synchronous cached-binding lookup lets a request skip the task and the extra loop
        # turn when the tree is already bound (`Router.bindings.get`); None = always await bind.
        bindings = getattr(router, "bindings", None)
        self.cached_bind = getattr(bindings, "get", None)

    def service_for(self, name: Any) -> tuple[str, Any, float | None]:
        """(`/svc/hello`, its ServiceStats, its totalTimeoutMs in seconds or None) for a
        name path, remembered by its labels."""
        hit = self._names.get(name.elems)
        if hit is None:
            if len(self._names) >= 10_000:
                self._names.clear()
            show = name.show
            timeout_s = None
            service_config = getattr(self.router, "service_config", None)
            if service_config is not None:
                ms = getattr(service_config(name), "total_timeout_ms", None)
                timeout_s = ms / 1000.0 if ms else None
            hit = self._names[name.elems] = (show, self.services.get(show), timeout_s)
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
        self.stats: ServerStats | None = None  # named by the bound port, made in start()
        self.connections: set[ServerConnection] = set()
        self.aserver: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.port != 0:
            self.stats = ServerStats(self.runtime.router.metrics, self.ip, self.port)
        self.aserver = await loop.create_server(
            lambda: ServerConnection(self), self.ip, self.port, reuse_address=True, backlog=1024
        )
        if self.port == 0:
            self.port = self.aserver.sockets[0].getsockname()[1]
        self.stats = ServerStats(self.runtime.router.metrics, self.ip, self.port)

    @property
    def busy(self) -> int:
        return sum(1 for c in self.connections if c.current is not None)

    def stop_accepting(self) -> None:
        if self.aserver is not None:
            self.aserver.close()
        for c in list(self.connections):
            c.draining = True
            if c.current is None:
                c.close()

    def close_all(self) -> None:
        for c in list(self.connections):
            c.abort()


(_VIA, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _CTX_DTAB, _USER_DTAB, _DROP,
 _PLAIN, _L5D) = range(10)
_REQUEST_SPECIAL: dict[bytes, int] = {
    b"via": _VIA,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
    b"l5d-ctx-dtab": _CTX_DTAB,
    b"l5d-dtab": _USER_DTAB,
    **{h: _DROP for h in HOP_BY_HOP - {b"connection", b"content-length", b"transfer-encoding"}},
    **{h: _DROP for h in REQUEST_OWNED},
}
# Headers a `Connection:` token can name that are never forwarded anyway.
_ALREADY_DROPPED = frozenset(
    k for k, c in _REQUEST_SPECIAL.items()
    if c in (_CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _DROP)
)
# Raw header name (as the client spelled it) -> its code, so the common headers cost one
# dict lookup instead of lower() + lookup + prefix test. Names come from clients: bounded.
_NAME_CODES: dict[bytes, int] = {}
_NAME_CODES_MAX = 512


def _request_code(name: bytes) -> int:
    lk = name.lower()
    code = _REQUEST_SPECIAL.get(lk)
    if code is None:
        code = _L5D if lk[:4] == b"l5d-" else _PLAIN
    if len(_NAME_CODES) < _NAME_CODES_MAX:
        _NAME_CODES[name] = code
    return code


class HeadTooLarge(Exception):
    """A request line or head past MAX_HEAD_BYTES (414 or 431)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _HeadInfo:
    """What the header callbacks learned about one request head."""

    __slots__ = ("hops", "body_mode", "length", "expect", "conn_tokens", "ctx_dtabs",
                 "user_dtabs", "bad_target")

    def __init__(self) -> None:
        self.hops = 0
        self.body_mode = 0  # 0 none, 1 content-length, 2 chunked
        self.length: bytes | None = None
        self.expect = False
        self.conn_tokens: list[bytes] | None = None
        self.ctx_dtabs: tuple[bytes, ...] = ()  # tuples: no allocation in the common case
        self.user_dtabs: tuple[bytes, ...] = ()
        self.bad_target = False


# Most requests carry none of the headers _HeadInfo tracks: they share this one, and
# on_header makes a request its own _HeadInfo before changing anything (never mutate it).
_NO_INFO = _HeadInfo()


class ServerConnection(asyncio.Protocol):
    PAUSE_QUEUE = 1
    PAUSE_BODY = 2
    PAUSE_UPSTREAM = 4

    __slots__ = ("server", "stats", "transport", "parser", "peer", "current", "parsing", "queue",
                 "_url", "_headers", "_head_bytes", "_info", "_paused", "_closed", "draining",
                 "writing_paused", "_broken")

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.stats = server.stats
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

    # --- transport events ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = (peer[0], peer[1])
        self.server.connections.add(self)
        self.stats.connects.value += 1
        self.stats.open_connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.server.connections.discard(self)
        self.stats.open_connections -= 1
        cur = self.current
        self.current = None
        if cur is not None:
            cur.cancel()
        for ex in self.queue:
            ex.finished = True
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.stats.received_bytes.value += len(data)
        if self._broken:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade is hop-by-hop and not proxied: serve the request, then close.
            self._broken = True
            if self.parsing is not None:
                self.parsing.keep_alive = False
        except httptools.HttpParserError as e:
            cause = e.__context__
            if isinstance(cause, HeadTooLarge):
                self._bad_request(str(cause), cause.status)
            else:
                self._bad_request(f"Invalid HTTP request: {e}")

    def eof_received(self) -> bool:
        # Half-closed by the client: finish what is in flight, then close.
        if self.current is None:
            return False
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
    # There is no on_message_begin (one callback less per request): on_headers_complete
    # hands the head's state to the exchange and starts the next head afresh; a head that
    # fails to parse ends the connection, so its leftovers are never read.
    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(414, f"Request line longer than {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            raise HeadTooLarge(431, f"Request head longer than {MAX_HEAD_BYTES} bytes")
        code = _NAME_CODES.get(name)
        if code is None:
            code = _request_code(name)
        if code == _PLAIN:
            self._headers.append((name, value))
            return
        if code == _L5D:
            if not self.server.clear_context:
                self._headers.append((name, value))
            return
        info = self._info
        if info is _NO_INFO:
            info = self._info = _HeadInfo()
        if code == _VIA:
            info.hops += sum(1 for p in value.split(b",") if p.strip())
            self._headers.append((name, value))
        elif code == _CONTENT_LENGTH:
            if info.body_mode == 0:
                info.length = value.strip()
                info.body_mode = 1 if info.length != b"0" else 0
        elif code == _TRANSFER_ENCODING:
            info.body_mode = 2
        elif code == _CONNECTION:
            tokens = [t.strip().lower() for t in value.split(b",")]
            info.conn_tokens = tokens if info.conn_tokens is None else info.conn_tokens + tokens
        elif code == _EXPECT:
            info.expect = value.strip().lower() == b"100-continue"
        elif self.server.clear_context:
            return  # l5d-* from outside the mesh
        elif code == _CTX_DTAB:
            info.ctx_dtabs += (value,)
        elif code == _USER_DTAB:
            info.user_dtabs += (value,)
        # _DROP: other hop-by-hop headers and the l5d-dst-*/l5d-reqid this router sets

    def on_headers_complete(self) -> None:
        parser = self.parser
        headers = self._headers
        info = self._info
        target = self._url.decode("latin-1")
        if target[:1] != "/" and target != "*":
            target = self._absolute_form(target, headers)
            info = self._info  # may have become its own _HeadInfo (bad_target)
        if info.conn_tokens:
            named = set(info.conn_tokens) - _ALREADY_DROPPED  # e.g. `keep-alive`: gone already
            if named:
                headers[:] = [(k, v) for k, v in headers if k.lower() not in named]
        head = RequestHead(parser.get_method().decode("latin-1"), target,
                           parser.get_http_version(), headers, self.peer)
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
                self._info = _HeadInfo()
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
        ex = self.parsing
        if ex is not None:
            ex.body_complete()
            self.parsing = None

    # --- exchanges ---------------------------------------------------------------------
    def _serve(self, ex: Exchange) -> None:
        self.current = ex
        if ex.expect_continue and not ex.request_done and ex.version == "1.1":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        dispatch(ex)

    def exchange_done(self, ex: Exchange, reusable: bool) -> None:
        """The response is written; next pipelined request, or close."""
        if self.current is not ex:
            return
        self.current = None
        if self._closed:
            return
        if self._paused:  # backpressure from this exchange's body or backend ends with it
            self.resume_reading(self.PAUSE_BODY | self.PAUSE_UPSTREAM)
        if not (reusable and ex.keep_alive and ex.request_done) or self._broken:
            # Unread request body, Connection: close, or HTTP/1.0: the connection ends here.
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

    def abort_exchange(self, ex: Exchange) -> None:
        """The backend failed after the response head went out: only a reset says so."""
        if self.current is ex:
            self.current = None
        self.queue.clear()
        self.abort()

    def _bad_request(self, message: str, status: int = 400) -> None:
        self._broken = True
        log.info("%s: %s from %s:%s", self.server.label, message, *self.peer)
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
