"""TLS at run time: the server-side handshake before HTTP, and per-client TLS state.

A TLS server accepts TCP and runs `loop.start_tls` itself (instead of passing
`ssl=` to `create_server`) so that every failed handshake is counted and
described (`tls/handshake_failures/<reason>`), the context is the current one of
its `TlsSource` (rotation), and the HTTP protocol only ever sees a connection
whose handshake succeeded: a plaintext request gets the TLS error and a close,
never an HTTP response.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from router.tls.context import (
    TlsSource,
    client_source,
    describe_failure,
    peer_subject,
    server_source,
)
from router.tls.params import ClientTls, ServerTls

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 10.0
_MAX_REASONS = 32
_MAX_PEERS = 64
_MAX_TEXT = 512


class _Counters:
    """`tls/connections`, `tls/handshake_failures` and `.../<reason>` in one scope."""

    def __init__(self) -> None:
        self.scope: Any = None
        self.connections: Any = None
        self.failures: Any = None
        self._reasons: dict[str, Any] = {}
        self.n_connections = 0
        self.n_failures = 0
        self.last_failure: str | None = None

    def bind(self, scope: Any) -> None:
        self.scope = scope
        self._reasons = {}
        self.connections = scope.counter("tls", "connections")
        self.failures = scope.counter("tls", "handshake_failures")
        self.connections.value = self.n_connections
        self.failures.value = self.n_failures

    def ok(self) -> None:
        self.n_connections += 1
        if self.connections is not None:
            self.connections.value += 1

    def failed(self, reason: str, text: str) -> None:
        self.n_failures += 1
        self.last_failure = text[:_MAX_TEXT]
        if self.scope is None:
            return
        self.failures.value += 1
        c = self._reasons.get(reason)
        if c is None:
            if len(self._reasons) >= _MAX_REASONS:
                reason = "other"
                c = self._reasons.get(reason)
            if c is None:
                c = self._reasons[reason] = self.scope.counter("tls", "handshake_failures",
                                                               reason)
        c.value += 1


class _Held(asyncio.Protocol):
    """Holds what arrives between the end of the handshake and the HTTP protocol's start."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.eof = False
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class _Handshake(asyncio.Protocol):
    """One accepted TCP connection until its TLS handshake is done.

    uvloop starts reading right after `connection_made` (pausing there is a no-op), so
    the ClientHello can reach this protocol before `start_tls` has taken the transport
    over. Those bytes are kept and fed to the TLS protocol by a callback that runs in
    the same loop pass as `start_tls`'s own resume_reading — after the TLS protocol's
    connection_made, before any further read — so nothing is lost or reordered.
    """

    def __init__(self, state: ServerTlsState, make_protocol: Callable[[], asyncio.Protocol]
                 ) -> None:
        self.state = state
        self.make_protocol = make_protocol
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.early: list[bytes] | None = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.pause_reading()  # type: ignore[attr-defined]  # effective on asyncio's loop
        self.state.pending.add(self)
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(self._handshake())
        # start_tls (the task's first step) schedules the TLS protocol's connection_made and
        # resume_reading; a callback scheduled from the next pass runs right after them.
        loop.call_soon(loop.call_soon, self._inject)

    def data_received(self, data: bytes) -> None:
        if self.early is None or sum(map(len, self.early)) + len(data) > 64 * 1024:
            if self.transport is not None:
                self.transport.abort()
            return
        self.early.append(data)

    def _inject(self) -> None:
        early, self.early = self.early, None
        transport = self.transport
        if not early or transport is None or transport.is_closing():
            return
        proto: Any = transport.get_protocol()
        if proto is self or not hasattr(proto, "buffer_updated"):
            transport.abort()
            return
        view = memoryview(b"".join(early))
        while view:
            buf = proto.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            proto.buffer_updated(n)
            view = view[n:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.pending.discard(self)

    def abort(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()

    async def _handshake(self) -> None:
        loop = asyncio.get_running_loop()
        transport = self.transport
        assert transport is not None
        held = _Held()
        try:
            tls = await loop.start_tls(transport, held, self.state.source.context(),
                                       server_side=True,
                                       ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
        except asyncio.CancelledError:
            transport.abort()
            raise
        except (OSError, TimeoutError, ConnectionError, ssl.SSLError, RuntimeError) as e:
            self.state.failed(e, transport)
            transport.abort()
            return
        finally:
            self.state.pending.discard(self)
        if tls is None or held.lost or tls.is_closing():
            return
        self.state.accepted(peer_subject(tls))
        proto = self.make_protocol()
        tls.set_protocol(proto)
        proto.connection_made(tls)
        for chunk in held.data:
            proto.data_received(chunk)  # type: ignore[attr-defined]
        if held.eof and not proto.eof_received():  # type: ignore[attr-defined]
            tls.close()


class ServerTlsState:
    """One TLS server: its context (rotating), handshake counters, the mTLS peers seen."""

    def __init__(self, cfg: ServerTls, label: str, alpn: tuple[str, ...] = ("http/1.1",)
                 ) -> None:
        self.cfg = cfg
        self.label = label
        self.source: TlsSource = server_source(cfg, label, alpn)
        self.counters = _Counters()
        self.pending: set[_Handshake] = set()
        self.peers: dict[str, int] = {}

    def bind(self, scope: Any) -> None:
        """Count into `scope` (the server's `rt/<router>/server/<ip>/<port>`); the server
        is listening: watch its files."""
        self.counters.bind(scope)
        self.source.watch()

    def protocol_factory(self, make_protocol: Callable[[], asyncio.Protocol]
                         ) -> Callable[[], asyncio.Protocol]:
        return lambda: _Handshake(self, make_protocol)

    def accepted(self, subject: str | None) -> None:
        self.counters.ok()
        if subject is not None:
            if subject in self.peers or len(self.peers) < _MAX_PEERS:
                self.peers[subject] = self.peers.get(subject, 0) + 1

    def failed(self, e: BaseException, transport: Any) -> None:
        reason, text = describe_failure(e)
        peer = transport.get_extra_info("peername")
        who = f"{peer[0]}:{peer[1]}" if peer else "a peer"
        self.counters.failed(reason, f"{who}: {text}")
        log.info("%s: TLS handshake with %s failed: %s", self.label, who, text[:_MAX_TEXT])

    def close(self) -> None:
        self.source.unwatch()
        self.abort_pending()

    def abort_pending(self) -> None:
        for h in list(self.pending):
            h.abort()
        self.pending.clear()

    def snapshot(self) -> dict[str, Any]:
        self.source.context()  # notice a rotation even without traffic
        return {
            **self.cfg.to_json(),
            "certificateGeneration": self.source.generation,
            "lastReloadError": self.source.last_error,
            "handshakes": self.counters.n_connections,
            "handshakeFailures": self.counters.n_failures,
            "lastHandshakeFailure": self.counters.last_failure,
            "peerSubjects": dict(self.peers),
        }


class ClientTlsState:
    """A client's TLS: the shared context, its commonName (SNI), counters, the last peer."""

    __slots__ = ("cfg", "source", "server_hostname", "counters", "peer_subject")

    def __init__(self, cfg: ClientTls, scope: Any, alpn: tuple[str, ...] = ("http/1.1",)
                 ) -> None:
        self.cfg = cfg
        self.source = client_source(cfg, alpn)
        self.server_hostname = cfg.common_name
        self.counters = _Counters()
        self.counters.bind(scope)
        self.peer_subject: str | None = None

    def connected(self, transport: Any) -> None:
        self.counters.ok()
        self.peer_subject = peer_subject(transport)

    def failed(self, e: BaseException, endpoint: str) -> str:
        """Counts the failure; returns the text for `l5d-err`."""
        reason, text = describe_failure(e)
        name = self.server_hostname
        expected = f" (expected commonName {name!r})" if name and reason == "name_mismatch" \
            else ""
        full = f"TLS handshake with {endpoint} failed: {text}{expected}"
        self.counters.failed(reason, full)
        return full

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.cfg.to_json(),
            "handshakes": self.counters.n_connections,
            "handshakeFailures": self.counters.n_failures,
            "lastHandshakeFailure": self.counters.last_failure,
            "peerSubject": self.peer_subject,
        }


def rotating_server_context(cfg: ServerTls, label: str) -> tuple[ssl.SSLContext, TlsSource]:
    """A context for servers that take `ssl=` (the aiohttp admin): its SNI callback, run
    on every ClientHello (with or without SNI), moves the connection to the current
    context, so a rotated certificate is served without a restart."""
    source = server_source(cfg, label)
    base = source.context()

    def swap(sslobj: ssl.SSLObject, _name: str | None, ctx: ssl.SSLContext) -> None:
        current = source.context()
        if current is not ctx:
            sslobj.context = current

    base.sni_callback = swap
    source.watch()
    return base, source


def servers_state(linker: Any) -> list[dict[str, Any]]:
    """Every router server (and the admin): where it listens and its TLS, for the admin."""
    out: list[dict[str, Any]] = []
    for router in getattr(linker, "routers", []):
        handle = getattr(router, "handle", None)
        for server in getattr(handle, "servers", []) or []:
            tls = getattr(server, "tls", None)
            out.append({"router": router.label, "ip": server.ip, "port": server.port,
                        "tls": tls.snapshot() if tls is not None else None})
    admin = getattr(linker, "admin", None)
    if admin is not None:
        source = getattr(admin, "tls_source", None)
        cfg = getattr(getattr(getattr(linker, "config", None), "admin", None), "tls", None)
        tls = None
        if source is not None and cfg is not None:
            source.context()
            tls = {**cfg.to_json(), "certificateGeneration": source.generation,
                   "lastReloadError": source.last_error}
        out.append({"router": "admin", "ip": admin.host, "port": admin.port, "tls": tls})
    return out
