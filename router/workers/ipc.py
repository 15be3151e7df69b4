"""The supervisor <-> worker channel: length-prefixed JSON frames over a Unix socket.

One socketpair per worker. Frames are `4-byte big-endian length + JSON object`
with an `op` key. Writes never block the caller (asyncio buffers them); reads
run in one task per channel that dispatches each frame to a handler, so the
request path of a worker never awaits this socket. The messages:

worker -> supervisor: `ready {pid}`, `bind {id, router, dtab, path}`,
`unbind {id}`, `reply {rid, data}`, `failed {error}` (it could not start).
supervisor -> worker: `start {worker, config, source}`, `bound {id, state}`,
`addr {router, id, addr}`, `metrics|clients|servers|requests {rid}` (answered by a
`reply`), `drain {grace_ms}`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

_LEN = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024  # a metrics export of a very large registry fits

Handler = Callable[[dict[str, Any]], Awaitable[None] | None]


class ChannelClosed(Exception):
    """The other side went away (it exited, or closed the socket)."""


class Channel:
    """One end of a supervisor/worker socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 name: str) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        self.closed = False
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._next_rid = 0

    @classmethod
    async def open(cls, sock: socket.socket, name: str) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_FRAME)
        return cls(reader, writer, name)

    def send(self, msg: dict[str, Any]) -> None:
        """Queue one frame (never blocks); a closed channel drops it."""
        if self.closed or self.writer.is_closing():
            return
        data = json.dumps(msg, separators=(",", ":")).encode()
        self.writer.write(_LEN.pack(len(data)) + data)

    async def drain(self) -> None:
        if not self.closed and not self.writer.is_closing():
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                pass

    async def request(self, msg: dict[str, Any], timeout: float) -> Any:
        """Send `msg` with a fresh `rid` and wait for the `reply` carrying it."""
        self._next_rid += 1
        rid = self._next_rid
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        self.send({**msg, "rid": rid})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._replies.pop(rid, None)

    async def read(self) -> dict[str, Any]:
        try:
            head = await self.reader.readexactly(_LEN.size)
            (size,) = _LEN.unpack(head)
            if size > MAX_FRAME:
                raise ChannelClosed(f"{self.name}: frame of {size} bytes is over the limit")
            body = await self.reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            raise ChannelClosed(f"{self.name}: closed ({type(e).__name__})") from None
        msg = json.loads(body)
        if not isinstance(msg, dict) or not isinstance(msg.get("op"), str):
            raise ChannelClosed(f"{self.name}: a frame without an op")
        return msg

    async def serve(self, handlers: dict[str, Handler]) -> None:
        """Dispatch frames until the other side closes; `reply` frames answer `request`."""
        try:
            while True:
                msg = await self.read()
                op = msg["op"]
                if op == "reply":
                    fut = self._replies.get(msg.get("rid", -1))
                    if fut is not None and not fut.done():
                        fut.set_result(msg.get("data"))
                    continue
                handler = handlers.get(op)
                if handler is None:
                    log.error("%s: unknown message %r ignored", self.name, op)
                    continue
                try:
                    result = handler(msg)
                    if result is not None:
                        await result
                except Exception:
                    log.exception("%s: handling %s failed", self.name, op)
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(ChannelClosed(f"{self.name}: closed"))
            self.writer.close()
