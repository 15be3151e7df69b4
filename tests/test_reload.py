"""Live reload (router/reload.py) against real ports, under load, counting every request.

Each test runs a Linker with its Reloader on real sockets, real backends and an fs namer,
keeps a load of keep-alive clients going, changes the config file (the Reloader polls it,
as it follows a ConfigMap mount), and asserts the new behaviour shows within a second
while no request fails. One test runs `python -m router.cli` and reloads it with SIGHUP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path as FsPath
from typing import Any

import aiohttp
import pytest

from router.config import load
from router.http.testing import Backend
from router.reload import Reloader
from router.router import Linker
from tests.fake_apiserver import fake_k8s  # noqa: F401
from tests.util import async_wait_until, free_port, port_open

CHANGE_WITHIN_S = 1.0  # the issue's bound: new behaviour within a second of the change


class Load:
    """`workers` keep-alive clients sending GETs in a loop; every outcome is counted."""

    def __init__(self, url: str, host: str = "web", workers: int = 4,
                 ssl_ctx: ssl.SSLContext | None = None, path: str = "/") -> None:
        self.url, self.host, self.workers, self.path = url, host, workers, path
        self.ssl_ctx = ssl_ctx
        self.ok = 0
        self.failures: list[str] = []
        self.seen: list[tuple[float, str]] = []  # (time, X-Backend) of each response
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Load:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.workers, ssl=self.ssl_ctx or False))
        self._tasks = [asyncio.create_task(self._run()) for _ in range(self.workers)]
        await async_wait_until(lambda: self.ok >= 20, 20, "load flowing")
        return self

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async with self.session.get(self.url + self.path,
                                            headers={"Host": self.host}) as r:
                    await r.read()
                    if r.status != 200:
                        self.failures.append(f"{r.status} {r.headers.get('l5d-err')}")
                    else:
                        self.ok += 1
                        self.seen.append((time.monotonic(), r.headers.get("X-Backend", "")))
            except (aiohttp.ClientError, OSError) as e:
                self.failures.append(f"{type(e).__name__}: {e}")
            await asyncio.sleep(0.002)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.session.close()

    def backends_since(self, t: float) -> Counter[str]:
        return Counter(b for at, b in self.seen if at >= t)

    async def first_after(self, t: float, backend: str, timeout: float = 10) -> float:
        """Seconds from `t` to the first response from `backend`."""
        await async_wait_until(lambda: any(at >= t and b == backend for at, b in self.seen),
                               timeout, f"a response from {backend}")
        return min(at for at, b in self.seen if at >= t and b == backend) - t


class Setup:
    def __init__(self, tmp: FsPath) -> None:
        self.tmp = tmp
        self.path = tmp / "l5d.yaml"
        self.disco = tmp / "disco"
        self.disco.mkdir()
        self.admin = free_port()
        self.port = free_port()
        self.backends: dict[str, Backend] = {}

    async def backend(self, name: str) -> Backend:
        b = self.backends[name] = await Backend(name).start()
        (self.disco / name).write_text(f"127.0.0.1 {b.port}\n")
        return b

    def write(self, text: str) -> None:
        """Replace the file at once (write + rename), as editors and kubelet do."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(text))
        os.replace(tmp, self.path)

    def config(self, *, dtab: str = "/svc/web => /#/io.l5d.fs/a", extra_router: str = "",
               servers: str = "", namers: str = "", routers: str = "") -> str:
        servers = servers or f"  - port: {self.port}\n"
        namers = namers or f"- kind: io.l5d.fs\n  rootDir: {self.disco}\n"
        return (f"admin: {{port: {self.admin}, shutdownGraceMs: 2000}}\n"
                f"namers:\n{namers}"
                "routers:\n"
                f"- protocol: http\n  label: web\n  dtab: {dtab}\n{extra_router}"
                f"  servers:\n{servers}{routers}")

    async def start(self, text: str) -> tuple[Linker, Reloader]:
        self.write(text)
        linker = Linker(load(str(self.path)))
        await linker.start()
        reloader = Reloader(linker, str(self.path), self.path.read_text(), poll_s=0.1)
        reloader.watch()
        self.linker, self.reloader = linker, reloader
        return linker, reloader

    async def close(self) -> None:
        await self.linker.shutdown(500)
        for b in self.backends.values():
            await b.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def setup(tmp_path: FsPath) -> Any:
    s = Setup(tmp_path)
    yield s
    if hasattr(s, "linker"):
        await s.close()


