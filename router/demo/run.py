"""`make run`: the demo services plus the router, in one process, in the foreground.

The services' ports come from the `io.l5d.fs` directory the config names
(`configs/disco/hello` says `127.0.0.1 7777`, ...), so what the router
resolves and what is listening cannot disagree. `hello` calls `world` through
the router's first server (the `outgoing` router when there is one).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvloop

from namers.fs import parse_addresses
from router.cli import build_linker, configure_logging
from router.config import ConfigError, LinkerConfig, load
from router.demo import services

log = logging.getLogger("l5d.demo")

DEMO = ("hello", "world", "world-v2")


def demo_endpoints(config: LinkerConfig) -> dict[str, tuple[str, int]]:
    """name -> (ip, port) from the first io.l5d.fs namer's directory."""
    for namer in config.namers:
        if namer.kind == "io.l5d.fs":
            root = str(namer.params["rootDir"])
            out = {}
            for name in DEMO:
                path = os.path.join(root, name)
                try:
                    with open(path, encoding="utf-8") as f:
                        addrs = sorted(parse_addresses(f.read(), path),
                                       key=lambda a: (a.host, a.port))
                except FileNotFoundError:
                    continue
                if addrs:
                    out[name] = (addrs[0].host, addrs[0].port)
            return out
    raise ConfigError("the demo needs an io.l5d.fs namer listing hello, world and world-v2",
                      file=config.source, line=None, key="namers")


def proxy_of(config: LinkerConfig) -> str:
    routers = sorted(config.routers, key=lambda r: r.label != "outgoing")
    server = routers[0].servers[0]
    return f"{server.ip}:{server.port}"


async def run(config: LinkerConfig) -> int:
    linker = build_linker(config)
    proxy = proxy_of(config)
    runners = []
    try:
        for name, (ip, port) in demo_endpoints(config).items():
            runners.append(await services.start(name, ip, port, proxy if name == "hello" else None))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: loop.create_task(linker.shutdown()))
        await linker.start()
        log.info("try: http_proxy=%s curl http://hello", proxy)
        await linker.wait()
        return 0
    except OSError as e:
        log.error("cannot start: %s", e)
        return 1
    finally:
        for r in runners:
            await r.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging("info")
    if len(argv) != 1:
        print("usage: python -m router.demo.run CONFIG", file=sys.stderr)
        return 2
    try:
        config = load(argv[0])
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run(config))
    except ConfigError as e:
        print(f"INVALID: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
