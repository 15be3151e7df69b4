"""Live reconfiguration: a new config applied to a running process, in place.

Three triggers, one path: the config file changing on disk (polled; a Kubernetes
ConfigMap mount swaps its `..data` symlink atomically, which changes the identity
`router.tls.context.file_identity` sees), SIGHUP, and `POST /admin/reload`.

A reload is all or nothing. The new config is loaded with the same loader as at
start (file:line errors), then everything is built (namers, transformers,
identifiers, routers' parts) and new listeners are bound *before* anything running
is touched; a failure anywhere undoes what was built and leaves the old config
serving, with the error logged, kept in `status_json()` (the admin's
`/admin/reload.json` and dashboard) and in the `l5d/reload/config_error` gauge
until a good config arrives.

Applying is generic over a router's parts: an unchanged router is left alone; a
changed one is rebuilt as a new `Router` and its data-path runtime is swapped under
the running servers, so connections stay open and requests in flight finish on what
they started with. Clients (pools, balancers, stats) carry over; a client whose
params changed is rebuilt on its next request and the old one closes once idle.
A server whose settings changed on the same port takes over the listening socket (a
dup of it: no moment without a listener); a new port listens before a removed one
drains; a removed router drains. Namers whose config did not change are kept (their
watches stay), changed ones are started before use and the old ones closed after.

`Reloader.reload()` is what a supervisor calls (or sends SIGHUP for) per worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from namers.base import close_namers
from router.config import ConfigError, LinkerConfig, load, plain
from router.router import LOCAL_NAMER_INTERPRETERS
from router.tls.context import file_identity

log = logging.getLogger("l5d.reload")

POLL_S = 0.25  # how often the config file's identity is checked
HISTORY = 20  # reload attempts remembered for the admin


@dataclasses.dataclass
class Attempt:
    at: float
    trigger: str
    ok: bool
    version: int
    changes: list[str]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Reloader:
    """Reloads `linker` from `path`: on file change (`watch()`), SIGHUP, or `reload()`."""

    def __init__(self, linker: Any, path: str | None, text: str | None = None,
                 *, poll_s: float = POLL_S,
                 apply: Callable[[LinkerConfig], Awaitable[list[str]]] | None = None) -> None:
        """`apply(config) -> changes` makes a loaded config current (default:
        `apply_config(linker, config)`; a supervisor of workers passes its own)."""
        self.linker = linker
        self.apply = apply or (lambda config: apply_config(linker, config))
        self.path = path if path and path != "-" else None
        self.poll_s = poll_s
        self.version = 1
        self.loaded_at = time.time()
        self.digest = _digest(text) if text is not None else self._file_digest()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.history: list[Attempt] = []
        self._identity = file_identity((self.path,)) if self.path else None
        self._lock = asyncio.Lock()
        self._watch_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        scope = linker.metrics.scope("l5d", "reload")
        self._attempts = scope.counter("attempts")
        self._successes = scope.counter("success")
        self._failures = scope.counter("failures")
        scope.gauge(lambda: 1.0 if self.last_error else 0.0, "config_error")
        scope.gauge(lambda: float(self.version), "version")
        linker.reloader = self
        linker.stop_hooks.append(self.close)

    # -- triggers
    def watch(self) -> None:
        """Poll the config file; a change (content, or the symlink swapped) reloads it."""
        if self.path is not None and self._watch_task is None:
            self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                ident = file_identity((self.path,))  # type: ignore[arg-type]
                if ident == self._identity:
                    continue
                self._identity = ident
                await self.reload("file changed", only_if_changed=True)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop watching silently
                log.exception("watching %s failed", self.path)

    def install_sighup(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """SIGHUP reloads (it no longer ends the process)."""
        loop = loop or asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._spawn, "SIGHUP")

    def _spawn(self, trigger: str) -> None:
        log.info("%s received: reloading %s", trigger, self.path or "(no config file)")
        task = asyncio.get_running_loop().create_task(self.reload(trigger))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the reload
    async def reload(self, trigger: str = "admin", *, only_if_changed: bool = False) -> bool:
        """Load, build and apply the config file. True when it is now in use (or unchanged)."""
        async with self._lock:
            if self.path is None:
                self._refused(trigger, "the config was read from stdin: nothing to reload")
                return False
            try:
                with open(self.path, encoding="utf-8") as f:
                    text = f.read()
            except OSError as e:
                self._refused(trigger, f"{self.path}: cannot read config: {e.strerror}")
                return False
            digest = _digest(text)
            if only_if_changed and digest == self.digest and self.last_error is None:
                return True  # touched, not changed (a ConfigMap resync)
            self._attempts.incr()
            try:
                config = load(self.path, text)
                changes = await self.apply(config)
            except ConfigError as e:
                self._refused(trigger, str(e))
                return False
            except OSError as e:  # a new port that cannot be bound
                self._refused(trigger, f"{self.path}: {e.strerror or e}")
                return False
            except Exception as e:
                log.exception("reloading %s failed", self.path)
                self._refused(trigger, f"{self.path}: {type(e).__name__}: {e}")
                return False
            self.digest = digest
            self.version += 1
            self.loaded_at = time.time()
            self.last_error = self.last_error_at = None
            self._successes.incr()
            self._remember(Attempt(self.loaded_at, trigger, True, self.version, changes))
            log.info("config %s reloaded (%s): version %d; %s", self.path, trigger, self.version,
                     "; ".join(changes) or "nothing changed")
            return True

    def _refused(self, trigger: str, error: str) -> None:
        self.last_error = error
        self.last_error_at = time.time()
        self._failures.incr()
        self._remember(Attempt(self.last_error_at, trigger, False, self.version, [], error))
        log.error("config reload refused (%s): %s; still serving version %d", trigger, error,
                  self.version)

    def _remember(self, attempt: Attempt) -> None:
        self.history.append(attempt)
        del self.history[:-HISTORY]

    def status_json(self) -> dict[str, Any]:
        return {
            "configFile": self.path,
            "version": self.version,
            "loadedAt": self.loaded_at,
            "digest": self.digest,
            "watching": self._watch_task is not None,
            "lastError": self.last_error,
            "lastErrorAt": self.last_error_at,
            "history": [a.to_json() for a in reversed(self.history)],
        }

    def _file_digest(self) -> str:
        if self.path is None:
            return ""
        try:
            with open(self.path, encoding="utf-8") as f:
                return _digest(f.read())
        except OSError:
            return ""

    async def close(self) -> None:
        """Stop watching; finish retiring what earlier reloads replaced."""
        tasks = [t for t in (self._watch_task, *self._tasks) if t is not None]
        self._watch_task = None
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _retirements(self.linker).finish()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Applying a config


class _Retirements:
    """What a reload replaced, closed once it is idle or its grace is over (or at exit)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.closers: list[Callable[[], Any]] = []

    def later(self, wait: Callable[[], bool], grace_s: float, close: Callable[[], Any]) -> None:
        """`close()` once `wait()` is False (nothing in flight) or after `grace_s`."""
        self.closers.append(close)

        async def run() -> None:
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and wait():
                await asyncio.sleep(0.05)
            await self._close(close)

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _close(self, close: Callable[[], Any]) -> None:
        if close not in self.closers:
            return
        self.closers.remove(close)
        try:
            result = close()
            if asyncio.iscoroutine(result):
                await result
        except Exception:
            log.exception("closing what a reload replaced failed")

    async def finish(self) -> None:
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for close in list(self.closers):
            await self._close(close)


