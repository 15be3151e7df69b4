"""Two nodes on loopback: the shipped k8s/ config, two real `l5d` processes, the fake API server.

Linux routes all of 127.0.0.0/8 to loopback, so node A's pods and router live
on 127.0.1.x and node B's on 127.0.2.x (the classic one-/24-per-node layout);
in hostNetwork mode the routers sit on "node IPs" (127.0.5.10, 127.0.6.10)
outside the pods' /24s, so only nodeName matching can work. The routers run
the ConfigMap config from k8s/l5d.yml or k8s/l5d-hostnetwork.yml, with only
addresses and ports rewritten for loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.fake_apiserver import FakeApiServer, endpoints, fake_k8s  # noqa: F401
from tests.util import async_wait_until, port_open, stop_process

REPO = Path(__file__).resolve().parent.parent


def config_from_manifest(manifest: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((REPO / "k8s" / manifest).read_text())
    (cm,) = [d for d in docs if d and d["kind"] == "ConfigMap"]
    return yaml.safe_load(cm["data"]["config.yaml"])


def outgoing_dtab(manifest: str) -> str:
    (r,) = [r for r in config_from_manifest(manifest)["routers"] if r["label"] == "outgoing"]
    return r["dtab"]


def port_free_on(port: int, *ips: str) -> bool:
    for ip in ips:
        with socket.socket() as s:
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


def shared_free_ports(n: int, *ips: str) -> list[int]:
    """Ports free on every one of `ips` (each node's router uses the same numbers)."""
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind((ips[0], 0))
            port = s.getsockname()[1]
        if port not in out and port_free_on(port, *ips):
            out.append(port)
    return out


@dataclass
class Pod:
    """A backend pod that echoes what the last hop told it, and counts its requests."""

    name: str
    ip: str
    port: int
    hits: list[dict[str, str]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handler(request: web.Request) -> web.Response:
            seen: dict[str, str] = {}
            for k, v in request.headers.items():
                k = k.lower()
                if k.startswith("l5d-") or k == "via":
                    seen[k] = f"{seen[k]}, {v}" if k in seen else v
            self.hits.append(seen)
            headers = {f"x-seen-{k}": v for k, v in seen.items()}
            headers["x-pod"] = self.name
            return web.Response(text=f"{self.name}\n", headers=headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.ip, self.port).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Node:
    name: str
    router_ip: str
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Mesh:
    nodes: dict[str, Node]
    ports: dict[str, int]

    def url(self, node: str, router: str) -> str:
        return f"http://{self.nodes[node].router_ip}:{self.ports[router]}"


def _tail(path: Path) -> str:
    try:
        return path.read_text()[-4000:]
    except OSError:
        return ""


@contextlib.asynccontextmanager
async def mesh(
    tmp: Path, api: FakeApiServer, manifest: str, router_ips: dict[str, str]
) -> AsyncIterator[Mesh]:
    """One `l5d` per node with the manifest's config, and the l5d service's endpoints."""
    outgoing, incoming, ingress, admin = shared_free_ports(4, *router_ips.values())
    ports = {"outgoing": outgoing, "incoming": incoming, "ingress": ingress, "admin": admin}
    api.upsert("endpoints", endpoints("l5d", [(ip, node) for node, ip in router_ips.items()],
                                      ports))
    nodes: dict[str, Node] = {}
    try:
        for node, ip in router_ips.items():
            cfg = config_from_manifest(manifest)
            cfg["admin"].update(ip=ip, port=admin)
            for n in cfg["namers"]:
                n.update(host=api.host, port=api.port)
            for r in cfg["routers"]:
                r["servers"] = [{"ip": ip, "port": ports[r["label"]]}]
                for t in r["interpreter"]["transformers"]:
                    if t["kind"] == "io.l5d.k8s.daemonset":
                        t.update(k8sHost=api.host, k8sPort=api.port)
            path = tmp / f"{node}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            log = tmp / f"{node}.log"
            env = dict(os.environ, PYTHONPATH=str(REPO), NODE_NAME=node, POD_IP=ip)
            for proxy_var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
                env.pop(proxy_var, None)
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "router.cli", "--log-level", "info", str(path)],
                    cwd=tmp, stdout=out, stderr=subprocess.STDOUT, env=env,
                )
            nodes[node] = Node(node, ip, proc, log)
        deadline = time.monotonic() + 20
        for n in nodes.values():
            while not all(port_open(p, n.router_ip) for p in ports.values()):
                if n.proc.poll() is not None:
                    raise AssertionError(f"l5d {n.name} exited {n.proc.returncode}:\n"
                                         f"{_tail(n.log)}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"l5d {n.name} did not listen:\n{_tail(n.log)}")
                await asyncio.sleep(0.05)
        yield Mesh(nodes, ports)
    finally:
        for n in nodes.values():
            if n.proc.poll() is None:
                n.proc.send_signal(signal.SIGTERM)  # all drain at once, then each is reaped
        for n in nodes.values():
            stop_process(n.proc)


async def metrics(session: aiohttp.ClientSession, m: Mesh, node: str) -> dict[str, Any]:
    async with session.get(m.url(node, "admin") + "/admin/metrics.json") as r:
        assert r.status == 200
        return await r.json()


def count(stats: dict[str, Any], router: str, client_contains: str) -> int:
    """Requests a router's clients whose id contains `client_contains` have sent."""
    total = 0
    for k, v in stats.items():
        if (k.startswith(f"rt/{router}/client/") and client_contains in k
                and k.endswith("/requests") and "/service/" not in k):
            total += int(v)
    return total


MODES = {
    # manifest, router IPs: in the pods' /24s, or "node IPs" outside them (hostNetwork)
    "subnet": ("l5d.yml", {"node-a": "127.0.1.10", "node-b": "127.0.2.10"}),
    "hostNetwork": ("l5d-hostnetwork.yml", {"node-a": "127.0.5.10", "node-b": "127.0.6.10"}),
    # an old cluster: no discovery.k8s.io EndpointSlices, so the namer and the daemonset
    # transformer find Endpoints through API discovery
    "subnet-endpoints": ("l5d.yml", {"node-a": "127.0.1.10", "node-b": "127.0.2.10"}),
}

DS = "/%/io.l5d.k8s.daemonset/default/incoming/l5d/#/io.l5d.k8s/default/http/world-v1"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", list(MODES))
async def test_request_goes_node_to_node_through_both_routers(
    mode: str, tmp_path: Path, fake_k8s: FakeApiServer  # noqa: F811
) -> None:
    manifest, router_ips = MODES[mode]
    old_cluster = mode.endswith("-endpoints")
    # EndpointSlices too, as a cluster's controllers write; or none at all
    fake_k8s.mirror_endpoints = not old_cluster
    fake_k8s.serves_endpointslices = not old_cluster
    (pod_port,) = shared_free_ports(1, "127.0.1.21", "127.0.2.21")
    world_b = Pod("world-b", "127.0.2.21", pod_port)
    world_a = Pod("world-a", "127.0.1.21", pod_port)  # on node A, but not (yet) in the service
    hello_a = Pod("hello-a", "127.0.1.22", pod_port)
    for p in (world_b, world_a, hello_a):
        await p.start()
    fake_k8s.upsert("endpoints", endpoints("world-v1", [("127.0.2.21", "node-b")],
                                           {"http": pod_port}))
    fake_k8s.upsert("endpoints", endpoints("hello", [("127.0.1.22", "node-a")],
                                           {"http": pod_port}))
    try:
        async with mesh(tmp_path, fake_k8s, manifest, router_ips) as m, \
                aiohttp.ClientSession() as s:
            # hello's pod on node A calls world through its node's outgoing router.
            async with s.get(m.url("node-a", "outgoing") + "/greet",
                             headers={"Host": "world"}) as r:
                body = await r.text()
                assert r.status == 200, (body, _tail(m.nodes["node-a"].log),
                                         _tail(m.nodes["node-b"].log))
                assert r.headers["x-pod"] == "world-b"
                # What B's incoming router told the pod: the localnode client id ...
                here = router_ips["node-b"] if mode.startswith("subnet") else "node-b"
                assert r.headers["x-seen-l5d-dst-client"] == (
                    f"/%/io.l5d.k8s.localnode/{here}/#/io.l5d.k8s/default/http/world-v1")
                assert r.headers["x-seen-l5d-dst-service"] == "/svc/world"
                # ... after two router hops.
                assert r.headers["x-seen-via"].count("linkerd") == 2
            assert len(world_b.hits) == 1 and world_a.hits == [] and hello_a.hits == []
            kinds = {k for k, _, _ in fake_k8s.list_requests}
            assert ("endpointslices" in kinds) != old_cluster, kinds
            assert ("endpoints" in kinds) == old_cluster, kinds

            # The path, from both routers' metrics: A outgoing -> B incoming -> pod.
            a, b = await metrics(s, m, "node-a"), await metrics(s, m, "node-b")
            assert count(a, "outgoing", DS[1:]) == 1
            assert count(b, "incoming", "%/io.l5d.k8s.localnode/") == 1
            assert count(a, "incoming", "") == 0 and count(b, "outgoing", "") == 0

            # The world pod moves to node A: the next request stays on node A.
            fake_k8s.upsert("endpoints", endpoints("world-v1", [("127.0.1.21", "node-a")],
                                                   {"http": pod_port}))

            async def lands_on_a() -> bool:
                async with s.get(m.url("node-a", "outgoing") + "/",
                                 headers={"Host": "world"}) as r:
                    await r.read()
                    return r.status == 200 and r.headers.get("x-pod") == "world-a"

            deadline = time.monotonic() + 10
            while not await lands_on_a():
                assert time.monotonic() < deadline, "requests never followed the move"
                await asyncio.sleep(0.05)
            a = await metrics(s, m, "node-a")
            assert count(a, "incoming", "%/io.l5d.k8s.localnode/") >= 1

            # Ingress on node B: www.hello.world -> hello on node A via A's incoming router.
            async with s.get(m.url("node-b", "ingress") + "/",
                             headers={"Host": "www.hello.world"}) as r:
                assert r.status == 200 and r.headers["x-pod"] == "hello-a"
                assert "io.l5d.k8s.localnode" in r.headers["x-seen-l5d-dst-client"]
            assert len(hello_a.hits) == 1
            # One watch per object per process, shared by the namer, all three routers and
            # the outgoing and ingress daemonset transformers.
            # (A watch starts right after its list, so wait for the last one to connect.)
            def live(svc: str) -> int:
                if old_cluster:
                    return fake_k8s.live_watches("endpoints", "default", svc)
                return fake_k8s.live_slice_watches(svc)

            def watches_asked(svc: str) -> int:
                if old_cluster:
                    return sum(1 for w in fake_k8s.watch_requests
                               if w[0] == "endpoints" and w[2] == svc)
                return sum(1 for w in fake_k8s.slice_watch_requests if w[1] == svc)

            for svc in ("l5d", "world-v1", "hello"):
                await async_wait_until(lambda svc=svc: live(svc) >= 2, 5, svc)
                assert live(svc) == 2
                assert watches_asked(svc) == 2

            # A service that does not exist: a 502 naming it, and the delegator says why.
            async with s.get(m.url("node-a", "outgoing") + "/",
                             headers={"Host": "nope"}) as r:
                text = await r.text()
                assert r.status == 502 and "k8s service default/nope not found" in text, text
            async with s.get(m.url("node-a", "admin") + "/delegator.json",
                             params={"path": "/svc/nope", "namespace": "outgoing",
                                     "dtab": outgoing_dtab(manifest)}) as r:
                tree = await r.text()
                assert r.status == 200 and "k8s service default/nope not found" in tree, tree

            # The delegator shows the daemonset step and the client id it produced.
            async with s.get(m.url("node-a", "admin") + "/delegator.json",
                             params={"path": "/svc/world", "namespace": "outgoing",
                                     "dtab": outgoing_dtab(manifest)}) as r:
                assert r.status == 200
                text = await r.text()
                assert '"type": "transformation"' in text.replace('":"', '": "'), text
                assert '"io.l5d.k8s.daemonset"' in text and DS in text, text

            # A pod on a node with no router: a 502 that says why.
            fake_k8s.upsert("endpoints", endpoints("world-v1", [("127.0.9.9", "node-z")],
                                                   {"http": pod_port}))

            async def explains() -> bool:
                async with s.get(m.url("node-a", "outgoing") + "/",
                                 headers={"Host": "world"}) as r:
                    text = await r.text()
                    return r.status == 502 and "no default/l5d router pod" in text

            deadline = time.monotonic() + 10
            while not await explains():
                assert time.monotonic() < deadline, "no 502 naming the missing router"
                await asyncio.sleep(0.05)
    finally:
        for p in (world_b, world_a, hello_a):
            await p.close()


@pytest.mark.timeout(60)
async def test_routing_survives_the_api_server_going_away(
    tmp_path: Path, fake_k8s: FakeApiServer  # noqa: F811
) -> None:
    manifest, router_ips = MODES["subnet"]
    fake_k8s.mirror_endpoints = True
    (pod_port,) = shared_free_ports(1, "127.0.2.21")
    world_b = Pod("world-b", "127.0.2.21", pod_port)
    await world_b.start()
    fake_k8s.upsert("endpoints", endpoints("world-v1", [("127.0.2.21", "node-b")],
                                           {"http": pod_port}))
    try:
        async with mesh(tmp_path, fake_k8s, manifest, router_ips) as m, \
                aiohttp.ClientSession() as s:

            async def status() -> int:
                async with s.get(m.url("node-a", "outgoing") + "/",
                                 headers={"Host": "world"}) as r:
                    await r.read()
                    return r.status

            assert await status() == 200
            await fake_k8s.go_down()
            statuses = [await status() for _ in range(20)]
            assert statuses == [200] * 20
            await fake_k8s.come_up()
            try:
                await async_wait_until(
                    lambda: fake_k8s.live_slice_watches("world-v1") >= 2, 15,
                    "both routers to watch again")
            except AssertionError as e:
                logs = "\n".join(f"--- {n.name}\n{_tail(n.log)}" for n in m.nodes.values())
                raise AssertionError(f"{e}\n--- API server requests (time, client port, "
                                     f"path, status)\n{fake_k8s.show_requests()}\n{logs}"
                                     ) from None
            assert await status() == 200
    finally:
        await world_b.close()
