"""Finagle's token retry budget (`RetryBudget.apply` / `TokenRetryBudget`).

Every request deposits one unit, every retry withdraws `1 / percentCanRetry`
units; deposits leave the bucket after `ttlSecs` (a leaky bucket over ten time
slices), and a fixed reserve of `minRetriesPerSec x ttlSecs` retries keeps
low-traffic services able to retry at all. So over any ttl window at most
`percentCanRetry` of requests are retried, plus the reserve. Units are scaled
by 1000 as Finagle scales them, so percentages like 0.3 stay exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable

_SCALE = 1000
_SLICES = 10


class RetryBudget:
    __slots__ = ("ttl_s", "min_retries_per_sec", "percent_can_retry", "deposit_amount",
                 "withdrawal_amount", "reserve", "_slot_s", "_ring", "_slot", "_sum", "_clock",
                 "empty", "_slot_end")

    def __init__(self, ttl_s: float = 10.0, min_retries_per_sec: int = 10,
                 percent_can_retry: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = float(ttl_s)
        self.min_retries_per_sec = min_retries_per_sec
        self.percent_can_retry = percent_can_retry
        self.empty = min_retries_per_sec == 0 and percent_can_retry == 0.0
        self.deposit_amount = _SCALE
        self.withdrawal_amount = (_SCALE + 1 if percent_can_retry == 0.0
                                  else int(_SCALE / percent_can_retry))
        self.reserve = int(min_retries_per_sec * self.ttl_s) * self.withdrawal_amount
        self._slot_s = self.ttl_s / _SLICES
        self._ring = [0] * _SLICES
        self._clock = clock
        self._slot = int(clock() / self._slot_s)
        self._slot_end = (self._slot + 1) * self._slot_s  # when the current slice ends
        self._sum = 0

    def _advance(self, now: float | None = None) -> int:
        """Index of the current slice, after clearing the slices that left the window."""
        slot = int((self._clock() if now is None else now) / self._slot_s)
        gap = slot - self._slot
        if gap > 0:
            ring = self._ring
            for k in range(1, min(gap, _SLICES) + 1):
                i = (self._slot + k) % _SLICES
                self._sum -= ring[i]
                ring[i] = 0
            self._slot = slot
            self._slot_end = (slot + 1) * self._slot_s
        return self._slot % _SLICES

    def deposit(self, now: float | None = None) -> None:
        """One request's unit. Every request pays it, so `now` (this budget's clock, which
        the data path has at hand) spares a clock read, and within a slice it is two adds."""
        if now is None:
            now = self._clock()
        if now >= self._slot_end:
            self._advance(now)
        self._ring[self._slot % _SLICES] += _SCALE
        self._sum += _SCALE

    def try_withdraw(self) -> bool:
        if self.empty:
            return False
        i = self._advance()
        w = self.withdrawal_amount
        if self._sum + self.reserve >= w:
            self._ring[i] -= w
            self._sum -= w
            return True
        return False

    @property
    def balance(self) -> int:
        """Retries available now (Linkerd's `retries/budget` gauge)."""
        if self.empty:
            return 0
        self._advance()
        return max(self._sum + self.reserve, 0) // self.withdrawal_amount

    def __repr__(self) -> str:
        return (f"RetryBudget(ttl={self.ttl_s:g}s, minRetriesPerSec={self.min_retries_per_sec}, "
                f"percentCanRetry={self.percent_can_retry:g}, balance={self.balance})")


def from_config(cfg: object | None, clock: Callable[[], float] = time.monotonic) -> RetryBudget:
    """From a `budget`/`requeueBudget` block as router.config parses it."""
    if cfg is None:
        return RetryBudget(clock=clock)
    return RetryBudget(getattr(cfg, "ttl_secs", 10), getattr(cfg, "min_retries_per_sec", 10),
                       getattr(cfg, "percent_can_retry", 0.2), clock=clock)
