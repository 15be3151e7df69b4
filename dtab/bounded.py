"""Bounded memory and bounded logs for everything keyed by what clients send.

A router caches per name and per `l5d-dtab`, and both come from requests: a
flood of distinct Host values or of 40 KB dtabs must cost a bounded amount,
whatever the entry count. `WeightedLRU` bounds a cache by the total *weight*
(approximate bytes, from `approx_size`) of its entries, and optionally their
number; the least recently used go first, except entries a caller pins (a
namer entry someone still observes). `LogLimiter` does the same for log lines:
client text is truncated and a line repeated per key is written at most once
per interval, followed by how many were suppressed.

Pure: no I/O of its own (the limiter calls the logger it is given), so namers,
transformers and the router can all use it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

from dtab.dtab import Dentry, Dtab, Prefix
from dtab.nametree import Alt, Leaf, Union
from dtab.path import Path

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Rough CPython costs, enough to rank and bound (measured with tracemalloc: a parsed
# 40 KB dtab holds about 1.2 MB, ~30 bytes per byte of text).
OBJECT_BYTES = 64
LABEL_BYTES = 56
NODE_BYTES = 120
PARSED_BYTES_PER_CHAR = 32


class WeightedLRU(Generic[K, V]):
    """A mapping bounded by total weight (and optionally entry count), least recent out.

    `put` stores with a weight and evicts until both bounds hold; the weight sum is
    exact. Recency is CLOCK-style (second chance) so that a hit, which every request
    makes several of, costs one dict lookup and one store: `get` only marks the
    entry referenced, and eviction walks from the oldest insertion, moving a marked
    entry to the recent end (mark cleared) instead of evicting it. An entry not hit
    since it was last passed over goes first: the same order as LRU for a cache whose
    hot entries are hit between evictions, without reordering on every hit.

    An entry heavier than the whole budget is not stored (`put` returns False): a
    single hostile value must not flush everyone else's. `pinned(key, value)`
    (optional) marks entries that must stay (they are passed over too);
    `on_evict(key, value)` releases what an evicted entry holds.
    """

    __slots__ = ("max_weight", "max_entries", "weight", "evictions", "_data", "_order",
                 "_pinned", "on_evict")

    def __init__(
        self,
        max_weight: int,
        *,
        max_entries: int | None = None,
        on_evict: Callable[[K, V], None] | None = None,
        pinned: Callable[[K, V], bool] | None = None,
    ) -> None:
        if max_weight <= 0:
            raise ValueError(f"max_weight must be positive, got {max_weight}")
        self.max_weight = max_weight
        self.max_entries = max_entries
        self.weight = 0
        self.evictions = 0
        # key -> [value, weight, referenced]: looked up on every hit (a plain dict is the
        # cheapest lookup); `_order` is only touched by put, pop and eviction.
        self._data: dict[K, list[Any]] = {}
        self._order: OrderedDict[K, None] = OrderedDict()
        self._pinned = pinned
        self.on_evict = on_evict

    def get(self, key: K, default: Any = None) -> Any:
        # router.request.cache_get is this read for the compiled hot path: keep them alike.
        hit = self._data.get(key)
        if hit is None:
            return default
        hit[2] = True
        return hit[0]

    def __getitem__(self, key: K) -> V:
        """The value without refreshing recency; KeyError when absent."""
        return self._data[key][0]  # type: ignore[no-any-return]

    def peek(self, key: K, default: Any = None) -> Any:
        """Like `get` without refreshing recency (sweeps, the admin)."""
        hit = self._data.get(key)
        return default if hit is None else hit[0]

    def put(self, key: K, value: V, weight: int) -> bool:
        old = self._data.pop(key, None)
        if old is not None:
            self.weight -= old[1]
            del self._order[key]
        weight = max(1, int(weight))
        if weight > self.max_weight:
            if old is not None and self.on_evict is not None and old[0] is not value:
                self.on_evict(key, old[0])
            return False
        self._data[key] = [value, weight, False]
        self._order[key] = None
        self.weight += weight
        self._shrink(keep=key)
        return True

    def pop(self, key: K, default: Any = None) -> Any:
        hit = self._data.pop(key, None)
        if hit is None:
            return default
        del self._order[key]
        self.weight -= hit[1]
        return hit[0]

    def _over(self) -> bool:
        return self.weight > self.max_weight or (
            self.max_entries is not None and len(self._data) > self.max_entries)

    def _shrink(self, keep: K | None = None) -> None:
        """Evict until both bounds hold. Each step evicts, clears a mark (at most one per
        entry) or passes over a kept/pinned entry, so this ends."""
        data, order = self._data, self._order
        skipped = 0
        while self._over() and len(data) > skipped + 1:
            key = next(iter(order))
            entry = data[key]
            if entry[2]:  # hit since last passed over: a second chance
                entry[2] = False
                order.move_to_end(key)
                continue
            if key == keep or (self._pinned is not None and self._pinned(key, entry[0])):
                order.move_to_end(key)
                skipped += 1
                continue
            del data[key]
            del order[key]
            self.weight -= entry[1]
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(key, entry[0])

    def evict_where(self, pred: Callable[[K, V], bool]) -> int:
        """Drop (and release) every entry `pred` selects; returns how many."""
        dead = [(k, e[0]) for k, e in self._data.items() if pred(k, e[0])]
        for k, v in dead:
            self.pop(k)
            if self.on_evict is not None:
                self.on_evict(k, v)
        return len(dead)

    def clear(self) -> None:
        items = list(self._data.items())
        self._data.clear()
        self._order.clear()
        self.weight = 0
        if self.on_evict is not None:
            for k, e in items:
                self.on_evict(k, e[0])

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._order))

    def keys(self) -> list[K]:
        return list(self._order)

    def values(self) -> list[V]:
        data = self._data
        return [data[k][0] for k in self._order]

    def items(self) -> list[tuple[K, V]]:
        data = self._data
        return [(k, data[k][0]) for k in self._order]

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._data), "weight": self.weight,
                "max_weight": self.max_weight, "evictions": self.evictions}


def approx_size(value: Any, _depth: int = 0) -> int:
    """Approximate retained bytes of a value made of dtab types, str/bytes and containers.

    Structural and cheap (no heap walk); good enough to bound caches. Name trees,
    dtabs and paths count per node and per label.
    """
    t = type(value)
    if t is str or t is bytes or t is bytearray:
        return OBJECT_BYTES + len(value)
    if value is None or t is bool or t is int or t is float:
        return 16
    if t is Path or t is Prefix:
        return _labels_size(value.elems)
    if _depth > 64:
        return NODE_BYTES
    d = _depth + 1
    if t is Leaf:
        return NODE_BYTES + approx_size(value.value, d)
    if t is Alt:
        return NODE_BYTES + sum(8 + approx_size(x, d) for x in value.trees)
    if t is Union:
        return NODE_BYTES + sum(NODE_BYTES + approx_size(w.tree, d) for w in value.weighted)
    if t is Dtab:
        return dtab_weight(value)
    if t is Dentry:
        return _dentry_weight(value)
    ident = getattr(value, "id", None)  # a BoundName: its id and residual
    if ident is not None and hasattr(value, "residual"):
        return NODE_BYTES + approx_size(ident, d) + approx_size(value.residual, d)
    if isinstance(value, tuple | list | frozenset | set):
        return OBJECT_BYTES + sum(8 + approx_size(x, d) for x in value)
    if isinstance(value, dict):
        return OBJECT_BYTES + sum(
            24 + approx_size(k, d) + approx_size(v, d) for k, v in value.items())
    return NODE_BYTES


def _labels_size(elems: tuple[Any, ...]) -> int:
    n = OBJECT_BYTES + LABEL_BYTES * len(elems)
    for e in elems:
        if type(e) is str:
            n += len(e)
    return n


def _dentry_weight(dentry: Any) -> int:
    """A dentry's bytes, plus the rule the owning Dtab compiles for it; cached on it."""
    w = dentry.__dict__.get("_weight")
    if w is None:
        w = NODE_BYTES * 5 + _labels_size(dentry.prefix.elems) + approx_size(dentry.dst, 1)
        object.__setattr__(dentry, "_weight", w)
    return w


