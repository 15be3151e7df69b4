"""Scribe on 9410, as Linkerd 1 sent spans: a framed TBinaryProtocol `Log` call.

Finagle's ScribeRawZipkinTracer sends `scribe.Log(messages: list<LogEntry>)`,
each `LogEntry{category: "zipkin", message: base64(thrift Span v1)}`, over a
framed transport, and reads back a `ResultCode` (0 OK, 1 TRY_LATER). The thrift
here is written by hand: four small structs of zipkinCore.thrift (Span,
Annotation, BinaryAnnotation, Endpoint) and one call. py_zipkin 1.x no longer
has a thrift encoder, and a thrift library for this much would be a heavier
dependency than the code.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import struct

from router.telemetry.span import Endpoint, Span

# TBinaryProtocol type ids
T_STOP, T_BOOL, T_I16, T_I32, T_I64, T_STRING, T_STRUCT, T_LIST = 0, 2, 6, 8, 10, 11, 12, 15
CALL, REPLY, EXCEPTION = 1, 2, 3
VERSION_1 = 0x80010000
ANNOTATION_BOOL, ANNOTATION_STRING = 0, 6
OK, TRY_LATER = 0, 1
CATEGORY = b"zipkin"

_i16 = struct.Struct(">h").pack
_i32 = struct.Struct(">i").pack
_u32 = struct.Struct(">I").pack
_i64 = struct.Struct(">q").pack


def _field(ttype: int, fid: int) -> bytes:
    return bytes((ttype,)) + _i16(fid)


def _string(value: bytes) -> bytes:
    return _i32(len(value)) + value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _endpoint(ep: Endpoint) -> bytes:
    ipv4 = 0
    ipv6 = None
    if ep.ip:
        try:
            addr = ipaddress.ip_address(ep.ip)
        except ValueError:
            addr = None
        if isinstance(addr, ipaddress.IPv4Address):
            ipv4 = int(addr)
        elif isinstance(addr, ipaddress.IPv6Address):
            ipv6 = addr.packed
    port = ep.port or 0
    out = [_field(T_I32, 1), _i32(ipv4 - (1 << 32) if ipv4 >= 1 << 31 else ipv4),
           _field(T_I16, 2), _i16(port - 65536 if port > 32767 else port),
           _field(T_STRING, 3), _string((ep.service or "").lower().encode())]
    if ipv6 is not None:
        out += [_field(T_STRING, 4), _string(ipv6)]
    out.append(b"\x00")
    return b"".join(out)


def _annotation(ts_us: int, value: str, host: bytes) -> bytes:
    return b"".join((_field(T_I64, 1), _i64(ts_us), _field(T_STRING, 2),
                     _string(value.encode()), _field(T_STRUCT, 3), host, b"\x00"))


def _binary(key: str, value: bytes, kind: int, host: bytes) -> bytes:
    return b"".join((_field(T_STRING, 1), _string(key.encode()), _field(T_STRING, 2),
                     _string(value), _field(T_I32, 3), _i32(kind), _field(T_STRUCT, 4), host,
                     b"\x00"))


def encode_span(span: Span) -> bytes:
    """Span v1 (zipkinCore.thrift), as Finagle's tracer wrote it: the v2 kind becomes the
    sr/ss or cs/cr annotations, tags become string binary annotations, the remote side a
    `ca` (client address) or `sa` (server address) annotation."""
    local = _endpoint(span.local)
    start, end = span.timestamp_us, span.timestamp_us + span.duration_us
    first, last = ("sr", "ss") if span.kind == "SERVER" else ("cs", "cr")
    annotations = [_annotation(start, first, local)]
    annotations += [_annotation(ts, value, local) for ts, value in span.annotations]
    annotations.append(_annotation(end, last, local))
    binaries = [_binary(k, v.encode(), ANNOTATION_STRING, local) for k, v in span.tags.items()]
    if span.remote is not None:
        binaries.append(_binary("ca" if span.kind == "SERVER" else "sa", b"\x01",
                                ANNOTATION_BOOL, _endpoint(span.remote)))
    out = [_field(T_I64, 1), _i64(_signed64(span.trace_id)),
           _field(T_STRING, 3), _string(span.name.encode()),
           _field(T_I64, 4), _i64(_signed64(span.span_id))]
    if span.parent_id is not None:
        out += [_field(T_I64, 5), _i64(_signed64(span.parent_id))]
    out += [_field(T_LIST, 6), bytes((T_STRUCT,)), _i32(len(annotations)), *annotations,
            _field(T_LIST, 8), bytes((T_STRUCT,)), _i32(len(binaries)), *binaries]
    if span.debug:
        out += [_field(T_BOOL, 9), b"\x01"]
    out += [_field(T_I64, 10), _i64(span.timestamp_us), _field(T_I64, 11), _i64(span.duration_us)]
    if span.trace_id_high is not None:
        out += [_field(T_I64, 12), _i64(_signed64(span.trace_id_high))]
    out.append(b"\x00")
    return b"".join(out)


def encode_log_call(seqid: int, spans: list[Span]) -> bytes:
    """One framed `Log` call carrying `spans` (each its own LogEntry)."""
    entries = [b"".join((_field(T_STRING, 1), _string(CATEGORY), _field(T_STRING, 2),
                         _string(base64.b64encode(encode_span(s))), b"\x00")) for s in spans]
    body = b"".join((_u32(VERSION_1 | CALL), _string(b"Log"), _i32(seqid),
                     _field(T_LIST, 1), bytes((T_STRUCT,)), _i32(len(entries)), *entries,
                     b"\x00",  # end of the args struct
                     ))
    return _u32(len(body)) + body


class ScribeError(Exception):
    pass


def parse_reply(frame: bytes, seqid: int) -> int:
    """The ResultCode of a `Log` reply frame (without its length prefix)."""
    try:
        (head,) = struct.unpack_from(">I", frame, 0)
        mtype = head & 0xFF
        (nlen,) = struct.unpack_from(">i", frame, 4)
        name = frame[8:8 + nlen]
        pos = 8 + nlen
        (got_seq,) = struct.unpack_from(">i", frame, pos)
        pos += 4
        if head & 0xFFFF0000 != VERSION_1 or name != b"Log":
            raise ScribeError(f"not a Log reply: {frame[:32]!r}")
        if mtype == EXCEPTION:
            raise ScribeError("the collector answered with a thrift exception")
        if mtype != REPLY or got_seq != seqid:
            raise ScribeError(f"unexpected reply type {mtype} / seqid {got_seq} (sent {seqid})")
        ttype = frame[pos]
        if ttype == T_STOP:
            raise ScribeError("Log reply without a result")
        (fid,) = struct.unpack_from(">h", frame, pos + 1)
        if ttype != T_I32 or fid != 0:
            raise ScribeError(f"Log reply field {fid} of type {ttype}, expected the i32 result")
        (code,) = struct.unpack_from(">i", frame, pos + 3)
        return int(code)
    except (struct.error, IndexError) as e:
        raise ScribeError(f"truncated Log reply: {e}") from None


class ScribeTransport:
    """One connection to the collector, reopened after any failure; one call at a time."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._seqid = 0

    def describe(self) -> str:
        return f"scribe://{self.host}:{self.port}"

    async def send(self, spans: list[Span]) -> None:
        try:
            await asyncio.wait_for(self._call(spans), self.timeout_s)
        except BaseException:
            self.close()
            raise

    async def _call(self, spans: list[Span]) -> None:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._conn
        self._seqid = (self._seqid + 1) & 0x7FFFFFFF
        writer.write(encode_log_call(self._seqid, spans))
        await writer.drain()
        (length,) = struct.unpack(">I", await reader.readexactly(4))
        if length > 1 << 20:
            raise ScribeError(f"reply frame of {length} bytes")
        code = parse_reply(await reader.readexactly(length), self._seqid)
        if code == TRY_LATER:
            raise ScribeError("the collector answered TRY_LATER")
        if code != OK:
            raise ScribeError(f"the collector answered result code {code}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    async def aclose(self) -> None:
        self.close()
