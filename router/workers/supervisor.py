"""The supervisor of `workers: N`: one control plane, N data-path processes.

It builds the `Linker` as a one-process router does (namers, interpreters,
transformers: one set of watches per node, one namerd stream), starts the
namers and the admin server, but not the routers' servers: it spawns N
workers (`router/workers/worker.py`) that bind every server port with
SO_REUSEPORT. Each worker asks for the bindings its requests need (`bind`);
the supervisor binds with the router's real interpreter, follows every
dependency, and pushes the tree and the addresses of each bound id as they
change (a `_Follow` per (router, dtab, path), shared by all workers).

A worker that exits unasked is restarted (after a backoff that grows while it
keeps dying young) and the others keep serving. SIGTERM/SIGINT or the admin's
`/admin/shutdown` drain every worker for `shutdownGraceMs`, then stop the admin
and the namers. `/admin/metrics.json` and Prometheus pull each worker's registry
and merge it (`merge.py`), `/requests.json` merges their recent requests, and
`/workers.json` lists the workers' pids and states. The signals and the reloader are
set up by `router/cli.py: run`, as for one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from dtab.addr import BoundName
from dtab.dtab import Dtab
from dtab.json_codec import bound_tree_to_json
from dtab.observable import Failed, Ok, Var
from dtab.path import Path
from router.config import LinkerConfig
from router.lifecycle import ShutdownOnce
from router.workers import rss_bytes
from router.workers.ipc import Channel, ChannelClosed
from router.workers.merge import MergedMetrics

log = logging.getLogger("l5d.supervisor")

READY_TIMEOUT_S = 30.0
PULL_TIMEOUT_S = 5.0
RESTART_BASE_S = 0.5
RESTART_MAX_S = 30.0
YOUNG_S = 10.0  # a worker that dies sooner than this after starting backs off longer
REFRESH_S = 1.0  # merged metrics are at most this old for readers that do not pull


def state_to_json(state: Any) -> dict[str, Any]:
    if isinstance(state, Ok):
        return {"ok": bound_tree_to_json(state.value, reasons=True)}
    if isinstance(state, Failed):
        return {"failed": str(state.error)}
    return {"pending": True}


class StartError(Exception):
    """A worker could not start (its port is taken, its config failed to build)."""


class _Follow:
    """One (router, dtab, path) bound by the real interpreter and followed for workers."""

    def __init__(self, interpreter: Any, label: str, dtab: Dtab, path: Path) -> None:
        self.interpreter = interpreter
        self.label = label
        self.dtab = dtab
        self.path = path
        self.subscribers: set[tuple[_Conn, int]] = set()
        self.deps: dict[int, tuple[Any, Any]] = {}
        self.state: Any = None
        self.sig: Any = None
        self.closed = False

    def rebind(self) -> None:
        if self.closed:
            return
        try:
            result = self.interpreter.bind(self.dtab, self.path)
            state, deps = result.state, list(result.dependencies)
        except Exception as e:  # this name fails; the others keep being served
            log.exception("binding %s failed", self.path.show)
            state, deps = Failed(e), []
        wanted = {id(a): a for a in deps}
        for key in [k for k in self.deps if k not in wanted]:
            self.deps.pop(key)[1]()
        for key, act in wanted.items():
            if key not in self.deps:
                self.deps[key] = (act, act.observe(lambda _s: self.rebind()))
        sig = _signature(state)
        if sig == self.sig and state == self.state:
            return
        self.state, self.sig = state, sig
        for conn, ident in list(self.subscribers):
            conn.push(ident, self)

    def close(self) -> None:
        self.closed = True
        for _act, unsub in self.deps.values():
            unsub()
        self.deps.clear()


def _signature(state: Any) -> Any:
    """What else makes a re-bound tree new for a worker: its leaves' address Vars."""
    if isinstance(state, Ok):
        return tuple(id(b.addr) for b in state.value.leaves() if isinstance(b, BoundName))
    return None


