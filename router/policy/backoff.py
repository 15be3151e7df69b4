"""Backoff schedules (Finagle's `Backoff`): each use gets a fresh iterator of delays in ms.

`constant{ms}` for retries, `jittered{minMs, maxMs}` is Finagle's decorrelated
jitter (each delay random between minMs and 3x the previous, capped at maxMs),
and `equalJittered` is failure accrual's default (5 s doubling to 300 s, each
delay half fixed and half random).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from dtab.errors import ParamError

_rng = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
    kind: str  # constant | jittered | equalJittered
    min_ms: float = 0.0
    max_ms: float = 0.0
    rng: random.Random = field(default=_rng, compare=False, repr=False)

    def delays(self) -> Iterator[float]:
        """Delays in milliseconds, endless."""
        rng = self.rng
        if self.kind == "constant":
            while True:
                yield self.min_ms
        elif self.kind == "jittered":
            lo, hi = self.min_ms, self.max_ms
            cur = lo
            yield cur
            while True:
                cur = min(hi, rng.uniform(lo, max(lo, cur * 3)))
                yield cur
        else:  # equalJittered
            base = self.min_ms
            yield base
            while True:
                base = min(self.max_ms, base * 2)
                yield base / 2 + rng.uniform(0, base / 2)

    def show(self) -> str:
        if self.kind == "constant":
            return f"constant {self.min_ms:g} ms"
        return f"{self.kind} {self.min_ms:g}-{self.max_ms:g} ms"


NONE = Backoff("constant", 0.0)


def constant(ms: float) -> Backoff:
    return Backoff("constant", float(ms), float(ms))


def jittered(min_ms: float, max_ms: float) -> Backoff:
    return Backoff("jittered", float(min_ms), float(max_ms))


def equal_jittered(min_ms: float, max_ms: float) -> Backoff:
    return Backoff("equalJittered", float(min_ms), float(max_ms))


def from_config(cfg: object | None, default: Backoff = NONE) -> Backoff:
    """From a `backoff` block as router.config parses it (`kind`, `ms`, `min_ms`, `max_ms`)."""
    if cfg is None:
        return default
    kind = getattr(cfg, "kind", "constant")
    if kind == "constant":
        return constant(getattr(cfg, "ms", 0) or 0)
    if kind == "jittered":
        lo, hi = getattr(cfg, "min_ms", None), getattr(cfg, "max_ms", None)
        if lo is None or hi is None:
            raise ParamError("backoff", "jittered backoff needs minMs and maxMs")
        return jittered(lo, hi)
    if kind == "equalJittered":
        return equal_jittered(cfg.min_ms, cfg.max_ms)  # type: ignore[attr-defined]
    raise ParamError("backoff", f"unknown backoff kind {kind!r} (expected constant or jittered)")
