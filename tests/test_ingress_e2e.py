"""linkerd-examples' linkerd-ingress-controller config as a real `l5d` process, with the
example's own Ingress (hello-world-ingress.yml) in the fake API server: a request for
Host world.v2 reaches world-v2, any other host the default backend world-v1 (Linkerd's
IngressIdentifier), and a changed Ingress changes the routing with no restart."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path as FsPath

import aiohttp
import yaml
from aiohttp import web

from tests.fake_apiserver import FakeApiServer, endpoints, fake_k8s, ingress  # noqa: F401
from tests.util import async_wait_until, free_port

DATA = FsPath(__file__).parent / "data" / "linkerd-examples" / "k8s-daemonset" / "k8s"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DATA / name).read_text()) if d]


def _config(api_port: int, admin: int, http: int) -> str:
    """The ConfigMap's config; the API server address given to both plugins (the example
    relies on a kubectl proxy at localhost:8001) and loopback ports, nothing else."""
    (cm,) = [d for d in _docs("linkerd-ingress-controller.yml") if d["kind"] == "ConfigMap"]
    text = cm["data"]["config.yaml"].replace("ip: 0.0.0.0", "ip: 127.0.0.1")
    text = text.replace("port: 9990", f"port: {admin}").replace("port: 80", f"port: {http}")
    def add_api(m: re.Match[str]) -> str:
        pad = " " * (len(m.group(1)) + len(m.group(2) or ""))
        return f"{m.group(0)}\n{pad}host: 127.0.0.1\n{pad}port: {api_port}"

    return re.sub(r"^( *)(- )?kind: (io\.l5d\.k8s|io\.l5d\.ingress)$", add_api, text,
                  flags=re.M)


async def _backend(name: str) -> tuple[web.AppRunner, int]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} {request.path}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_ingress_controller_example_routes_by_the_examples_ingress(
    l5d_process, fake_k8s: FakeApiServer  # noqa: F811
) -> None:
    runners = []
    fake_k8s.mirror_endpoints = True  # EndpointSlices too, as a real cluster has them
    try:
        for svc in ("world-v1", "world-v2", "world-v3"):
            runner, port = await _backend(svc)
            runners.append(runner)
            fake_k8s.upsert("endpoints", endpoints(svc, [("127.0.0.1", "node-a")],
                                                   {"http": port}))
        (ing,) = _docs("hello-world-ingress.yml")
        fake_k8s.upsert("ingresses", ing)  # the example's extensions/v1beta1 object as is
        admin, http = free_port(), free_port()
        proc = await asyncio.to_thread(l5d_process, _config(fake_k8s.port, admin, http))
        async with aiohttp.ClientSession() as s:
            async def get(host: str, path: str = "/") -> tuple[int, str]:
                async with s.get(f"http://127.0.0.1:{http}{path}",
                                 headers={"Host": host}) as r:
                    return r.status, await r.text()

            got = await get("world.v2", "/hi")
            assert got == (200, "world-v2 /hi"), got
            assert await get("world.v2:80") == (200, "world-v2 /")
            assert await get("www.example.com") == (200, "world-v1 /")
            # Edit the Ingress: no default backend, world.v3 added -> followed at once.
            fake_k8s.upsert("ingresses", ingress(
                "hello-world", [("world.v2", None, "world-v2", "http"),
                                ("world.v3", None, "world-v3", "http")],
                ingress_class="linkerd"))

            async def v3() -> bool:
                return (await get("world.v3"))[1] == "world-v3 /"

            for _ in range(100):
                if await v3():
                    break
                await asyncio.sleep(0.1)
            assert await v3()
            # Linkerd's 400 (the edge's clearContext keeps its text from the client).
            assert (await get("www.example.com"))[0] == 400
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/ping", timeout=10) as r:
            assert r.read() == b"pong"
        await async_wait_until(lambda: proc.proc.poll() is None, 1, "the router to run")
    finally:
        for runner in runners:
            await runner.cleanup()


async def test_h2_router_identifies_by_ingress(l5d_process, fake_k8s: FakeApiServer  # noqa: F811
                                               ) -> None:
    """Linkerd's h2 IngressIdentifier: the same rules on `:authority` and `:path` (the
    servicemesh example's h2 ingress router), curl speaking HTTP/2 with prior knowledge."""
    from tests.h2_echo import H2Echo

    fake_k8s.upsert("ingresses", ingress("grpc", [("api.example.com", "/helloworld\\..*",
                                                   "greeter", 8080)], namespace="prod"))
    admin, h2port = free_port(), free_port()
    with H2Echo() as echo:
        config = f"""
admin: {{ip: 127.0.0.1, port: {admin}}}
routers:
- protocol: h2
  experimental: true
  label: h2-ingress
  identifier:
    kind: io.l5d.ingress
    host: 127.0.0.1
    port: {fake_k8s.port}
  dtab: /svc/prod/8080/greeter => /$/inet/127.0.0.1/{echo.port};
  servers:
  - ip: 127.0.0.1
    port: {h2port}
"""
        await asyncio.to_thread(l5d_process, config)

        def curl(authority: str, path: str) -> str:
            import subprocess

            return subprocess.run(
                ["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge", "-o", "/dev/null",
                 "-w", "%{http_code}", "-H", f"Host: {authority}",
                 f"http://127.0.0.1:{h2port}{path}"],
                capture_output=True, text=True, timeout=30).stdout

        assert await asyncio.to_thread(curl, "api.example.com:443",
                                       "/helloworld.Greeter/SayHello") == "200"
        assert await asyncio.to_thread(curl, "api.example.com", "/other") == "400"
