"""The admin server inside a real `l5d` process with real traffic: `/delegator.json` shapes
(leaf, alt, union, neg, fail, transformation), `/admin/metrics.json` names, and the
endpoints. Also the harness (backends, config, process) the browser and Prometheus
tests share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.util import free_port, port_open, stop_process

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Backends:
    """Real HTTP servers: `world` answers 200, `broken` answers 503."""

    ports: dict[str, int] = field(default_factory=dict)
    runners: list[web.AppRunner] = field(default_factory=list)

    async def start(self, name: str, status: int, handler: Any = None) -> int:
        """A backend answering `status`, or whatever `handler(request)` answers."""

        async def fixed(request: web.Request) -> web.Response:
            return web.Response(status=status, text=f"{name}\n")

        handler = handler or fixed
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.runners.append(runner)
        self.ports[name] = port
        return port

    async def close(self) -> None:
        for r in self.runners:
            await r.cleanup()


@dataclass
class L5d:
    proc: subprocess.Popen[bytes]
    admin: int
    proxy: int
    xform: int
    disco: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.admin}"


CONFIG = """\
admin:
  ip: 127.0.0.1
  port: {admin}
namers:
- kind: io.l5d.fs
  rootDir: {disco}
telemetry:
- kind: io.l5d.prometheus
routers:
- protocol: http
  label: outgoing
  dtab: |
    /svc => /#/io.l5d.fs;
  servers:
  - ip: 127.0.0.1
    port: {proxy}
- protocol: http
  label: xform
  dtab: |
    /svc => /#/io.l5d.fs;
  interpreter:
    kind: default
    transformers:
    - kind: io.l5d.port
      port: {world}
  servers:
  - ip: 127.0.0.1
    port: {xform}
