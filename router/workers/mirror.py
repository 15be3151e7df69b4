"""The worker's interpreter: a local mirror of the supervisor's bindings.

`MirrorInterpreter.bind(dtab, path)` is what a worker's `BindingCache` calls.
The first time a (dtab, path) is seen it sends `bind` to the supervisor and
answers Pending (the binding cache then waits, up to `bindingTimeoutMs`, as it
waits for a namer's first answer in one process); the supervisor binds with
its real interpreter (namers, transformers, namerd), follows every dependency,
and sends `bound` each time the tree changes and `addr` each time a bound id's
addresses do. Both land in Activities and Vars here, which the binding cache
and the balancers already observe, so after the first bind the request path
reads local values only and never touches the socket.

Mirrors nobody observes (the binding cache let go of the name) are released
after `IDLE_S`, and the supervisor told, so its namer watches can go too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from dtab.addr import Addr, BoundName
from dtab.binding import BindResult
from dtab.dtab import Dtab
from dtab.json_codec import CodecError, addr_from_json, bound_tree_from_json
from dtab.observable import PENDING, Activity, Failed, Ok, Var
from dtab.path import Path
from router.workers.ipc import Channel

log = logging.getLogger(__name__)

IDLE_S = 60.0


class RemoteBindError(Exception):
    """Binding failed in the supervisor; carries its message (the name, the dtab, why)."""


def state_from_json(data: Any, addr_var: Any) -> Any:
    """The inverse of `supervisor.state_to_json`."""
    if "ok" in data:
        return Ok(bound_tree_from_json(data["ok"], addr_var))
    if "failed" in data:
        return Failed(RemoteBindError(str(data["failed"])))
    return PENDING


class _Mirror:
    __slots__ = ("id", "act", "last_used")

    def __init__(self, ident: int) -> None:
        self.id = ident
        self.act = Activity(PENDING)
        self.last_used = time.monotonic()


class MirrorHub:
    """Every router's mirror in one worker, fed by the one channel to the supervisor."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._next = 0
        self._by_id: dict[int, tuple[MirrorInterpreter, _Mirror]] = {}
        self._interpreters: dict[str, MirrorInterpreter] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def interpreter(self, label: str) -> MirrorInterpreter:
        interp = self._interpreters.get(label)
        if interp is None:
            interp = self._interpreters[label] = MirrorInterpreter(self, label)
        return interp

    def subscribe(self, interp: MirrorInterpreter, dtab: Dtab, path: Path) -> _Mirror:
        self._next += 1
        m = _Mirror(self._next)
        self._by_id[m.id] = (interp, m)
        self.channel.send({"op": "bind", "id": m.id, "router": interp.label,
                           "dtab": dtab.show, "path": path.show})
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_forever(), name="mirror sweeper")
        return m

    def unsubscribe(self, m: _Mirror) -> None:
        self._by_id.pop(m.id, None)
        self.channel.send({"op": "unbind", "id": m.id})

    # -- messages from the supervisor
    def on_bound(self, msg: dict[str, Any]) -> None:
        found = self._by_id.get(msg["id"])
        if found is None:
            return  # released meanwhile
        interp, m = found
        try:
            state = state_from_json(msg["state"], interp.addr_var)
        except (CodecError, KeyError, TypeError, ValueError) as e:
            state = Failed(RemoteBindError(f"bad binding from the supervisor: {e}"))
        m.act.set(state)

    def on_addr(self, msg: dict[str, Any]) -> None:
        interp = self._interpreters.get(msg["router"])
        if interp is None:
            return
        var = interp.addrs.get(Path.read(msg["id"]))
        if var is not None:
            var.set(addr_from_json(msg["addr"]))

    # -- idle mirrors
    async def _sweep_forever(self) -> None:
        while self._by_id:
            await asyncio.sleep(min(IDLE_S / 4, 15.0))
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for interp in self._interpreters.values():
            interp.sweep(now)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class MirrorInterpreter:
    """`bind` for one router's binding cache, answered from the supervisor's mirror."""

    kind = "mirror"
    transformers: tuple[Any, ...] = ()  # applied by the supervisor's interpreter

    def __init__(self, hub: MirrorHub, label: str) -> None:
        self.hub = hub
        self.label = label
        self._binds: dict[tuple[Dtab, Path], _Mirror] = {}
        self.addrs: dict[Path, Var[Addr]] = {}

    def bind(self, dtab: Dtab, path: Path) -> BindResult:
        key = (dtab, path)
        m = self._binds.get(key)
        if m is None:
            m = self._binds[key] = self.hub.subscribe(self, dtab, path)
        m.last_used = time.monotonic()
        return BindResult(m.act.value, (m.act,))

    def addr_var(self, ident: Path, addr_now: Addr) -> Var[Addr]:
        """One Var per bound id, so balancers keep following it across re-binds."""
        var = self.addrs.get(ident)
        if var is None:
            var = self.addrs[ident] = Var(addr_now)
        else:
            var.set(addr_now)
        return var

    def sweep(self, now: float) -> None:
        live: set[Path] = set()
        for key, m in list(self._binds.items()):
            if not m.act.observed and now - m.last_used > IDLE_S:
                del self._binds[key]
                self.hub.unsubscribe(m)
                continue
            state = m.act.value
            if isinstance(state, Ok):
                live.update(b.id for b in state.value.leaves() if isinstance(b, BoundName))
        for ident in [i for i in self.addrs if i not in live]:
            if not self.addrs[ident].observed:
                del self.addrs[ident]

    async def delegate(self, dtab: Dtab, path: Path) -> dict[str, Any]:
        raise RuntimeError("a worker does not delegate: the supervisor's admin does")
