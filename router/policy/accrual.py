"""Failure accrual (Finagle's `FailureAccrualFactory`, Linkerd's `failureAccrual` kinds).

A policy watches one endpoint's outcomes (as the service's classifier judges
them, connection failures included) and says when the endpoint should be
marked dead. Each endpoint moves through Finagle's four states:

    Alive --policy trips--> Dead --backoff elapsed--> ProbeOpen --one request--> ProbeClosed
      ^                      ^                                                      |
      |                      `-------------- the probe failed (next backoff) -------+
      `------------------------------------- the probe succeeded ------------------'

Dead and ProbeClosed endpoints are out of the balancer (Finagle's `Busy`);
ProbeOpen is back in, and the first request dispatched to it closes the probe
(`failure_accrual/probes`), so exactly one request tests a recovering endpoint
while the others go elsewhere. Its success revives the endpoint (the backoff
starts over, `revivals`); its failure marks it dead again for the next, longer
delay (no new `removals`: as Finagle counts, a removal is Alive -> Dead). When
every endpoint of a client is out the balancer uses them all anyway (as
Finagle's balancers do when no node is open); outcomes there change nothing
but the policy's record, the timer still decides.

Kinds and params (reference §1.7): `io.l5d.consecutiveFailures{failures: 5}`,
`io.l5d.successRate{successRate, requests}` (an EMA over the last `requests`
responses), `io.l5d.successRateWindowed{successRate, window}` (over `window`
seconds, at least 5 requests), `none`. Each takes a `backoff`; the default is
Linkerd's equal-jittered 5 s to 300 s.

Cost on the request path: a success on an Alive endpoint under
consecutiveFailures with no failure since the last success (the steady state of
the default policy) is one attribute test in the exchange (`needs_success`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dtab.errors import ParamError
from router.policy.backoff import Backoff, equal_jittered

log = logging.getLogger(__name__)

DEFAULT_BACKOFF = equal_jittered(5_000, 300_000)
KINDS = ("io.l5d.consecutiveFailures", "io.l5d.successRate", "io.l5d.successRateWindowed",
         "none")
_MIN_REQUESTS_WINDOWED = 5  # Finagle's SuccessRateFailureAccrualPolicy minRequestThreshold


class ConsecutiveFailures:
    # a success matters only after a failure (it resets the count): see `needs_success`
    lazy_success = True
    __slots__ = ("n", "count")

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0

    def success(self) -> None:
        self.count = 0

    def failure(self) -> bool:
        self.count += 1
        return self.count >= self.n

    def reset(self) -> None:
        self.count = 0


class SuccessRate:
    """Exponentially weighted success rate over about the last `window` responses."""

    lazy_success = False

    __slots__ = ("required", "window", "ema", "seen", "_w")

    def __init__(self, required: float, window: int) -> None:
        self.required = required
        self.window = window
        self._w = math.exp(-1.0 / window)
        self.ema = 1.0
        self.seen = 0

    def success(self) -> None:
        self.seen += 1
        self.ema = self.ema * self._w + (1.0 - self._w)

    def failure(self) -> bool:
        self.seen += 1
        self.ema = self.ema * self._w
        return self.seen >= self.window and self.ema < self.required

    def reset(self) -> None:
        self.ema = 1.0
        self.seen = 0


class SuccessRateWindowed:
    """Success rate over the last `window_s` seconds (ten slices), once 5 requests were seen."""

    lazy_success = False

    __slots__ = ("required", "window_s", "_slot_s", "_ok", "_bad", "_slot", "_clock")

    def __init__(self, required: float, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.required = required
        self.window_s = window_s
        self._slot_s = window_s / 10
        self._ok = [0] * 10
        self._bad = [0] * 10
        self._clock = clock
        self._slot = int(clock() / self._slot_s)

    def _index(self) -> int:
        slot = int(self._clock() / self._slot_s)
        gap = slot - self._slot
        for k in range(1, min(gap, 10) + 1):
            i = (self._slot + k) % 10
            self._ok[i] = self._bad[i] = 0
        self._slot = max(slot, self._slot)
        return slot % 10

    def success(self) -> None:
        self._ok[self._index()] += 1

    def failure(self) -> bool:
        self._bad[self._index()] += 1
        ok, bad = sum(self._ok), sum(self._bad)
        total = ok + bad
        return total >= _MIN_REQUESTS_WINDOWED and ok / total < self.required

    def reset(self) -> None:
        self._ok = [0] * 10
        self._bad = [0] * 10


@dataclass(frozen=True)
class AccrualSpec:
    """A compiled `failureAccrual` block: makes one policy per endpoint."""

    kind: str
    make: Callable[[], Any] | None  # None for `none`
    backoff: Backoff = DEFAULT_BACKOFF
    describe: str = field(default="", compare=False)


def build(kind: str, params: dict[str, Any], backoff: Backoff | None = None) -> AccrualSpec:
    """Validate a `failureAccrual` block's own params (ParamError names the key)."""
    params = dict(params)
    params.pop("kind", None)
    params.pop("backoff", None)
    bo = backoff or DEFAULT_BACKOFF

    def number(key: str, default: float | None, lo: float, hi: float | None,
               integer: bool) -> float:
        value = params.pop(key, default)
        if value is None:
            raise ParamError(key, f"{kind} needs '{key}'")
        if isinstance(value, str):
            try:
                value = int(value) if integer else float(value)
            except ValueError:
                pass
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            raise ParamError(key, f"expected {'an integer' if integer else 'a number'}, "
                             f"got {value!r}")
        if value < lo or (hi is not None and value > hi):
            raise ParamError(key, f"{value} is out of range (expected {lo}"
                             f"{' to ' + str(hi) if hi is not None else ' or more'})")
        return value

    if kind == "io.l5d.consecutiveFailures":
        n = int(number("failures", 5, 1, None, True))
        spec = AccrualSpec(kind, lambda: ConsecutiveFailures(n), bo, f"{n} consecutive failures")
    elif kind == "io.l5d.successRate":
        sr = float(number("successRate", None, 0.0, 1.0, False))
        req = int(number("requests", None, 1, None, True))
        spec = AccrualSpec(kind, lambda: SuccessRate(sr, req), bo,
                           f"success rate < {sr:g} over {req} requests")
    elif kind == "io.l5d.successRateWindowed":
        sr = float(number("successRate", None, 0.0, 1.0, False))
        window = int(number("window", None, 1, None, True))
        spec = AccrualSpec(kind, lambda: SuccessRateWindowed(sr, window), bo,
                           f"success rate < {sr:g} over {window} s")
    elif kind == "none":
        spec = AccrualSpec(kind, None, bo, "none")
    else:
        raise ParamError("kind", f"unknown failure accrual kind {kind!r} "
                         f"(expected one of: {', '.join(KINDS)})")
    if params:
        key = next(iter(params))
        raise ParamError(key, f"unknown key '{key}' for {kind}")
    return spec