async def _admin(setup: Setup, path: str, method: str = "GET",
                 params: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"http://127.0.0.1:{setup.admin}{path}",
                             params=params) as r:
            body = await r.json() if "json" in r.content_type else await r.text()
            return r.status, body


async def test_a_dtab_change_in_the_file_routes_anew_within_a_second_with_no_failure(
    setup: Setup,
) -> None:
    await setup.backend("a")
    await setup.backend("b")
    await setup.start(setup.config())
    async with Load(setup.url) as load_:
        t = time.monotonic()
        setup.write(setup.config(dtab="/svc/web => /#/io.l5d.fs/b"))
        took = await load_.first_after(t, "b")
        await asyncio.sleep(0.3)
        settled = time.monotonic()
        await async_wait_until(lambda: load_.backends_since(settled)["b"] >= 20, 10, "more b")
    assert took < CHANGE_WITHIN_S, f"the new dtab took {took:.2f} s"
    assert load_.failures == [], load_.failures[:5]
    assert load_.backends_since(settled) == Counter({"b": load_.backends_since(settled)["b"]})
    status, state = await _admin(setup, "/admin/reload.json")
    assert state["version"] == 2 and state["lastError"] is None
    assert state["history"][0]["changes"] == ["router web: dtab"]
    # the delegator and the dashboard see the running dtab
    status, tree = await _admin(setup, "/delegator.json", params={
        "path": "/svc/web", "namespace": "web", "dtab": setup.linker.routers[0].base_dtab.show})
    assert status == 200 and "/#/io.l5d.fs/b" in str(tree)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{setup.admin}/config.json") as r:
            assert r.headers["l5d-config-version"] == "2"
            assert (await r.json())["routers"][0]["dtab"] == "/svc/web => /#/io.l5d.fs/b"
    print(f"dtab change: first new response after {took * 1000:.0f} ms, "
          f"{load_.ok} requests, 0 failed")


async def test_a_bad_config_is_refused_the_old_one_keeps_serving_until_a_good_one(
    setup: Setup,
) -> None:
    await setup.backend("a")
    await setup.backend("b")
    linker, reloader = await setup.start(setup.config())
    async with Load(setup.url) as load_:
        setup.write(setup.config(dtab="/svc/web => /#/io.l5d.fs/b")
                    .replace("label: web", "label: web\n  bindingTimeoutMs: -5"))
        await async_wait_until(lambda: reloader.last_error is not None, 10, "the refusal")
        t = time.monotonic()
        await async_wait_until(lambda: load_.backends_since(t)["a"] >= 20, 10, "old serving")
        assert load_.backends_since(t)["b"] == 0
        error = reloader.last_error
        assert error is not None and f"{setup.path}:8: routers[0].bindingTimeoutMs" in error
        status, state = await _admin(setup, "/admin/reload.json")
        assert state["lastError"] == error and state["version"] == 1
        status, text = await _admin(setup, "/admin/metrics.json")
        assert text["l5d/reload/config_error"] == 1.0 and text["l5d/reload/failures"] == 1
        # POST /admin/reload says the same, with a 400
        status, state = await _admin(setup, "/admin/reload", "POST")
        assert status == 400 and "bindingTimeoutMs" in state["lastError"]
        # a port already taken: refused too, nothing changed (the router keeps its port)
        with __import__("socket").socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            setup.write(setup.config(servers=f"  - port: {taken}\n"))
            await async_wait_until(lambda: "in use" in (reloader.last_error or ""), 10,
                                   "the bind failure")
        assert port_open(setup.port)
        # a good one clears the error
        t = time.monotonic()
        setup.write(setup.config(dtab="/svc/web => /#/io.l5d.fs/b"))
        await load_.first_after(t, "b")
    assert load_.failures == [], load_.failures[:5]
    status, text = await _admin(setup, "/admin/metrics.json")
    assert text["l5d/reload/config_error"] == 0.0
    assert reloader.last_error is None and reloader.version == 2


