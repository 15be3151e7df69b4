"""The admin server against a test-double linker: endpoints, security, delegator.json errors,
shutdown, snapshot task. (tests/test_admin_e2e.py drives a real `l5d` process.)"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from dtab.dtab import Dtab
from router.admin.server import start_admin
from router.config import AdminConfig, AdminSecurityConfig, TelemeterConfig
from router.metrics import Metrics
from tests.util import free_port


@dataclass
class FakeClients:
    def snapshot(self) -> dict[str, Any]:
        return {"/#/io.l5d.fs/world": {"state": "bound", "addresses": ["127.0.0.1:8081"]}}


@dataclass
class FakeRouter:
    label: str
    base_dtab: Dtab
    delay: float = 0.0
    calls: list[tuple[str, str]] = field(default_factory=list)
    clients: FakeClients = field(default_factory=FakeClients)

    async def delegate(self, dtab: Dtab, path: Any) -> dict[str, Any]:
        self.calls.append((dtab.show, path.show))
        await asyncio.sleep(self.delay)
        return {"type": "delegate", "path": path.show, "delegate": {"type": "neg", "path": "~"}}


@dataclass
class FakeConfig:
    admin: AdminConfig
    telemetry: tuple[TelemeterConfig, ...] = ()


@dataclass
class FakeLinker:
    config: FakeConfig
    routers: list[FakeRouter]
    metrics: Metrics = field(default_factory=Metrics)
    config_json: dict[str, Any] = field(default_factory=lambda: {"routers": [{"protocol": "http"}]})
    shutdowns: list[int] = field(default_factory=list)

    def bound_names(self) -> list[str]:
        return ["/#/io.l5d.fs/world"]

    async def shutdown(self, grace_ms: int) -> None:
        self.shutdowns.append(grace_ms)


def make_linker(security: AdminSecurityConfig | None = None, **kw: Any) -> FakeLinker:
    admin = AdminConfig(port=free_port(), shutdown_grace_ms=1234,
                        security=security or AdminSecurityConfig())
    tele = (TelemeterConfig("io.l5d.prometheus", {"path": "/prom", "prefix": "l5d_"}),)
    return FakeLinker(FakeConfig(admin, tele),
                      [FakeRouter("outgoing", Dtab.read("/svc=>/#/io.l5d.fs"), **kw)])


@pytest.fixture
async def admin():
    handles = []

    async def start(linker: FakeLinker, **kw: Any):
        h = await start_admin(linker, **kw)
        handles.append(h)
        return h

    async with aiohttp.ClientSession() as session:
        yield start, session
    for h in handles:
        await h.close()


async def test_endpoints(admin) -> None:
    start, http = admin
    linker = make_linker()
    srv = linker.metrics.scope("rt", "outgoing", "server", "127.0.0.1", "4140")
    srv.counter("requests").incr(3)
    h = await start(linker)
    async with http.get(h.url + "/admin/ping") as r:
        assert r.status == 200 and await r.text() == "pong"
    async with http.get(h.url + "/config.json") as r:
        assert await r.json() == linker.config_json
    async with http.get(h.url + "/client_state.json") as r:
        assert (await r.json())["/#/io.l5d.fs/world"]["addresses"] == ["127.0.0.1:8081"]
    async with http.get(h.url + "/bound-names.json") as r:
        assert await r.json() == ["/#/io.l5d.fs/world"]
    async with http.get(h.url + "/admin/metrics.json") as r:
        assert (await r.json()) == {"rt/outgoing/server/127.0.0.1/4140/requests": 3}
    async with http.get(h.url + "/admin/metrics.json?q=rt/outgoing/server/10.0.0.1") as r:
        assert r.status == 404
        assert await r.json() == {"error": "No such subtree: rt/outgoing/server/10.0.0.1"}
    async with http.get(h.url + "/prom") as r:
        text = await r.text()
        assert 'l5d_rt:server:requests{rt="outgoing",server="127.0.0.1/4140"} 3.0' in text
    async with http.get(h.url + "/admin") as r:
        assert "/admin/metrics.json" in await r.text()
    for page, marker in (("/", "dashboard.js"), ("/delegator", "delegator.js")):
        async with http.get(h.url + page) as r:
            html = await r.text()
            assert marker in html
            data = html.split('id="l5d-data" type="application/json">')[1].split("</script>")[0]
            assert json.loads(data) == {"routers": [{"label": "outgoing",
                                                     "dtab": "/svc=>/#/io.l5d.fs"}]}
    async with http.get(h.url + "/files/dashboard.js") as r:
        assert r.status == 200 and "/admin/metrics/history.json" in await r.text()


async def test_delegator_json_get_post_and_errors(admin) -> None:
    start, http = admin
    linker = make_linker()
    h = await start(linker)
    router = linker.routers[0]
    async with http.get(h.url + "/delegator.json",
                        params={"path": "/svc/world", "dtab": "/svc=>/x", "namespace": "outgoing"}
                        ) as r:
        assert r.status == 200
        assert (await r.json())["path"] == "/svc/world"
    assert router.calls[-1] == ("/svc=>/x", "/svc/world")  # the dtab given is the whole dtab
    async with http.post(h.url + "/delegator.json",
                         json={"namespace": "outgoing", "dtab": "", "path": "/svc/a"}) as r:
        assert r.status == 200
    assert router.calls[-1] == ("", "/svc/a")
    async with http.get(h.url + "/delegator.json",
                        params={"path": "/svc/world", "dtab": "/svc => /a |"}) as r:
        assert r.status == 400
        assert (await r.text()).startswith("Invalid dtab: invalid dtab '/svc => /a |' at line 1")
    async with http.get(h.url + "/delegator.json", params={"path": "svc", "dtab": ""}) as r:
        assert r.status == 400 and (await r.text()).startswith("Invalid path: ")
    async with http.post(h.url + "/delegator.json", data="{nope",
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and "Malformed delegation request" in await r.text()
    async with http.post(h.url + "/delegator.json", data="x") as r:
        assert r.status == 415
    async with http.get(h.url + "/delegator.json",
                        params={"path": "/a", "dtab": "", "namespace": "nope"}) as r:
        assert r.status == 404 and "nope" in await r.text()


async def test_delegator_times_out_after_two_seconds(admin) -> None:
    start, http = admin
    h = await start(make_linker(delay=5.0))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with http.get(h.url + "/delegator.json", params={"path": "/a", "dtab": ""}) as r:
        assert r.status == 503 and await r.text() == "Request timed out."
    assert 1.9 < loop.time() - t0 < 4


async def test_security_lists_and_categories(admin) -> None:
    start, http = admin
    sec = AdminSecurityConfig(ui_enabled=False, control_enabled=False,
                              path_whitelist=("/admin/metrics\\.json",),
                              path_blacklist=("/admin/ping",))
    linker = make_linker(sec)
    h = await start(linker)
    expected = {"/admin/ping": 404, "/": 404, "/delegator": 404, "/config.json": 404,
                "/admin/metrics.json": 200, "/client_state.json": 200, "/prom": 200}
    for path, status in expected.items():
        async with http.get(h.url + path) as r:
            assert r.status == status, path
    async with http.post(h.url + "/admin/shutdown") as r:
        assert r.status == 404
    assert linker.shutdowns == []


async def test_shutdown_calls_linker_with_grace(admin) -> None:
    start, http = admin
    linker = make_linker()
    h = await start(linker)
    async with http.get(h.url + "/admin/shutdown") as r:
        assert r.status == 405
    async with http.post(h.url + "/admin/shutdown") as r:
        assert r.status == 200
    for _ in range(100):
        if linker.shutdowns:
            break
        await asyncio.sleep(0.01)
    assert linker.shutdowns == [1234]


async def test_histograms_snapshotted_by_the_admin_task(admin) -> None:
    start, http = admin
    linker = make_linker()
    hist = linker.metrics.scope("rt", "outgoing").histogram("request_latency_ms")
    h = await start(linker, snapshot_secs=0.05)
    hist.add(7)
    for _ in range(200):
        async with http.get(h.url + "/admin/metrics.json") as r:
            body = await r.json()
        if body.get("rt/outgoing/request_latency_ms.count") == 1:
            break
        await asyncio.sleep(0.02)
    assert body["rt/outgoing/request_latency_ms.p50"] == 7
