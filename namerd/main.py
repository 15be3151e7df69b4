"""`namerd CONFIG`: load (a bad config stops here with file:line), start storage, namers,
interfaces and admin; SIGTERM/SIGINT stop it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from namerd.config import ConfigError, NamerdConfig, load

log = logging.getLogger("namerd")


async def serve(config: NamerdConfig, stop: asyncio.Event | None = None) -> None:
    from namerd.admin import start_admin
    from namerd.core import Namerd
    from namerd.http_controller import start_http_controller

    namerd = Namerd(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await namerd.start()
        for iface in config.interfaces:
            if iface.kind == "io.l5d.httpController":
                namerd.servers.append(await start_http_controller(namerd, iface.ip, iface.port,
                                                                  iface.heartbeat_s))
            elif iface.kind == "io.l5d.mesh":
                from namerd.mesh import start_mesh

                namerd.servers.append(await start_mesh(namerd, iface.ip, iface.port,
                                                       iface.access_log))
        namerd.servers.append(await start_admin(namerd))
        log.info("namerd ready (storage %s)", namerd.store.kind)
        await stop.wait()
    finally:
        log.info("namerd stopping")
        await namerd.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="namerd", description="l5d-py's namerd: versioned dtabs "
                                 "served to routers (Linkerd's namerd config and APIs)")
    ap.add_argument("config", help="namerd config file (YAML or JSON), or - for stdin")
    ap.add_argument("--validate", action="store_true", help="check the config and exit")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load(args.config)
        if args.validate:
            from namerd.core import Namerd

            Namerd(config, validating=True)
            print(f"{config.source}: ok")
            return 0
    except ConfigError as e:
        print(f"namerd: {e}", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(config))
    except OSError as e:
        print(f"namerd: {e}", file=sys.stderr)
        return 1
    except ConfigError as e:
        print(f"namerd: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
