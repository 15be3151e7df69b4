"""Connection lifetimes and progress timeouts: `serverSession` and `clientSession`.

Linkerd's keys are `idleTimeMs` and `lifeTimeMs` (reference §1.7, §1.9), both
forever by default, and so they stay here. Linkerd has no timeout on reading a
request head or on a body that stops moving, and a router at the edge of every
node cannot live without them (200 slowloris connections were held forever), so
l5d-py adds two keys of its own with finite defaults:

- `headerReadTimeoutMs` (server only, default 10 000): from the first byte of a
  request head (or from accept, for a connection's first request) to its end.
- `bodyProgressTimeoutMs` (default 60 000): the longest a request or response
  body may go without a byte moving, on the client side (serverSession) or the
  backend side (clientSession).

`0` turns an l5d-py timeout off. The checks run on one timer per connection,
re-armed every quarter of the shortest timeout (capped at 2.5 s), so idle and
body timeouts fire up to one tick late and the header-read timeout up to one tick
early or late (it is timed from the tick before the head's first byte was seen);
nothing is allocated per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_HEADER_READ_TIMEOUT_MS = 10_000
DEFAULT_BODY_PROGRESS_TIMEOUT_MS = 60_000
_MAX_MS = 24 * 3600 * 1000


def _s(ms: int | None) -> float | None:
    return ms / 1000.0 if ms else None


@dataclass(frozen=True)
class ClientSession:
    idle_time_ms: int | None = None
    life_time_ms: int | None = None
    body_progress_timeout_ms: int | None = DEFAULT_BODY_PROGRESS_TIMEOUT_MS

    @property
    def idle_s(self) -> float | None:
        return _s(self.idle_time_ms)

    @property
    def life_s(self) -> float | None:
        return _s(self.life_time_ms)

    @property
    def body_s(self) -> float | None:
        return _s(self.body_progress_timeout_ms)


@dataclass(frozen=True)
class ServerSession(ClientSession):
    """The client's keys plus the request head's timeout."""

    header_read_timeout_ms: int | None = DEFAULT_HEADER_READ_TIMEOUT_MS

    @property
    def header_s(self) -> float | None:
        return _s(self.header_read_timeout_ms)

    def tick_s(self) -> float | None:
        """How often a connection checks its deadlines (None: never)."""
        limits = [x for x in (self.idle_s, self.life_s, self.header_s, self.body_s) if x]
        return min(max(min(limits) / 4, 0.02), 2.5) if limits else None


DEFAULT_SERVER_SESSION = ServerSession()
DEFAULT_CLIENT_SESSION = ClientSession()


def _ms(obj: Any, key: str, default: int | None, *, zero_is_off: bool) -> int | None:
    value = obj.int(key, default, lo=0 if zero_is_off else 1, hi=_MAX_MS,
                    expected=("milliseconds, 0 for no timeout" if zero_is_off else
                              "milliseconds >= 1 (leave it out for forever)"))
    return value or None


def _common(obj: Any) -> dict[str, int | None]:
    return {
        "idle_time_ms": _ms(obj, "idleTimeMs", None, zero_is_off=False),
        "life_time_ms": _ms(obj, "lifeTimeMs", None, zero_is_off=False),
        "body_progress_timeout_ms": _ms(obj, "bodyProgressTimeoutMs",
                                        DEFAULT_BODY_PROGRESS_TIMEOUT_MS, zero_is_off=True),
    }


def parse_server_session(obj: Any) -> ServerSession:
    """`serverSession:` of a server entry (`obj` is the config loader's mapping, or None)."""
    if obj is None:
        return DEFAULT_SERVER_SESSION
    cfg = ServerSession(
        **_common(obj),
        header_read_timeout_ms=_ms(obj, "headerReadTimeoutMs", DEFAULT_HEADER_READ_TIMEOUT_MS,
                                   zero_is_off=True),
    )
    obj.finish()
    return cfg


def parse_client_session(obj: Any) -> ClientSession:
    """`clientSession:` of a client (global or one static entry)."""
    if obj is None:
        return DEFAULT_CLIENT_SESSION
    cfg = ClientSession(**_common(obj))
    obj.finish()
    return cfg