async def test_policy_and_namer_changes_apply_in_place_under_load(setup: Setup) -> None:
    await setup.backend("a")
    await setup.backend("b")
    other = setup.tmp / "disco2"
    other.mkdir()
    (other / "a").write_text(f"127.0.0.1 {setup.backends['b'].port}\n")
    await setup.start(setup.config())

    async def success_class() -> str:
        async with aiohttp.ClientSession() as s:
            async with s.get(setup.url + "/?status=500", headers={"Host": "web"}) as r:
                return r.headers.get("l5d-success-class", "")

    async with Load(setup.url) as load_:
        assert await success_class() == "0.0"  # nonRetryable5XX: a 500 is a failure
        t = time.monotonic()
        svc = "  service:\n    responseClassifier:\n      kind: io.l5d.http.allSuccessful\n"
        setup.write(setup.config(extra_router=svc))
        await async_wait_until(lambda: setup.reloader.version == 2, 10, "reloaded")
        assert await success_class() == "1.0"
        policy_took = time.monotonic() - t
        # the namer: a new rootDir where `a` is backend b
        t = time.monotonic()
        setup.write(setup.config(namers=f"- kind: io.l5d.fs\n  rootDir: {other}\n",
                                 extra_router=svc))
        namer_took = await load_.first_after(t, "b")
    assert load_.failures == [], load_.failures[:5]
    assert policy_took < CHANGE_WITHIN_S + 0.5 and namer_took < CHANGE_WITHIN_S
    assert setup.reloader.history[-2].changes == ["router web: service"]
    assert setup.reloader.history[-1].changes == [
        "namer /io.l5d.fs (io.l5d.fs) changed", "router web: namers"]


async def test_a_server_port_change_listens_first_and_drains_the_old_port(setup: Setup) -> None:
    await setup.backend("a")
    keep = free_port()
    second = (f"- protocol: http\n  label: other\n  dtab: /svc/web => /#/io.l5d.fs/a\n"
              f"  servers:\n  - port: {keep}\n")
    await setup.start(setup.config(routers=second))
    new_port = free_port()
    async with Load(f"http://127.0.0.1:{keep}") as load_:
        async with aiohttp.ClientSession() as s:
            # requests in flight on the old port when the reload happens
            slow = [asyncio.create_task(s.get(setup.url + "/slow?ms=800",
                                              headers={"Host": "web"})) for _ in range(5)]
            await asyncio.sleep(0.2)
            t = time.monotonic()
            setup.write(setup.config(servers=f"  - port: {new_port}\n", routers=second))
            await async_wait_until(lambda: port_open(new_port), 10, "the new port")
            took = time.monotonic() - t
            for r in await asyncio.gather(*slow):
                assert r.status == 200 and await r.text() == "slow"
            async with s.get(f"http://127.0.0.1:{new_port}/", headers={"Host": "web"}) as r:
                assert r.status == 200
        await async_wait_until(lambda: not port_open(setup.port), 10, "the old port closed")
    assert load_.failures == [], load_.failures[:5]
    assert took < CHANGE_WITHIN_S
    status, servers = await _admin(setup, "/server_state.json")
    assert sorted(s["port"] for s in servers) == sorted([keep, new_port, setup.admin])


