"""A plain HTTP/2 backend for the h2 tests (prior knowledge, no gRPC), built on `h2`.

Every request is answered `200` with a JSON body describing it (method, path,
headers) unless the path is `/bytes/<n>`, which streams n bytes. Runs its own
event loop in a thread: `with H2Echo() as echo: echo.port`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions


class _Proto(asyncio.Protocol):
    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self.transport: Any = None
        self.pending: dict[int, bytes] = {}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.write(self.conn.data_to_send())
            self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                hdrs = dict(ev.headers)
                path = hdrs.get(":path", "/")
                if path.startswith("/bytes/"):
                    body = b"z" * int(path.split("/")[2])
                else:
                    body = json.dumps({"method": hdrs.get(":method"), "path": path,
                                       "headers": ev.headers}).encode()
                self.conn.send_headers(ev.stream_id, [(":status", "200"),
                                                      ("content-type", "application/json"),
                                                      ("server", "h2echo")])
                self.pending[ev.stream_id] = body
                self._send(ev.stream_id)
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid in list(self.pending):
                    self._send(sid)
            elif isinstance(ev, h2.events.StreamReset):
                self.pending.pop(ev.stream_id, None)
        self.transport.write(self.conn.data_to_send())

    def _send(self, sid: int) -> None:
        body = self.pending.get(sid)
        if body is None:
            return
        while body:
            n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                    len(body))
            if n <= 0:
                self.pending[sid] = body
                return
            try:
                self.conn.send_data(sid, body[:n])
            except h2.exceptions.StreamClosedError:
                self.pending.pop(sid, None)
                return
            body = body[n:]
        self.conn.end_stream(sid)
        self.pending.pop(sid, None)


class H2Echo:
    def __init__(self) -> None:
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            self._loop.create_server(_Proto, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self) -> H2Echo:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
