"""`workers: 2` against the fake Kubernetes API server: the control plane is not multiplied.

The supervisor owns the io.l5d.k8s namer and its daemonset transformer, so the
API server sees exactly the watches one process opens (one per object), and
an endpoint that moves reaches both workers without either opening a watch.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path as FsPath
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fake_apiserver import FakeApiServer, endpoints, fake_k8s  # noqa: F401
from tests.util import free_port, port_open
from tests.workers_util import served_by_workers

REPO = FsPath(__file__).resolve().parent.parent


class Pod:
    """Stands in for the incoming router on node-a: answers with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.hits = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handler(_: web.Request) -> web.Response:
            self.hits += 1
            return web.Response(text=self.name)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def start_l5d(tmp: FsPath, api: FakeApiServer, workers: int) -> tuple[Any, int, int]:
    port, admin = free_port(), free_port()
    path = tmp / f"l5d-{workers}.yaml"
    path.write_text(f"""
workers: {workers}
admin: {{ip: 127.0.0.1, port: {admin}}}
namers:
- kind: io.l5d.k8s
  host: 127.0.0.1
  port: {api.port}
routers:
- protocol: http
  label: outgoing
  dtab: /svc => /#/io.l5d.k8s/default/http
  interpreter:
    kind: default
    transformers:
    - kind: io.l5d.k8s.daemonset
      namespace: default
      port: incoming
      service: l5d
      hostNetwork: true
      k8sHost: 127.0.0.1
      k8sPort: {api.port}
  servers: [{{ip: 127.0.0.1, port: {port}}}]
""")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for var in ("http_proxy", "HTTP_PROXY"):
        env.pop(var, None)
    log = open(tmp / f"l5d-{workers}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "router.cli", str(path), "--log-level", "info",
        stdout=log, stderr=log, env=env, cwd=str(tmp))
    log.close()
    deadline = time.monotonic() + 30
    while not (port_open(port) and port_open(admin)):
        if proc.returncode is not None or time.monotonic() > deadline:
            raise AssertionError((tmp / f"l5d-{workers}.log").read_text())
        await asyncio.sleep(0.05)
    return proc, port, admin


async def get(session: aiohttp.ClientSession, port: int) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}/", headers={"Host": "hello"}) as r:
        return r.status, await r.text()


def watches(api: FakeApiServer) -> dict[str, int]:
    """Open watches: of each service's EndpointSlices, and of anything at all."""
    return {"hello": api.live_slice_watches("hello"), "l5d": api.live_slice_watches("l5d"),
            "all": len(api._watchers)}


@pytest.mark.parametrize("workers", [1, 2])
async def test_one_watch_per_object_and_updates_reach_every_worker(
    workers: int, tmp_path: FsPath, fake_k8s: FakeApiServer  # noqa: F811
) -> None:
    old, new = Pod("old"), Pod("new")
    for p in (old, new):
        await p.start()
    fake_k8s.mirror_endpoints = True  # as EndpointSlices too, which io.l5d.k8s reads
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "node-a")], {"http": 8080}))
    fake_k8s.upsert("endpoints", endpoints("l5d", [("127.0.0.1", "node-a")],
                                           {"incoming": old.port}))
    proc, port, admin = await start_l5d(tmp_path, fake_k8s, workers)
    # a new connection per request, so the kernel spreads them over the workers
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(30):
                got = await get(session, port)
                assert got == (200, "old"), got
            if workers == 1:
                async with session.get(f"http://127.0.0.1:{admin}/admin/metrics.json") as r:
                    m = await r.json()
                assert m[f"rt/outgoing/server/127.0.0.1/{port}/requests"] == 30
            else:
                served = await served_by_workers(session, admin, port, workers, 30)
                assert sum(served) == 30 and all(n > 0 for n in served), served
            # one watch per object, whatever the number of workers
            assert watches(fake_k8s) == {"hello": 1, "l5d": 1, "all": 2}
            connections = fake_k8s.open_connections()

            # the node's router moves: every worker follows, with no new watch
            fake_k8s.upsert("endpoints", endpoints("l5d", [("127.0.0.1", "node-a")],
                                                   {"incoming": new.port}))
            moved_at = time.monotonic()

            async def all_new() -> bool:
                for _ in range(10):
                    if await get(session, port) != (200, "new"):
                        return False
                return True

            while not await all_new():
                assert time.monotonic() - moved_at < 10, "the move did not reach every worker"
                await asyncio.sleep(0.05)
            got = [await get(session, port) for _ in range(20)]
            assert got == [(200, "new")] * 20
            assert watches(fake_k8s) == {"hello": 1, "l5d": 1, "all": 2}
            assert fake_k8s.open_connections() == connections
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        for p in (old, new):
            await p.close()
