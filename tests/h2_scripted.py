"""A scripted HTTP/2 backend (the `h2` library) for connection-level failures.

Connection n (in accept order) follows `scripts[n]`, later ones `"serve"`. Each
script acts once the request's HEADERS arrived, so the router's stream is open
when it happens, whatever the timing:

- `"serve"`: the preface, then `200` with a body naming the connection and echoing
  the request body (`served by connection 1: <body>`).
- `"silent_close"`: never writes a byte (not even its SETTINGS), closes.
- `"preface_close"`: sends its preface (SETTINGS), then closes without answering.
- `"hold_one"`: its SETTINGS allow one stream at a time; the request is never
  answered, the connection closes when the test calls `drop()`.
- `"answer_reset"`: answers each request (`200`, END_STREAM) before the request
  ended, then RST_STREAM NO_ERROR: stop sending, as RFC 9113 §8.1 allows.
- `"refuse"`: RST_STREAM REFUSED_STREAM to every request.
- `"goaway_error"`: sends its preface, then GOAWAY PROTOCOL_ERROR (last stream 1,
  debug data `bad frame`) and closes.

Runs its own event loop in a thread: `with ScriptedH2(["silent_close"]) as b: b.port`.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings


class _Proto(asyncio.Protocol):
    def __init__(self, backend: ScriptedH2) -> None:
        self.backend = backend
        self.n = len(backend.seen)
        self.script = backend.scripts[self.n] if self.n < len(backend.scripts) else "serve"
        backend.seen.append(self.script)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self.transport: Any = None
        self.body = bytearray()  # the request body so far (one stream at a time)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.script == "hold_one":
            self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
            self.backend.holding.append(self)
        self.conn.initiate_connection()
        if self.script != "silent_close":
            transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                self.body += ev.data
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if isinstance(ev, h2.events.StreamEnded) and self.script == "serve":
                self.conn.send_headers(ev.stream_id, [(":status", "200"),
                                                      ("server", f"conn{self.n}")])
                self.conn.send_data(ev.stream_id, b"served by connection %d: %s\n" % (
                    self.n, bytes(self.body)), end_stream=True)
                self.body.clear()
            if not isinstance(ev, h2.events.RequestReceived):
                continue
            if self.script in ("silent_close", "preface_close"):
                self.transport.close()  # whatever h2 queued is never written
                return
            if self.script == "refuse":
                self.conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                self.transport.write(self.conn.data_to_send())
                continue
            if self.script == "hold_one":
                self.backend.held += 1
                return
            if self.script == "answer_reset":
                self.conn.send_headers(ev.stream_id, [(":status", "200")])
                self.conn.send_data(ev.stream_id, b"early", end_stream=True)
                self.conn.reset_stream(ev.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            if self.script == "goaway_error":
                self.conn.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR,
                                           additional_data=b"bad frame", last_stream_id=1)
                self.transport.write(self.conn.data_to_send())
                self.transport.close()
                return
        if self.script in ("serve", "answer_reset"):
            self.transport.write(self.conn.data_to_send())


class ScriptedH2:
    def __init__(self, scripts: list[str]) -> None:
        self.scripts = scripts
        self.seen: list[str] = []  # the script each accepted connection followed
        self.holding: list[_Proto] = []  # "hold_one" connections
        self.held = 0  # requests they hold
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            self._loop.create_server(lambda: _Proto(self), "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def drop(self) -> None:
        """Close the "hold_one" connections (from the test's thread)."""
        def close() -> None:
            for p in self.holding:
                p.transport.close()
        self._loop.call_soon_threadsafe(close)

    def __enter__(self) -> ScriptedH2:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
