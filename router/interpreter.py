"""The `default` interpreter: where `/#/...` and `/$/...` paths go, and transformers.

`lookup` is the namer dispatch that `dtab.binding.bind` calls for every path
the dtab does not rewrite: `/#/<prefix>/rest` goes to the configured namers
whose prefix matches, in config order, and the first one that answers
something other than Neg wins (Linkerd's `ConfiguredDtabNamer`); `/$/<name>/rest`
goes to the built-in namers. `bind` applies the interpreter's transformers,
in order, to the bound tree. `delegate` records the same evaluation as the
`/delegator.json` tree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from dtab.addr import BoundName
from dtab.bounded import LogLimiter, WeightedLRU, approx_size
from dtab.dtab import Dtab
from dtab.nametree import Leaf, NameTree, Neg, NegTree
from dtab.observable import Activity, Failed, Ok
from dtab.path import Path
from namers.base import Namer
from namers.builtin import BuiltinNamers
from transformers.base import Transformer

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 60.0)  # clipped, at most one line per key a minute

HASH = "#"
DOLLAR = "$"
DELEGATE_TIMEOUT_S = 2.0


class _Derived(Activity):
    """An Activity computed from other Activities, subscribed to them only while observed.

    Subscribing lazily matters: a namer releases a name (and its watch) when
    nobody observes it, so a derived view must not hold it forever. Reads
    while unobserved recompute from the sources (memoised on their states).
    """

    __slots__ = ("_sources", "_unsubs", "_inputs")

    def __init__(self, sources: Sequence[Activity]) -> None:
        self._sources = tuple(sources)
        self._unsubs: list[Callable[[], None]] | None = None
        self._inputs: tuple[Any, ...] | None = None
        super().__init__()
        self._refresh()

    def _compute(self, states: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def _refresh(self) -> None:
        inputs = tuple(s.value for s in self._sources)
        old = self._inputs
        if old is None or any(a is not b for a, b in zip(inputs, old, strict=True)):
            self._inputs = inputs
            self._value = self._compute(inputs)

    @property
    def value(self) -> Any:
        if self._unsubs is None:
            self._refresh()
        return self._value

    def observe(self, fn: Callable[[Any], None], *, initial: bool = False) -> Callable[[], None]:
        if self._unsubs is None:
            self._refresh()
            self._unsubs = [s.observe(self._changed) for s in self._sources]
        inner = super().observe(fn, initial=initial)

        def unsubscribe() -> None:
            inner()
            if not self._observers and self._unsubs is not None:
                for unsub in self._unsubs:
                    unsub()
                self._unsubs = None

        return unsubscribe

    def _changed(self, _: object) -> None:
        inputs = tuple(s.value for s in self._sources)
        self._inputs = inputs
        self.set(self._compute(inputs))


class _FirstNonNeg(_Derived):
    """Several namers match a path: the first (config order) that is not Neg wins.

    Pending while an earlier namer is still Pending (its answer could win);
    Failed if the first decided namer failed.
    """

    __slots__ = ()

    def _compute(self, states: tuple[Any, ...]) -> Any:
        for state in states:
            if isinstance(state, Ok) and isinstance(state.value, NegTree):
                continue
            return state
        return states[-1] if states else Ok(Neg)


class _Transformed(_Derived):
    """A namer's answer with that namer's own transformers applied to its bound leaves."""

    __slots__ = ("_transformers",)

    def __init__(self, source: Activity, transformers: Sequence[Transformer]) -> None:
        self._transformers = tuple(transformers)
        super().__init__((source,))

    def _compute(self, states: tuple[Any, ...]) -> Any:
        (state,) = states
        if isinstance(state, Ok) and isinstance(state.value, NameTree):
            tree = state.value
            if all(isinstance(v, BoundName) for v in tree.leaves()):
                try:
                    return Ok(apply_transformers(tree, self._transformers))
                except Exception as e:  # a broken transformer fails this name, not the process
                    _limited.exception(("transform", type(e)), "transformer failed on %s",
                                       tree.show)
                    return Failed(e)
        return state


_DERIVED_CACHE_MAX = 10000
_DERIVED_CACHE_BYTES = 8 * 1024 * 1024
_DERIVED_BYTES = 1024  # a derived Activity and its subscription


def _derived_cache() -> WeightedLRU[Path, Activity]:
    return WeightedLRU(_DERIVED_CACHE_BYTES, max_entries=_DERIVED_CACHE_MAX)


class TransformedNamer:
    """A configured namer plus the `transformers:` set on that namer entry."""

    def __init__(self, namer: Namer, transformers: Sequence[Transformer]) -> None:
        self.namer = namer
        self.transformers = tuple(transformers)
        self._cache: WeightedLRU[Path, Activity] = _derived_cache()

    def lookup(self, path: Path) -> Activity:
        act = self._cache.get(path)
        if act is None:  # names come from requests: bounded by bytes
            act = _Transformed(self.namer.lookup(path), self.transformers)
            self._cache.put(path, act, 2 * approx_size(path) + _DERIVED_BYTES)
        return act

    async def start(self) -> None:
        start = getattr(self.namer, "start", None)
        if start is not None:
            await start()

    async def close(self) -> None:
        """Close this entry's transformers (they may hold the namer's watches), then the namer."""
        for t in self.transformers:
            t_close = getattr(t, "close", None)
            if t_close is not None:
                try:
                    t_close()
                except Exception:
                    log.exception("closing transformer %s failed", getattr(t, "prefix", t))
        close = getattr(self.namer, "close", None)
        if close is not None:
            await close()


def apply_transformers(tree: NameTree, transformers: Sequence[Transformer]) -> NameTree:
    for t in transformers:
        tree = t.transform(tree)
    return tree


class Interpreter:
    """Namers in config order (`(prefix, namer)`), built-ins, and transformers."""

    def __init__(
        self,
        namers: Sequence[tuple[Path, Namer]],
        transformers: Sequence[Transformer] = (),
        builtins: BuiltinNamers | None = None,
    ) -> None:
        self.namers = tuple(namers)
        self.transformers = tuple(transformers)
        self.builtins = builtins if builtins is not None else BuiltinNamers()
        self._combined: WeightedLRU[Path, Activity] = _derived_cache()

    # -- the binder's namer dispatch
    def lookup(self, path: Path) -> Activity | None:
        elems = path.elems
        if not elems:
            return None
        head = elems[0]
        if head == HASH:
            rest = path.drop(1)
            matches = [(p, n) for p, n in self.namers if rest.startswith(p)]
            if not matches:
                return None
            if len(matches) == 1:
                prefix, namer = matches[0]
                return namer.lookup(rest.drop(len(prefix)))
            act = self._combined.get(path)
            if act is None:
                act = _FirstNonNeg([n.lookup(rest.drop(len(p))) for p, n in matches])
                self._combined.put(path, act, 2 * approx_size(path) + _DERIVED_BYTES)
            return act
        if head == DOLLAR:
            return self.builtins.lookup(path.drop(1))
        return None

    # -- binding
    def bind(self, dtab: Dtab, path: Path) -> Any:
        """`dtab.binding.bind` with this interpreter's lookup, then the transformers."""
        from dtab.binding import bind

        result = bind(dtab, path, self.lookup)
        if not self.transformers:
            return result
        state = result.state
        if isinstance(state, Ok):
            try:
                state = Ok(apply_transformers(state.value, self.transformers))
            except Exception as e:
                _limited.exception(("bind", type(e)), "transformer failed binding %s",
                                   path.show)
                state = Failed(e)
            return dataclasses.replace(result, state=state)
        return result

    # -- delegation (/delegator.json)
    def delegate_tree(self, dtab: Dtab, path: Path) -> tuple[Any, tuple[Any, ...]]:
        """The delegate tree now, and the Vars to watch while it is pending."""
        from dtab.delegation import delegate_with_dependencies

        steps = [(_transformer_name(t), _leaf_step(t)) for t in self.transformers]
        return delegate_with_dependencies(dtab, path, self.lookup, transform=steps or None)

    async def delegate(self, dtab: Dtab, path: Path, timeout_s: float = DELEGATE_TIMEOUT_S
                       ) -> dict[str, Any]:
        """The delegate tree as JSON, re-evaluated while leaves are Pending (up to `timeout_s`).

        Raises TimeoutError when something is still Pending at the deadline
        (the admin answers 503 "Request timed out.").
        """
        deadline = time.monotonic() + timeout_s
        while True:
            tree, deps = self.delegate_tree(dtab, path)
            if not tree.pending:
                return tree.to_json()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"delegation of {path.show} still pending after {timeout_s}s")
            changed = asyncio.Event()
            unsubs = [d.observe(lambda _v, ev=changed: ev.set()) for d in deps]
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                raise TimeoutError(
                    f"delegation of {path.show} still pending after {timeout_s}s") from None
            finally:
                for unsub in unsubs:
                    unsub()


def _transformer_name(t: Transformer) -> str:
    kind = getattr(t, "kind", None)
    return kind if isinstance(kind, str) else t.prefix.show


def _leaf_step(t: Transformer) -> Any:
    def step(bound: BoundName) -> NameTree:
        return t.transform(Leaf(bound))

    return step
