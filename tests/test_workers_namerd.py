"""`workers: 2` with an io.l5d.namerd.http router: one namerd stream per name, not per worker.

The supervisor runs the namerd interpreter; the workers mirror what it streams,
so a dtab write in namerd reaches both workers through the one stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path as FsPath

import aiohttp
import pytest

from tests.test_namerd import DTAB, IN_MEMORY, Env, _put, _spawn, _wait_port
from tests.util import free_port
from tests.workers_util import served_by_workers


@pytest.fixture
async def env(tmp_path: FsPath) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    await e.worlds()
    try:
        yield e
    finally:
        await e.close()


async def test_one_stream_per_name_and_a_dtab_write_reaches_both_workers(env: Env) -> None:
    api = await env.namerd(IN_MEMORY)
    port, admin = free_port(), free_port()
    cfg = env.tmp / "l5d-workers.yaml"
    cfg.write_text(f"""
workers: 2
admin: {{port: {admin}}}
routers:
- protocol: http
  label: outgoing
  dtab: /svc => /host
  interpreter:{env.interpreter("io.l5d.namerd.http", api, "internal")}
  servers:
  - port: {port}
""")
    proc = _spawn("router.cli", cfg)
    env.procs.append(proc)
    await _wait_port(port, proc)
    await _wait_port(admin, proc)
    state_url = f"http://127.0.0.1:{admin}/outgoing/interpreter_state/io.l5d.namerd.http/" \
                "internal.json"
    connector = aiohttp.TCPConnector(force_close=True)  # spread over the workers
    async with aiohttp.ClientSession(connector=connector) as s:
        async def world() -> tuple[int, str]:
            async with s.get(f"http://127.0.0.1:{port}/", headers={"Host": "world"}) as r:
                return r.status, await r.text()

        for _ in range(30):
            assert await world() == (200, "world-v1")
        served = await served_by_workers(s, admin, port, 2, 30)
        assert sum(served) == 30 and all(n > 0 for n in served), served
        async with s.get(state_url) as r:
            state = await r.json()
        assert state["connected"] is True
        assert list(state["bind"]) == ["/svc/world /svc=>/host"]  # one stream, two workers
        assert len(state["addr"]) == 1

        url = f"http://127.0.0.1:{api}/api/1/dtabs/internal"
        async with s.get(url) as r:
            etag = r.headers["ETag"]
        assert await _put(s, url, f"{DTAB}; /host/world => /srv/world-v2", etag) == 204
        deadline = time.monotonic() + 10
        while True:
            got = [await world() for _ in range(10)]
            if got == [(200, "world-v2")] * 10:
                break
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.05)
        async with s.get(state_url) as r:
            state = await r.json()
        assert len(state["bind"]) == 1