def _retirements(linker: Any) -> _Retirements:
    r = getattr(linker, "_retirements", None)
    if r is None:
        r = linker._retirements = _Retirements()
    return r


def _changed_fields(old: Any, new: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(old)
            if f.compare and getattr(old, f.name) != getattr(new, f.name)]


def _socket_of(server: Any) -> socket.socket:
    """A dup of `server`'s listening socket, for a new server on the same port."""
    sock = server.aserver.sockets[0]
    return socket.socket(fileno=os.dup(sock.fileno()))


class _Apply:
    """One reload's plan: build and bind everything new (undoable), then commit."""

    def __init__(self, linker: Any, new: LinkerConfig, serve: bool = True) -> None:
        self.linker = linker
        self.serve = serve  # False: a supervisor's routers bind for workers, never listen
        self.new = new
        self.old: LinkerConfig = linker.config
        self.grace_s = new.admin.shutdown_grace_ms / 1000.0
        self.changes: list[str] = []
        self.namers: list[tuple[Any, Any]] = []
        self.new_namers: list[Any] = []
        self.routers: list[Any] = []  # in new config order
        self.built: list[Any] = []  # new Router objects
        self.bound: list[Any] = []  # new HttpServers (listening)
        self.new_handles: list[Any] = []  # routers that did not exist before
        self.swaps: list[tuple[Any, Any, Any, list[Any], list[Any], list[Any]]] = []

    # -- build (nothing running is touched)
    async def build(self) -> None:
        from router.router import Router, build_configured_namer, warn_unreachable_namers


        old_namers = list(zip(self.old.namers, self.linker.namers, strict=True))
        for ncfg in self.new.namers:
            hit = next((i for i, (oc, _) in enumerate(old_namers) if oc == ncfg), None)
            if hit is not None:
                self.namers.append(old_namers.pop(hit)[1])
                continue
            namer = build_configured_namer(ncfg)
            self.new_namers.append(namer)
            self.namers.append((ncfg.prefix, namer))
            existed = any(o.prefix == ncfg.prefix for o, _ in old_namers)
            self.changes.append(f"namer {ncfg.prefix.show} ({ncfg.kind}) "
                                f"{'changed' if existed else 'added'}")
        for ocfg, _ in old_namers:
            if not any(n.prefix == ocfg.prefix for n in self.new.namers):
                self.changes.append(f"namer {ocfg.prefix.show} removed")
        self.retired_namers = [pn for _, pn in old_namers]
        same_namers = [id(n) for _, n in self.namers] == [id(n) for _, n in self.linker.namers]

        # request telemeters (tracing, recent requests, access logs): a change of
        # `telemetry:` builds a new set, and every router is rebuilt to feed it
        self.telemetry: Any = getattr(self.linker, "telemetry", None)
        self.old_telemetry: Any = self.telemetry
        if self.telemetry is not None and self.new.telemetry != self.old.telemetry:
            from router.telemetry import Telemetry

            self.telemetry = Telemetry(self.new, self.linker.metrics)
        same_telemetry = self.telemetry is self.old_telemetry
        old_routers = {r.label: r for r in self.linker.routers}
        for rcfg in self.new.routers:
            old = old_routers.get(rcfg.label)
            if old is not None and old.config == rcfg and same_namers and same_telemetry:
                self.routers.append(old)
                continue
            if old is not None and old.config.protocol != rcfg.protocol:
                where = rcfg.where
                raise ConfigError(  # refused, not half applied: the old config keeps serving
                    f"router {rcfg.label} changed protocol ({old.config.protocol} -> "
                    f"{rcfg.protocol}): live reload keeps a router's protocol; restart l5d "
                    "to apply it, or give the new router another label and ports",
                    file=where.file if where else self.new.source,
                    line=where.line if where else None, key=where.key if where else "routers",
                    expected="the router's protocol unchanged, or a restart")
            router = Router(rcfg, self.namers, self.linker.builtins, self.linker.metrics)
            if self.telemetry is not None:
                router.telemetry = self.telemetry.for_router(rcfg)
            self.built.append(router)
            self.routers.append(router)
            if rcfg.interpreter.kind in LOCAL_NAMER_INTERPRETERS:
                warn_unreachable_namers(rcfg, [p for p, _ in self.namers],
                                        self.linker.builtins.names())
            if old is None:
                self.changes.append(f"router {rcfg.label} added")
            else:
                what = _changed_fields(old.config, rcfg) or ["namers"]
                self.changes.append(f"router {rcfg.label}: {', '.join(what)}")
        for label in old_routers:
            if not any(r.label == label for r in self.new.routers):
                self.changes.append(f"router {label} removed")
        if self.new.admin != self.old.admin or self.new.telemetry != self.old.telemetry:
            self.changes.append("admin/telemetry")

    async def start(self) -> None:
        """Start new namers and routers' background parts, bind new listeners."""
        from router.h2 import H2Server, h2_runtime, start_h2_router
        from router.http import start_http_router
        from router.http.server import HttpServer, RouterRuntime

        if self.telemetry is not self.old_telemetry:
            await self.telemetry.start()
        for _prefix, namer in self.namers:
            if any(namer is n for n in self.new_namers):
                start = getattr(namer, "start", None)
                if start is not None:
                    await start()
        old_routers = {r.label: r for r in self.linker.routers}
        for router in self.built:
            await router.start()
            start_identifiers = getattr(router, "start_identifiers", None)
            if start_identifiers is not None:  # io.l5d.ingress: its watch
                await start_identifiers()
            if not self.serve:
                continue
            old = old_routers.get(router.label)
            h2 = router.config.protocol == "h2"  # the same steps, h2's runtime and servers
            if old is None or old.handle is None:
                router.handle = await (start_h2_router if h2 else start_http_router)(router)
                self.new_handles.append(router.handle)
                continue
            runtime = h2_runtime(router) if h2 else RouterRuntime(router)
            server_class: Any = H2Server if h2 else HttpServer
            pairs = list(zip(old.config.servers, old.handle.servers, strict=True))
            servers, replaced = [], []
            for scfg in router.config.servers:
                hit = next((i for i, (oc, _) in enumerate(pairs)
                            if oc.ip == scfg.ip and oc.port == scfg.port), None)
                if hit is not None and pairs[hit][0] == scfg:
                    servers.append(pairs.pop(hit)[1])
                    continue
                srv = server_class(runtime, scfg)
                if hit is not None:  # same port, other settings: take over the socket
                    old_srv = pairs.pop(hit)[1]
                    await srv.start(sock=_socket_of(old_srv))
                    replaced.append(old_srv)
                else:
                    await srv.start()
                self.bound.append(srv)
                servers.append(srv)
            removed = [s for _, s in pairs]
            self.swaps.append((old, router, runtime, servers, replaced, removed))

    async def undo(self) -> None:
        if getattr(self, "telemetry", None) is not getattr(self, "old_telemetry", None):
            await self.telemetry.aclose()
        for srv in self.bound:
            srv.stop_accepting()
            srv.close_all()
        for handle in self.new_handles:
            await handle.close(0)
        for router in self.built:
            router.handle = None
            router.close()
            aclose = getattr(router.interpreter, "aclose", None)
            if aclose is not None:
                await aclose()
        await close_namers([(p, n) for p, n in self.namers
                            if any(n is m for m in self.new_namers)])

    # -- commit (cannot fail half-way: only assignments and scheduled closes)
    def commit(self) -> None:
        from router.http import drain

        linker = self.linker
        retire = _retirements(linker)
        for old, router, runtime, servers, replaced, removed in self.swaps:
            handle, old_rt = old.handle, old.handle.runtime
            _carry_clients(old, router, old_rt, runtime, retire, self.grace_s)
            if hasattr(old_rt, "h2_endpoints"):  # h2: one connection per endpoint, kept
                from router.h2 import carry_endpoints

                carry_endpoints(old_rt, runtime)
            for srv in (*servers, *replaced, *removed, *handle.retired):
                srv.runtime = runtime
            for srv in replaced:
                if srv.aserver is not None:
                    srv.aserver.close()  # the new server accepts on the same socket
            handle.servers = servers
            handle.retired.extend(replaced)
            handle.runtime = runtime
            runtime.start_sweeping()
            router.handle = handle
            old.handle = None
            if removed:
                ports = ", ".join(f"{s.ip}:{s.port}" for s in removed)
                log.info("router %s: no longer listening on %s; draining it", router.label, ports)
                task = asyncio.get_running_loop().create_task(drain(removed, self.grace_s))
                retire.tasks.add(task)
                task.add_done_callback(retire.tasks.discard)
            retire.later(lambda: False, min(self.grace_s, 10.0), _router_closer(old))
        new_labels = {r.label for r in self.routers}
        if not self.serve:  # nothing listens here: replaced routers just close later
            replaced = [r for r in linker.routers if not any(r is n for n in self.routers)]
            for old in replaced:
                retire.later(lambda: False, min(self.grace_s, 10.0), _router_closer(old))
        for old in linker.routers if self.serve else ():
            if old.label in new_labels:
                continue
            handle = old.handle
            old.handle = None

            async def remove(old: Any = old, handle: Any = handle) -> None:
                log.info("router %s removed: draining", old.label)
                if handle is not None:
                    await handle.close(self.grace_s)
                await _router_closer(old)()

            task = asyncio.get_running_loop().create_task(remove())
            retire.tasks.add(task)
            task.add_done_callback(retire.tasks.discard)
        linker.routers = self.routers
        linker.namers = self.namers
        retired_namers = self.retired_namers
        if retired_namers:
            retire.later(lambda: False, min(self.grace_s, 10.0),
                         lambda: close_namers(retired_namers))
        if self.telemetry is not self.old_telemetry:
            linker.telemetry = self.telemetry
            retire.later(lambda: False, min(self.grace_s, 10.0), self.old_telemetry.aclose)
        linker.config = self.new
        linker.config_json = plain(dict(self.new.raw))
        if self.serve and (self.new.admin != self.old.admin
                           or self.new.telemetry != self.old.telemetry):
            task = asyncio.get_running_loop().create_task(_restart_admin(linker))
            retire.tasks.add(task)
            task.add_done_callback(retire.tasks.discard)
        _recheck_tls(linker)