async def test_same_port_new_settings_take_over_the_socket_with_no_failure(
    setup: Setup,
) -> None:
    """maxConcurrentRequests changes on the port the load is on: the new server accepts on
    a dup of the listening socket, existing connections keep going."""
    await setup.backend("a")
    await setup.start(setup.config())
    async with Load(setup.url, workers=6) as load_:
        t = time.monotonic()
        setup.write(setup.config(servers=f"  - port: {setup.port}\n"
                                 "    maxConcurrentRequests: 1000\n"))
        await async_wait_until(lambda: setup.reloader.version == 2, 10, "reloaded")
        handle = setup.linker.routers[0].handle
        assert handle.servers[0].shedder is not None and len(handle.retired) == 1
        # fresh connections land on the new server
        async with aiohttp.ClientSession() as s:
            for _ in range(5):
                async with s.get(setup.url, headers={"Host": "web",
                                                     "Connection": "close"}) as r:
                    assert r.status == 200
        await async_wait_until(lambda: load_.ok > 200 and time.monotonic() - t > 1, 20)
    assert load_.failures == [], load_.failures[:5]


async def test_routers_added_and_removed(setup: Setup) -> None:
    await setup.backend("a")
    extra_port = free_port()
    second = (f"- protocol: http\n  label: extra\n  dtab: /svc/web => /#/io.l5d.fs/a\n"
              f"  servers:\n  - port: {extra_port}\n")
    await setup.start(setup.config())
    async with Load(setup.url) as load_:
        setup.write(setup.config(routers=second))
        await async_wait_until(lambda: port_open(extra_port), 10, "the added router")
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{extra_port}/", headers={"Host": "web"}) as r:
                assert r.status == 200
        setup.write(setup.config())
        await async_wait_until(lambda: not port_open(extra_port), 10, "the removed router")
        assert [r.label for r in setup.linker.routers] == ["web"]
    assert load_.failures == [], load_.failures[:5]


async def test_tls_certificate_rotated_on_reload_under_tls_load(setup: Setup) -> None:
    from tests.tls_pki import make_pki

    pki = make_pki(setup.tmp / "pki")
    await setup.backend("a")
    cert, key = setup.tmp / "tls.crt", setup.tmp / "tls.key"

    def publish(name: str) -> None:
        pair = pki.issue(name)
        cert.write_bytes(pair.cert.read_bytes())
        key.write_bytes(pair.key.read_bytes())

    publish("one.l5d.test")
    servers = f"  - port: {setup.port}\n    tls: {{certPath: {cert}, keyPath: {key}}}\n"
    await setup.start(setup.config(servers=servers))
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
    ctx.check_hostname = False

    def subject() -> str:
        import socket

        with socket.create_connection(("127.0.0.1", setup.port), timeout=5) as raw, \
                ctx.wrap_socket(raw) as s:
            return str(s.getpeercert()["subject"])

    loop = asyncio.get_running_loop()
    assert "one.l5d.test" in await loop.run_in_executor(None, subject)
    async with Load(f"https://127.0.0.1:{setup.port}", ssl_ctx=ctx) as load_:
        publish("two.l5d.test")
        t = time.monotonic()
        status, _ = await _admin(setup, "/admin/reload", "POST")  # an explicit reload re-reads
        assert status == 200
        assert "two.l5d.test" in await loop.run_in_executor(None, subject)
        took = time.monotonic() - t
        await asyncio.sleep(0.3)
    assert load_.failures == [], load_.failures[:5]
    assert took < CHANGE_WITHIN_S


