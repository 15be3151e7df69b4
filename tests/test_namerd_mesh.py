"""namerd's io.l5d.mesh gRPC API and the router's io.l5d.mesh interpreter, end to end:
a real namerd process spoken to with grpcio stubs generated from Linkerd's .proto,
real routers, and a TCP proxy that can go silent (a namerd host that vanished)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path as FsPath
from typing import Any

import aiohttp
import grpc
import pytest
from grpc import aio

from dtab.dtab import Dtab
from dtab.path import Path
from mesh_proto import (
    codec_pb2,
    codec_pb2_grpc,
    delegator_pb2,
    delegator_pb2_grpc,
    dtab_pb2,
    interpreter_pb2,
    interpreter_pb2_grpc,
    resolver_pb2,
    resolver_pb2_grpc,
)
from mesh_proto.convert import dtab_from_pb, dtab_to_pb, path_to_pb, path_tree_to_pb
from router.config import ConfigError, parse
from tests.test_namerd import DTAB, IN_MEMORY, INTERPRETERS, Env, _load, _put, env  # noqa: F401
from tests.util import async_wait_until

REPO = FsPath(__file__).resolve().parent.parent


def test_generated_code_is_up_to_date(tmp_path: FsPath) -> None:
    """mesh_proto/*_pb2*.py are what `make proto` makes from the committed .proto files."""
    out = tmp_path / "gen"
    (out / "mesh_proto").mkdir(parents=True)
    protos = sorted(p.name for p in (REPO / "mesh_proto").glob("*.proto"))
    assert protos == ["codec.proto", "delegator.proto", "dtab.proto", "interpreter.proto",
                      "resolver.proto"]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={out}",
                    f"--pyi_out={out}", f"--grpc_python_out={out}",
                    *(f"mesh_proto/{p}" for p in protos)], cwd=REPO, check=True)
    generated = sorted(p.name for p in (out / "mesh_proto").iterdir())
    committed = sorted(p.name for p in (REPO / "mesh_proto").iterdir()
                       if "_pb2" in p.name)
    assert generated == committed
    stale = [n for n in generated
             if (out / "mesh_proto" / n).read_bytes() != (REPO / "mesh_proto" / n).read_bytes()]
    assert not stale, f"run `make proto`: {stale} differ from the .proto files"


def test_wire_names_are_linkerds() -> None:
    """The package and method paths a Linkerd 1 router calls."""
    svc = interpreter_pb2.DESCRIPTOR.services_by_name["Interpreter"]
    assert svc.full_name == "io.linkerd.mesh.Interpreter"
    assert [m.name for m in svc.methods] == ["GetBoundTree", "StreamBoundTree"]
    assert [m.name for m in resolver_pb2.DESCRIPTOR.services_by_name["Resolver"].methods] == [
        "GetReplicas", "StreamReplicas"]
    assert [m.name for m in delegator_pb2.DESCRIPTOR.services_by_name["Delegator"].methods] == [
        "GetDtab", "StreamDtab", "GetDelegateTree", "StreamDelegateTree"]
    assert dtab_pb2.Path.DESCRIPTOR.full_name == "io.linkerd.mesh.Path"
    assert resolver_pb2.Endpoint.DESCRIPTOR.fields_by_name["metadata"].number == 5
    dtab = Dtab.read("/svc/*/x => /a | 2 * /b & /c ; /y => ~")
    assert dtab_from_pb(dtab_pb2.Dtab.FromString(dtab_to_pb(dtab).SerializeToString())) == dtab


class Stubs:
    def __init__(self, channel: aio.Channel) -> None:
        self.interpreter = interpreter_pb2_grpc.InterpreterStub(channel)
        self.resolver = resolver_pb2_grpc.ResolverStub(channel)
        self.delegator = delegator_pb2_grpc.DelegatorStub(channel)
        self.codec = codec_pb2_grpc.CodecStub(channel)