def _router_closer(router: Any) -> Callable[[], Any]:
    async def close() -> None:
        router.close()
        alog = getattr(getattr(router, "telemetry", None), "access_log", None)
        if alog is not None:  # this router's access log file (router/telemetry)
            alog.close()
        aclose = getattr(router.interpreter, "aclose", None)
        if aclose is not None:
            await aclose()
    return close


def _carry_clients(old: Any, new: Any, old_rt: Any, runtime: Any, retire: _Retirements,
                   grace_s: float) -> None:
    """The new runtime keeps the old one's clients and service stats; a client whose params
    changed leaves the cache (the next request builds it anew) and closes once idle."""
    if old_rt._sweeper is not None:
        old_rt._sweeper.cancel()
        old_rt._sweeper = None
    runtime.clients.close()  # the empty cache RouterRuntime made
    cache = runtime.clients = old_rt.clients
    cache.config_for = new.client_config
    cache.on_expire = runtime._forget_routes
    runtime.services = old_rt.services
    runtime.services.on_evict = runtime._forget_routes
    for cid, client in list(cache.clients.items()):
        if old.client_config(cid) == new.client_config(cid):
            continue
        del cache.clients[cid]

        def busy(client: Any = client) -> bool:
            return any(e.pending for e in client.balancer.endpoints)

        def close(client: Any = client, cid: Any = cid) -> None:
            client.balancer.close()
            if cid not in cache.clients:  # not rebuilt: its metrics go with it
                client.stats.remove()

        retire.later(busy, grace_s, close)