"""


def _tail(path: Path) -> str:
    try:
        return path.read_text()[-3000:]
    except OSError:
        return ""


@contextlib.asynccontextmanager
async def running_l5d(tmp: Path, backends: Backends) -> AsyncIterator[L5d]:
    """`l5d CONFIG` as a real process (histograms snapshotted every second for the tests)."""
    disco = tmp / "disco"
    disco.mkdir()
    for name, port in backends.ports.items():
        (disco / name).write_text(f"127.0.0.1 {port}\n")
    admin, proxy, xform = free_port(), free_port(), free_port()
    text = CONFIG.format(admin=admin, disco=disco, proxy=proxy, xform=xform,
                         world=backends.ports["world"])
    async with l5d_with_config(tmp, text, admin, proxy) as proc:
        yield L5d(proc, admin, proxy, xform, disco, tmp / "l5d.log")


@contextlib.asynccontextmanager
async def l5d_with_config(tmp: Path, text: str, admin: int, proxy: int
                          ) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`l5d` on config `text`, once its admin and proxy ports listen; stopped after."""
    cfg = tmp / "l5d.yaml"
    cfg.write_text(text)
    log = tmp / "l5d.log"
    env = dict(os.environ, L5D_HISTOGRAM_SNAPSHOT_SECS="1", PYTHONPATH=str(REPO))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "router.cli", str(cfg)], cwd=tmp,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 20
        while not (port_open(admin) and port_open(proxy)):
            if proc.poll() is not None:
                raise AssertionError(f"l5d exited {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"l5d did not listen within 20s:\n{_tail(log)}")
            await asyncio.sleep(0.05)
        yield proc
    finally:
        stop_process(proc)


async def send(session: aiohttp.ClientSession, port: int, host: str) -> int:
    async with session.get(f"http://127.0.0.1:{port}/", headers={"Host": host}) as r:
        await r.read()
        return r.status


@contextlib.asynccontextmanager
async def traffic(port: int, hosts: list[str], period: float = 0.02) -> AsyncIterator[list[int]]:
    """Requests through the proxy in the background for as long as the block runs."""
    statuses: list[int] = []

    async def loop() -> None:
        async with aiohttp.ClientSession() as session:
            i = 0
            while True:
                try:
                    statuses.append(await send(session, port, hosts[i % len(hosts)]))
                except aiohttp.ClientError:
                    statuses.append(-1)
                i += 1
                await asyncio.sleep(period)

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield statuses
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    b = Backends()
    await b.start("world", 200)
    await b.start("broken", 503)
    await b.start("hello", 200)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def l5d(tmp_path: Path, backends: Backends) -> AsyncIterator[L5d]:
    async with running_l5d(tmp_path, backends) as proc:
        yield proc


async def _get_json(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, object]:
    async with session.get(url, params=params) as r:
        text = await r.text()
        try:
            import json

            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


async def delegate(session: aiohttp.ClientSession, l5d: L5d, path: str, dtab: str,
                   namespace: str = "outgoing") -> dict:
    status, body = await _get_json(session, l5d.url + "/delegator.json",
                                   path=path, dtab=dtab, namespace=namespace)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def _addr(port: int) -> dict:
    return {"type": "bound", "addrs": [{"ip": "127.0.0.1", "port": port, "meta": {}}], "meta": {}}


FS = "/svc=>/#/io.l5d.fs"
FS_DENTRY = {"prefix": "/svc", "dst": "/#/io.l5d.fs"}


async def test_delegator_json_leaf(l5d: L5d, backends: Backends) -> None:
    async with aiohttp.ClientSession() as s:
        tree = await delegate(s, l5d, "/svc/world", FS)
    assert tree == {
        "type": "delegate", "path": "/svc/world",
        "delegate": {
            "type": "leaf", "path": "/#/io.l5d.fs/world", "dentry": FS_DENTRY,
            "bound": {"addr": _addr(backends.ports["world"]), "id": "/#/io.l5d.fs/world",
                      "path": "/"},
        },
    }


async def test_delegator_json_alt_neg_and_fallback(l5d: L5d, backends: Backends) -> None:
    dtab = f"{FS};/svc/world=>/#/io.l5d.fs/missing | /#/io.l5d.fs/hello"
    async with aiohttp.ClientSession() as s:
        tree = await delegate(s, l5d, "/svc/world", dtab)
    # Two dentries match: the later one first, the earlier one as the fallback.
    assert tree["type"] == "alt" and tree["path"] == "/svc/world" and "dentry" not in tree
    missing, hello, world = tree["alt"]
    # The missing file is Neg, and the fs namer says why; the alt falls back to hello.
    assert missing["type"] == "neg" and missing["path"] == "/#/io.l5d.fs/missing"
    assert missing["dentry"]["prefix"] == "/svc/world"
    assert "no file" in missing["reason"] and "missing" in missing["reason"]
    assert hello["type"] == "leaf" and hello["dentry"]["prefix"] == "/svc/world"
    assert hello["bound"] == {"addr": _addr(backends.ports["hello"]),
                              "id": "/#/io.l5d.fs/hello", "path": "/"}
    assert world["type"] == "leaf" and world["dentry"] == FS_DENTRY
    assert world["bound"]["addr"] == _addr(backends.ports["world"])


async def test_delegator_json_union(l5d: L5d, backends: Backends) -> None:
    dtab = f"{FS};/svc/split=>0.7*/#/io.l5d.fs/world & 0.3*/#/io.l5d.fs/hello"
    async with aiohttp.ClientSession() as s:
        tree = await delegate(s, l5d, "/svc/split", dtab)
    union, fallback = tree["alt"]
    assert union["type"] == "union" and union["path"] == "/svc/split"
    assert union["dentry"]["prefix"] == "/svc/split"
    weights = {w["tree"]["bound"]["id"]: w["weight"] for w in union["union"]}
    assert weights == {"/#/io.l5d.fs/world": 0.7, "/#/io.l5d.fs/hello": 0.3}
    assert all(w["tree"]["type"] == "leaf" for w in union["union"])
    assert fallback["type"] == "neg" and fallback["dentry"] == FS_DENTRY


async def test_delegator_json_neg_and_fail(l5d: L5d) -> None:
    async with aiohttp.ClientSession() as s:
        nomatch = await delegate(s, l5d, "/nothing/here", FS)
        missing = await delegate(s, l5d, "/svc/missing", FS)
        fail = await delegate(s, l5d, "/svc/x", f"{FS};/svc/x=>!")
    assert nomatch["type"] == "neg" and nomatch["path"] == "/nothing/here"
    assert "dentry" not in nomatch
    assert missing["type"] == "delegate" and missing["path"] == "/svc/missing"
    neg = missing["delegate"]
    assert neg["type"] == "neg" and neg["path"] == "/#/io.l5d.fs/missing"
    assert neg["dentry"] == FS_DENTRY and "no file" in neg["reason"]
    stop, _ = fail["alt"]
    assert stop == {"type": "fail", "path": "!", "dentry": {"prefix": "/svc/x", "dst": "!"}}


async def test_delegator_json_transformation(l5d: L5d, backends: Backends) -> None:
    async with aiohttp.ClientSession() as s:
        tree = await delegate(s, l5d, "/svc/hello", FS, namespace="xform")
    node = tree["delegate"]
    assert node["type"] == "transformation", node
    assert node["name"] == "io.l5d.port"
    world = backends.ports["world"]
    # `bound` is what went in (hello as the namer bound it), `tree` what came out.
    assert node["bound"]["id"] == "/#/io.l5d.fs/hello"
    assert node["bound"]["addr"] == _addr(backends.ports["hello"])
    out = node["tree"]
    assert out["type"] == "leaf"
    assert out["bound"]["id"] == f"/%/io.l5d.port/{world}/#/io.l5d.fs/hello"
    assert out["bound"]["addr"] == _addr(world)


async def test_delegator_json_errors_from_real_process(l5d: L5d) -> None:
    async with aiohttp.ClientSession() as s:
        status, body = await _get_json(s, l5d.url + "/delegator.json", path="/svc/a",
                                       dtab="/svc => /a |", namespace="outgoing")
        assert status == 400 and body.startswith("Invalid dtab: ")
        status, body = await _get_json(s, l5d.url + "/delegator.json", path="svc",
                                       dtab=FS, namespace="outgoing")
        assert status == 400 and body.startswith("Invalid path: ")


async def test_metrics_json_names_after_real_traffic(l5d: L5d, backends: Backends) -> None:
    async with aiohttp.ClientSession() as s:
        for host in ("world", "world", "broken"):
            await send(s, l5d.proxy, host)
        srv = f"rt/outgoing/server/127.0.0.1/{l5d.proxy}"
        deadline = time.monotonic() + 10
        while True:
            status, m = await _get_json(s, l5d.url + "/admin/metrics.json")
            if m.get(f"{srv}/request_latency_ms.count", 0) >= 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert status == 200 and isinstance(m, dict)
        assert m[f"{srv}/requests"] == 3
        assert m[f"{srv}/success"] == 2
        assert m[f"{srv}/failures"] == 1
        assert m[f"{srv}/status/200"] == 2 and m[f"{srv}/status/5XX"] == 1
        assert m["rt/outgoing/service/svc/world/requests"] == 2
        assert m["rt/outgoing/service/svc/broken/failures"] == 1
        assert m["rt/outgoing/client/#/io.l5d.fs/world/requests"] == 2
        assert m[f"{srv}/request_latency_ms.count"] == 3
        for f in ("max", "min", "p50", "p90", "p95", "p99", "p9990", "p9999", "sum", "avg"):
            assert f"{srv}/request_latency_ms.{f}" in m
        status, sub = await _get_json(s, l5d.url + "/admin/metrics.json",
                                      q="rt/outgoing/service/svc/world")
        assert status == 200 and sub["requests"] == 2
        status, tree = await _get_json(s, l5d.url + "/admin/metrics.json", tree="1")
        assert tree["rt"]["outgoing"]["service"]["svc/world"]["requests"] == {"counter": 2}
        status, err = await _get_json(s, l5d.url + "/admin/metrics.json", q="rt/nope")
        assert status == 404 and err == {"error": "No such subtree: rt/nope"}


async def test_endpoints_of_real_process(l5d: L5d, backends: Backends) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(l5d.url + "/admin/ping") as r:
            assert await r.text() == "pong"
        status, cfg = await _get_json(s, l5d.url + "/config.json")
        assert status == 200 and [r["label"] for r in cfg["routers"]] == ["outgoing", "xform"]
        await send(s, l5d.proxy, "world")
        status, clients = await _get_json(s, l5d.url + "/client_state.json")
        assert status == 200 and "/#/io.l5d.fs/world" in clients, clients
        world = backends.ports["world"]
        assert clients["/#/io.l5d.fs/world"]["addresses"] == [f"127.0.0.1:{world}"]
        status, names = await _get_json(s, l5d.url + "/bound-names.json")
        assert status == 200
        assert set(names) >= {"/#/io.l5d.fs/world", "/#/io.l5d.fs/hello", "/#/io.l5d.fs/broken"}
        async with s.get(l5d.url + "/admin/metrics/prometheus") as r:
            assert r.status == 200 and "rt:server:requests" in await r.text()
        async with s.get(l5d.url + "/admin") as r:
            assert "/admin/metrics/prometheus" in await r.text()


async def test_shutdown_exits_zero(l5d: L5d) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(l5d.url + "/admin/shutdown") as r:
            assert r.status == 200
    deadline = time.monotonic() + 15
    while l5d.proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert l5d.proc.returncode == 0, _tail(l5d.log)
