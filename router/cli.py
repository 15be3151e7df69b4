"""`l5d CONFIG` runs the router; `l5d --validate CONFIG` checks a config and exits.

CONFIG may also be a Kubernetes manifest (k8s/l5d.yml): the l5d config in its
ConfigMap is what gets checked or run, with errors at the manifest's lines.

The process runs under uvloop (the data path's speed depends on it). SIGTERM
and SIGINT drain in-flight requests for the admin `shutdownGraceMs` and exit
0. SIGHUP, a change of the config file (unless `--no-watch`) and `POST
/admin/reload` reload the config in place (router/reload.py); a bad one is
refused and the running one keeps serving. A config error is printed as
`file:line: key: problem (expected ...)` and exits 2 before anything listens; a
port that cannot be bound exits 1 with nothing left serving.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import uvloop

from router.config import ConfigError, LinkerConfig, labelled, load, load_all

if TYPE_CHECKING:
    from router.reload import Reloader

log = logging.getLogger("l5d")

EXIT_CONFIG = 2
EXIT_START = 1


def build_linker(config: LinkerConfig, *, validating: bool = False):  # noqa: ANN201 - Linker
    """Build every namer, transformer, identifier and router (no ports bound)."""
    from router.router import Linker

    return Linker(config, validating=validating)


def validate(path: str) -> list[tuple[str, LinkerConfig]]:
    """Load and build everything that can be checked without binding ports: the config,
    or each l5d config in a Kubernetes manifest's ConfigMaps."""
    from router.tls.params import HOST_CHECKS_WARN

    token = HOST_CHECKS_WARN.set(True)
    try:
        configs = load_all(path)
    finally:
        HOST_CHECKS_WARN.reset(token)

    async def build() -> None:  # some plugins want a running loop to exist
        for label, config in configs:
            try:
                linker = build_linker(config, validating=True)
            except ConfigError as e:
                raise labelled(e, label) from None
            await linker.close()

    asyncio.run(build())
    return configs


class Process(Protocol):
    """What `run` serves: a `Linker` (one process) or a `Supervisor` (`workers:` above 1)."""

    async def start(self) -> None: ...
    async def shutdown(self, grace_ms: int | None = None) -> None: ...
    async def wait(self) -> None: ...


async def serve(config: LinkerConfig, *, ready: asyncio.Event | None = None,
                path: str | None = None, watch: bool = True) -> int:
    """Run until SIGTERM/SIGINT. With `path`, SIGHUP (and, with `watch`, a change of the
    file) reloads it; with `workers:` above 1 a supervisor and its data-path workers run
    instead of one Linker, and a reload replaces the workers one by one."""
    from router.reload import Reloader

    process: Process
    if config.workers > 1:
        from router.workers.supervisor import Supervisor

        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        sup = Supervisor(config, log_level=level)
        # the control plane's Linker keeps the reload status; applying rolls the workers
        reloader = Reloader(sup.linker, path, apply=sup.reload_config)
        process = sup
    else:
        linker = build_linker(config)
        reloader = Reloader(linker, path)
        process = linker
    return await run(process, reloader, ready=ready, watch=watch)


async def run(process: Process, reloader: Reloader, *, ready: asyncio.Event | None = None,
              watch: bool = True) -> int:
    """Start `process` with SIGHUP reloading and SIGTERM/SIGINT draining it (for the
    admin's shutdownGraceMs), and wait until it has stopped."""
    loop = asyncio.get_running_loop()
    reloader.install_sighup(loop)
    stopping: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references

    def on_signal(signame: str) -> None:
        log.info("%s received", signame)
        task = loop.create_task(process.shutdown())
        stopping.add(task)
        task.add_done_callback(stopping.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await process.start()
    except OSError as e:
        log.error("cannot start: %s", e)
        return EXIT_START
    from router.workers import release_startup_memory

    log.debug("started; %s bytes of startup memory released", release_startup_memory())
    if watch:
        reloader.watch()
    if ready is not None:
        ready.set()
    await process.wait()
    log.info("stopped")
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="l5d",
        description="l5d-py: a Linkerd 1 compatible service-mesh router.",
    )
    p.add_argument("config", help="config file (YAML or JSON), a Kubernetes manifest whose "
                   "ConfigMap holds one, or - for stdin")
    p.add_argument("--validate", action="store_true",
                   help="check the config (parse, build namers/transformers/identifiers) and exit")
    p.add_argument("--no-watch", action="store_true",
                   help="do not reload when the config file changes (SIGHUP and "
                   "POST /admin/reload still do)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="log level on stderr (default: info)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_logging(args.log_level)
    if args.validate:
        try:
            configs = validate(args.config)
        except ConfigError as e:
            print(f"INVALID: {e}", file=sys.stderr)
            return EXIT_CONFIG
        for label, _config in configs:
            print(f"OK: {args.config} ({label})" if label else f"OK: {args.config}")
        return 0
    try:
        config = load(args.config)
    except ConfigError as e:
        print(f"INVALID: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(config, path=args.config, watch=not args.no_watch))
    except ConfigError as e:  # a plugin parameter found wrong while building
        print(f"INVALID: {e}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