async def _restart_admin(linker: Any) -> None:
    """The admin's listener, security and telemeters follow the new config (after the
    answer to a `POST /admin/reload` has gone out)."""
    from router.admin.server import start_admin

    await asyncio.sleep(0.2)
    old = linker.admin
    if old is None:
        return
    cfg = linker.config.admin
    same_port = (old.host, old.port) == (cfg.ip, cfg.port)
    if same_port:
        await old.close()
    try:
        linker.admin = await start_admin(linker)
    except OSError as e:
        log.error("reload: the admin server cannot move to %s:%d (%s); %s", cfg.ip, cfg.port,
                  e.strerror or e, "it is down" if same_port else "it stays where it was")
        if same_port:
            linker.admin = None
        return
    if not same_port:
        await old.close()


def _recheck_tls(linker: Any) -> None:
    """A reload also re-reads certificates now (they are polled every second anyway)."""
    for router in linker.routers:
        handle = router.handle
        if handle is None:
            continue
        for srv in handle.servers:
            if srv.tls is not None:
                srv.tls.source.check()
        for client in list(handle.clients.clients.values()):
            if client.tls is not None:
                client.tls.source.check()
    admin = linker.admin
    if admin is not None and admin.tls_source is not None:
        admin.tls_source.check()


async def apply_config(linker: Any, new: LinkerConfig, *, serve: bool = True) -> list[str]:
    """Make `new` the running config of `linker`; raises (ConfigError, OSError) with nothing
    changed. Returns what changed, for people. `serve=False`: the linker's routers do not
    listen (a supervisor's: they bind for its workers)."""
    plan = _Apply(linker, new, serve)
    try:
        await plan.build()
        await plan.start()
    except BaseException:
        await plan.undo()
        raise
    plan.commit()
    return plan.changes


__all__ = ["Reloader", "apply_config"]
