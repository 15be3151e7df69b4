"""namerd end to end: real namerd and l5d processes on free ports, the fake API server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path as FsPath
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from grpc import aio

from dtab.path import Path
from mesh_proto import interpreter_pb2, interpreter_pb2_grpc
from mesh_proto.convert import path_to_pb
from tests.fake_apiserver import FakeApiServer
from tests.util import async_wait_until, free_port, port_open, stop_process

DTAB = "/srv => /#/io.l5d.fs; /host => /srv; /svc => /host"


async def _world(text: str, port: int, status: int = 200) -> web.AppRunner:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(text=text, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def _spawn(module: str, config: FsPath) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module, str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while not port_open(port):
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "exited")
        assert time.monotonic() < deadline, f"port {port} never opened"
        await asyncio.sleep(0.05)


class Env:
    def __init__(self, tmp: FsPath) -> None:
        self.tmp = tmp
        self.disco = tmp / "disco"
        self.disco.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runners: list[web.AppRunner] = []

    def namerd_config(self, storage: str, api: int, admin: int, mesh: int | None = None,
                      extra: str = "") -> FsPath:
        cfg = self.tmp / f"namerd-{api}.yaml"
        mesh_iface = f"- kind: io.l5d.mesh\n  port: {mesh}\n" if mesh else ""
        cfg.write_text(f"""
admin: {{port: {admin}}}
storage:
{storage}
namers:
- kind: io.l5d.fs
  rootDir: {self.disco}
interfaces:
- kind: io.l5d.httpController
  port: {api}
{extra}{mesh_iface}""")
        return cfg

    async def namerd(self, storage: str, extra: str = "") -> int:
        """Start namerd (REST API and gRPC mesh interface); returns the REST port."""
        api, admin, mesh = free_port(), free_port(), free_port()
        proc = _spawn("namerd.main", self.namerd_config(storage, api, admin, mesh, extra))
        self.procs.append(proc)
        await _wait_port(api, proc)
        await _wait_port(mesh, proc)
        self.mesh_port = mesh
        self.namerd_admin = admin
        return api

    def interpreter(self, kind: str, port: int, ns: str, extra: str = "") -> str:
        if kind == "io.l5d.mesh":
            return f"""
    kind: io.l5d.mesh
    dst: /$/inet/127.0.0.1/{port}
    root: /{ns}
    retry: {{baseSeconds: 0.05, maxSeconds: 0.5}}{extra}"""
        return f"""
    kind: io.l5d.namerd.http
    experimental: true
    dst: /$/inet/127.0.0.1/{port}
    namespace: {ns}
    retry: {{baseSeconds: 0.05, maxSeconds: 0.5}}{extra}"""

    async def router(self, namerd_port: int, ns: str = "internal",
                     kind: str = "io.l5d.namerd.http", extra: str = "") -> int:
        port, admin = free_port(), free_port()
        cfg = self.tmp / f"l5d-{port}.yaml"
        cfg.write_text(f"""
admin: {{port: {admin}}}
routers:
- protocol: http
  label: outgoing
  dtab: /svc => /host
  interpreter:{self.interpreter(kind, namerd_port, ns, extra)}
  servers:
  - port: {port}
""")
        proc = _spawn("router.cli", cfg)
        self.procs.append(proc)
        await _wait_port(port, proc)
        await _wait_port(admin, proc)
        self.router_admin = admin
        return port

    async def worlds(self, failing: tuple[str, ...] = ()) -> None:
        for name in ("world-v1", "world-v2"):
            port = free_port()
            self.runners.append(await _world(name, port, 500 if name in failing else 200))
            (self.disco / name).write_text(f"127.0.0.1 {port}\n")

    async def close(self) -> None:
        for p in self.procs:
            stop_process(p)
        for r in self.runners:
            await r.cleanup()


@pytest.fixture
async def env(tmp_path: FsPath, request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    await e.worlds(getattr(request, "param", ()))
    try:
        yield e
    finally:
        await e.close()


IN_MEMORY = f"""  kind: io.l5d.inMemory
  namespaces:
    internal: "{DTAB}; /host/world => /srv/world-v1"