class _Conn:
    """The supervisor's side of one worker's channel: its bindings and address feeds."""

    def __init__(self, sup: Supervisor, slot: WorkerSlot, channel: Channel) -> None:
        self.sup = sup
        self.slot = slot
        self.channel = channel
        self.binds: dict[int, _Follow] = {}
        self.bind_ids: dict[int, set[tuple[str, Path]]] = {}
        # (router, bound id) -> [Var, unsubscribe, references from this worker's bindings]
        self.addrs: dict[tuple[str, Path], list[Any]] = {}

    def on_bind(self, msg: dict[str, Any]) -> None:
        ident = int(msg["id"])
        label = str(msg["router"])
        try:
            dtab = Dtab.read(msg["dtab"]) if msg["dtab"] else Dtab.empty()
            path = Path.read(msg["path"])
            router = self.sup.linker.router(label)
        except (KeyError, ValueError) as e:
            self.channel.send({"op": "bound", "id": ident, "state": {"failed": str(e)}})
            return
        follow = self.sup.follow(router, dtab, path)
        follow.subscribers.add((self, ident))
        self.binds[ident] = follow
        self.push(ident, follow)

    def on_unbind(self, msg: dict[str, Any]) -> None:
        self.release(int(msg["id"]))

    def release(self, ident: int) -> None:
        follow = self.binds.pop(ident, None)
        if follow is None:
            return
        self._retarget(ident, follow.label, {})
        self.sup.unfollow(follow, (self, ident))

    def push(self, ident: int, follow: _Follow) -> None:
        state = follow.state
        vars_: dict[tuple[str, Path], Var[Any]] = {}
        if isinstance(state, Ok):
            for b in state.value.leaves():
                if isinstance(b, BoundName):
                    vars_.setdefault((follow.label, b.id), b.addr)
        self._retarget(ident, follow.label, vars_)
        self.channel.send({"op": "bound", "id": ident, "state": state_to_json(state)})

    def _retarget(self, ident: int, label: str, vars_: dict[tuple[str, Path], Var[Any]]) -> None:
        """Follow the addresses of this binding's bound ids (and stop those it dropped)."""
        old = self.bind_ids.pop(ident, set())
        new = set(vars_)
        if new:
            self.bind_ids[ident] = new
        for key in new:
            var = vars_[key]
            sub = self.addrs.get(key)
            if sub is not None and sub[0] is not var:  # the namer made a new Var: follow it
                sub[1]()
                sub[0], sub[1] = var, self._observe(key, var)
            elif sub is None:
                sub = self.addrs[key] = [var, self._observe(key, var), 0]
            if key not in old:
                sub[2] += 1
        for key in old - new:
            sub = self.addrs.get(key)
            if sub is not None:
                sub[2] -= 1
                if sub[2] <= 0:
                    sub[1]()
                    del self.addrs[key]

    def _observe(self, key: tuple[str, Path], var: Var[Any]) -> Any:
        label, bound_id = key

        def changed(addr: Any) -> None:
            self.channel.send({"op": "addr", "router": label, "id": bound_id.show,
                               "addr": addr.to_json()})

        return var.observe(changed)

    def close(self) -> None:
        for ident in list(self.binds):
            self.release(ident)
        for sub in self.addrs.values():
            sub[1]()
        self.addrs.clear()
        self.channel.close()