async def test_sighup_reloads_a_running_process(tmp_path: FsPath) -> None:
    from tests.conftest import _start_process, _wait_ports

    s = Setup(tmp_path)
    await s.backend("a")
    await s.backend("b")
    s.write(s.config())
    log_path = tmp_path / "l5d.log"
    proc = _start_process([sys.executable, "-m", "router.cli", str(s.path), "--no-watch"],
                          log_path, tmp_path)
    try:
        await asyncio.get_running_loop().run_in_executor(
            None, _wait_ports, proc, [s.port, s.admin], log_path)
        async with Load(s.url) as load_:
            s.write(s.config(dtab="/svc/web => /#/io.l5d.fs/b"))
            await asyncio.sleep(0.5)  # --no-watch: the file alone changes nothing
            assert load_.backends_since(time.monotonic() - 0.2)["b"] == 0
            t = time.monotonic()
            proc.send_signal(signal.SIGHUP)
            took = await load_.first_after(t, "b")
        assert proc.poll() is None, log_path.read_text()
        assert load_.failures == [], load_.failures[:5]
        assert took < CHANGE_WITHIN_S
        assert "config " in log_path.read_text() and "reloaded (SIGHUP)" in log_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        for b in s.backends.values():
            await b.close()


# ---------------------------------------------------------------------------
# Interpreters whose dtab lives outside the config


def _publish(mount: FsPath, version: str, files: dict[str, str]) -> None:
    """A ConfigMap volume update as kubelet does it: a new ..<version> dir, ..data swapped."""
    d = mount / f"..{version}"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")
    link = mount / "..data_tmp"
    link.symlink_to(d.name)
    os.replace(link, mount / "..data")


async def test_fs_interpreter_follows_its_dtab_file_in_a_configmap_mount(setup: Setup) -> None:
    await setup.backend("a")
    await setup.backend("b")
    mount = setup.tmp / "dtab-volume"
    mount.mkdir()
    _publish(mount, "v1", {"dtab": "/svc/web => /#/io.l5d.fs/a;"})
    interp = f"  interpreter:\n    kind: io.l5d.fs\n    dtabFile: {mount}/dtab\n"
    # the router's dtab comes after the file's: here it only adds a name
    await setup.start(setup.config(dtab="/svc/other => /#/io.l5d.fs/a", extra_router=interp))
    router = setup.linker.routers[0]
    assert router.base_dtab.show == "/svc/web=>/#/io.l5d.fs/a;/svc/other=>/#/io.l5d.fs/a"
    async with Load(setup.url) as load_:
        t = time.monotonic()
        _publish(mount, "v2", {"dtab": "/svc/web => /#/io.l5d.fs/b;"})
        took = await load_.first_after(t, "b")
        # a dtab that does not parse: the last good one keeps serving, the error is shown
        _publish(mount, "v3", {"dtab": "/svc/web => "})
        await async_wait_until(lambda: router.dtab_source.last_error is not None, 10, "error")
        t = time.monotonic()
        await async_wait_until(lambda: load_.backends_since(t)["b"] >= 20, 10, "b serving")
    assert load_.failures == [], load_.failures[:5]
    assert took < CHANGE_WITHIN_S
    status, state = await _admin(setup, "/web/interpreter_state/io.l5d.fs/dtab.json")
    assert status == 200 and state["dtab"] == "/svc/web=>/#/io.l5d.fs/b"
    assert "invalid dtab" in state["error"] and state["updates"] == 2
    # the delegator evaluates the running dtab
    status, tree = await _admin(setup, "/delegator.json", params={
        "path": "/svc/web", "namespace": "web", "dtab": router.base_dtab.show})
    assert "/#/io.l5d.fs/b" in str(tree)


def test_fs_interpreter_dtab_file_is_checked_at_load(tmp_path: FsPath) -> None:
    from router.config import ConfigError, parse

    bad = tmp_path / "dtab"
    bad.write_text("/svc => ")
    for path, words in ((tmp_path / "missing", "cannot read dtab file"),
                        (bad, "invalid dtab")):
        text = ("routers:\n- protocol: http\n  interpreter:\n    kind: io.l5d.fs\n"
                f"    dtabFile: {path}\n  servers:\n  - port: {free_port()}\n")
        with pytest.raises(ConfigError) as info:
            parse(text, "x.yaml")
        assert str(info.value).startswith("x.yaml:5: routers[0].interpreter.dtabFile: ")
        assert words in str(info.value)


