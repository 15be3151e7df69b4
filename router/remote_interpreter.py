"""What the interpreters that bind through namerd share, whatever the wire.

`io.l5d.namerd.http` (router/namerd_interpreter.py, JSON lines over HTTP) and
`io.l5d.mesh` (router/mesh_interpreter.py, gRPC streams) differ only in how a
stream is opened and decoded. This module owns the rest, so both behave alike:

- per (dtab, path) a bind stream feeding an Activity the binding cache
  observes; per bound id an address stream feeding the leaf's `Var[Addr]`;
- the last good tree and addresses stay in place while namerd is unreachable
  (a Pending address after a good one is ignored too), so requests keep
  flowing; a broken stream reconnects with jittered exponential backoff;
- a stream silent for longer than `heartbeat_timeout_s` (no update and no
  heartbeat) is treated as dead and reconnected: a namerd whose host vanished
  never closes the connection;
- streams nobody observes any more are stopped after `IDLE_S`;
- `state_json()` for `/<router>/interpreter_state/<kind>/<namespace>.json`, and
  `rt/<router>/interpreter/<kind>/{updates, reconnects, bind_streams, addr_streams,
  connected_streams}` in the router's metrics.

A transport yields `Update(value, raw)` per message (`raw` is what the admin
shows) and `HEARTBEAT` for keep-alive noise.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dtab.addr import ADDR_PENDING, Addr, AddrPending
from dtab.binding import BindResult
from dtab.dtab import Dtab
from dtab.observable import PENDING, Activity, Failed, Ok, Var
from dtab.path import Path
from router.interpreter import apply_transformers
from transformers.base import Transformer

log = logging.getLogger("l5d.namerd")

IDLE_S = 60.0


@dataclass(frozen=True, slots=True)
class Update:
    value: Any
    raw: Any


HEARTBEAT = object()


class Backoff:
    """Exponential from `base` to `cap`, each delay jittered to [d/2, d] (Finagle's
    `exponentialJittered` in spirit)."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.next = base, cap, base

    def reset(self) -> None:
        self.next = self.base

    def delay(self) -> float:
        d = self.next
        self.next = min(self.cap, self.next * 2)
        return d * (0.5 + random.random() / 2)


class Watch:
    """One stream from namerd and what it last said."""

    __slots__ = ("key", "act", "task", "updates", "reconnects", "last_update", "last_error",
                 "connected", "last_used", "raw", "last_heard")

    def __init__(self, key: Any, act: Var[Any]) -> None:
        self.key = key
        self.act = act
        self.task: asyncio.Task[None] | None = None
        self.updates = 0
        self.reconnects = 0
        self.last_update: float | None = None
        self.last_error: str | None = None
        self.connected = False
        self.last_used = time.monotonic()
        self.last_heard: float | None = None
        self.raw: Any = None

    def state_json(self) -> dict[str, Any]:
        return {"connected": self.connected, "updates": self.updates,
                "reconnects": self.reconnects, "lastUpdate": self.last_update,
                "lastError": self.last_error, "value": self.raw}


class StreamTimeout(Exception):
    """namerd sent nothing (no update, no heartbeat) for longer than the timeout."""


