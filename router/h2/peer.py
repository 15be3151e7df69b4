"""One HTTP/2 connection (either side) and the streams on it, with flow control bridged.

Both the accepting side (server.py) and the backend side (client.py) are an
`H2Peer`: an asyncio.Protocol around an `h2.connection.H2Connection`. A stream
on one peer is a `Half`; the exchange joins a downstream half and an upstream
half. Body bytes received on one half are queued on the other and sent as the
other peer's flow-control window allows; only then is the receipt
acknowledged (a WINDOW_UPDATE) to the sender. So a slow reader on one side
slows the writer on the other, and what the router holds per stream is
bounded by the window it advertised (`initialStreamWindowBytes`), never a
whole body.

Abuse limits are counted here, per connection, over a sliding second: PINGs,
SETTINGS and streams reset before they finished (rapid reset, CVE-2023-44487).
Past a limit the connection gets GOAWAY ENHANCE_YOUR_CALM and is closed; other
connections are not affected. While the transport's write buffer is full the
peer stops reading, so a client that floods without reading what it is sent
(PING acks, SETTINGS acks) costs one write buffer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from dtab.bounded import LogLimiter

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 10.0)

_END = object()  # queued after a half's last data: END_STREAM
Headers = list[tuple[bytes, bytes]]


class Limits:
    """Per-connection limits (the server's h2 keys; the client uses the defaults)."""

    __slots__ = ("max_concurrent_streams", "initial_window", "connection_window",
                 "max_frame", "max_header_list", "pings_per_s", "settings_per_s",
                 "resets_per_s", "stall_s")

    def __init__(self, *, max_concurrent_streams: int = 1000, initial_window: int = 65535,
                 connection_window: int = 1 << 20, max_frame: int = 16384,
                 max_header_list: int = 16384, pings_per_s: int = 100,
                 settings_per_s: int = 100, resets_per_s: int = 200,
                 stall_s: float = 60.0) -> None:
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window = initial_window
        self.connection_window = max(connection_window, initial_window)
        self.max_frame = max_frame
        self.max_header_list = max_header_list
        self.pings_per_s = pings_per_s
        self.settings_per_s = settings_per_s
        self.resets_per_s = resets_per_s
        self.stall_s = stall_s


DEFAULT_LIMITS = Limits()


class _Connection(h2.connection.H2Connection):
    """h2's connection, except that a graceful GOAWAY (NO_ERROR) leaves it open.

    h2 closes its state machine on any GOAWAY, so the responses to streams the peer
    accepted (at or below last_stream_id) would be refused as protocol errors. RFC 9113
    §6.8 says those streams complete; `H2Peer.going_away` keeps new streams off."""

    def _receive_goaway_frame(self, frame: Any) -> Any:
        state = self.state_machine.state
        out = super()._receive_goaway_frame(frame)
        if frame.error_code == 0 and state is not h2.connection.ConnectionState.CLOSED:
            self.state_machine.state = state
        return out


class Half:
    """One stream on one peer: what is queued to send on it, and who it forwards for.

    `source` is the half whose received bytes this half sends: each byte sent here is
    acknowledged to `source`'s peer, which opens that sender's window again."""

    __slots__ = ("peer", "sid", "owner", "out", "out_bytes", "source", "closed",
                 "stalled_since", "received")

    def __init__(self, peer: H2Peer, sid: int, owner: Any) -> None:
        self.peer = peer
        self.sid = sid
        self.owner = owner  # the exchange: on_headers/on_data/on_trailers/on_end/on_reset
        self.out: deque[Any] = deque()
        self.out_bytes = 0
        self.source: Half | None = None
        self.closed = False
        self.stalled_since = 0.0  # data queued and no window since then (0: not stalled)
        self.received = 0  # bytes received and not yet acknowledged

    # -- sending
    def send_data(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.out.append(data)
        self.out_bytes += len(data)
        self.pump()

    def send_end(self, trailers: Headers | None = None) -> None:
        if self.closed:
            return
        self.out.append(_END if trailers is None else trailers)
        self.pump()

    def pump(self) -> None:
        """Send what the window allows; acknowledge each sent byte to the source."""
        peer = self.peer
        if peer.closed or self.closed:
            return
        conn = peer.conn
        out = self.out
        sent = 0
        ended = False
        try:
            while out and not peer.write_blocked:
                item = out[0]
                if item is _END or isinstance(item, list):  # END_STREAM, or trailers
                    out.popleft()
                    if item is _END:
                        conn.end_stream(self.sid)
                    else:
                        conn.send_headers(self.sid, item, end_stream=True)  # type: ignore[arg-type]
                    ended = True
                    break
                window = min(conn.local_flow_control_window(self.sid),
                             conn.max_outbound_frame_size)
                if window <= 0:
                    if not self.stalled_since:
                        self.stalled_since = time.monotonic()
                    break
                self.stalled_since = 0.0
                if len(item) <= window:
                    out.popleft()
                    conn.send_data(self.sid, item)
                    n = len(item)
                else:
                    conn.send_data(self.sid, item[:window])
                    out[0] = item[window:]
                    n = window
                self.out_bytes -= n
                sent += n
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
            # the peer reset or closed this stream meanwhile: nothing more goes out on it
            self.out.clear()
            self.out_bytes = 0
            _limited.info((peer.label, "send"), "%s: stream %d: %s", peer.label, self.sid, e)
        peer.flush()
        if sent and self.source is not None:
            self.source.consumed(sent)
        if ended:
            self.owner.on_drained(self)

    # -- receiving
    def consumed(self, n: int) -> None:
        """`n` received bytes were passed on: let the sender send that much more."""
        peer = self.peer
        n = min(n, self.received)
        if n <= 0 or peer.closed:
            return
        self.received -= n
        try:
            peer.conn.acknowledge_received_data(n, self.sid)
        except h2.exceptions.ProtocolError:
            return
        peer.flush()

    def reset(self, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        """RST_STREAM this stream (only this one)."""
        if self.closed:
            return
        peer = self.peer
        self.close()
        if peer.closed:
            return
        try:
            peer.conn.reset_stream(self.sid, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass
        peer.flush()

    def close(self) -> None:
        """Forget the stream on this peer (its frames are no longer delivered)."""
        if self.closed:
            return
        self.closed = True
        self.out.clear()
        # bytes received but never passed on still count against the connection window
        if self.received and not self.peer.closed:
            try:
                self.peer.conn.acknowledge_received_data(self.received, self.sid)
            except h2.exceptions.ProtocolError:
                pass
            self.received = 0
        self.peer.halves.pop(self.sid, None)
        self.peer.stream_closed(self)


class _Rate:
    """Events in the current one-second window."""

    __slots__ = ("start", "n")

    def __init__(self) -> None:
        self.start = 0.0
        self.n = 0

    def hit(self, now: float) -> int:
        if now - self.start >= 1.0:
            self.start, self.n = now, 0
        self.n += 1
        return self.n


class H2Peer(asyncio.Protocol):
    """The framing and flow-control half common to server and client connections."""

    def __init__(self, *, client_side: bool, label: str, limits: Limits = DEFAULT_LIMITS
                 ) -> None:
        self.label = label
        self.limits = limits
        self.conn = _Connection(h2.config.H2Configuration(
            client_side=client_side, header_encoding=None,
            validate_inbound_headers=True, normalize_inbound_headers=True,
            # what goes out was validated on the way in (or is the router's own); normalising
            # stays: it keeps authorization/cookie values out of the shared HPACK table
            validate_outbound_headers=False, normalize_outbound_headers=True))
        self.conn.local_settings = h2.settings.Settings(
            client=client_side,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            })
        self.conn.max_inbound_frame_size = limits.max_frame
        # enforced from the first frame, not only once the peer acknowledged our SETTINGS
        self.conn.decoder.max_header_list_size = limits.max_header_list
        self.transport: asyncio.Transport | None = None
        self.halves: dict[int, Half] = {}
        self.closed = False
        self.write_blocked = False
        self.reading_paused = False
        self.peer_addr: tuple[str, int] = ("", 0)
        self._pings = _Rate()
        self._settings = _Rate()
        self._resets = _Rate()
        self.last_stream_id = 0  # highest stream id handled (GOAWAY)
        self.going_away = False  # we or the peer sent GOAWAY: no new streams
        self.events = 0  # frames handled (progress for stall checks)
        self._flush_pending = False
        self._loop = asyncio.get_running_loop()

    # -- transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_addr = (str(peer[0]), int(peer[1]))

    def start_h2(self) -> None:
        """Send the preface / SETTINGS and open the connection-level receive window."""
        self.conn.initiate_connection()
        extra = self.limits.connection_window - 65535
        if extra > 0:
            self.conn.increment_flow_control_window(extra)
        self.flush()

    def flush(self) -> None:
        """Send what h2 queued, at the end of this loop turn: every frame the streams of
        this connection produced meanwhile leaves in one write (one syscall)."""
        if self._flush_pending or self.closed or self.transport is None:
            return
        self._flush_pending = True
        self._loop.call_soon(self.flush_now)

    def flush_now(self) -> None:
        self._flush_pending = False
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return
        data = self.conn.data_to_send()
        if data:
            self.wrote(len(data))
            transport.write(data)

    def wrote(self, n: int) -> None:
        """Subclasses: count sent bytes."""

    def pause_writing(self) -> None:
        self.write_blocked = True
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_blocked = False
        if self.transport is not None and self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()
        for half in list(self.halves.values()):
            if half.out:
                half.pump()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        halves = list(self.halves.values())
        self.halves.clear()
        for half in halves:
            half.closed = True
            try:
                half.owner.on_lost(half, exc)
            except Exception:
                log.exception("%s: stream %d cleanup failed", self.label, half.sid)
        self.lost(exc)

    def lost(self, exc: Exception | None) -> None:
        """Subclasses: the connection is gone (after every half was told)."""

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def calm_down(self, why: str) -> None:
        """A peer past a limit: GOAWAY ENHANCE_YOUR_CALM, then the connection closes."""
        _limited.warning((self.label, "calm", why), "%s: closing the HTTP/2 connection from "
                         "%s:%s: %s", self.label, *self.peer_addr, why)
        self.on_abuse(why)
        try:
            self.conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                                       additional_data=why.encode()[:64])
        except h2.exceptions.ProtocolError:
            pass
        self.flush_now()
        if self.transport is not None:
            self.transport.close()
            loop = asyncio.get_running_loop()
            loop.call_later(1.0, self.abort)

    def on_abuse(self, why: str) -> None:
        """Subclasses: count it."""

    # -- frames in
    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            # dispatched on type(ev) below: each event's fields are its class's
            events: list[Any] = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            _limited.info((self.label, "protocol", type(e)), "%s: HTTP/2 protocol error from "
                          "%s:%s: %s", self.label, *self.peer_addr, str(e)[:200])
            self.on_abuse("protocol_error")
            self.flush_now()  # the GOAWAY h2 queued
            if self.transport is not None:
                self.transport.close()
            return
        now = 0.0
        for ev in events:
            self.events += 1
            t = type(ev)
            if t is h2.events.DataReceived:
                half = self.halves.get(ev.stream_id)
                n = ev.flow_controlled_length
                if half is None:  # a stream we already finished: give the window back
                    self.conn.acknowledge_received_data(n, ev.stream_id)
                    continue
                pad = n - len(ev.data)
                half.received += len(ev.data)
                if pad > 0:
                    self.conn.acknowledge_received_data(pad, ev.stream_id)
                if ev.data:
                    half.owner.on_data(half, ev.data)
            elif t is h2.events.WindowUpdated:
                if ev.stream_id:
                    half = self.halves.get(ev.stream_id)
                    if half is not None and half.out:
                        half.pump()
                else:
                    self._pump_all()
            elif t is h2.events.StreamEnded:
                half = self.halves.get(ev.stream_id)
                if half is not None:
                    half.owner.on_end(half)
            elif t is h2.events.TrailersReceived:
                half = self.halves.get(ev.stream_id)
                if half is not None:
                    half.owner.on_trailers(half, ev.headers)
            elif t is h2.events.StreamReset:
                half = self.halves.get(ev.stream_id)
                if ev.remote_reset and not self.conn.config.client_side:
                    # rapid reset is a client opening and cancelling streams; a backend
                    # ending the streams we opened (RST_STREAM NO_ERROR after its answer)
                    # is not one, and closing its connection would fail every call on it
                    now = now or time.monotonic()
                    if self._resets.hit(now) > self.limits.resets_per_s:
                        self.calm_down("too many stream resets (rapid reset)")
                        return
                if half is not None:
                    half.closed = True
                    self.halves.pop(ev.stream_id, None)
                    self.stream_closed(half)
                    half.owner.on_reset(half, ev.error_code)
            elif t is h2.events.PingReceived:
                now = now or time.monotonic()
                if self._pings.hit(now) > self.limits.pings_per_s:
                    self.calm_down("too many PINGs (ping flood)")
                    return
            elif t is h2.events.RemoteSettingsChanged:
                now = now or time.monotonic()
                if self._settings.hit(now) > self.limits.settings_per_s:
                    self.calm_down("too many SETTINGS (settings flood)")
                    return
                if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
                    self._pump_all()
                self.on_remote_settings()
            elif t is h2.events.ConnectionTerminated:
                self.going_away = True
                self.on_goaway(ev.error_code, ev.last_stream_id, ev.additional_data or b"")
            else:
                self.on_event(ev)
            if self.closed:
                return
        self.flush()

    def _pump_all(self) -> None:
        for half in list(self.halves.values()):
            if half.out:
                half.pump()

    def on_event(self, ev: Any) -> None:
        """Subclasses: RequestReceived / ResponseReceived / ..."""

    def on_goaway(self, code: int, last_stream_id: int | None, debug: bytes) -> None:
        """Subclasses: the peer is going away (`debug`: its GOAWAY's additional data)."""

    def on_remote_settings(self) -> None:
        """Subclasses: a SETTINGS frame from the peer was applied."""

    def stream_closed(self, half: Half) -> None:
        """Subclasses: a half left `halves`."""

    def check_stalls(self, now: float, on_stall: Callable[[Half, float], None]) -> None:
        """Halves that could not send for `stall_s` (a zero window): `on_stall` each."""
        limit = self.limits.stall_s
        for half in list(self.halves.values()):
            if half.stalled_since and now - half.stalled_since >= limit:
                on_stall(half, now - half.stalled_since)
