"""The backend side: ONE multiplexed HTTP/2 connection per endpoint (as Linkerd keeps).

`H2Endpoints.connection(ep)` gives the endpoint's live connection, connecting
(prior knowledge, or ALPN `h2` under the client's TLS) when there is none;
concurrent callers share one connect. A connection the backend sent GOAWAY on
takes no new streams (the next caller connects afresh) and closes once its
streams are done. Streams beyond the backend's MAX_CONCURRENT_STREAMS wait for
one to finish (bounded; past it the request fails, it is never queued without
limit). A connection lost before the backend sent a byte on it (not even its
SETTINGS) never took its streams: they go out again within the client's
requeueBudget (exchange.py). A GOAWAY with an error code is logged, and the
streams it ends fail naming it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import h2.errors
import h2.events
import h2.exceptions

from dtab.bounded import LogLimiter
from router.client.pool import Endpoint
from router.h2.peer import H2Peer, Half, Headers, Limits

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 10.0)

MAX_WAITING_STREAMS = 1000  # per connection, beyond the backend's concurrency limit
# Streams open at once before the backend's SETTINGS arrive. Until then HTTP/2 sets no
# limit, but a server that allows 100 (the h2 library's and many servers' default) may
# close the connection on the 101st (h2: TooManyStreamsError); RFC 9113 §6.5.2 advises
# no less than 100, and nghttp2 assumes 100 the same way (peer_max_concurrent_streams).
PRE_SETTINGS_STREAMS = 100


class StreamRefused(Exception):
    """The backend cannot take the stream (GOAWAY, concurrency): safe to send elsewhere."""


class H2ClientConnection(H2Peer):
    def __init__(self, ep: Endpoint, label: str, limits: Limits) -> None:
        super().__init__(client_side=True, label=label, limits=limits)
        self.ep = ep
        self.waiters: list[asyncio.Future[None]] = []
        self.born = time.monotonic()
        # nothing ever came from the backend (not even the SETTINGS an HTTP/2 server sends
        # first, RFC 9113 §3.4): a connection lost so never took a stream
        self.heard = False
        self.goaway: str | None = None  # the backend's GOAWAY, said in a stream's error
        self.settings_seen = False  # the backend's first SETTINGS came: its limit holds

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.ep.open_connections += 1
        self.start_h2()

    def data_received(self, data: bytes) -> None:
        self.heard = True
        self.feed(data)

    def lost_detail(self) -> str:
        """What the backend said before the connection went (for a stream's error)."""
        if self.goaway is not None:
            return f" after {self.goaway}"
        return "" if self.heard else " before the backend sent any HTTP/2 frame"


    def eof_received(self) -> bool:
        return False

    def lost(self, exc: Exception | None) -> None:
        self.ep.open_connections -= 1
        for w in self.waiters:
            if not w.done():
                w.set_exception(StreamRefused(f"connection to {self.ep.hostport} closed"))
        self.waiters.clear()

    @property
    def usable(self) -> bool:
        return not self.closed and not self.going_away and (
            self.transport is not None and not self.transport.is_closing())

    def _stream_limit(self) -> int:
        limit: int = self.conn.remote_settings.max_concurrent_streams
        return limit if self.settings_seen else min(limit, PRE_SETTINGS_STREAMS)

    def has_capacity(self) -> bool:
        return self.conn.open_outbound_streams < self._stream_limit()

    def on_remote_settings(self) -> None:
        """The backend's limit is known: streams waiting for the assumed one may go."""
        self.settings_seen = True
        free = self._stream_limit() - self.conn.open_outbound_streams
        while self.waiters and free > 0:
            w = self.waiters.pop(0)
            if not w.done():
                w.set_result(None)
                free -= 1

    async def wait_capacity(self) -> None:
        if len(self.waiters) >= MAX_WAITING_STREAMS:
            raise StreamRefused(f"{self.ep.hostport}: {len(self.waiters)} streams already "
                                "waiting for the backend's concurrency limit")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self.waiters:
                self.waiters.remove(fut)

    def open_stream(self, owner: Any, headers: Headers, end_stream: bool) -> Half:
        """A new stream with the request head sent; raises StreamRefused if it cannot be."""
        if not self.usable:
            raise StreamRefused(f"connection to {self.ep.hostport} is going away")
        sid = self.conn.get_next_available_stream_id()
        half = Half(self, sid, owner)
        self.halves[sid] = half
        try:
            self.conn.send_headers(sid, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as e:
            self.halves.pop(sid, None)
            raise StreamRefused(f"{self.ep.hostport}: {e}") from e
        self.flush()
        return half

    def stream_closed(self, half: Half) -> None:
        while self.waiters and self.has_capacity():
            w = self.waiters.pop(0)
            if not w.done():
                w.set_result(None)
                break
        if self.going_away and not self.halves and self.transport is not None:
            self.transport.close()

    def on_event(self, ev: Any) -> None:
        t = type(ev)
        if t is h2.events.ResponseReceived:
            half = self.halves.get(ev.stream_id)
            if half is not None:
                half.owner.on_headers(half, ev.headers, ev.stream_ended is not None)
        elif t is h2.events.InformationalResponseReceived:
            pass  # 1xx: not forwarded (HTTP/2 has no 100-continue handshake to keep)
        elif t is h2.events.PushedStreamReceived:
            self.conn.reset_stream(ev.pushed_stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)

    def on_goaway(self, code: int, last_stream_id: int | None, debug: bytes) -> None:
        """Streams above `last_stream_id` were never processed: refused (retryable). A GOAWAY
        with an error is logged: the streams it ends fail naming it."""
        name = code_name(code)
        self.goaway = (f"GOAWAY {name} (last stream {last_stream_id})"
                       + (f": {debug[:200].decode('latin-1')!r}" if debug else ""))
        if code != h2.errors.ErrorCodes.NO_ERROR:
            _limited.warning((self.label, "goaway", name), "%s: %s sent %s", self.label,
                             self.ep.hostport, self.goaway)
        last = last_stream_id if last_stream_id is not None else 2**31
        for half in [h for sid, h in self.halves.items() if sid > last]:
            half.closed = True
            self.halves.pop(half.sid, None)
            half.owner.on_reset(half, h2.errors.ErrorCodes.REFUSED_STREAM)
        if not self.halves and self.transport is not None:
            self.transport.close()


def code_name(code: int) -> str:
    """An HTTP/2 error code's name (RFC 9113 §7), or its number."""
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"0x{code:x}"


class H2Endpoints:
    """Each endpoint's one connection, for one router."""

    def __init__(self, label: str, limits: Limits) -> None:
        self.label = label
        self.limits = limits
        self.conns: dict[Endpoint, H2ClientConnection] = {}
        self.connecting: dict[Endpoint, asyncio.Future[H2ClientConnection]] = {}

    def live(self, ep: Endpoint) -> H2ClientConnection | None:
        """The endpoint's usable connection, if there is one (no waiting)."""
        conn = self.conns.get(ep)
        if conn is None:
            return None
        if conn.usable and not ep.removed:
            return conn
        del self.conns[ep]
        if ep.removed and not conn.halves:
            conn.transport.close()  # type: ignore[union-attr]
        return None

    async def connection(self, ep: Endpoint) -> H2ClientConnection:
        conn = self.live(ep)
        if conn is not None:
            return conn
        fut = self.connecting.get(ep)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self.connecting[ep] = fut
        try:
            conn = await self._connect(ep)
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e)
                fut.exception()  # retrieved: waiters get it, nobody else must
            raise
        finally:
            self.connecting.pop(ep, None)
        self.conns[ep] = conn
        if not fut.done():
            fut.set_result(conn)
        return conn

    async def _connect(self, ep: Endpoint) -> H2ClientConnection:
        conn: Any = await ep.connect(lambda: H2ClientConnection(ep, self.label, self.limits))
        return conn  # type: ignore[no-any-return]

    def sweep(self) -> None:
        """Close connections of endpoints that left their address set, once idle."""
        for ep, conn in list(self.conns.items()):
            if (ep.removed or conn.closed) and not conn.halves:
                del self.conns[ep]
                if conn.transport is not None:
                    conn.transport.close()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            if conn.transport is not None:
                conn.transport.abort()
        self.conns.clear()
