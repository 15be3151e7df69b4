"""The Linker's lifecycle beyond the data path: shutdown closes every transformer and
namer (their Vars, timers and polling tasks), and the admin serves each namer's
`state_json()` at `/namer_state/<prefix>.json`, as Linkerd does."""

from __future__ import annotations

import asyncio
import socket
import textwrap
import time

import aiohttp
import pytest

from dtab.addr import AddrBound
from dtab.path import Path
from router.config import parse
from router.router import Linker
from tests.fake_apiserver import FakeApiServer, endpoints, fake_k8s  # noqa: F401
from tests.util import free_port, port_open


def _config(tmp_path, *, router_port: int = 0, admin_port: int = 0):
    (tmp_path / "hello").write_text("127.0.0.1 7000\n")
    return parse(textwrap.dedent(f"""\
        admin: {{port: {admin_port or free_port()}}}
        namers:
        - kind: io.l5d.fs
          rootDir: {tmp_path}
          transformers:
          - kind: io.l5d.port
            port: 7001
        routers:
        - protocol: http
          dtab: /svc => /#/io.l5d.fs
          interpreter:
            transformers:
            - kind: io.l5d.port
              port: 7002
          servers:
          - port: {router_port or free_port()}
        """), "lifecycle.yaml")


async def _bind_hello(linker: Linker) -> AddrBound:
    router = linker.routers[0]
    tree = await router.bind(router.base_dtab, Path.read("/svc/hello"))
    addr = tree.value.addr.value
    assert isinstance(addr, AddrBound)
    return addr


async def test_close_closes_namer_and_interpreter_transformers_and_namers(tmp_path) -> None:
    linker = Linker(_config(tmp_path))
    addr = await _bind_hello(linker)
    assert {(a.host, a.port) for a in addr.addresses} == {("127.0.0.1", 7002)}
    namer_wrapper = linker.namers[0][1]
    fs = namer_wrapper.namer
    namer_port = namer_wrapper.transformers[0]
    router_port = linker.routers[0].interpreter.transformers[0]
    assert namer_port.live == 1 and router_port.live == 1
    assert fs._task is not None and not fs._task.done()  # polling the directory

    await linker.close()

    assert namer_port.live == 0 and router_port.live == 0
    assert namer_port._sweep_timer is None and router_port._sweep_timer is None
    assert fs._task is None
    await linker.close()  # once only: a second close or a shutdown returns at once
    await asyncio.wait_for(linker.shutdown(), 1)


async def test_namer_state_json_per_prefix(tmp_path) -> None:
    linker = Linker(_config(tmp_path))
    await linker.start()
    try:
        await _bind_hello(linker)
        url = linker.admin.url
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/namer_state/io.l5d.fs.json") as r:
                assert r.status == 200
                state = await r.json()
            # the namer's own addresses, before its transformers
            assert state == {"/#/io.l5d.fs/hello": {
                "type": "bound", "addrs": [{"ip": "127.0.0.1", "port": 7000, "meta": {}}],
                "meta": {}}}
            # an edit of the file shows up there (the fs namer polls once a second)
            (tmp_path / "hello").write_text("127.0.0.1 7100\n")
            deadline = time.monotonic() + 10
            port = 7000
            while port != 7100 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                async with s.get(f"{url}/namer_state/io.l5d.fs.json") as r:
                    port = (await r.json())["/#/io.l5d.fs/hello"]["addrs"][0]["port"]
            assert port == 7100
            async with s.get(f"{url}/namer_state/io.l5d.k8s.json") as r:
                assert r.status == 404
                assert "/namer_state/io.l5d.fs.json" in await r.text()
            async with s.get(f"{url}/admin") as r:
                assert "/namer_state/io.l5d.fs.json" in await r.text()
    finally:
        await linker.shutdown(0)


async def test_a_busy_port_names_the_router_and_address_and_nothing_stays_up(tmp_path) -> None:
    busy, admin = free_port(), free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        linker = Linker(_config(tmp_path, router_port=busy, admin_port=admin))
        with pytest.raises(OSError) as info:
            await linker.start()
        assert f"router http cannot listen on 127.0.0.1:{busy}" in str(info.value)
        assert not port_open(admin)
        assert linker.namers[0][1].namer._task is None  # the namer started, then was stopped


async def test_closing_a_k8s_namer_with_a_daemonset_transformer_logs_no_error(
    fake_k8s: FakeApiServer, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    fake_k8s.mirror_endpoints = True  # and as EndpointSlices, which io.l5d.k8s reads
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "node-a")], {"http": 8080}))
    fake_k8s.upsert("endpoints", endpoints("l5d", [("10.0.1.9", "node-a")], {"incoming": 4141}))
    linker = Linker(parse(textwrap.dedent(f"""\
        admin: {{port: {free_port()}}}
        namers:
        - kind: io.l5d.k8s
          host: 127.0.0.1
          port: {fake_k8s.port}
          transformers:
          - kind: io.l5d.k8s.daemonset
            namespace: default
            port: incoming
            service: l5d
            k8sHost: 127.0.0.1
            k8sPort: {fake_k8s.port}
        routers:
        - protocol: http
          dtab: /svc => /#/io.l5d.k8s/default/http
          servers: [{{port: {free_port()}}}]
        """), "k8s.yaml"))
    router = linker.routers[0]
    tree = await router.bind(router.base_dtab, Path.read("/svc/hello"))
    deadline = time.monotonic() + 10
    while not isinstance(tree.value.addr.value, AddrBound) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert {(a.host, a.port) for a in tree.value.addr.value.addresses} == {("10.0.1.9", 4141)}
    caplog.set_level("WARNING")
    await linker.close()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_dtab_leaves_that_reach_no_namer_are_warned_about_at_load(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="router.router")
    linker = Linker(parse(textwrap.dedent(f"""\
        namers:
        - kind: io.l5d.fs
          rootDir: {tmp_path}
        routers:
        - protocol: http
          dtab: |
            /svc => /#/io.l5d.fs ;
            /a => /#/io.l5d.k8s/default/http ;
            /b => /$/inet/127.0.0.1/80 | /$/io.buoyant.http.domainToPathPfx/x | /$/inett/x ;
            /c => /# ;
          servers: [{{port: {free_port()}}}]
        """), "namers.yaml"))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned
    assert warned[0].startswith("namers.yaml:6: routers[0].dtab: /#/io.l5d.k8s/default/http "
                                "reaches no configured namer (namer prefixes: /io.l5d.fs)")
    assert warned[1].startswith("namers.yaml:6: routers[0].dtab: /$/inett/x: no built-in "
                                "namer /$/inett")
    await linker.close()
