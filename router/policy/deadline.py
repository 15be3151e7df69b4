"""`l5d-ctx-deadline` (reference §1.12, Linkerd's `LinkerdHeaders.Ctx.Deadline`).

The value is `"<timestampNanos> <deadlineNanos>"`, wall-clock nanoseconds since
the epoch. With several headers the strictest wins (latest timestamp, earliest
deadline: Finagle's `Deadline.combined`). Each hop tightens it with its own
`totalTimeoutMs` and passes it on, so the remaining budget shrinks hop by hop;
l5d-py also enforces it (Linkerd only propagates it): an expired deadline is a
fast 503, and a live one bounds the exchange like a total timeout.
"""

from __future__ import annotations

import time

KEY = b"l5d-ctx-deadline"


def parse(values: tuple[bytes, ...]) -> tuple[int, int] | None:
    """The strictest well-formed (timestamp, deadline) among header values, or None."""
    best: tuple[int, int] | None = None
    for v in values:
        parts = v.split()
        if len(parts) != 2:
            continue
        try:
            ts, dl = int(parts[0]), int(parts[1])
        except ValueError:
            continue
        best = (ts, dl) if best is None else (max(best[0], ts), min(best[1], dl))
    return best


def combine(incoming: tuple[int, int] | None, timeout_s: float | None,
            now_ns: int | None = None) -> tuple[int, int] | None:
    """The deadline to enforce and pass on: the incoming one tightened by a local timeout."""
    if incoming is None and timeout_s is None:
        return None
    now_ns = time.time_ns() if now_ns is None else now_ns
    if timeout_s is None:
        assert incoming is not None
        return (max(incoming[0], now_ns), incoming[1])
    local = now_ns + int(timeout_s * 1e9)
    if incoming is None:
        return (now_ns, local)
    return (max(incoming[0], now_ns), min(incoming[1], local))


def header_line(deadline: tuple[int, int]) -> bytes:
    return b"l5d-ctx-deadline: %d %d\r\n" % deadline


def remaining_s(deadline: tuple[int, int], now_ns: int | None = None) -> float:
    now_ns = time.time_ns() if now_ns is None else now_ns
    return (deadline[1] - now_ns) / 1e9


def expired_message(overdue_ms: float) -> str:
    return (f"request deadline (l5d-ctx-deadline) expired {overdue_ms:.0f} ms ago; "
            "not forwarded")


def timer_message(remaining: float, total_timeout_s: float | None, timeout_message: str
                  ) -> str:
    """What a request cut by its deadline is told: Finagle's totalTimeoutMs sentence when
    the local timeout is the stricter bound, else the caller's deadline named."""
    if total_timeout_s is not None and remaining >= total_timeout_s - 1e-6:
        return timeout_message
    return (f"exceeded {remaining * 1000:.0f}.milliseconds left of the request deadline "
            "(l5d-ctx-deadline) while waiting for a response for the request, "
            "including retries (if applicable)")