class RemoteInterpreter:
    """`bind(dtab, path) -> BindResult` for the binding cache; subclasses open the streams
    (`_bind_updates`, `_addr_updates`) and implement `delegate`."""

    kind = ""

    def __init__(self, transformers: Sequence[Transformer], label: str, *,
                 retry_base_s: float, retry_max_s: float,
                 heartbeat_timeout_s: float | None, metrics: Any = None) -> None:
        self.transformers = tuple(transformers)
        self.label = label
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.heartbeat_timeout_s = heartbeat_timeout_s or None
        self._binds: dict[tuple[Dtab, Path], Watch] = {}
        self._addrs: dict[Path, Watch] = {}
        self._transformed: dict[tuple[Dtab, Path], tuple[Any, Any]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._updates = self._reconnects = None
        if metrics is not None:  # rt/<router>/interpreter/<kind>/...
            self._updates = metrics.counter("updates")
            self._reconnects = metrics.counter("reconnects")
            metrics.gauge(lambda: len(self._binds), "bind_streams")
            metrics.gauge(lambda: len(self._addrs), "addr_streams")
            metrics.gauge(lambda: sum(w.connected for w in (*self._binds.values(),
                                                            *self._addrs.values())),
                          "connected_streams")

    # -- what a transport provides
    def _bind_updates(self, dtab: Dtab, path: Path) -> AsyncIterator[Any]:
        """Update(NameTree[BoundName], raw) per message (leaves' addrs from `_addr_var`)."""
        raise NotImplementedError

    def _addr_updates(self, ident: Path) -> AsyncIterator[Any]:
        """Update(Addr, raw) per message."""
        raise NotImplementedError

    def _endpoint(self) -> str:
        """namerd's address, for log lines and the admin."""
        raise NotImplementedError

    def _state_extra(self) -> dict[str, Any]:
        return {}

    async def _close_transport(self) -> None:
        pass

    # -- the binding cache's interface
    def bind(self, dtab: Dtab, path: Path) -> BindResult:
        key = (dtab, path)
        w = self._binds.get(key)
        if w is None:
            w = self._binds[key] = Watch(key, Activity(PENDING))
            act = w.act

            def set_tree(tree: Any) -> None:
                act.set(Ok(tree))

            self._spawn(w, self._follow(w, "bind", path.show, lambda: self._bind_updates(
                dtab, path), set_tree))
        w.last_used = time.monotonic()
        state = w.act.value
        if self.transformers and isinstance(state, Ok):
            cached = self._transformed.get(key)
            if cached is not None and cached[0] is state:
                state = cached[1]
            else:
                try:
                    out: Any = Ok(apply_transformers(state.value, self.transformers))
                except Exception as e:
                    log.exception("transformer failed binding %s", path.show)
                    out = Failed(e)
                self._transformed[key] = (state, out)
                state = out
        return BindResult(state, (w.act,))

    def _addr_var(self, ident: Path, addr_now: Addr | None = None) -> Var[Addr]:
        """The one address Var of a bound id, streamed from namerd while it is used."""
        w = self._addrs.get(ident)
        if w is None:
            w = self._addrs[ident] = aw = Watch(ident, Var(addr_now or ADDR_PENDING))

            def set_addr(addr: Addr) -> None:
                _set_addr(aw, addr)

            self._spawn(w, self._follow(w, "addr", ident.show, lambda: self._addr_updates(ident),
                                        set_addr))
        elif addr_now is not None and isinstance(w.act.value, AddrPending) \
                and not isinstance(addr_now, AddrPending):
            w.act.set(addr_now)
        w.last_used = time.monotonic()
        var: Var[Addr] = w.act
        return var

    # -- streams
    def _spawn(self, w: Watch, coro: Any) -> None:
        if self._closed:
            coro.close()
            return
        loop = asyncio.get_running_loop()
        w.task = loop.create_task(coro, name=f"{self.kind} watch {w.key}")
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep_forever(), name=f"{self.kind} sweeper")

    async def _follow(self, w: Watch, what: str, name: str,
                      open_stream: Callable[[], AsyncIterator[Any]],
                      apply: Callable[[Any], None]) -> None:
        """Follow one stream forever: reconnect with backoff, keep the last good value while
        namerd is away (no failure of the stream is an error for routing)."""
        backoff = Backoff(self.retry_base_s, self.retry_max_s)
        while True:
            stream = open_stream()
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.heartbeat_timeout_s):
                            item = await anext(stream)
                    except StopAsyncIteration:
                        raise RuntimeError("namerd ended the stream") from None
                    except TimeoutError:
                        raise StreamTimeout(
                            f"nothing from namerd for {self.heartbeat_timeout_s:g}s "
                            "(no update, no heartbeat)") from None
                    w.connected = True
                    w.last_heard = time.monotonic()
                    if item is HEARTBEAT:
                        continue
                    apply(item.value)
                    w.raw = item.raw
                    w.updates += 1
                    w.last_update = time.time()
                    w.last_error = None
                    backoff.reset()
                    if self._updates is not None:
                        self._updates.incr()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                w.connected = False
                w.reconnects += 1
                if self._reconnects is not None:
                    self._reconnects.incr()
                w.last_error = f"{type(e).__name__}: {e}"[:500]
                delay = backoff.delay()
                log.warning("namerd %s %s %s: %s; keeping the last answer, retrying in %.2fs",
                            self._endpoint(), what, name[:200], w.last_error, delay)
                await asyncio.sleep(delay)
            finally:
                await _aclose(stream)

    # -- idle streams
    async def _sweep_forever(self) -> None:
        while self._binds or self._addrs:
            await asyncio.sleep(min(IDLE_S / 4, 15.0))
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Stop streams nobody observes (the binding cache let go of the name)."""
        now = time.monotonic() if now is None else now
        live_ids: set[Path] = set()
        for key, w in list(self._binds.items()):
            if not w.act.observed and now - w.last_used > IDLE_S:
                self._stop(w)
                del self._binds[key]
                self._transformed.pop(key, None)
                continue
            state = w.act.value
            if isinstance(state, Ok):
                live_ids.update(b.id for b in state.value.leaves() if hasattr(b, "id"))
        for ident, w in list(self._addrs.items()):
            if ident not in live_ids and not w.act.observed and now - w.last_used > IDLE_S:
                self._stop(w)
                del self._addrs[ident]

    @staticmethod
    def _stop(w: Watch) -> None:
        if w.task is not None:
            w.task.cancel()
            w.task = None

    # -- admin and lifecycle
    def state_json(self) -> dict[str, Any]:
        binds = {f"{p.show} {d.show}".strip(): w.state_json()
                 for (d, p), w in self._binds.items()}
        addrs = {i.show: w.state_json() for i, w in self._addrs.items()}
        connected = any(w.connected for w in self._binds.values())
        return {"kind": self.kind, "namerd": self._endpoint(), **self._state_extra(),
                "connected": connected, "bind": binds, "addr": addrs}

    async def aclose(self) -> None:
        self._closed = True
        tasks = [w.task for w in (*self._binds.values(), *self._addrs.values()) if w.task]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._binds.clear()
        self._addrs.clear()
        await self._close_transport()


def _set_addr(w: Watch, addr: Addr) -> None:
    """A Pending after a known address is namerd's hiccup, not news: keep the last good."""
    if isinstance(addr, AddrPending) and not isinstance(w.act.value, AddrPending):
        return
    w.act.set(addr)


async def _aclose(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing a namerd stream failed", exc_info=True)