async def test_configmap_interpreter_follows_the_configmap_under_load(
    setup: Setup, fake_k8s: Any,  # noqa: F811
) -> None:
    from tests.fake_apiserver import config_map

    await setup.backend("a")
    await setup.backend("b")
    fake_k8s.upsert("configmaps", config_map("l5d-dtabs", {"web": "/svc/web => /#/io.l5d.fs/a"}))
    interp = ("  interpreter:\n    kind: io.l5d.k8s.configMap\n    experimental: true\n"
              f"    host: 127.0.0.1\n    port: {fake_k8s.port}\n"
              "    name: l5d-dtabs\n    filename: web\n")
    await setup.start(setup.config(dtab="/svc/x => /#/io.l5d.fs/a", extra_router=interp))
    router = setup.linker.routers[0]
    assert router.base_dtab.show.startswith("/svc/web=>/#/io.l5d.fs/a")
    async with Load(setup.url) as load_:
        t = time.monotonic()
        fake_k8s.upsert("configmaps",
                        config_map("l5d-dtabs", {"web": "/svc/web => /#/io.l5d.fs/b"}))
        took = await load_.first_after(t, "b")
        # the watch breaks and history is compacted: it lists again and follows on
        fake_k8s.expire_history()
        fake_k8s.drop_watches()
        fake_k8s.upsert("configmaps",
                        config_map("l5d-dtabs", {"web": "/svc/web => /#/io.l5d.fs/a"}))
        t = time.monotonic()
        await load_.first_after(t, "a")
        # the key goes away: the last good dtab stays
        fake_k8s.upsert("configmaps", config_map("l5d-dtabs", {"other": "/a => /b"}))
        await async_wait_until(lambda: "no key 'web'" in (router.dtab_source.last_error or ""),
                               10, "the missing key reported")
        t = time.monotonic()
        await async_wait_until(lambda: load_.backends_since(t)["a"] >= 20, 10, "a serving")
    assert load_.failures == [], load_.failures[:5]
    assert took < CHANGE_WITHIN_S
    status, state = await _admin(setup, "/web/interpreter_state/io.l5d.k8s.configMap/dtab.json")
    assert state["source"] == "ConfigMap default/l5d-dtabs key web" and state["watches"] >= 2
    assert ("configmaps", "default", "l5d-dtabs") in fake_k8s.list_requests


def test_configmap_interpreter_is_experimental_as_in_linkerd() -> None:
    from router.config import ConfigError, parse

    text = ("routers:\n- protocol: http\n  interpreter:\n    kind: io.l5d.k8s.configMap\n"
            f"    name: x\n    filename: y\n  servers:\n  - port: {free_port()}\n")
    with pytest.raises(ConfigError) as info:
        parse(text, "x.yaml")
    assert "experimental: true" in str(info.value)


async def test_the_config_in_a_configmap_mount_is_followed_through_the_symlink_swap(
    setup: Setup,
) -> None:
    """l5d's own config mounted from a ConfigMap: config.yaml -> ..data/config.yaml, and
    kubelet swaps ..data to a new directory (the file itself is never written)."""
    await setup.backend("a")
    await setup.backend("b")
    mount = setup.tmp / "config-volume"
    mount.mkdir()
    _publish(mount, "v1", {"config.yaml": setup.config()})
    setup.path = mount / "config.yaml"
    linker = Linker(load(str(setup.path)))
    await linker.start()
    setup.linker = linker
    setup.reloader = Reloader(linker, str(setup.path), poll_s=0.1)
    setup.reloader.watch()
    async with Load(setup.url) as load_:
        t = time.monotonic()
        _publish(mount, "v2", {"config.yaml": setup.config(dtab="/svc/web => /#/io.l5d.fs/b")})
        took = await load_.first_after(t, "b")
    assert load_.failures == [], load_.failures[:5]
    assert took < CHANGE_WITHIN_S
    assert setup.reloader.version == 2 and setup.reloader.history[-1].trigger == "file changed"