class WorkerSlot:
    """Worker number `index`: its current process, channel and history."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.conn: _Conn | None = None
        self.pid: int | None = None
        self.state = "starting"  # serving, draining, restarting, exited
        self.started_at = 0.0  # monotonic, when the current process was spawned
        self.started_wall = 0.0
        self.restarts = 0
        self.last_exit: int | None = None
        self.last_exit_at: float | None = None
        self.ready: asyncio.Future[None] | None = None
        self.drained = False
        self.retired = False  # replaced (a config roll): its exit is not a crash

    def exited(self, code: int | None) -> None:
        self.last_exit = code
        self.last_exit_at = time.time()

    def state_json(self) -> dict[str, Any]:
        """One row of `/workers.json`: uptime is the current process's, while it lives."""
        alive = self.state in ("starting", "serving", "draining")
        return {"worker": self.index, "pid": self.pid, "state": self.state,
                "restarts": self.restarts, "rssBytes": rss_bytes(self.pid) if alive else None,
                "uptimeSecs": round(time.monotonic() - self.started_at, 1) if alive else None,
                "startedAt": round(self.started_wall, 3) if self.started_wall else None,
                "lastExit": self.last_exit, "lastExitReason": exit_reason(self.last_exit),
                "lastExitAt": round(self.last_exit_at, 3) if self.last_exit_at else None}


def exit_reason(code: int | None) -> str | None:
    """A process's exit code as people read it: `exit status 1`, `killed by SIGKILL`."""
    if code is None:
        return None
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


