"""The binding cache: (dtab, name) -> bound tree, kept current as namers change.

Binding (`Interpreter.bind`) is pure but not free: it walks the dtab and the
namers. A request must not pay for it when nothing changed, so each (dtab,
path) is bound once and its tree kept; a cache hit is one dict lookup. Each
entry subscribes to the Activities its binding consulted
(`BindResult.dependencies`) and re-binds when one changes, so a namer update
(a k8s endpoint appearing, an `io.l5d.fs` file created) reaches requests
without re-evaluating anything per request. Entries unused for the idle TTL
(Linkerd's `bindingCache.idleTtlSecs`, 600 s) are dropped and their
subscriptions released; the cache is also bounded by entry count
(`bindingCache.paths`) and by approximate bytes (`max_bytes`): a binding under
a 40 KB `l5d-dtab` keeps that dtab alive, so a count alone bounds nothing.

While a binding is Pending (a namer has not answered) callers wait up to
`bindingTimeoutMs`, then get `BindingTimeout` with Linkerd's text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from dtab.bounded import LogLimiter, WeightedLRU, approx_size, dtab_weight
from dtab.dtab import Dtab
from dtab.nametree import NameTree
from dtab.observable import Activity, Failed, Ok
from dtab.path import Path

log = logging.getLogger(__name__)
_limited_log = LogLimiter(log, 60.0)


def format_duration(ms: int) -> str:
    """Twitter's `Duration.toString`: the largest unit that divides it (`10.seconds`)."""
    for unit, size in (("days", 86_400_000), ("hours", 3_600_000), ("minutes", 60_000),
                       ("seconds", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}.{unit}"
    return f"{ms}.milliseconds"


class BindingTimeout(Exception):
    """The name stayed Pending past bindingTimeoutMs (the data path answers 502)."""

    def __init__(self, name: Path, dtab: Dtab, timeout_ms: int) -> None:
        super().__init__(
            f"Exceeded {format_duration(timeout_ms)} binding timeout while resolving name: "
            f"{name.show}"
        )
        self.name = name
        self.dtab = dtab
        self.timeout_ms = timeout_ms


class BindingFailed(Exception):
    """Binding failed (a namer failed, or the dtab loops); carries the name and dtab."""

    def __init__(self, name: Path, dtab: Dtab, error: BaseException) -> None:
        super().__init__(f"Failed to bind {name.show} with dtab [{dtab.show}]: {error}")
        self.name = name
        self.dtab = dtab
        self.error = error


class _Entry:
    __slots__ = ("dtab", "path", "tree", "state", "subs", "event", "last_used", "binds",
                 "waiters")

    def __init__(self, dtab: Dtab, path: Path) -> None:
        self.dtab = dtab
        self.path = path
        self.tree: NameTree | None = None  # set only while the state is Ok
        self.state: Any = None
        self.subs: dict[int, tuple[Activity, Callable[[], None]]] = {}
        self.event: asyncio.Event | None = None
        self.last_used = time.monotonic()
        self.binds = 0
        self.waiters = 0


DEFAULT_MAX_BYTES = 32 * 1024 * 1024
ENTRY_BYTES = 2048  # the entry, its bound tree and its subscriptions, roughly


class BindingCache:
    """`await bind(dtab, path)`; `get(dtab, path)` is the synchronous hit-only fast path."""

    def __init__(
        self,
        interpreter: Any,
        *,
        timeout_ms: int = 10000,
        idle_ttl_s: float = 600.0,
        capacity: int = 1000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        base: Dtab | None = None,
    ) -> None:
        self.interpreter = interpreter
        self.timeout_ms = timeout_ms
        self.idle_ttl_s = idle_ttl_s
        self.capacity = capacity
        self.base = base  # shared by every entry: not counted against each
        self._entries: WeightedLRU[tuple[Dtab, Path], _Entry] = WeightedLRU(
            max_bytes, max_entries=capacity, on_evict=self._evicted,
            pinned=lambda _k, e: e.waiters > 0)
        self._sweeper: asyncio.Task[None] | None = None
        self._dropping = False  # an idle sweep or close: not the bound, not logged as it

    def __len__(self) -> int:
        return len(self._entries)

    # -- hot path
    def get(self, dtab: Dtab, path: Path) -> NameTree | None:
        """The bound tree if it is cached and Ok, else None (then call `bind`)."""
        entry = self._entries.get((dtab, path))
        if entry is None or entry.tree is None:
            return None
        entry.last_used = time.monotonic()
        return entry.tree

    def handle(self, dtab: Dtab, path: Path) -> _Entry | None:
        """The live entry for (dtab, path): its `.tree` is the current tree while it is cached
        and Ok, None once it is evicted or fails. The data path keeps it with a route
        decision and checks `.tree` instead of looking the binding up again; it sets
        `.last_used`, as `get` does, so an entry in use does not expire."""
        return self._entries.peek((dtab, path))

    async def bind(self, dtab: Dtab, path: Path) -> NameTree:
        key = (dtab, path)
        entry = self._entries.get(key)
        if entry is not None:
            entry.last_used = time.monotonic()
            if entry.tree is not None:
                return entry.tree
        else:
            entry = _Entry(dtab, path)
            if not self._entries.put(key, entry, self._weight(dtab, path)):
                raise BindingFailed(path, dtab, MemoryError(
                    f"the dtab is larger than the binding cache ({self._entries.max_weight} "
                    "bytes)"))
            self._ensure_sweeper()
            self._rebind(entry)
            if entry.tree is not None:
                return entry.tree
        return await self._wait(entry)

    async def _wait(self, entry: _Entry) -> NameTree:
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:
            if entry.tree is not None:
                return entry.tree
            state = entry.state
            if isinstance(state, Failed):
                raise BindingFailed(entry.path, entry.dtab, state.error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BindingTimeout(entry.path, entry.dtab, self.timeout_ms)
            if entry.event is None:
                entry.event = asyncio.Event()
            event = entry.event
            entry.waiters += 1
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                raise BindingTimeout(entry.path, entry.dtab, self.timeout_ms) from None
            finally:
                entry.waiters -= 1

    # -- following namer updates
    def _weight(self, dtab: Dtab, path: Path) -> int:
        w = ENTRY_BYTES + approx_size(path)
        base = self.base
        if base is not None and dtab.dentries[: len(base.dentries)] == base.dentries:
            return w + max(0, dtab_weight(dtab) - dtab_weight(base))
        return w + dtab_weight(dtab)

    def _rebind(self, entry: _Entry) -> None:
        if self._entries.peek((entry.dtab, entry.path)) is not entry:
            return  # expired while an update was in flight
        entry.binds += 1
        try:
            result = self.interpreter.bind(entry.dtab, entry.path)
            state = result.state
            deps = list(result.dependencies)
        except Exception as e:  # the binder itself failed: fail this name, keep serving others
            _limited_log.exception(("bind", type(e)), "binding %s failed", entry.path.show)
            state, deps = Failed(e), []
        entry.state = state
        entry.tree = state.value if isinstance(state, Ok) else None
        self._follow(entry, deps)
        if not isinstance(state, Ok) and not isinstance(state, Failed):
            return  # Pending: keep waiters waiting
        if entry.event is not None:
            entry.event.set()
            entry.event = None

    def _follow(self, entry: _Entry, deps: list[Activity]) -> None:
        wanted = {id(a): a for a in deps}
        for key in [k for k in entry.subs if k not in wanted]:
            entry.subs.pop(key)[1]()
        for key, act in wanted.items():
            if key not in entry.subs:
                unsub = act.observe(lambda _state, e=entry: self._rebind(e))
                entry.subs[key] = (act, unsub)

    # -- expiry
    def _ensure_sweeper(self) -> None:
        if self._sweeper is not None and not self._sweeper.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sweeper = loop.create_task(self._sweep_forever(), name="binding cache sweeper")

    async def _sweep_forever(self) -> None:
        interval = max(0.05, min(self.idle_ttl_s / 4, 30.0))
        while self._entries:
            await asyncio.sleep(interval)
            self.sweep()

    def sweep(self, now: float | None = None) -> int:
        """Drop entries idle for the TTL (their namer subscriptions go with them)."""
        now = time.monotonic() if now is None else now
        ttl = self.idle_ttl_s
        self._dropping = True
        try:
            dropped = self._entries.evict_where(
                lambda _k, e: now - e.last_used >= ttl and not e.waiters)
        finally:
            self._dropping = False
        if dropped:
            log.debug("binding cache: %d idle bindings dropped", dropped)
        return dropped

    def _evicted(self, _key: tuple[Dtab, Path], entry: _Entry) -> None:
        """Over capacity or bytes (e.g. a flood of Host values or of dtabs): the least
        recently used entry goes, with its subscriptions; logged once a minute."""
        self._release(entry)
        if self._dropping:
            return
        _limited_log.info(("evict", id(self)), "binding cache over its bound of %d names / %d "
                          "bytes: evicting the least recently used", self.capacity,
                          self._entries.max_weight)

    def stats(self) -> dict[str, int]:
        return self._entries.stats()

    def _release(self, entry: _Entry) -> None:
        entry.tree = None  # no longer followed: whoever holds a handle must bind again
        for _act, unsub in entry.subs.values():
            unsub()
        entry.subs.clear()

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._dropping = True
        self._entries.clear()  # releases each entry

    def bound_ids(self) -> set[str]:
        """The bound ids currently in use (for the admin)."""
        out: set[str] = set()
        for entry in self._entries.values():
            if entry.tree is not None:
                for leaf in entry.tree.leaves():
                    ident = getattr(leaf, "id", None)
                    if ident is not None:
                        out.add(ident.show)
        return out