DEFAULT = build("io.l5d.consecutiveFailures", {})


ALIVE, DEAD, PROBE_OPEN, PROBE_CLOSED = "alive", "dead", "probeOpen", "probeClosed"


class EndpointAccrual:
    """One endpoint's accrual state. The exchange calls `success()` (only when
    `needs_success`) or `failure()` per outcome; the balancer calls `probe_taken()` when it
    dispatches to a ProbeOpen endpoint (`ep.probe_open`)."""

    __slots__ = ("owner", "ep", "policy", "delays", "state", "timer", "needs_success")

    def __init__(self, owner: FailureAccrual, ep: Any) -> None:
        self.owner = owner
        self.ep = ep
        self.policy = owner.spec.make()  # type: ignore[misc]
        self.delays: Iterator[float] = owner.spec.backoff.delays()
        self.state = ALIVE
        self.timer: Any = None
        self.needs_success = not self.policy.lazy_success

    def _settle(self) -> None:
        """`needs_success` false only where a success would change nothing at all."""
        self.needs_success = (not self.policy.lazy_success or self.state != ALIVE
                              or self.policy.count > 0)

    def success(self) -> None:
        self.policy.success()
        if self.state == PROBE_CLOSED:
            self.owner.revive(self)
        self._settle()

    def failure(self) -> None:
        state = self.state
        if state == PROBE_OPEN:  # a connect failure before any request went out: the probe
            self.owner.probe_taken(self)
            state = PROBE_CLOSED
        if state == ALIVE or state == PROBE_CLOSED:
            if self.policy.failure():
                self.owner.mark_dead(self)
            elif state == PROBE_CLOSED:  # the policy is not sure: probe again
                self.owner.start_probing(self)
        self.needs_success = True

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class FailureAccrual:
    """A client's accrual: marks endpoints dead and probes them back, with Linkerd's stats
    (`failure_accrual/{removals, revivals, probes, removed_for_ms}`)."""

    def __init__(self, spec: AccrualSpec, balancer: Any, scope: Any, client_name: str = "",
                 call_later: Callable[[float, Callable[[], None]], Any] | None = None) -> None:
        self.spec = spec
        self.balancer = balancer
        self.client_name = client_name
        self._call_later = call_later
        self.removals = scope.counter("failure_accrual", "removals")
        self.revivals = scope.counter("failure_accrual", "revivals")
        self.probes = scope.counter("failure_accrual", "probes")
        self.removed_for_ms = scope.counter("failure_accrual", "removed_for_ms")

    def attach(self, ep: Any) -> None:
        ep.accrual = EndpointAccrual(self, ep)

    def _later(self, delay_s: float, fn: Callable[[], None]) -> Any:
        if self._call_later is not None:
            return self._call_later(delay_s, fn)
        return asyncio.get_running_loop().call_later(delay_s, fn)

    def _set(self, st: EndpointAccrual, state: str) -> None:
        """The state, and the two flags the balancer reads (`dead`: out; `probe_open`)."""
        st.state = state
        ep = st.ep
        out = state == DEAD or state == PROBE_CLOSED
        ep.probe_open = state == PROBE_OPEN
        if ep.dead != out:
            ep.dead = out
            self.balancer.refresh()

    def mark_dead(self, st: EndpointAccrual) -> None:
        ep = st.ep
        if ep.removed:
            return
        delay_ms = next(st.delays)
        if st.state == ALIVE:  # a failed probe is not another removal (Finagle's count)
            self.removals.value += 1
        self.removed_for_ms.value += int(delay_ms)
        st.close()
        self._set(st, DEAD)
        log.info("%s: failure accrual (%s) marked %s dead for %d ms", self.client_name,
                 self.spec.describe, ep.hostport, delay_ms)
        st.timer = self._later(delay_ms / 1000.0, lambda: self.start_probing(st))

    def start_probing(self, st: EndpointAccrual) -> None:
        """The backoff is over (or a probe was inconclusive): let one request through."""
        st.close()
        if st.ep.removed:
            return
        self._set(st, PROBE_OPEN)
        st.needs_success = True

    def probe_taken(self, st: EndpointAccrual) -> None:
        """A request went to the ProbeOpen endpoint: no more until its outcome is known."""
        if st.state != PROBE_OPEN:
            return
        self.probes.value += 1
        self._set(st, PROBE_CLOSED)

    def revive(self, st: EndpointAccrual) -> None:
        st.policy.reset()
        st.delays = self.spec.backoff.delays()
        self.revivals.value += 1
        self._set(st, ALIVE)
        log.info("%s: %s is back after a successful probe", self.client_name, st.ep.hostport)