class Supervisor(ShutdownOnce):
    """`shutdown`/`close`/`wait` are router.lifecycle's, as the Linker's."""

    _log = log

    def __init__(self, config: LinkerConfig, *, log_level: str = "info") -> None:
        from router.router import Linker

        self.config = config
        self.count = config.workers
        self.log_level = log_level
        self.linker = Linker(config)
        self.local_metrics = self.linker.metrics
        self.metrics = MergedMetrics(self.local_metrics)
        self.slots = [WorkerSlot(i) for i in range(self.count)]
        self.follows: dict[tuple[str, Dtab, Path], _Follow] = {}
        self.admin: Any = None
        self._init_shutdown()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pull_lock = asyncio.Lock()
        self._pulled_at = 0.0
        # the supervisor's own: for alerts on workers that keep dying (Prometheus too)
        scope = self.local_metrics.scope("l5d", "workers")
        scope.gauge(lambda: float(len(self.slots)), "count")
        scope.gauge(lambda: float(len(self._serving())), "serving")
        self._restarts = scope.counter("restarts")

    # -- bindings shared by the workers
    def follow(self, router: Any, dtab: Dtab, path: Path) -> _Follow:
        key = (router.label, dtab, path)
        f = self.follows.get(key)
        if f is None:
            f = self.follows[key] = _Follow(router.interpreter, router.label, dtab, path)
            f.rebind()
        return f

    def unfollow(self, f: _Follow, sub: tuple[_Conn, int]) -> None:
        f.subscribers.discard(sub)
        if not f.subscribers:
            f.close()
            self.follows.pop((f.label, f.dtab, f.path), None)

    # -- lifecycle
    async def start(self) -> None:
        """Check the ports, start namers, spawn every worker and wait until each serves,
        then start the admin. Any failure stops everything and raises OSError."""
        self._check_ports()
        try:
            await self.linker.start(admin=False, serve=False)
            results = await asyncio.gather(*(self._spawn(s) for s in self.slots),
                                           return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            from router.admin.server import start_admin

            self.admin = await start_admin(SupervisorView(self))
            self._track(asyncio.get_running_loop().create_task(self._refresh_forever(),
                                                               name="metrics refresh"))
        except BaseException as e:
            await self._stop_once(0)
            if isinstance(e, StartError):
                raise OSError(str(e)) from None
            raise
        log.info("%d workers serving: pids %s", self.count,
                 ", ".join(str(s.pid) for s in self.slots))

    # -- live reload (router/reload.py's Reloader calls this for SIGHUP, the file, the admin)
    async def reload_config(self, config: LinkerConfig) -> list[str]:
        """The control plane (namers, interpreters, the routers that bind) is reloaded in
        place; then each worker is replaced by one started with the new config, which
        shares the ports through SO_REUSEPORT, before the old one drains. A bad config
        (or a new port in use) changes nothing."""
        from router.config import ConfigError
        from router.reload import apply_config

        if config.workers <= 1:
            raise ConfigError("going from several workers to one needs a restart",
                              file=config.source, line=None, key="workers",
                              expected=f"workers above 1 (now {self.count})")
        old_ports = {(s.ip, s.port) for r in self.config.routers for s in r.servers}
        self._check_ports(config, skip=old_ports)
        changes = await apply_config(self.linker, config, serve=False)
        try:
            await self.replace_workers(config)
        except StartError as e:
            raise OSError(f"a worker could not start with the new config ({e}); the old "
                          "workers not yet replaced keep serving") from None
        return [*changes, f"{config.workers} workers replaced one by one"]

    def _check_ports(self, config: LinkerConfig | None = None,
                     skip: set[tuple[str, int]] | None = None) -> None:
        """Bind each server port once, without SO_REUSEPORT, so a port another process
        holds is refused here (workers' SO_REUSEPORT binds would not all notice)."""
        for r in (config or self.config).routers:
            for s in r.servers:
                if skip and (s.ip, s.port) in skip:
                    continue  # ours: the workers serving it hold it
                family = socket.AF_INET6 if ":" in s.ip else socket.AF_INET
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind((s.ip, s.port))
                    except OSError as e:
                        raise OSError(e.errno, f"router {r.label} cannot listen on "
                                      f"{s.ip}:{s.port}: {e.strerror or e}") from e

    async def _spawn(self, slot: WorkerSlot) -> None:
        """Start worker `slot.index` and wait until it serves (StartError if it cannot)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "router.workers.worker", str(child.fileno()),
                self.log_level, pass_fds=(child.fileno(),))
        finally:
            child.close()
        slot.pid = slot.proc.pid
        slot.state = "starting"
        slot.drained = False
        slot.started_at, slot.started_wall = time.monotonic(), time.time()
        channel = await Channel.open(parent, f"worker {slot.index}")
        conn = slot.conn = _Conn(self, slot, channel)
        loop = asyncio.get_running_loop()
        slot.ready = loop.create_future()
        channel.send({"op": "start", "worker": slot.index, "config": self.config.to_json(),
                      "source": self.config.source})
        self._track(loop.create_task(self._serve(slot, conn), name=f"worker {slot.index}"))
        try:
            await asyncio.wait_for(asyncio.shield(slot.ready), READY_TIMEOUT_S)
        except TimeoutError:
            # not left running unready: its exit (seen by _serve) brings the next attempt,
            # or nothing for a slot that is not one of the current ones
            with contextlib.suppress(ProcessLookupError):
                slot.proc.kill()
            raise StartError(f"worker {slot.index} did not start within "
                             f"{READY_TIMEOUT_S:g}s") from None

    async def _serve(self, slot: WorkerSlot, conn: _Conn) -> None:
        def ready(msg: dict[str, Any]) -> None:
            slot.pid = int(msg.get("pid") or slot.pid or 0)
            slot.state = "serving"
            if slot.ready is not None and not slot.ready.done():
                slot.ready.set_result(None)

        def failed(msg: dict[str, Any]) -> None:
            if slot.ready is not None and not slot.ready.done():
                slot.ready.set_exception(StartError(str(msg.get("error"))))

        def drained(_msg: dict[str, Any]) -> None:
            slot.drained = True

        try:
            await conn.channel.serve({"ready": ready, "failed": failed, "drained": drained,
                                      "bind": conn.on_bind, "unbind": conn.on_unbind})
        except ChannelClosed as e:
            log.debug("%s", e)
        finally:
            conn.close()
        proc = slot.proc
        code = await proc.wait() if proc is not None else None
        slot.exited(code)
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_exception(StartError(
                f"worker {slot.index} exited with {code} before serving"))
        if not self._current(slot):
            slot.state = "exited"
            return
        slot.state = "restarting"
        young = time.monotonic() - slot.started_at < YOUNG_S
        delay = min(RESTART_MAX_S, RESTART_BASE_S * (2 ** min(slot.restarts, 6))) if young \
            else RESTART_BASE_S
        log.warning("worker %d (pid %s) exited with %s; restarting in %.1fs", slot.index,
                    slot.pid, code, delay)
        await asyncio.sleep(delay)
        if not self._current(slot):  # stopped, or a config roll replaced it meanwhile
            slot.state = "exited"
            return
        slot.restarts += 1
        self._restarts.incr()
        try:
            await self._spawn(slot)
            log.info("worker %d restarted: pid %s", slot.index, slot.pid)
        except (StartError, OSError) as e:
            log.error("worker %d could not restart: %s", slot.index, e)
            # its _serve task (started by _spawn) schedules the next attempt

    def _current(self, slot: WorkerSlot) -> bool:
        """Whether `slot`'s process should be serving: one of the current slots, not
        drained or retired, the supervisor not stopping. Only such a slot is restarted
        (a new worker that failed during a config roll is not one: it is left to exit)."""
        return (not self.shutting_down and not slot.drained and not slot.retired
                and slot in self.slots)

    async def replace_workers(self, config: LinkerConfig) -> None:
        """Roll the workers onto `config`, one at a time. Each new process serves (its
        SO_REUSEPORT listeners beside the old one's) before the old one drains for
        `shutdownGraceMs`, so the port never stops accepting. `workers:` may change the
        count. This is how a reload reaches the data path. The supervisor's own Linker
        (namers, interpreters, admin) is the reload's to update in place first. A
        new process that cannot start raises StartError and leaves the old one serving."""
        self.config = config
        grace_ms = config.admin.shutdown_grace_ms
        old_slots = list(self.slots)
        new_slots: list[WorkerSlot] = []
        for i in range(config.workers):
            slot = WorkerSlot(i)
            if i < len(old_slots):
                slot.restarts = old_slots[i].restarts
            await self._spawn(slot)
            new_slots.append(slot)
            self.slots = new_slots + old_slots[i + 1:]
            if i < len(old_slots):
                await self._retire(old_slots[i], grace_ms)
        for old in old_slots[len(new_slots):]:
            await self._retire(old, grace_ms)
        self.slots = new_slots
        self.count = len(new_slots)
        log.info("workers now on the new config: pids %s",
                 ", ".join(str(s.pid) for s in self.slots))

    async def _retire(self, slot: WorkerSlot, grace_ms: int) -> None:
        slot.retired = True
        slot.state = "draining"
        if slot.conn is not None:
            slot.conn.channel.send({"op": "drain", "grace_ms": grace_ms})
        proc = slot.proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), grace_ms / 1000.0 + 5.0)
        except TimeoutError:
            log.error("worker %d (pid %s) did not drain in time; killing it", slot.index,
                      slot.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def _refresh_forever(self) -> None:
        """Keep the merged registry fresh for readers that do not pull (a sampler)."""
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh_metrics()
            except Exception:
                log.exception("merging the workers' metrics failed")

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shutdown_note(self, grace_ms: int) -> str:
        return f"shutting down: draining {self.count} workers (grace {grace_ms} ms)"

    async def _stop(self, grace_ms: int) -> None:
        """Drain every worker for `grace_ms`, then stop the admin and the namers
        (ShutdownOnce runs it once)."""
        for slot in self.slots:
            if slot.conn is not None and slot.state in ("serving", "starting"):
                slot.state = "draining"
                slot.conn.channel.send({"op": "drain", "grace_ms": grace_ms})
        deadline = time.monotonic() + grace_ms / 1000.0 + 5.0
        for slot in self.slots:
            proc = slot.proc
            if proc is None or proc.returncode is not None:
                continue
            try:
                await asyncio.wait_for(proc.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.error("worker %d (pid %s) did not stop in time; killing it",
                          slot.index, slot.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for f in list(self.follows.values()):
            f.close()
        self.follows.clear()
        await self._close_admin()
        await self.linker.close()

    # -- the admin's view
    async def _ask(self, op: str) -> list[tuple[WorkerSlot, Any]]:
        """Ask every serving worker (`op`); each answer or the exception it raised."""
        slots = self._serving()
        results = await asyncio.gather(
            *(s.conn.channel.request({"op": op}, PULL_TIMEOUT_S)  # type: ignore[union-attr]
              for s in slots), return_exceptions=True)
        out = list(zip(slots, results, strict=True))
        for slot, res in out:
            if isinstance(res, BaseException):
                log.warning("worker %d did not answer %s: %r", slot.index, op, res)
        return out

    async def refresh_metrics(self) -> None:
        """Pull every serving worker's registry and merge. Callers that arrive together
        share a pull, but only one that began after they asked: what a reader gets
        includes every response it saw before asking."""
        asked = time.monotonic()
        async with self._pull_lock:
            if self._pulled_at > asked:
                return
            self._pulled_at = time.monotonic()  # when this pull began
            self.metrics.update([(slot.index, res) for slot, res in await self._ask("metrics")
                                 if not isinstance(res, BaseException)])

    async def client_state(self) -> dict[str, Any]:
        """Every worker's clients (the same bound ids in each: the first one's wins)."""
        out: dict[str, Any] = {}
        for _slot, res in await self._ask("clients"):
            if isinstance(res, dict):
                for k, v in res.items():
                    out.setdefault(k, v)
        return out

    async def server_state(self, view: Any) -> list[dict[str, Any]]:
        """Each worker's servers (with its number), then the supervisor's admin."""
        from router.tls.runtime import servers_state

        out: list[dict[str, Any]] = []
        for slot, res in await self._ask("servers"):
            if isinstance(res, list):
                out += [{**entry, "worker": slot.index} for entry in res]
        return out + servers_state(view)

    async def recent_requests(self) -> dict[str, Any]:
        """io.l5d.recentRequests over the workers: each one keeps the requests it served;
        merged newest first, each with its `worker`, as many as one process would keep.
        Workers that did not answer are named (`workersNotRead`), not left out silently."""
        entries: list[dict[str, Any]] = []
        unread: list[int] = []
        for slot, res in await self._ask("requests"):
            if isinstance(res, list):
                entries += [{**e, "worker": slot.index} for e in res]
            else:
                unread.append(slot.index)
        entries.sort(key=lambda e: e.get("timestamp", 0), reverse=True)
        recents = getattr(self.linker.telemetry, "recents", None) or []
        out: dict[str, Any] = {"requests": entries[:sum(r.capacity for r in recents)]}
        if unread:
            out["workersNotRead"] = unread
        return out

    def _serving(self) -> list[WorkerSlot]:
        return [s for s in self.slots if s.conn is not None and s.state == "serving"]

    def workers_state(self) -> dict[str, Any]:
        """`/workers.json` (router/admin/workers.py has the one-process shape)."""
        return {"count": self.count,
                "supervisor": {"pid": os.getpid(), "rssBytes": rss_bytes(os.getpid())},
                "workers": [s.state_json() for s in self.slots]}


class SupervisorView:
    """The linker the admin server sees: the supervisor's Linker (namers, routers,
    interpreters, config) with the merged metrics, worker state and a shutdown that
    drains the workers."""

    def __init__(self, sup: Supervisor) -> None:
        self._sup = sup
        self.metrics = sup.metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sup.linker, name)

    async def shutdown(self, grace_ms: int | None = None) -> None:
        await self._sup.shutdown(grace_ms)

    async def refresh_metrics(self) -> None:
        await self._sup.refresh_metrics()

    @property
    def admin(self) -> Any:
        return self._sup.admin

    async def client_state(self) -> dict[str, Any]:
        return await self._sup.client_state()

    async def server_state(self) -> list[dict[str, Any]]:
        return await self._sup.server_state(self)

    def workers_state(self) -> dict[str, Any]:
        return self._sup.workers_state()

    async def recent_requests(self) -> dict[str, Any]:
        return await self._sup.recent_requests()
