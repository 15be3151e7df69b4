"""The namerd process: storage, namers, and the interfaces and admin serving them.

Binding in namerd is the router's binding with the namespace's stored dtab in
front: `bind(ns, extra, path)` evaluates `stored(ns) ++ extra` through the
configured namers with `router.interpreter.Interpreter` (one namer dispatch
for both processes). Every answer comes with the Vars it depended on (the
store's state among them), and `follow` turns such a computation into an
async stream of distinct values: that is how `?watch=true` streams and the
gRPC Stream* calls see a dtab write, or a namer's endpoints moving, at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from dtab.addr import (
    ADDR_NEG,
    ADDR_PENDING,
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    AddrPending,
    BoundName,
)
from dtab.dtab import Dtab
from dtab.errors import ParamError
from dtab.nametree import NameTree
from dtab.observable import Failed, Pending, Var
from dtab.path import Path
from namerd.config import NamerdConfig
from namerd.store import DtabStore, build_store
from namerd.telemetry import watch_store
from namers.base import Namer, bound_names, close_namers
from namers.builtin import BuiltinNamers
from namers.registry import HostCheckError, build_namer
from router.config import ConfigError
from router.interpreter import Interpreter, TransformedNamer
from router.metrics import Metrics

log = logging.getLogger("namerd")

Computation = Callable[[], tuple[Any, Sequence[Var[Any]]]]


async def follow(compute: Computation) -> AsyncIterator[Any]:
    """Yield `compute()`'s value now and each time it changes (distinct values only).

    `compute` returns (value, the Vars it read); we subscribe to exactly those,
    re-evaluate when one changes, and drop subscriptions the new answer no
    longer needs. There is no await between computing and subscribing, so no
    change is missed.
    """
    changed = asyncio.Event()
    subs: dict[int, Callable[[], None]] = {}
    sentinel = object()
    last: Any = sentinel
    try:
        while True:
            changed.clear()
            value, deps = compute()
            wanted = {id(d): d for d in deps}
            for key in [k for k in subs if k not in wanted]:
                subs.pop(key)()
            for key, dep in wanted.items():
                if key not in subs:
                    subs[key] = dep.observe(lambda _v: changed.set())
            if last is sentinel or value != last:
                last = value
                yield value
            await changed.wait()
    finally:
        for unsub in subs.values():
            unsub()


def strip_transformer_prefix(path: Path) -> Path:
    """Linkerd's `Paths.stripTransformerPrefix`: `/%/t/.../#/ns/x` -> `/#/ns/x`."""
    elems = path.elems
    if elems and elems[0] == "%":
        for i, e in enumerate(elems):
            if e in ("#", "$"):
                return Path(elems[i:])
    return path


class Namerd:
    """Built from a NamerdConfig (validating every plugin), then `start()`ed."""

    def __init__(self, config: NamerdConfig, *, validating: bool = False) -> None:
        """`validating` (namerd --validate): a check of this machine only (an fs rootDir
        missing here) is a warning, as with `l5d --validate`; at start it is an error."""
        from router.router import build_transformers

        self.config = config
        st = config.storage
        self.store: DtabStore = build_store(st.kind, st.params)
        self.namers: list[tuple[Path, Namer]] = []
        for ncfg in config.namers:
            params = {"kind": ncfg.kind, "prefix": ncfg.prefix.show,
                      "experimental": ncfg.experimental, **ncfg.params}
            try:
                namer: Namer = build_namer(params)
            except HostCheckError as e:
                assert ncfg.where is not None
                if not validating:
                    raise ncfg.where.param_error(e) from None
                log.warning("%s (a check of this machine: an error when namerd starts)",
                            ncfg.where.param_error(e))
                namer = e.built
            except (ParamError, ValueError, TypeError) as e:
                if ncfg.where is None:
                    raise ConfigError(str(e), file=config.source, line=None, key="namers") \
                        from None
                raise (ncfg.where.param_error(e) if isinstance(e, ParamError)
                       else ncfg.where.error(f"namer {ncfg.kind}: {e}")) from None
            if ncfg.transformers:
                namer = TransformedNamer(namer, build_transformers(ncfg.transformers))
            self.namers.append((ncfg.prefix, namer))
        self.builtins = BuiltinNamers()
        self.interpreter = Interpreter(self.namers, (), self.builtins)
        self.servers: list[Any] = []
        self.metrics = Metrics()
        self._unwatch_store = watch_store(self.metrics, self.store)

    # -- lifecycle
    async def start(self) -> None:
        for _p, namer in self.namers:
            start = getattr(namer, "start", None)
            if start is not None:
                await start()
        await self.store.start()

    async def close(self) -> None:
        for server in reversed(self.servers):
            try:
                await server.close()
            except Exception:
                log.exception("closing %s failed", server)
        self.servers.clear()
        self._unwatch_store()
        await self.store.close()
        await close_namers(self.namers)
        self.builtins.close()

    # -- evaluation
    def dtab(self, ns: str) -> Dtab:
        vd = self.store.state.value.get(ns)
        return vd.dtab if vd is not None else Dtab.empty()

    def bind(self, ns: str, extra: Dtab, path: Path) -> tuple[Any, Sequence[Var[Any]]]:
        """(Pending | Ok(bound tree) | Failed, dependencies), under `stored(ns) ++ extra`."""
        result = self.interpreter.bind(self.dtab(ns) + extra, path)
        return result.state, (self.store.state, *result.dependencies)

    def addr(self, ns: str, ident: Path) -> tuple[Addr, Sequence[Var[Any]]]:
        """The address of a bound id (as the router's addr watch asks for it)."""
        ident = strip_transformer_prefix(ident)
        result = self.interpreter.bind(Dtab.empty(), ident)
        deps: list[Var[Any]] = list(result.dependencies)
        state = result.state
        if isinstance(state, Pending):
            return ADDR_PENDING, deps
        if isinstance(state, Failed):
            return AddrFailed(str(state.error)), deps
        leaves = [v for v in state.value.leaves() if isinstance(v, BoundName)]
        match = [b for b in leaves if b.id == ident] or leaves
        if not match:
            return ADDR_NEG, deps
        deps.append(match[0].addr)
        return match[0].addr.value, deps

    def resolve(self, ns: str, extra: Dtab, path: Path) -> tuple[Addr, Sequence[Var[Any]]]:
        """Bind, then the addresses of every leaf together (Linkerd's /api/1/resolve)."""
        state, deps = self.bind(ns, extra, path)
        deps = list(deps)
        if isinstance(state, Pending):
            return ADDR_PENDING, deps
        if isinstance(state, Failed):
            return AddrFailed(str(state.error)), deps
        tree: NameTree[Any] = state.value
        bounds = [v for v in tree.leaves() if isinstance(v, BoundName)]
        if not bounds:
            return ADDR_NEG, deps
        addrs: set[Address] = set()
        for b in bounds:
            deps.append(b.addr)
            value = b.addr.value
            if isinstance(value, AddrPending):
                return ADDR_PENDING, deps
            if isinstance(value, AddrBound):
                addrs.update(value.addresses)
        if not addrs:
            return ADDR_NEG, deps
        return AddrBound(frozenset(addrs)), deps

    async def delegate(self, ns: str, extra: Dtab, path: Path) -> dict[str, Any]:
        return await self.interpreter.delegate(self.dtab(ns) + extra, path)

    def bound_names(self) -> list[str]:
        return bound_names(self.namers)