def dtab_weight(dtab: Any) -> int:
    """A dtab's approximate bytes, cached on the (immutable) Dtab (and per dentry, so
    `base + local` costs only a sum)."""
    w = dtab.__dict__.get("_weight")
    if w is None:
        w = OBJECT_BYTES + sum(map(_dentry_weight, dtab.dentries))
        object.__setattr__(dtab, "_weight", w)
    return w


# -- logs ------------------------------------------------------------------------------

MAX_LOGGED_CHARS = 200


def clip(value: Any, limit: int = MAX_LOGGED_CHARS) -> str:
    """`value` as text of at most about `limit` characters, saying how much was cut."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more chars)"


class LogLimiter:
    """One log line per key per `interval_s`; the next one says how many were suppressed.

    Keys are what makes a line the same line (the namer and the file, the cause);
    at most `max_keys` are remembered, so hostile keys cannot grow it. Arguments
    are clipped to `max_chars` each, so client text never reaches a line unbounded.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0, *,
                 max_keys: int = 1024, max_chars: int = MAX_LOGGED_CHARS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_chars = max_chars
        self.clock = clock
        # hash(key) -> [time last written, lines suppressed since]
        self._seen: OrderedDict[int, list[float]] = OrderedDict()
        self.max_keys = max_keys

    def log(self, level: int, key: Hashable, msg: str, *args: Any,
            exc_info: bool = False) -> bool:
        """Write `msg % args` unless `key` was written within the interval; True if written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        key = hash(key)  # keys may hold client text: only their hash is kept
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            seen[1] += 1
            self._seen.move_to_end(key)
            return False
        suppressed = int(seen[1]) if seen is not None else 0
        if seen is None:
            seen = self._seen[key] = [now, 0]
            if len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        else:
            seen[0], seen[1] = now, 0
            self._seen.move_to_end(key)
        clipped = tuple(a if isinstance(a, int | float) else clip(a, self.max_chars)
                        for a in args)
        if suppressed:
            msg += " (%d similar lines suppressed in the last %.0fs)"
            clipped += (suppressed, self.interval_s)
        self.logger.log(level, msg, *clipped, exc_info=exc_info)
        return True

    def warning(self, key: Hashable, msg: str, *args: Any) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def info(self, key: Hashable, msg: str, *args: Any) -> bool:
        return self.log(logging.INFO, key, msg, *args)

    def exception(self, key: Hashable, msg: str, *args: Any) -> bool:
        return self.log(logging.ERROR, key, msg, *args, exc_info=True)