"""


async def _put(s: aiohttp.ClientSession, url: str, dtab: str, etag: str | None = None,
               ct: str = "application/dtab") -> int:
    headers = {"Content-Type": ct}
    if etag is not None:
        headers["If-Match"] = etag
    async with s.put(url, data=dtab, headers=headers) as r:
        return r.status


async def test_rest_api_statuses_bodies_and_lost_update(env: Env) -> None:
    api = await env.namerd(IN_MEMORY)
    base = f"http://127.0.0.1:{api}/api/1"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/dtabs") as r:
            assert r.status == 200 and await r.json() == ["internal"]
        async with s.get(f"{base}/dtabs/internal") as r:
            assert r.status == 200
            assert r.headers["ETag"] == "AAAAAAAAAAE="
            body = await r.json()
            assert body[0] == {"prefix": "/srv", "dst": "/#/io.l5d.fs"}
        async with s.get(f"{base}/dtabs/internal", headers={"Accept": "application/dtab"}) as r:
            assert (await r.text()).startswith("/srv=>/#/io.l5d.fs;")
        async with s.head(f"{base}/dtabs/internal") as r:
            assert r.status == 200 and r.headers["ETag"] == "AAAAAAAAAAE="
        async with s.get(f"{base}/dtabs/nope") as r:
            assert r.status == 404
        # two writers read v1; the first wins, the second is refused (no lost update)
        assert await _put(s, f"{base}/dtabs/internal", DTAB, "AAAAAAAAAAE=") == 204
        assert await _put(s, f"{base}/dtabs/internal", "/svc=>/lost", "AAAAAAAAAAE=") == 412
        async with s.get(f"{base}/dtabs/internal", headers={"Accept": "application/dtab"}) as r:
            assert r.headers["ETag"] == "AAAAAAAAAAI="
            assert "/lost" not in await r.text()
        assert await _put(s, f"{base}/dtabs/internal", "/svc=>") == 400
        assert await _put(s, f"{base}/dtabs/internal", DTAB, ct="text/html") == 400
        async with s.post(f"{base}/dtabs/internal", data=DTAB,
                          headers={"Content-Type": "application/dtab"}) as r:
            assert r.status == 409
        async with s.post(f"{base}/dtabs/other", data='[{"prefix":"/a","dst":"/b"}]',
                          headers={"Content-Type": "application/json"}) as r:
            assert r.status == 204
        async with s.delete(f"{base}/dtabs/other") as r:
            assert r.status == 204
        async with s.delete(f"{base}/dtabs/other") as r:
            assert r.status == 404
        async with s.get(f"{base}/bind/internal", params={"path": "/svc/world-v1"}) as r:
            tree = await r.json()
            assert tree["type"] == "leaf" and tree["bound"]["id"] == "/#/io.l5d.fs/world-v1"
            assert tree["bound"]["addr"]["type"] == "bound"
        async with s.get(f"{base}/addr/internal",
                         params={"path": "/#/io.l5d.fs/world-v2"}) as r:
            addr = await r.json()
            assert addr["type"] == "bound" and len(addr["addrs"]) == 1
        async with s.get(f"{base}/resolve/internal", params={"path": "/svc/world-v2"}) as r:
            assert (await r.json())["type"] == "bound"
        async with s.get(f"{base}/delegate/internal", params={"path": "/svc/world-v1"}) as r:
            d = await r.json()
            assert d["type"] == "delegate" and d["path"] == "/svc/world-v1"
        async with s.get(f"{base}/bind/internal", params={"path": "svc"}) as r:
            assert r.status == 400 and (await r.text()).startswith("Invalid path")
        # a watch streams one document per change
        async with s.get(f"{base}/dtabs/internal", params={"watch": "true"},
                         headers={"Accept": "application/dtab"}) as r:
            first = await r.content.readline()
            assert first.startswith(b"/srv=>")
            assert await _put(s, f"{base}/dtabs/internal", DTAB + ";/x=>/y") == 204
            second = await asyncio.wait_for(r.content.readline(), 2)
            assert second.rstrip().endswith(b"/x=>/y")


K8S = "  kind: io.l5d.k8s\n  host: 127.0.0.1\n  port: {port}\n  namespace: default\n"


async def test_two_replicas_on_k8s_agree_and_conflicts_are_412(env: Env) -> None:
    k8s = FakeApiServer()
    await k8s.start()
    try:
        a = await env.namerd(K8S.format(port=k8s.port))
        b = await env.namerd(K8S.format(port=k8s.port))
        mesh_b = env.mesh_port
        async with aiohttp.ClientSession() as s, aio.insecure_channel(
                f"127.0.0.1:{mesh_b}") as channel:
            # a gRPC bind stream on replica b, before the namespace exists
            binds = interpreter_pb2_grpc.InterpreterStub(channel).StreamBoundTree(
                interpreter_pb2.BindReq(root=path_to_pb(Path.of("internal")),
                                        name=path_to_pb(Path.read("/svc/world-v1"))),
                timeout=60)
            async with s.post(f"http://127.0.0.1:{a}/api/1/dtabs/internal", data=DTAB,
                              headers={"Content-Type": "application/dtab"}) as r:
                assert r.status == 204
            # the write through a reaches b's mesh stream (no namespace: Neg; then the leaf)
            while True:
                rsp = await asyncio.wait_for(binds.read(), 10)
                if rsp.tree.WhichOneof("node") == "leaf":
                    break
            assert rsp.tree.leaf.id.elems[-1] == b"world-v1"
            binds.cancel()
            assert "internal" in k8s.custom_objects()
            obj = k8s.custom_objects()["internal"]
            assert obj["kind"] == "DTab" and obj["dentries"][0]["prefix"] == "/srv"

            async def etag(port: int) -> str | None:
                async with s.get(f"http://127.0.0.1:{port}/api/1/dtabs/internal") as r:
                    return r.headers.get("ETag") if r.status == 200 else None

            deadline = time.monotonic() + 3
            while await etag(b) != await etag(a):
                assert time.monotonic() < deadline, "replica b never saw a's write"
                await asyncio.sleep(0.05)
            v = await etag(a)
            assert v is not None
            # both read v; the write through a wins, the one through b is 412
            assert await _put(s, f"http://127.0.0.1:{a}/api/1/dtabs/internal", DTAB + ";/a=>/b",
                              v) == 204
            assert await _put(s, f"http://127.0.0.1:{b}/api/1/dtabs/internal", DTAB + ";/c=>/d",
                              v) == 412
            assert ("replace", "internal", 409) in k8s.cr_writes
            # history compacted + watches cut: the replicas list again (410) and still agree
            k8s.expire_history()
            k8s.drop_watches()
            async with s.delete(f"http://127.0.0.1:{b}/api/1/dtabs/internal") as r:
                assert r.status == 204
            deadline = time.monotonic() + 5
            while await etag(a) is not None:
                assert time.monotonic() < deadline, "replica a never saw b's delete"
                await asyncio.sleep(0.05)
            assert k8s.gone_sent >= 2  # each replica was told 410 and listed again
            assert len([r for r in k8s.list_requests if r[0] == "dtabs"]) >= 4
    finally:
        await k8s.close()


async def _load(port: int, stop: asyncio.Event, seen: list[tuple[float, str]],
                failures: list[Any]) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            try:
                async with s.get(f"http://127.0.0.1:{port}/", headers={"Host": "world"}) as r:
                    text = await r.text()
                    if r.status != 200:
                        failures.append((r.status, text))
                    else:
                        seen.append((time.monotonic(), text))
            except aiohttp.ClientError as e:
                failures.append(e)


INTERPRETERS = ["io.l5d.namerd.http", "io.l5d.mesh"]


@pytest.mark.parametrize("kind", INTERPRETERS)
async def test_router_follows_update_within_a_second_and_survives_namerd_restart(
        env: Env, kind: str) -> None:
    api = await env.namerd(IN_MEMORY)
    port = await env.router(env.mesh_port if kind == "io.l5d.mesh" else api, kind=kind)
    base = f"http://127.0.0.1:{api}/api/1/dtabs/internal"
    stop = asyncio.Event()
    seen: list[tuple[float, str]] = []
    failures: list[Any] = []
    loaders = [asyncio.create_task(_load(port, stop, seen, failures)) for _ in range(4)]
    try:
        await async_wait_until(lambda: len(seen) > 50, 10, "traffic through the router")
        assert {t for _, t in seen} == {"world-v1"}
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            assert await _put(s, base, DTAB + "; /host/world => /srv/world-v2") == 204
        await async_wait_until(lambda: seen[-1][1] == "world-v2", 1.0, "the switch to v2")
        switched = min(t for t, text in seen if text == "world-v2")
        assert switched - t0 < 1.0
        await async_wait_until(lambda: len([1 for t, _ in seen if t > switched]) > 100, 10)
        assert all(text == "world-v2" for t, text in seen if t > switched + 0.05)
        # a 10% step: 0.9 v1 + 0.1 v2, measured over 2000 requests
        async with aiohttp.ClientSession() as s:
            assert await _put(s, base, DTAB + "; /host/world => 9 * /srv/world-v1 & "
                              "1 * /srv/world-v2") == 204
            await asyncio.sleep(0.5)
            n0 = len(seen)
            await async_wait_until(lambda: len(seen) - n0 >= 2000, 30, "2000 requests")
            sample = [text for _, text in seen[n0:n0 + 2000]]
            share = sample.count("world-v2") / len(sample)
            assert 0.07 <= share <= 0.13, share
        # namerd goes away: routing keeps the last good tree
        namerd = env.procs[0]
        stop_process(namerd)
        n0 = len(seen)
        await async_wait_until(lambda: len(seen) - n0 > 200, 10, "traffic while namerd is down")
        async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{env.router_admin}/outgoing/interpreter_state/"
                f"{kind}/internal.json") as r:
            state = await r.json()
            assert state["kind"] == kind and state["connected"] is False, state
            bind = state["bind"]["/svc/world /svc=>/host"]
            assert bind["reconnects"] >= 1 and bind["lastError"], bind
        async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{env.router_admin}/admin/metrics.json") as r:
            m = await r.json()
        scope = f"rt/outgoing/interpreter/{kind}"
        assert m[f"{scope}/reconnects"] >= 1 and m[f"{scope}/updates"] >= 3, m
        assert m[f"{scope}/bind_streams"] == 1 and m[f"{scope}/connected_streams"] == 0
        # and comes back (in memory: seeded again with v1 only); the router follows it
        cfg = next(env.tmp.glob(f"namerd-{api}.yaml"))
        env.procs.append(_spawn("namerd.main", cfg))
        await _wait_port(api, env.procs[-1])
        await _wait_port(env.mesh_port, env.procs[-1])
        await async_wait_until(lambda: seen[-1][1] == "world-v1" and
                               all(t == "world-v1" for _, t in seen[-20:]), 5,
                               "the router following the restarted namerd")
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    assert failures == []


@pytest.mark.parametrize("env", [("world-v2",)], indirect=True)
async def test_shift_reverts_when_the_new_version_fails(env: Env) -> None:
    api = await env.namerd(IN_MEMORY)
    port = await env.router(api)
    stop = asyncio.Event()
    seen: list[tuple[float, str]] = []
    failures: list[Any] = []
    loaders = [asyncio.create_task(_load(port, stop, seen, failures)) for _ in range(2)]
    try:
        await async_wait_until(lambda: len(seen) > 20, 10, "traffic through the router")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "namerd.ctl", "--base-url", f"http://127.0.0.1:{api}",
            "shift", "internal", "/host/world", "/srv/world-v1", "/srv/world-v2",
            "--steps", "10,100", "--interval", "1s", "--min-success", "99.5",
            "--metrics-url", f"http://127.0.0.1:{env.router_admin}/admin/metrics.json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    text = out.decode()
    assert proc.returncode == 1, text
    assert "step 10%" in text and "step 100%" not in text, text
    assert "reverted" in text, text
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{api}/api/1/dtabs/internal",
            headers={"Accept": "application/dtab"}) as r:
        body = await r.text()
    assert body.rstrip().endswith("/host/world=>/srv/world-v1"), body
    assert failures, "the injected failure reached clients (the shift saw it)"


async def test_l5dctl_dtab_commands(env: Env) -> None:
    api = await env.namerd(IN_MEMORY)
    dtab_file = env.tmp / "new.dtab"
    dtab_file.write_text("/svc => /srv;\n")

    async def ctl(*args: str) -> tuple[int | None, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "namerd.ctl", "--base-url", f"http://127.0.0.1:{api}", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        return proc.returncode, out.decode()

    assert await ctl("dtab", "list") == (0, "internal\n")
    code, out = await ctl("dtab", "get", "internal")
    assert code == 0 and out.startswith("# version AAAAAAAAAAE=\n/srv=>/#/io.l5d.fs;\n"), out
    assert (await ctl("dtab", "update", "internal", str(dtab_file)))[0] == 0
    code, out = await ctl("dtab", "update", "internal", str(dtab_file),
                          "--version", "AAAAAAAAAAE=")
    assert code == 3 and "changed since version" in out, out
    assert (await ctl("dtab", "create", "other", str(dtab_file)))[0] == 0
    code, out = await ctl("dtab", "create", "other", str(dtab_file))
    assert code == 2 and "already exists" in out
    assert (await ctl("dtab", "delete", "other"))[0] == 0
    code, out = await ctl("dtab", "get", "other")
    assert code == 2 and "does not exist" in out


async def test_shift_reverts_on_ctrl_c(env: Env) -> None:
    """SIGINT in the middle of a step writes the original dtab back; the router (io.l5d.mesh
    here) follows the revert, and no request fails on the way."""
    import signal

    api = await env.namerd(IN_MEMORY)
    port = await env.router(env.mesh_port, kind="io.l5d.mesh")
    stop = asyncio.Event()
    seen: list[tuple[float, str]] = []
    failures: list[Any] = []
    loaders = [asyncio.create_task(_load(port, stop, seen, failures)) for _ in range(2)]
    try:
        await async_wait_until(lambda: len(seen) > 20, 10, "traffic through the router")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "namerd.ctl", "--base-url", f"http://127.0.0.1:{api}",
            "shift", "internal", "/host/world", "/srv/world-v1", "/srv/world-v2",
            "--steps", "50,100", "--interval", "60s",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert proc.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("step 50%") for line in lines):
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line, "".join(lines)
            lines.append(line.decode())
        await async_wait_until(lambda: seen[-1][1] == "world-v2", 10, "the 50% step")
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 20)
        text = "".join(lines) + rest.decode()
        assert proc.returncode == 1, text
        assert "reverted (interrupted)" in text and "step 100%" not in text, text
        n0 = len(seen)
        await async_wait_until(lambda: len(seen) - n0 > 100, 20, "traffic after the revert")
        await async_wait_until(lambda: all(t == "world-v1" for _, t in seen[-50:]), 5,
                               "the router following the revert")
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{api}/api/1/dtabs/internal",
            headers={"Accept": "application/dtab"}) as r:
        body = await r.text()
    assert body.rstrip().endswith("/host/world=>/srv/world-v1"), body
    assert failures == []


async def test_both_interpreters_follow_a_k8s_stored_dtab_under_load(env: Env) -> None:
    """namerd on DTab custom resources (the fake API server): one router per interpreter,
    both under load, follow a dtab write (REST -> API server -> watch -> namerd -> stream)
    within a second, with no failed request."""
    k8s = FakeApiServer()
    await k8s.start()
    stop = asyncio.Event()
    loaders: list[asyncio.Task[None]] = []
    try:
        api = await env.namerd(K8S.format(port=k8s.port))
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{api}/api/1/dtabs/internal",
                              data=DTAB + "; /host/world => /srv/world-v1",
                              headers={"Content-Type": "application/dtab"}) as r:
                assert r.status == 204
        ports = {"io.l5d.namerd.http": await env.router(api),
                 "io.l5d.mesh": await env.router(env.mesh_port, kind="io.l5d.mesh")}
        seen: dict[str, list[tuple[float, str]]] = {k: [] for k in ports}
        failures: list[Any] = []
        loaders = [asyncio.create_task(_load(port, stop, seen[k], failures))
                   for k, port in ports.items() for _ in range(2)]
        await async_wait_until(lambda: all(len(v) > 50 for v in seen.values()), 15,
                               "traffic through both routers")
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            assert await _put(s, f"http://127.0.0.1:{api}/api/1/dtabs/internal",
                              DTAB + "; /host/world => /srv/world-v2") == 204
        assert k8s.cr_writes == [("create", "internal", 201), ("replace", "internal", 200)]
        for kind, got in seen.items():
            await async_wait_until(lambda got=got: got[-1][1] == "world-v2", 1.5,
                                   f"the {kind} router switching")
            switched = min(t for t, text in got if text == "world-v2")
            assert switched - t0 < 1.0, (kind, switched - t0)
    finally:
        stop.set()
        await asyncio.gather(*loaders)
        await k8s.close()
    assert failures == []
