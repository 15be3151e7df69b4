"""The accepting side of an h2 router: one asyncio.Protocol per downstream connection.

Plaintext connections speak HTTP/2 with prior knowledge (the client preface)
or ask for it with an HTTP/1.1 `Upgrade: h2c` request (answered `101`, the
request becomes stream 1); under TLS, ALPN offers `h2`. Anything else gets a
400 that says this is an HTTP/2 router. Each new stream becomes an
`H2Exchange`; a server that is shutting down sends GOAWAY (last stream id
2^31-1, then the real one) and lets the streams in flight finish.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from typing import Any

import h2.errors
import h2.events
import h2.exceptions
import hyperframe.frame

from dtab.bounded import LogLimiter
from router.h2.exchange import H2Exchange
from router.h2.peer import H2Peer, Half, Headers, Limits
from router.stats import ServerStats

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 10.0)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_UPGRADE_HEAD = 16 * 1024
NOT_H2 = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n"
          b"l5d-err: This%20is%20an%20HTTP%2F2%20router%20(protocol%3A%20h2)\r\n"
          b"content-length: 99\r\n\r\n"
          b"This is an HTTP/2 router (protocol: h2): speak HTTP/2 (prior knowledge, h2c "
          b"upgrade, or ALPN h2).\n".ljust(99, b" "))


class H2Server:
    """One `servers:` entry of an h2 router: a listening socket and its connections."""

    def __init__(self, runtime: Any, server_cfg: Any) -> None:
        from router.h2.params import server_limits

        router = runtime.router
        self.runtime = runtime
        self.label = router.label
        self.ip = getattr(server_cfg, "ip", None) or "127.0.0.1"
        self.port = int(server_cfg.port)
        self.clear_context = bool(getattr(server_cfg, "clear_context", False))
        self.max_call_depth = int(getattr(server_cfg, "max_call_depth", 1000) or 1000)
        self.limits: Limits = server_limits(server_cfg, router)
        self.stats: ServerStats = None  # type: ignore[assignment]  # made in start()
        self.connections: set[H2ServerConnection] = set()
        self.aserver: asyncio.Server | None = None
        self.abuse: dict[str, Any] = {}
        self.tls: Any = None
        self._ticker: asyncio.TimerHandle | None = None
        tls_cfg = getattr(server_cfg, "tls", None)
        if tls_cfg is not None:
            from router.tls.runtime import ServerTlsState

            self.tls = ServerTlsState(tls_cfg, f"{self.label} server {self.ip}:{self.port}",
                                      alpn=("h2",))

    async def start(self, sock: Any = None) -> None:
        """Listen; `sock` is an already listening socket to accept from instead (a reload
        taking over a port: router/reload.py)."""
        loop = asyncio.get_running_loop()
        factory: Any = lambda: H2ServerConnection(self)  # noqa: E731
        if self.tls is not None:
            factory = self.tls.protocol_factory(factory)
        if sock is not None:
            self.aserver = await loop.create_server(factory, sock=sock, backlog=1024)
        else:
            self.aserver = await loop.create_server(
                factory, self.ip, self.port, reuse_address=True, backlog=1024,
                reuse_port=getattr(self.runtime.router, "reuse_port", False) or None)
        if self.port == 0:
            self.port = self.aserver.sockets[0].getsockname()[1]
        self.stats = ServerStats(self.runtime.router.metrics, self.ip, self.port)
        scope = self.stats.scope
        # rt/<label>/server/<ip>/<port>/h2/<why>: connections closed for abuse
        self.abuse = {k: scope.counter("h2", k) for k in (
            "rapid_reset", "ping_flood", "settings_flood", "protocol_error", "stalled_streams")}
        scope.gauge(lambda: sum(len(c.halves) for c in self.connections), "h2", "streams")
        if self.tls is not None:
            self.tls.bind(scope)
        self._ticker = loop.call_later(1.0, self._tick)

    def _tick(self) -> None:
        """Streams stalled on a zero window for `stall_s` are reset (their buffers freed)."""
        now = time.monotonic()
        for c in list(self.connections):
            c.check_stalls(now, c.stalled)
        for conn in list(self.runtime.h2_endpoints.conns.values()):
            conn.check_stalls(now, self._upstream_stalled)
        self.runtime.h2_endpoints.sweep()
        self._ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _upstream_stalled(self, half: Half, stalled_s: float) -> None:
        self.abuse["stalled_streams"].value += 1
        half.reset(h2.errors.ErrorCodes.CANCEL)  # RST_STREAM first: on_reset closes it
        half.owner.on_reset(half, h2.errors.ErrorCodes.CANCEL)

    @property
    def busy(self) -> int:
        return sum(len(c.exchanges) for c in self.connections)

    def stop_accepting(self) -> None:
        if self.aserver is not None:
            self.aserver.close()
        if self.tls is not None:
            self.tls.close()
        for c in list(self.connections):
            c.go_away()

    def close_all(self, grace_ms: float | None = None) -> None:
        """Abort every connection (streams were told to go away by `stop_accepting`;
        `grace_ms` is router.http.drain's, unused here)."""
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for c in list(self.connections):
            c.abort()


class H2ServerConnection(H2Peer):
    def __init__(self, server: H2Server) -> None:
        super().__init__(client_side=False, label=server.label, limits=server.limits)
        self.server = server
        self.exchanges: set[H2Exchange] = set()
        self._sniff: bytes | None = b""  # bytes before we know the protocol; None: h2

    @property
    def peer(self) -> tuple[str, int]:
        """The caller's address (as HTTP/1's ServerConnection names it, for telemetry)."""
        return self.peer_addr

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        srv = self.server
        srv.connections.add(self)
        srv.stats.open_connections += 1
        srv.stats.connects.value += 1
        if transport.get_extra_info("ssl_object") is not None:
            self._sniff = None  # ALPN h2 (or a client that sends the preface regardless)
            self.start_h2()

    def data_received(self, data: bytes) -> None:
        self.server.stats.received_bytes.value += len(data)
        if self._sniff is not None:
            data = self._detect(data)
            if not data:
                return
        self.feed(data)

    def _detect(self, data: bytes) -> bytes:
        """Prior knowledge (the preface), or an HTTP/1.1 `Upgrade: h2c` request."""
        buf = self._sniff + data  # type: ignore[operator]
        n = min(len(buf), len(PREFACE))
        if buf[:n] == PREFACE[:n]:
            if n < len(PREFACE):
                self._sniff = buf
                return b""
            self._sniff = None
            self.start_h2()
            return buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_UPGRADE_HEAD:
                self._refuse()
            else:
                self._sniff = buf
            return b""
        head, rest = buf[:end].decode("latin-1"), buf[end + 4:]
        self._sniff = None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields.setdefault(k.strip().lower(), v.strip())
        upgrade = [t.strip().lower() for t in fields.get("upgrade", "").split(",")]
        settings = fields.get("http2-settings")
        if (len(parts) != 3 or "h2c" not in upgrade or settings is None
                or fields.get("content-length", "0") not in ("", "0")
                or "transfer-encoding" in fields):
            self._refuse()
            return b""
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n"
                             b"upgrade: h2c\r\n\r\n")
        try:
            self.conn.initiate_upgrade_connection(settings_header=settings.encode("latin-1"))
        except (h2.exceptions.ProtocolError, ValueError, binascii.Error):
            self.abort()
            return b""
        extra = self.limits.connection_window - 65535
        if extra > 0:
            self.conn.increment_flow_control_window(extra)
        self.flush()
        headers: Headers = [(b":method", parts[0].encode("latin-1")),
                            (b":scheme", b"http"),
                            (b":authority", fields.get("host", "").encode("latin-1")),
                            (b":path", parts[1].encode("latin-1"))]
        skip = {"host", "connection", "upgrade", "http2-settings", "content-length",
                "keep-alive", "proxy-connection", "te", "transfer-encoding"}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() not in skip:
                headers.append((k.strip().lower().encode("latin-1"),
                                v.strip().encode("latin-1")))
        self._new_stream(1, headers, True)
        return rest

    def _refuse(self) -> None:
        self._sniff = None
        if self.transport is not None:
            self.transport.write(NOT_H2)
            self.transport.close()

    def on_event(self, ev: Any) -> None:
        if type(ev) is h2.events.RequestReceived:
            self._new_stream(ev.stream_id, ev.headers, ev.stream_ended is not None)

    def _new_stream(self, sid: int, headers: Headers, ended: bool) -> None:
        if sid > self.last_stream_id:
            self.last_stream_id = sid
        if self.going_away:
            try:
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            except h2.exceptions.ProtocolError:
                pass
            return
        ex = H2Exchange(self, sid, headers, ended)
        self.exchanges.add(ex)
        ex.begin()

    def send_headers(self, half: Half, headers: Headers, end: bool) -> None:
        if half.closed or self.closed:
            return
        try:
            self.conn.send_headers(half.sid, headers, end_stream=end)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            _limited.info((self.label, "send headers"), "%s: stream %d: %s", self.label,
                          half.sid, e)
        self.flush()

    def wrote(self, n: int) -> None:
        self.server.stats.sent_bytes.value += n

    def exchange_done(self, ex: H2Exchange) -> None:
        self.exchanges.discard(ex)
        if self.going_away and not self.exchanges and self.transport is not None:
            self._final_goaway()

    def stalled(self, half: Half, stalled_s: float) -> None:
        """The caller has not opened its window for `stall_s`: reset that stream only."""
        self.server.abuse["stalled_streams"].value += 1
        _limited.info((self.label, "stalled"), "%s: %s:%s: stream %d made no progress for "
                      "%.0f s (zero window): reset", self.label, *self.peer_addr, half.sid,
                      stalled_s)
        half.reset(h2.errors.ErrorCodes.CANCEL)  # RST_STREAM first: on_reset closes it
        half.owner.on_reset(half, h2.errors.ErrorCodes.CANCEL)

    def on_abuse(self, why: str) -> None:
        key = ("rapid_reset" if "reset" in why else "ping_flood" if "PING" in why
               else "settings_flood" if "SETTINGS" in why else "protocol_error")
        counter = self.server.abuse.get(key)
        if counter is not None:
            counter.value += 1

    def on_goaway(self, code: int, last_stream_id: int | None, debug: bytes) -> None:
        if not self.exchanges and self.transport is not None:
            self.transport.close()

    def go_away(self) -> None:
        """Graceful shutdown: tell the client to open no new streams (RFC 9113 §6.8's
        two-step GOAWAY), let the streams in flight finish, then close."""
        if self.closed or self.going_away:
            return
        self.going_away = True
        if self._sniff is not None:
            self.abort()
            return
        self.flush_now()  # before the hand-made frame: frames stay in order
        frame = hyperframe.frame.GoAwayFrame(0)
        frame.last_stream_id = 2**31 - 1
        frame.error_code = 0
        if self.transport is not None:
            self.transport.write(frame.serialize())
        if not self.exchanges:
            self._final_goaway()

    def _final_goaway(self) -> None:
        try:
            self.conn.close_connection(0, last_stream_id=self.last_stream_id)
        except h2.exceptions.ProtocolError:
            pass
        self.flush_now()
        if self.transport is not None:
            self.transport.close()

    def lost(self, exc: Exception | None) -> None:
        srv = self.server
        srv.connections.discard(self)
        srv.stats.open_connections -= 1
        self.exchanges.clear()  # each was told through its half (H2Peer.connection_lost)