async def test_workers_a_reload_replaces_every_worker_with_no_failed_request(
    tmp_path: FsPath,
) -> None:
    """`workers: 2`: the supervisor reloads its control plane, then starts a worker with the
    new config beside each old one (SO_REUSEPORT) before the old one drains."""
    from tests.conftest import _start_process, _wait_ports

    s = Setup(tmp_path)
    await s.backend("a")
    await s.backend("b")
    s.write("workers: 2\n" + s.config())
    log_path = tmp_path / "l5d.log"
    proc = _start_process([sys.executable, "-m", "router.cli", str(s.path)], log_path, tmp_path)
    try:
        await asyncio.get_running_loop().run_in_executor(
            None, _wait_ports, proc, [s.port, s.admin], log_path)
        status, before = await _admin(s, "/workers.json")
        async with Load(s.url) as load_:
            t = time.monotonic()
            s.write("workers: 2\n" + s.config(dtab="/svc/web => /#/io.l5d.fs/b"))
            took = await load_.first_after(t, "b", timeout=30)
            await async_wait_until(lambda: "workers now on the new config" in
                                   log_path.read_text(), 30, "both workers replaced")
            settled = time.monotonic()
            await async_wait_until(lambda: load_.backends_since(settled)["b"] >= 20, 10)
            assert load_.backends_since(settled)["a"] == 0
            # a bad config: refused, the workers keep serving b
            s.write("workers: 2\n" + s.config(dtab="/svc/web => "))
            await async_wait_until(lambda: "config reload refused" in log_path.read_text(),
                                   10, "the refusal")
            t = time.monotonic()
            await async_wait_until(lambda: load_.backends_since(t)["b"] >= 20, 10)
        assert load_.failures == [], load_.failures[:5]
        status, after = await _admin(s, "/workers.json")
        pids = lambda w: sorted(x["pid"] for x in w["workers"])  # noqa: E731
        assert len(pids(after)) == 2 and set(pids(after)).isdisjoint(pids(before)), (before,
                                                                                     after)
        status, state = await _admin(s, "/admin/reload.json")
        assert state["version"] == 2 and "dtab" in str(state["lastError"])
        print(f"workers reload: first response from the new config after {took:.2f} s, "
              f"{load_.ok} requests, 0 failed")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()[-3000:]
        for b in s.backends.values():
            await b.close()


async def test_a_telemeter_added_by_a_reload_sees_the_requests(setup: Setup) -> None:
    """`telemetry:` changes: a new set of telemeters is started and every router is
    rebuilt to feed it (io.l5d.recentRequests here, read back at /requests.json)."""
    await setup.backend("a")
    await setup.start(setup.config())
    assert setup.linker.routers[0].handle.runtime.telemetry is None
    async with Load(setup.url) as load_:
        setup.write("telemetry:\n- kind: io.l5d.recentRequests\n  sampleRate: 1.0\n"
                    + setup.config())
        await async_wait_until(lambda: setup.reloader.version == 2, 10, "reloaded")
        rt = setup.linker.routers[0].handle.runtime
        assert rt.telemetry is not None and rt.telemetry.recents
        await async_wait_until(lambda: len(rt.telemetry.recents[0].snapshot()) > 0, 10,
                               "recent requests")

        async def recent_json() -> Any:  # the admin restarted with the new telemetry
            try:
                return (await _admin(setup, "/requests.json"))[1]
            except aiohttp.ClientError:
                return None
        deadline = time.monotonic() + 10
        body = None
        while time.monotonic() < deadline and not isinstance(body, (dict, list)):
            body = await recent_json()
            await asyncio.sleep(0.1)
        assert body and "web" in str(body)
    assert load_.failures == [], load_.failures[:5]
