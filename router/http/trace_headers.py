"""Trace context on the wire: Linkerd's `l5d-ctx-trace`, Zipkin's B3, `l5d-sample`.

`l5d-ctx-trace` is base64 of Finagle's `TraceId.serialize`: four big-endian
64-bit words, span id, parent id, trace id, flags, then (40 bytes instead of 32)
the high half of a 128-bit trace id. Flags: 1 debug, 2 sampling known, 4 sampled.
A root span has parent == span id; `deserialize` reads that as "no parent". B3
(`tracePropagator: io.l5d.zipkin`) carries the same four facts as hex headers,
or as the single `b3` header. Pure: no I/O, used by router/telemetry.
"""

from __future__ import annotations

import base64
import binascii
import struct

DEBUG = 1
SAMPLING_KNOWN = 2
SAMPLED = 4

_MASK64 = (1 << 64) - 1
_WORDS4 = struct.Struct(">QQQQ")
_WORDS5 = struct.Struct(">QQQQQ")

L5D_CTX_TRACE = b"l5d-ctx-trace"
L5D_SAMPLE = b"l5d-sample"
B3_HEADERS = (b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled",
              b"x-b3-flags", b"b3")


class TraceContext:
    """One span's ids as a caller sent them (Finagle's TraceId): ints, unsigned 64-bit."""

    __slots__ = ("trace_id", "trace_id_high", "span_id", "parent_id", "sampled", "debug")

    def __init__(self, trace_id: int, span_id: int, parent_id: int | None = None,
                 sampled: bool | None = None, debug: bool = False,
                 trace_id_high: int | None = None) -> None:
        self.trace_id = trace_id
        self.trace_id_high = trace_id_high
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = True if debug else sampled
        self.debug = debug

    def __repr__(self) -> str:
        return (f"TraceContext({self.trace_hex()}.{self.span_id:016x}<:"
                f"{'-' if self.parent_id is None else f'{self.parent_id:016x}'} "
                f"sampled={self.sampled} debug={self.debug})")

    def trace_hex(self) -> str:
        """16 hex digits, or 32 with the high half (Zipkin's traceId)."""
        low = f"{self.trace_id:016x}"
        return low if self.trace_id_high is None else f"{self.trace_id_high:016x}{low}"

    def flags(self) -> int:
        f = DEBUG if self.debug else 0
        if self.sampled is not None:
            f |= SAMPLING_KNOWN | (SAMPLED if self.sampled else 0)
        return f


# --- l5d-ctx-trace -------------------------------------------------------------------

def serialize(ctx: TraceContext) -> bytes:
    """Finagle's TraceId.serialize: 32 bytes, or 40 with a 128-bit trace id."""
    parent = ctx.span_id if ctx.parent_id is None else ctx.parent_id
    if ctx.trace_id_high is None:
        return _WORDS4.pack(ctx.span_id, parent, ctx.trace_id, ctx.flags())
    return _WORDS5.pack(ctx.span_id, parent, ctx.trace_id, ctx.flags(), ctx.trace_id_high)


def deserialize(data: bytes) -> TraceContext:
    """Finagle's TraceId.deserialize; ValueError unless 32 or 40 bytes."""
    if len(data) == 32:
        span, parent, trace, flags = _WORDS4.unpack(data)
        high = None
    elif len(data) == 40:
        span, parent, trace, flags, high = _WORDS5.unpack(data)
    else:
        raise ValueError(f"Expected 32 or 40 bytes, was: {len(data)}")
    sampled = bool(flags & SAMPLED) if flags & SAMPLING_KNOWN else None
    return TraceContext(trace, span, None if parent == span else parent, sampled,
                        bool(flags & DEBUG), high)


def encode_l5d(ctx: TraceContext) -> bytes:
    return base64.b64encode(serialize(ctx))


def decode_l5d(value: bytes) -> TraceContext | None:
    """An `l5d-ctx-trace` value; None when it is not one (a new trace starts, as in Linkerd)."""
    if len(value) > 64:
        return None
    try:
        return deserialize(base64.b64decode(value.strip(), validate=True))
    except (ValueError, binascii.Error):
        return None


