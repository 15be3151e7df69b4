"""Which worker process serves a connection: the kernel's socket table, read from /proc.

A test that kills one worker must know which of its connections the others
hold. The server side of a loopback connection is a line of /proc/net/tcp
(local = the router port, remote = the client's port); its inode is one of
the worker's open fds.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any


def _inode_of(router_port: int, client_port: int) -> str | None:
    local = f"0100007F:{router_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            if cols[1] == local and cols[2] == remote:
                return cols[9]
    return None


def owner_pid(router_port: int, client_port: int, pids: list[int]) -> int | None:
    """The pid among `pids` holding the server side of 127.0.0.1:client_port's connection."""
    inode = _inode_of(router_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


async def served_by_workers(session: Any, admin: int, port: int, workers: int,
                            total: int) -> list[int]:
    """Each worker's server request count once they add up to `total` (polled: a worker
    counts a request when the backend's response has completed, which can come just
    after the client read its last byte). The counts as last read if they never do."""
    deadline = time.monotonic() + 10
    while True:
        async with session.get(f"http://127.0.0.1:{admin}/admin/metrics.json") as r:
            m = await r.json()
        served = [next((m[k] for ip in ("127.0.0.1", "0.0.0.0")
                        if (k := f"workers/{i}/rt/outgoing/server/{ip}/{port}/requests") in m), 0)
                  for i in range(workers)]
        if sum(served) >= total or time.monotonic() > deadline:
            return served
        await asyncio.sleep(0.05)
