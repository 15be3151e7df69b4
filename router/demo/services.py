"""Tiny demo HTTP services: `hello` calls `world` through the router.

`hello` answers `Hello (<its ip>) <what world said>`: it calls
`http://world/` through the router (`http_proxy` style, absolute-form
request to the proxy) and forwards the `l5d-ctx-*` headers it received, so a
per-request `l5d-dtab` override made at the first hop (which the router
forwards as `l5d-ctx-dtab`) also steers the second hop. `world` answers
`world (<ip>)!!` and `world-v2` answers `earth (<ip>)!!`.

    python -m router.demo.services world --port 7778
    python -m router.demo.services hello --port 7777 --proxy 127.0.0.1:4140
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

import aiohttp
from aiohttp import web

log = logging.getLogger("l5d.demo")

TEXTS = {"world": "world", "world-v2": "earth"}


def _local_ip(request: web.Request) -> str:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    return sock[0] if sock else "?"


def world_app(text: str) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=f"{text} ({_local_ip(request)})!!")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def hello_app(proxy: str, target: str = "world") -> web.Application:
    """`proxy` is the router's host:port; `target` the Host hello asks for."""
    session: dict[str, aiohttp.ClientSession] = {}

    async def on_startup(app: web.Application) -> None:
        session["s"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))

    async def on_cleanup(app: web.Application) -> None:
        await session["s"].close()

    async def handle(request: web.Request) -> web.Response:
        ctx = {k: v for k, v in request.headers.items() if k.lower().startswith("l5d-ctx-")}
        try:
            async with session["s"].get(
                f"http://{target}/", headers=ctx, proxy=f"http://{proxy}"
            ) as resp:
                body = await resp.text()
                if resp.status != 200:
                    err = resp.headers.get("l5d-err", "")
                    return web.Response(
                        status=502,
                        text=f"hello: {target} answered {resp.status}: {body.strip() or err}\n",
                    )
        except aiohttp.ClientError as e:
            return web.Response(status=502, text=f"hello: calling {target} via {proxy}: {e}\n")
        return web.Response(text=f"Hello ({_local_ip(request)}) {body}")

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def app_for(name: str, proxy: str | None) -> web.Application:
    if name == "hello":
        if not proxy:
            raise ValueError("hello needs --proxy host:port (the router)")
        return hello_app(proxy)
    if name in TEXTS:
        return world_app(TEXTS[name])
    raise ValueError(f"unknown demo service {name!r}; known: hello, {', '.join(TEXTS)}")


async def start(name: str, ip: str, port: int, proxy: str | None = None) -> web.AppRunner:
    runner = web.AppRunner(app_for(name, proxy), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, ip, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("demo %s on http://%s:%d", name, ip, port)
    return runner


async def _serve(name: str, ip: str, port: int, proxy: str | None) -> None:
    runner = await start(name, ip, port, proxy)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m router.demo.services")
    p.add_argument("name", choices=["hello", *TEXTS])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ip", default="127.0.0.1")
    p.add_argument("--proxy", help="the router, host:port (hello only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    try:
        asyncio.run(_serve(args.name, args.ip, args.port, args.proxy))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