# --- l5d-sample ----------------------------------------------------------------------

def parse_sample(value: bytes) -> float | None:
    """`l5d-sample`: a rate clamped to [0, 1]; None when it is not a number."""
    try:
        rate = float(value[:32])
    except ValueError:
        return None
    if rate != rate:  # NaN
        return None
    return 0.0 if rate < 0 else 1.0 if rate > 1 else rate


# --- B3 ------------------------------------------------------------------------------

def _hex64(value: bytes) -> int | None:
    if not 0 < len(value) <= 16:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def _trace_id(value: bytes) -> tuple[int, int | None] | None:
    """A B3 trace id: 16 or 32 hex digits (shorter is tolerated, as Finagle does)."""
    value = value.strip()
    if len(value) > 32:
        return None
    low = _hex64(value[-16:])
    if low is None:
        return None
    if len(value) > 16:
        high = _hex64(value[:-16])
        if high is None:
            return None
        return low, high
    return low, None


def decode_b3(values: dict[bytes, bytes]) -> TraceContext | None:
    """From lower-cased B3 header names to values. The single `b3` header wins."""
    single = values.get(b"b3")
    if single is not None:
        return _decode_b3_single(single.strip())
    tid = values.get(b"x-b3-traceid")
    sid = values.get(b"x-b3-spanid")
    debug = values.get(b"x-b3-flags", b"").strip() == b"1"
    sampled = _sampled(values.get(b"x-b3-sampled"))
    if tid is None or sid is None:
        if debug or sampled is not None:  # a decision with no ids: a new trace, decided
            return TraceContext(0, 0, None, sampled, debug)
        return None
    trace = _trace_id(tid)
    span = _hex64(sid.strip())
    if trace is None or span is None:
        return None
    parent_raw = values.get(b"x-b3-parentspanid")
    parent = _hex64(parent_raw.strip()) if parent_raw is not None else None
    return TraceContext(trace[0], span, parent, sampled, debug, trace[1])


def _sampled(value: bytes | None) -> bool | None:
    if value is None:
        return None
    v = value.strip().lower()
    if v in (b"1", b"true"):
        return True
    if v in (b"0", b"false"):
        return False
    return None


def _decode_b3_single(value: bytes) -> TraceContext | None:
    """`b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or just `0`/`1`/`d`."""
    parts = value.split(b"-")
    if len(parts) == 1:
        flag = parts[0]
        if flag in (b"0", b"1", b"d"):
            return TraceContext(0, 0, None, flag != b"0", flag == b"d")
        return None
    if len(parts) > 4:
        return None
    trace = _trace_id(parts[0])
    span = _hex64(parts[1])
    if trace is None or span is None:
        return None
    sampled: bool | None = None
    debug = False
    if len(parts) >= 3:
        flag = parts[2]
        if flag == b"d":
            debug = True
        else:
            sampled = _sampled(flag)
            if sampled is None:
                return None
    parent = _hex64(parts[3]) if len(parts) == 4 else None
    return TraceContext(trace[0], span, parent, sampled, debug, trace[1])


def encode_b3(ctx: TraceContext) -> bytes:
    """The x-b3-* request header lines for `ctx` (serialised, each ending in CRLF)."""
    out = [b"x-b3-traceid: %s\r\nx-b3-spanid: %016x\r\n" % (ctx.trace_hex().encode(), ctx.span_id)]
    if ctx.parent_id is not None:
        out.append(b"x-b3-parentspanid: %016x\r\n" % ctx.parent_id)
    if ctx.debug:
        out.append(b"x-b3-flags: 1\r\n")
    elif ctx.sampled is not None:
        out.append(b"x-b3-sampled: %s\r\n" % (b"1" if ctx.sampled else b"0"))
    return b"".join(out)


def is_id(value: int) -> bool:
    """Zero is not a valid span or trace id (B3 and Finagle alike)."""
    return 0 < value <= _MASK64