@pytest.fixture
async def mesh(env: Env) -> AsyncIterator[tuple[Env, Stubs, int]]:  # noqa: F811
    api = await env.namerd(IN_MEMORY)
    async with aio.insecure_channel(f"127.0.0.1:{env.mesh_port}") as channel:
        yield env, Stubs(channel), api


def _p(text: str) -> dtab_pb2.Path:
    return path_to_pb(Path.read(text))


async def _status(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


async def test_interpreter_and_its_errors(mesh: tuple[Env, Stubs, int]) -> None:
    _e, stubs, api = mesh
    req = interpreter_pb2.BindReq(root=_p("/internal"), name=_p("/svc/world-v1"))
    rsp = await stubs.interpreter.GetBoundTree(req, timeout=10)
    leaf = rsp.tree.leaf
    assert [e.decode() for e in leaf.id.elems] == ["#", "io.l5d.fs", "world-v1"]
    assert list(leaf.residual.elems) == []
    # the request's dtab goes after the stored one
    req.dtab.CopyFrom(dtab_to_pb(Dtab.read("/svc/world-v1 => /srv/world-v2")))
    rsp = await stubs.interpreter.GetBoundTree(req, timeout=10)
    assert rsp.tree.leaf.id.elems[-1] == b"world-v2"
    # Linkerd's statuses and messages
    assert await _status(stubs.interpreter.GetBoundTree(
        interpreter_pb2.BindReq(name=_p("/svc/x")), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "No namespace specified")
    assert await _status(stubs.interpreter.GetBoundTree(
        interpreter_pb2.BindReq(root=_p("/a/b"), name=_p("/svc/x")), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Invalid root: `/a/b` must have exactly one segment")
    assert await _status(stubs.interpreter.GetBoundTree(
        interpreter_pb2.BindReq(root=_p("/internal")), timeout=10)) == (
        grpc.StatusCode.NOT_FOUND, "No name given")
    # a union: both branches with their weights
    req = interpreter_pb2.BindReq(root=_p("/internal"), name=_p("/svc/world"),
                                  dtab=dtab_to_pb(Dtab.read(
                                      "/host/world => 9 * /srv/world-v1 & 1 * /srv/world-v2")))
    union = (await stubs.interpreter.GetBoundTree(req, timeout=10)).tree.union
    assert [(w.weight, w.tree.leaf.id.elems[-1]) for w in union.trees] == [
        (9.0, b"world-v1"), (1.0, b"world-v2")]

    # a stream: the current tree, then one message per dtab write
    stream = stubs.interpreter.StreamBoundTree(
        interpreter_pb2.BindReq(root=_p("/internal"), name=_p("/svc/world")), timeout=30)
    first = await stream.read()
    assert first.tree.leaf.id.elems[-1] == b"world-v1"
    async with aiohttp.ClientSession() as s:
        assert await _put(s, f"http://127.0.0.1:{api}/api/1/dtabs/internal",
                          DTAB + "; /host/world => /srv/world-v2") == 204
    second = await asyncio.wait_for(stream.read(), 5)
    assert second.tree.leaf.id.elems[-1] == b"world-v2"
    stream.cancel()


async def test_resolver_streams_endpoint_changes(mesh: tuple[Env, Stubs, int]) -> None:
    e, stubs, _api = mesh
    port_v1 = int((e.disco / "world-v1").read_text().split()[1])
    rsp = await stubs.resolver.GetReplicas(
        resolver_pb2.ReplicasReq(id=_p("/#/io.l5d.fs/world-v1")), timeout=10)
    [ep] = rsp.bound.endpoints
    assert (ep.inet_af, ep.address, ep.port) == (resolver_pb2.Endpoint.INET4,
                                                 bytes([127, 0, 0, 1]), port_v1)
    rsp = await stubs.resolver.GetReplicas(resolver_pb2.ReplicasReq(), timeout=10)
    assert rsp.failed.message == "No ID provided"
    rsp = await stubs.resolver.GetReplicas(
        resolver_pb2.ReplicasReq(id=_p("/#/io.l5d.fs/nothing-here")), timeout=10)
    assert rsp.WhichOneof("result") == "neg"

    stream = stubs.resolver.StreamReplicas(
        resolver_pb2.ReplicasReq(id=_p("/#/io.l5d.fs/world-v1")), timeout=30)
    assert (await stream.read()).bound.endpoints[0].port == port_v1
    (e.disco / "world-v1").write_text(f"127.0.0.1 {port_v1}\n127.0.0.2 {port_v1} * 3\n")
    while True:
        rsp = await asyncio.wait_for(stream.read(), 10)
        if len(rsp.bound.endpoints) == 2:
            break
    weights = {bytes(e.address): e.metadata.get("endpoint_addr_weight", "1")
               for e in rsp.bound.endpoints}
    assert float(weights[bytes([127, 0, 0, 2])]) == 3.0
    stream.cancel()


async def test_delegator_dtab_versions_and_delegate_tree(mesh: tuple[Env, Stubs, int]) -> None:
    _e, stubs, api = mesh
    rsp = await stubs.delegator.GetDtab(delegator_pb2.DtabReq(root=_p("/internal")), timeout=10)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{api}/api/1/dtabs/internal") as r:
            etag = r.headers["ETag"]
        import base64

        assert base64.b64encode(rsp.dtab.version.id).decode() == etag
        assert dtab_from_pb(rsp.dtab.dtab) == Dtab.read(DTAB + "; /host/world => /srv/world-v1")
        assert await _status(stubs.delegator.GetDtab(
            delegator_pb2.DtabReq(root=_p("/nope")), timeout=10)) == (
            grpc.StatusCode.NOT_FOUND, "Root not found")
        stream = stubs.delegator.StreamDtab(delegator_pb2.DtabReq(root=_p("/internal")),
                                            timeout=30)
        v1 = await stream.read()
        assert await _put(s, f"http://127.0.0.1:{api}/api/1/dtabs/internal", DTAB) == 204
        v2 = await asyncio.wait_for(stream.read(), 5)
        assert v2.dtab.version.id != v1.dtab.version.id
        assert dtab_from_pb(v2.dtab.dtab) == Dtab.read(DTAB)
        stream.cancel()
    tree = (await stubs.delegator.GetDelegateTree(delegator_pb2.DelegateTreeReq(
        root=_p("/internal"), tree=path_tree_to_pb(Dtab.read("/a=>/svc/world-v2")[0].dst)),
        timeout=10)).tree
    assert tree.path.elems == [b"svc", b"world-v2"] and tree.WhichOneof("node") == "delegate"
    assert tree.delegate.dentry.prefix.elems[0].label == b"svc"


async def test_codec(mesh: tuple[Env, Stubs, int]) -> None:
    _env, stubs, _api = mesh
    rsp = await stubs.codec.ReadDtab(codec_pb2.ReadDtabReq(text="/a=>/b|/c"), timeout=10)
    assert dtab_from_pb(rsp.dtab) == Dtab.read("/a=>/b|/c")
    shown = await stubs.codec.ShowDtab(codec_pb2.ShowDtabReq(dtab=rsp.dtab), timeout=10)
    assert shown.text == "/a=>/b | /c"
    path = await stubs.codec.ReadPath(codec_pb2.ReadPathReq(text="/x/y"), timeout=10)
    assert path.path.elems == [b"x", b"y"]
    assert (await stubs.codec.ShowPath(codec_pb2.ShowPathReq(path=path.path))).text == "/x/y"
    code, details = await _status(stubs.codec.ReadDtab(codec_pb2.ReadDtabReq(text="/a=>"),
                                                       timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "column" in details, details


async def test_router_delegator_through_mesh(env: Env) -> None:  # noqa: F811
    """The router's /delegator.json over gRPC is namerd's own delegate tree (REST), but for
    the Neg reasons, which the BoundDelegateTree message has no field for."""
    api = await env.namerd(IN_MEMORY)
    await env.router(env.mesh_port, kind="io.l5d.mesh")
    query = {"path": "/svc/world", "dtab": "/svc=>/host"}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{env.router_admin}/delegator.json",
                         params={"namespace": "outgoing", **query}) as r:
            assert r.status == 200, await r.text()
            tree = await r.json()
        async with s.get(f"http://127.0.0.1:{api}/api/1/delegate/internal", params=query) as r:
            expected = await r.json()

    def no_reasons(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: no_reasons(v) for k, v in node.items() if k != "reason"}
        if isinstance(node, list):
            return [no_reasons(v) for v in node]
        return node

    assert tree == no_reasons(expected)
    assert '"/#/io.l5d.fs/world-v1"' in str(tree).replace("'", '"')
    assert "'type': 'bound'" in str(tree)


def test_config_keys_and_errors() -> None:
    cfg = parse("""
routers:
- protocol: http
  interpreter:
    kind: io.l5d.mesh
    dst: /$/inet/namerd/4321
    root: /internal
    failureThreshold: {minPeriodMs: 1000, closeTimeoutMs: 2000}
  servers: [{port: 4140}]
""")
    params = cfg.routers[0].interpreter.params
    assert (params["host"], params["port"], params["namespace"]) == ("namerd", 4321, "internal")
    assert (params["keepalive_s"], params["keepalive_timeout_s"]) == (1.0, 2.0)
    assert (params["retry_base_s"], params["retry_max_s"]) == (1.0, 600.0)  # Linkerd's
    bad = {
        "root: /a/b": "single path element",
        "tls: {commonName: namerd}": "TLS to namerd is not implemented",
        "failureThreshold: {minPeriod: 1}": "minPeriod",
    }
    for line, message in bad.items():
        with pytest.raises(ConfigError) as info:
            parse(f"""routers:
- protocol: http
  interpreter:
    kind: io.l5d.mesh
    dst: /$/inet/namerd/4321
    {line}
  servers: [{{port: 4140}}]
""", "l5d.yaml")
        assert message in str(info.value) and "l5d.yaml:" in str(info.value), str(info.value)
    with pytest.raises(ConfigError) as info:
        parse("routers:\n- protocol: http\n  interpreter: {kind: io.l5d.namerd, dst: /$/inet/"
              "n/4100}\n  servers: [{port: 4140}]\n", "l5d.yaml")
    assert "use io.l5d.mesh" in str(info.value) and "l5d.yaml:3" in str(info.value)


class SilentProxy:
    """A TCP proxy whose `go_silent()` stops forwarding on the connections it has, without
    closing them: what a router sees when namerd's host vanishes. New connections work."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.silenced: set[int] = set()
        self.conns = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def go_silent(self) -> None:
        self.silenced.update(range(self.conns))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.conns
        self.conns += 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if n in self.silenced:
                        continue  # swallowed: the peer never hears of it
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass

        for t in (pipe(reader, up_w), pipe(up_r, writer)):
            task = asyncio.ensure_future(t)
            self.tasks.add(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.parametrize("kind", INTERPRETERS)
async def test_silently_dead_namerd_is_noticed_and_routing_kept(
        env: Env, kind: str) -> None:  # noqa: F811
    """namerd's connection goes silent (no RST, no FIN): the router notices within its
    heartbeat timeout (HTTP) or keepalive (gRPC), keeps routing on the last good tree,
    reconnects, and follows the next dtab write."""
    api = await env.namerd(IN_MEMORY, extra="  heartbeatSecs: 0.2\n")
    proxy = SilentProxy(env.mesh_port if kind == "io.l5d.mesh" else api)
    await proxy.start()
    extra = ("\n    failureThreshold: {minPeriodMs: 500, closeTimeoutMs: 1000}"
             if kind == "io.l5d.mesh" else "\n    heartbeatTimeoutSecs: 1")
    port = await env.router(proxy.port, kind=kind, extra=extra)
    stop = asyncio.Event()
    seen: list[tuple[float, str]] = []
    failures: list[Any] = []
    loaders = [asyncio.create_task(_load(port, stop, seen, failures)) for _ in range(2)]
    state_url = (f"http://127.0.0.1:{env.router_admin}/outgoing/interpreter_state/"
                 f"{kind}/internal.json")
    try:
        await async_wait_until(lambda: len(seen) > 20, 15, "traffic through the router")
        conns_before = proxy.conns
        proxy.go_silent()
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as s:
            assert await _put(s, f"http://127.0.0.1:{api}/api/1/dtabs/internal",
                              DTAB + "; /host/world => /srv/world-v2") == 204
            # the write is lost on the silent connection; only a reconnect brings it
            await async_wait_until(lambda: bool(seen) and seen[-1][1] == "world-v2", 20,
                                   "the router reconnecting and following the write")
            took = time.monotonic() - t0
            assert proxy.conns > conns_before
            async with s.get(state_url) as r:
                state = await r.json()
        bind = state["bind"]["/svc/world /svc=>/host"]
        assert bind["reconnects"] >= 1 and bind["connected"], bind
        assert took < 15, took
    finally:
        stop.set()
        await asyncio.gather(*loaders)
        await proxy.close()
    assert failures == []


async def test_namerd_metrics_on_its_admin(mesh: tuple[Env, Stubs, int]) -> None:
    """REST and gRPC calls, open streams and store updates, on /admin/metrics.json and in
    a Prometheus exposition that prometheus_client's parser reads."""
    from prometheus_client.parser import text_string_to_metric_families

    e, stubs, api = mesh
    admin = f"http://127.0.0.1:{e.namerd_admin}"
    req = interpreter_pb2.BindReq(root=_p("/internal"), name=_p("/svc/world-v1"))
    await stubs.interpreter.GetBoundTree(req, timeout=10)
    await _status(stubs.interpreter.GetBoundTree(interpreter_pb2.BindReq(name=_p("/x")),
                                                 timeout=10))
    stream = stubs.interpreter.StreamBoundTree(req, timeout=30)
    await stream.read()
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{api}/api/1/dtabs/nope") as r:
            assert r.status == 404
        assert await _put(s, f"http://127.0.0.1:{api}/api/1/dtabs/internal", DTAB) == 204
        async with s.get(f"{admin}/admin/metrics.json") as r:
            m = await r.json()
        mesh_bind = "interface/io.l5d.mesh/Interpreter/GetBoundTree"
        assert m[f"{mesh_bind}/requests"] == 2 and m[f"{mesh_bind}/success"] == 1
        assert m[f"{mesh_bind}/failures"] == 1
        assert m["interface/io.l5d.mesh/Interpreter/StreamBoundTree/requests"] == 1
        assert m["interface/io.l5d.mesh/streams"] == 1
        http = "interface/io.l5d.httpController"
        assert m[f"{http}/requests"] >= 2 and m[f"{http}/status/404"] == 1
        assert m[f"{http}/status/204"] == 1
        assert m["dtabstore/namespaces"] == 1 and m["dtabstore/updates"] >= 1
        stream.cancel()
        deadline = time.monotonic() + 10
        while m["interface/io.l5d.mesh/streams"] != 0:  # the server sees the cancel
            assert time.monotonic() < deadline, "the stream never closed on namerd"
            await asyncio.sleep(0.05)
            async with s.get(f"{admin}/admin/metrics.json") as r:
                m = await r.json()
        assert m["interface/io.l5d.mesh/Interpreter/StreamBoundTree/success"] == 1
        async with s.get(f"{admin}/admin/metrics/prometheus") as r:
            assert r.status == 200
            text = await r.text()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert any("interface" in n and "requests" in n for n in names), sorted(names)[:20]


async def test_linkerds_mesh_examples_validate_and_run(env: Env) -> None:  # noqa: F811
    """Linkerd's own namerd/examples/mesh.yaml and linkerd/examples/namerd-mesh.yaml: they
    validate as they are, and run together with only ports and the fs rootDir changed."""
    from tests.test_namerd import _spawn, _wait_port
    from tests.util import free_port

    data = REPO / "tests" / "data" / "linkerd"
    for cmd, name in (("router.cli", "namerd-mesh.yaml"),
                      ("namerd.main", "namerd-examples-mesh.yaml")):
        done = subprocess.run([sys.executable, "-m", cmd, "--validate", str(data / name)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    mesh, admin, rest, port, l5d_admin = (free_port() for _ in range(5))
    (env.disco / "grpc").write_text((env.disco / "world-v1").read_text())
    namerd_cfg = (data / "namerd-examples-mesh.yaml").read_text() \
        .replace("port: 9991", f"port: {admin}").replace("port: 4321", f"port: {mesh}") \
        .replace("rootDir: namerd/examples/disco", f"rootDir: {env.disco}") \
        .replace("- kind: io.l5d.httpController", f"- kind: io.l5d.httpController\n"
                 f"    port: {rest}")
    router_cfg = (data / "namerd-mesh.yaml").read_text() \
        .replace("/$/inet/127.1/4321", f"/$/inet/127.0.0.1/{mesh}") \
        .replace("port: 4140", f"port: {port}").replace("ip: 0.0.0.0", "ip: 127.0.0.1") \
        + f"admin: {{port: {l5d_admin}}}\n"
    (env.tmp / "n.yaml").write_text(namerd_cfg)
    (env.tmp / "l.yaml").write_text(router_cfg)
    env.procs.append(_spawn("namerd.main", env.tmp / "n.yaml"))
    await _wait_port(mesh, env.procs[-1])
    env.procs.append(_spawn("router.cli", env.tmp / "l.yaml"))
    await _wait_port(port, env.procs[-1])
    # the default identifier names /svc/<host>; Linkerd's dtab knows /grpc: add it per request
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{port}/", headers={"Host": "grpc", "l5d-dtab": "/svc=>/grpc"}) as r:
        assert r.status == 200 and await r.text() == "world-v1"


@pytest.mark.parametrize("kind", INTERPRETERS)
async def test_delegator_page_shows_namerd_binding(env: Env, kind: str,  # noqa: F811
                                                   tmp_path: FsPath) -> None:
    """In headless Chromium: the delegator says the router binds through namerd, resolves
    through it, and says so when namerd goes away (routing on the last good trees)."""
    from playwright.async_api import async_playwright

    from tests.test_ui_browser import CHROMIUM_ARGS
    from tests.util import stop_process

    api = await env.namerd(IN_MEMORY)
    port = await env.router(env.mesh_port if kind == "io.l5d.mesh" else api, kind=kind)
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/",
                                                   headers={"Host": "world"}) as r:
        assert r.status == 200  # the router's first bind opens its streams
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"http://127.0.0.1:{env.router_admin}/delegator#/svc/world")
            await page.wait_for_selector("#interp[data-connected=true]", timeout=15000)
            text = await page.text_content("#interp") or ""
            assert kind in text and "namespace internal" in text and "connected" in text, text
            await page.wait_for_function(
                "document.querySelector('#summary').textContent.includes('world-v1')",
                timeout=15000)
            summary = await page.text_content("#summary") or ""
            assert "/#/io.l5d.fs/world-v1" in summary, summary
            stop_process(env.procs[0])  # namerd goes away
            await page.click("#go")
            await page.wait_for_selector("#interp[data-connected=false]", timeout=15000)
            text = await page.text_content("#interp") or ""
            assert "namerd unreachable" in text and "last error" in text, text
            await page.screenshot(path=str(tmp_path / "delegator-namerd.png"))
            assert errors == [], errors
        finally:
            await browser.close()


async def test_namerd_prometheus_telemeter_path_and_prefix(tmp_path: FsPath) -> None:
    """`telemetry: [{kind: io.l5d.prometheus, path, prefix}]` adds that exposition; a tracer
    is warned about with its line (namerd does not trace, as Linkerd's)."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_namerd import _spawn, _wait_port
    from tests.util import free_port, stop_process

    admin, api = free_port(), free_port()
    cfg = tmp_path / "namerd.yaml"
    cfg.write_text(f"""admin: {{port: {admin}}}
storage: {{kind: io.l5d.inMemory, namespaces: {{internal: "/svc => /#/io.l5d.fs"}}}}
interfaces:
- {{kind: io.l5d.httpController, port: {api}}}
telemetry:
- kind: io.l5d.prometheus
  path: /metrics
  prefix: namerd_
- kind: io.l5d.zipkin
""")
    proc = _spawn("namerd.main", cfg)
    try:
        await _wait_port(admin, proc)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{api}/api/1/dtabs") as r:
                assert r.status == 200
            async with s.get(f"http://127.0.0.1:{admin}/metrics") as r:
                assert r.status == 200
                names = {f.name for f in text_string_to_metric_families(await r.text())}
            async with s.get(f"http://127.0.0.1:{admin}/admin/metrics/prometheus") as r:
                assert r.status == 200
        assert names and all(n.startswith("namerd_") for n in names), sorted(names)
    finally:
        stop_process(proc)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert "namerd.yaml:9: telemetry: io.l5d.zipkin is not used by namerd" in err, err


async def test_mesh_h2_access_log(tmp_path: FsPath) -> None:
    """`h2AccessLog` on io.l5d.mesh: a line per call in Linkerd's h2 format (a stream's when
    it ends); an unreadable roll policy is refused at its line."""
    import re

    from namerd.config import parse as parse_namerd
    from tests.test_namerd import _spawn, _wait_port
    from tests.util import free_port, stop_process

    admin, api, mesh = free_port(), free_port(), free_port()
    log_file = tmp_path / "access.log"
    cfg = tmp_path / "namerd.yaml"
    cfg.write_text(f"""admin: {{port: {admin}}}
storage: {{kind: io.l5d.inMemory, namespaces: {{internal: "/svc => /$/inet/127.0.0.1"}}}}
interfaces:
- {{kind: io.l5d.httpController, port: {api}}}
- kind: io.l5d.mesh
  port: {mesh}
  h2AccessLog: {log_file}
  h2AccessLogRollPolicy: 10.megabytes
  h2AccessLogRotateCount: 2
""")
    proc = _spawn("namerd.main", cfg)
    try:
        await _wait_port(mesh, proc)
        async with aio.insecure_channel(f"127.0.0.1:{mesh}") as channel:
            stubs = Stubs(channel)
            req = interpreter_pb2.BindReq(root=_p("/internal"), name=_p("/svc/8080"))
            rsp = await stubs.interpreter.GetBoundTree(req, timeout=10)
            assert rsp.tree.leaf.id.elems == [b"$", b"inet", b"127.0.0.1", b"8080"]
            stream = stubs.interpreter.StreamBoundTree(req, timeout=30)
            await stream.read()
            stream.cancel()
        deadline = time.monotonic() + 10
        while len(log_file.read_text().splitlines()) < 2:
            assert time.monotonic() < deadline, log_file.read_text()
            await asyncio.sleep(0.05)
    finally:
        stop_process(proc)
    lines = log_file.read_text().splitlines()
    pattern = (r'\S+ 127\.0\.0\.1 - - \[\d\d/\d\d/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
               r'"POST /io\.linkerd\.mesh\.Interpreter/(GetBoundTree|StreamBoundTree) HTTP/2" '
               r'200 - "-" "grpc-python\S*[^"]*"')
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert {re.search(r"Interpreter/(\w+)", line)[1] for line in lines} == {  # type: ignore[index]
        "GetBoundTree", "StreamBoundTree"}
    with pytest.raises(ConfigError) as info:
        parse_namerd(cfg.read_text().replace("10.megabytes", "weekly-ish"), "n.yaml")
    assert "n.yaml:8" in str(info.value) and "weekly-ish" in str(info.value), str(info.value)
