"""A data-path worker: `python -m router.workers.worker FD` (started by the supervisor).

It reads its config from the supervisor over the inherited socket FD, builds
each router with a mirror interpreter (no namers, no transformers, no admin:
those stay in the supervisor), binds every server with SO_REUSEPORT so the
kernel spreads connections over the workers, and says `ready`. From then on it
serves requests, applies `bound`/`addr` updates to its mirror, answers
`metrics` with an export of its registry, and on `drain` (or SIGTERM, or the
supervisor going away) stops accepting, lets in-flight requests finish for the
grace period, and exits 0. SIGINT is the supervisor's to handle (Ctrl-C
reaches the whole process group): a worker ignores it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from typing import Any

import uvloop

from router.workers import release_startup_memory
from router.workers.ipc import Channel, ChannelClosed

log = logging.getLogger("l5d.worker")


class Worker:
    def __init__(self, channel: Channel, index: int, config: Any) -> None:
        from router.metrics import Metrics
        from router.router import Router
        from router.workers.mirror import MirrorHub

        self.channel = channel
        self.index = index
        self.config = config
        self.metrics = Metrics()
        self.hub = MirrorHub(channel)
        self.routers = [Router(rcfg, (), None, self.metrics,  # type: ignore[arg-type]
                               interpreter=self.hub.interpreter(rcfg.label))
                        for rcfg in config.routers]
        for r in self.routers:
            r.reuse_port = True
        from router.telemetry import Telemetry

        # tracing and access logs run in each worker (the requests are here); spans and
        # lines go out from each one, recentRequests is kept here and merged by the
        # supervisor's /requests.json (`requests`)
        self.telemetry = Telemetry(config, self.metrics)
        for r in self.routers:
            r.telemetry = self.telemetry.for_router(r.config)
        self.admin = None  # the supervisor's (for router.tls.runtime.servers_state)
        self.done = asyncio.Event()
        self._draining = False
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        from router.metrics import snapshot_interval, snapshot_loop
        from router.router import serve_router

        try:
            await self.telemetry.start()
            for r in self.routers:
                await r.start()  # a watched dtab (io.l5d.fs / io.l5d.k8s.configMap)
                # identifiers (an io.l5d.ingress watch in each worker), then its servers;
                # the OSError names the router for the supervisor's log and StartError
                await serve_router(r)
        except BaseException:
            await self._close_routers(0.0)
            raise
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(snapshot_loop(self.metrics, snapshot_interval())))

    def on_metrics(self, msg: dict[str, Any]) -> None:
        from router.workers.merge import export

        self.channel.send({"op": "reply", "rid": msg["rid"], "data": export(self.metrics)})

    def on_clients(self, msg: dict[str, Any]) -> None:
        out: dict[str, Any] = {}
        for r in self.routers:
            if r.clients is not None:
                out.update(r.clients.snapshot())
        self.channel.send({"op": "reply", "rid": msg["rid"], "data": out})

    def on_servers(self, msg: dict[str, Any]) -> None:
        from router.tls.runtime import servers_state

        self.channel.send({"op": "reply", "rid": msg["rid"], "data": servers_state(self)})

    def on_requests(self, msg: dict[str, Any]) -> None:
        out: list[dict[str, Any]] = []
        for recent in self.telemetry.recents:  # io.l5d.recentRequests: this worker's
            out += recent.snapshot()
        self.channel.send({"op": "reply", "rid": msg["rid"], "data": out})

    def on_drain(self, msg: dict[str, Any]) -> None:
        self.drain(int(msg.get("grace_ms", self.config.admin.shutdown_grace_ms)))

    def drain(self, grace_ms: int) -> None:
        if self._draining:
            return
        self._draining = True
        self._tasks.append(asyncio.get_running_loop().create_task(self._drain(grace_ms)))

    async def _drain(self, grace_ms: int) -> None:
        log.info("draining (grace %d ms)", grace_ms)
        await self._close_routers(grace_ms / 1000.0)
        self.channel.send({"op": "drained"})
        await self.channel.drain()
        self.done.set()

    async def _close_routers(self, grace_s: float) -> None:
        from router.router import close_routers

        await close_routers(self.routers, grace_s)
        self.hub.close()
        await self.telemetry.aclose()


async def run(fd: int) -> int:
    from router.config import ConfigError, parse

    sock = socket.socket(fileno=fd)
    channel = await Channel.open(sock, "supervisor")
    try:
        start = await channel.read()
    except ChannelClosed:
        return 1
    index = int(start["worker"])
    _name_logs(index)
    try:
        # The supervisor loaded this config and logged its warnings once; not again here.
        quiet = [logging.getLogger(n) for n in ("router.config", "router.router")]
        for lg in quiet:
            lg.setLevel(logging.ERROR)
        config = parse(json.dumps(start["config"]), start.get("source") or "<config>")
        worker = Worker(channel, index, config)
        for lg in quiet:
            lg.setLevel(logging.NOTSET)
        await worker.start()
    except (ConfigError, OSError) as e:
        log.error("cannot start: %s", e)
        channel.send({"op": "failed", "error": str(e)})
        await channel.drain()
        return 1
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.drain, config.admin.shutdown_grace_ms)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    freed = release_startup_memory()
    log.debug("started; %s bytes of startup memory released", freed)
    channel.send({"op": "ready", "pid": os.getpid()})
    serving = loop.create_task(channel.serve({
        "bound": worker.hub.on_bound, "addr": worker.hub.on_addr,
        "metrics": worker.on_metrics, "clients": worker.on_clients,
        "servers": worker.on_servers, "requests": worker.on_requests,
        "drain": worker.on_drain,
    }))
    done = loop.create_task(worker.done.wait())
    await asyncio.wait([serving, done], return_when=asyncio.FIRST_COMPLETED)
    if not worker.done.is_set():  # the supervisor went away: nobody keeps our names current
        log.warning("supervisor gone; draining")
        worker.drain(config.admin.shutdown_grace_ms)
        await worker.done.wait()
    serving.cancel()
    channel.close()
    return 0


def _name_logs(index: int) -> None:
    fmt = f"%(asctime)s %(levelname)s worker {index} [{os.getpid()}] %(name)s: %(message)s"
    for h in logging.getLogger().handlers:
        h.setFormatter(logging.Formatter(fmt))


def main(argv: list[str]) -> int:
    fd = int(argv[0])
    level = argv[1] if len(argv) > 1 else "info"
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s worker %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(fd))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
