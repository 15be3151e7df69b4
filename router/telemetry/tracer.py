"""Per-request telemetry, compiled once per router: trace context, spans, request logs.

`RouterTelemetry` exists only for a router with something to feed (a tracer,
`io.l5d.recentRequests` or `httpAccessLog`); the exchange holds `None`
otherwise and runs no tracing code at all. When it exists, the exchange calls
it at fixed points, each a method of the request's `RequestTrace`:

    begin(ex)                server span start: read and take out the incoming
                             context (l5d-ctx-trace or B3, l5d-sample), decide sampling
    trace.client_headers()   the forwarded request's context and l5d-reqid (client span id)
    trace.attempt(ep)        client attempt start (each attempt; the last endpoint counts)
    trace.response_head()    client attempt end: the backend's response head
    trace.error = text       a router-made error's l5d-err text
    trace.end(ex, ...)       server span end: spans to the tracers, the request to the
                             recent-requests ring and the access log

Sampling follows Finagle: `l5d-sample` (clamped to [0,1]) overrides; else the
caller's decision carried in the context; else the zipkin telemeter's
`sampleRate`, decided from the trace id so that hops which decide alike agree.
The decision is written into the forwarded context, so a trace is sampled on
every hop or on none. Unsampled requests build no spans.
"""

from __future__ import annotations

import random
import struct
import time
from binascii import b2a_base64, hexlify
from typing import Any

from router.http.trace_headers import (
    TraceContext,
    decode_b3,
    decode_l5d,
    encode_b3,
    encode_l5d,
    parse_sample,
)
from router.telemetry.span import Endpoint, Span

_MASK = (1 << 64) - 1
_getrandbits = random.getrandbits
_PACK4 = struct.Struct(">QQQQ").pack


_SPAN = 1 << 64  # trace ids are uniform over [1, 2**64)
_CLIP = 1024  # client text kept per field (uri, user agent, referer)


class Sampler:
    """A decision from the trace id alone (ids are uniform random 64-bit numbers), so
    every hop and telemeter that decides for one trace decides alike, as Finagle's
    Sampler does with its salted modulo; a bound is one comparison."""

    __slots__ = ("rate", "_limit")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._limit = int(rate * _SPAN) if rate < 1.0 else _SPAN

    def __call__(self, trace_id: int) -> bool:
        return trace_id < self._limit


class RouterTelemetry:
    """What one router feeds: tracers (zipkin, tracelog), recent requests, access log."""

    def __init__(self, label: str, propagator: str, zipkins: list[Any], tracelogs: list[Any],
                 recents: list[Any], access_log: Any, version: str = "HTTP/1.1") -> None:
        self.label = label
        self.version = version  # the access log's protocol: HTTP/1.1, or HTTP/2 (h2 routers)
        self.b3 = propagator == "io.l5d.zipkin"
        self.zipkins = zipkins
        self.tracelogs = tracelogs
        self.recents = recents
        self.access_log = access_log
        # zipkin's sampleRate as a bound on the trace id (ids are uniform random): the same
        # decision on every hop that decides
        self.limit = int(zipkins[0].sample_rate * _SPAN) if zipkins else None
        self.tracing = bool(zipkins or tracelogs)
        # something records every request, sampled or not (timestamps always taken)
        self.always = bool(tracelogs or recents or access_log is not None)

    def begin(self, ex: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Server span start: the exchange's `trace`, the incoming context taken out of
        `headers` (the forwarded ones: `ex.head.headers` unless given, as h2 does)."""
        if headers is None:
            headers = ex.head.headers
        ctx_raw = sample_raw = None
        b3: dict[bytes, bytes] | None = None
        host = referer = agent = None
        want_log = self.access_log is not None
        drop = False
        for k, v in headers:
            c = k[0] | 0x20  # lower-case first letter
            if c == 108:  # l
                lk = k.lower()
                if lk == b"l5d-ctx-trace":
                    if not self.b3:
                        ctx_raw, drop = v, True
                elif lk == b"l5d-sample":
                    sample_raw, drop = v, True
            elif c == 120 or c == 98:  # x, b
                if self.b3:
                    lk = k.lower()
                    if lk[:5] == b"x-b3-" or lk == b"b3":
                        if b3 is None:
                            b3 = {}
                        b3[lk] = v
                        drop = True
            elif want_log and (c == 104 or c == 114 or c == 117):  # h, r, u
                lk = k.lower()
                if lk == b"host":
                    host = v
                elif lk == b"referer":
                    referer = v
                elif lk == b"user-agent":
                    agent = v
        if drop:
            headers[:] = [(k, v) for k, v in headers if not _owned(k, self.b3)]
        ctx = None
        if ctx_raw is not None:
            ctx = decode_l5d(ctx_raw)
        elif b3 is not None:
            ctx = decode_b3(b3)
        # ids and the sampling decision (Finagle: l5d-sample, else the caller's, else ours);
        # one random draw makes the server and the client span ids
        r = _getrandbits(128)
        sid = (r >> 64) or 1
        if ctx is not None and ctx.trace_id:  # continue the caller's trace
            tid, sampled, debug = ctx.trace_id, ctx.sampled, ctx.debug
        else:  # a root: Finagle's root span has trace id == span id
            tid = sid
            sampled = None if ctx is None else ctx.sampled  # a B3 decision without ids
            debug = ctx is not None and ctx.debug
        if sample_raw is not None and (sample := parse_sample(sample_raw)) is not None:
            sampled = tid < sample * _SPAN
        elif sampled is None and self.limit is not None:
            sampled = tid < self.limit
        if (sampled is not True and not self.always and not self.b3
                and (ctx is None or ctx.trace_id_high is None)):
            # Nothing will record this request (the common case at sampleRate 0.001): only
            # its context is passed on, made here in one go.
            packed = _PACK4(r & _MASK or 1, sid, tid, 0 if sampled is None else 2)
            ex.trace = _Unrecorded(b"l5d-ctx-trace: " + b2a_base64(packed)[:-1]
                                   + b"\r\nl5d-reqid: " + hexlify(packed[16:24]))
            return
        ex.trace = RequestTrace(self, ex, ctx, sid, tid, sampled, debug,
                                (host, referer, agent) if want_log else None)


class _Unrecorded:
    """The trace of a request nothing records: the forwarded context, and no-op hooks."""

    __slots__ = ("ids", "plan", "error")

    def __init__(self, ids: bytes) -> None:
        self.ids = ids

    def client_headers(self, plan: Any) -> bytes:
        return self.ids

    def attempt(self, ep: Any) -> None:
        pass

    def response_head(self, status: int, length: bytes | None) -> None:
        pass

    def end(self, ex: Any, status: int | None, cause: str | None) -> None:
        pass


def _owned(name: bytes, b3: bool) -> bool:
    lk = name.lower()
    if lk == b"l5d-sample":
        return True
    if b3:
        return lk[:5] == b"x-b3-" or lk == b"b3"
    return lk == b"l5d-ctx-trace"


class RequestTrace:
    """One request's trace ids, sampling decision and what the spans will say.

    Lean on purpose: at Linkerd's default sampleRate (0.001) almost every request only
    needs its ids made and passed on; `rec` says whether anything will record it (then
    the timestamps are taken)."""

    __slots__ = ("tel", "trace_id", "trace_id_high", "span_id", "parent_id", "sampled",
                 "debug", "flags", "rec", "start_us", "client_id", "client_start_us",
                 "client_end_us", "endpoint", "attempts", "status", "length", "error", "plan",
                 "method", "uri", "log_headers", "peer")

    def __init__(self, tel: RouterTelemetry, ex: Any, ctx: TraceContext | None, sid: int,
                 tid: int, sampled: bool | None, debug: bool,
                 log_headers: tuple[Any, Any, Any] | None) -> None:
        self.tel = tel
        self.span_id = sid
        self.trace_id = tid
        if ctx is not None and ctx.trace_id:  # the caller's span is our parent
            self.trace_id_high = ctx.trace_id_high
            self.parent_id: int | None = ctx.span_id
        else:
            self.trace_id_high = self.parent_id = None
        self.debug = debug
        self.sampled: bool | None = sampled
        self.flags = (1 if debug else 0) | (0 if sampled is None else 6 if sampled else 2)
        self.rec = rec = sampled is True or tel.always
        self.start_us = time.time_ns() // 1000 if rec else 0
        self.client_id = self.client_start_us = self.client_end_us = self.attempts = 0
        self.status = 0
        self.endpoint: Any = None
        self.length: bytes | None = None
        self.error: str | None = None
        self.plan: Any = None
        head = ex.head
        self.method: str = head.method
        self.uri: str = head.target
        self.log_headers = log_headers  # (host, referer, user agent) for the access log
        self.peer = ex.conn.peer

    # --- the exchange's fixed points -------------------------------------------
    def client_headers(self, plan: Any) -> bytes:
        """`l5d-ctx-trace` (or x-b3-*) for the client span, and `l5d-reqid` (the trace id)."""
        self.plan = plan
        cid = self.client_id
        if not cid:
            cid = self.client_id = _getrandbits(64) or 1
        if self.tel.b3 or self.trace_id_high is not None:
            ctx = TraceContext(self.trace_id, cid, self.span_id, self.sampled, self.debug,
                               self.trace_id_high)
            ids = encode_b3(ctx) if self.tel.b3 else b"l5d-ctx-trace: %s\r\n" % encode_l5d(ctx)
        else:  # the common case, Finagle's 32 bytes packed here
            packed = _PACK4(cid, self.span_id, self.trace_id, self.flags)
            return (b"l5d-ctx-trace: " + b2a_base64(packed)[:-1] + b"\r\nl5d-reqid: "
                    + hexlify(packed[16:24]))
        return b"%sl5d-reqid: %016x" % (ids, self.trace_id)

    def attempt(self, ep: Any) -> None:
        """Client attempt start: the request head goes to `ep`."""
        self.attempts += 1
        self.endpoint = ep
        if self.rec and not self.client_start_us:
            self.client_start_us = time.time_ns() // 1000

    def response_head(self, status: int, length: bytes | None) -> None:
        """Client attempt end: the backend's response head arrived."""
        self.status = status
        self.length = length
        if self.rec:
            self.client_end_us = time.time_ns() // 1000

    def end(self, ex: Any, status: int | None, cause: str | None) -> None:
        """Server span end (response written, failed or cut): feed everything."""
        if not self.rec:
            return
        tel = self.tel
        end_us = time.time_ns() // 1000
        if status is None:  # a reset: no status reached the client
            status = 0
        ok = ex.ok and cause is None
        if tel.tracing:
            self._spans(ex, end_us, status, ok, cause)
        if tel.recents:
            for recent in tel.recents:
                if recent.sampler(self.trace_id):
                    recent.add(self._summary(end_us, status, ok))
        if tel.access_log is not None:
            tel.access_log.request(self, status, end_us)

    # --- what the spans and logs say ---------------------------------------------
    def _names(self) -> tuple[str | None, str | None, str | None]:
        plan = self.plan
        if plan is None:
            return None, None, None
        client = plan.client
        bound = plan.bound
        residual = bound.residual.show if bound is not None and len(bound.residual) else None
        return plan.service, client.name if client is not None else None, residual

    def endpoint_text(self) -> str | None:
        ep = self.endpoint
        return None if ep is None else ep.hostport

    def _spans(self, ex: Any, end_us: int, status: int, ok: bool, cause: str | None) -> None:
        zipkin_on = self.sampled is True
        logs = [t for t in self.tel.tracelogs if t.wants(self)]
        if not zipkin_on and not logs:
            return
        service, client, residual = self._names()
        srv = ex.server
        label = self.tel.label
        local = Endpoint(label, srv.ip, srv.port)
        tags = {"http.method": self.method, "http.uri": self.uri[:_CLIP],
                "router.label": label}
        if status:
            tags["http.status_code"] = str(status)
        grpc = getattr(ex, "grpc_status", None)  # h2: the gRPC status of the trailers
        if grpc is not None:
            tags["grpc.status_code"] = str(grpc)
        if service:
            tags["service"] = service
            tags["namer.path"] = service
        if client is not None:
            tags["client"] = client
        if residual is not None:
            tags["residual"] = residual
        tags["l5d.success"] = "true" if ok else "false"
        error = self.error or cause
        if not ok:
            tags["error"] = (error or f"status {status}")[:_CLIP]
        name = self.method.lower()
        spans = [Span(self.trace_id, self.trace_id_high, self.span_id, self.parent_id, "SERVER",
                      name, self.start_us, end_us - self.start_us, local,
                      Endpoint(None, self.peer[0], self.peer[1]) if self.peer[0] else None,
                      tags, debug=self.debug)]
        if self.client_id and self.client_start_us:
            ep = self.endpoint
            ctags = dict(tags)
            del ctags["router.label"]
            if ep is not None:
                ctags["endpoint"] = ep.hostport
            if self.status:
                ctags["http.status_code"] = str(self.status)
            if self.attempts > 1:
                ctags["l5d.attempts"] = str(self.attempts)
            c_end = self.client_end_us or end_us
            remote = _endpoint_of(ep)
            spans.append(Span(self.trace_id, self.trace_id_high, self.client_id, self.span_id,
                              "CLIENT", name, self.client_start_us, c_end - self.client_start_us,
                              local, remote, ctags, debug=self.debug))
        if zipkin_on:
            for z in self.tel.zipkins:
                for s in spans:
                    z.record(s)
        for t in logs:
            t.log_spans(spans)

    def _summary(self, end_us: int, status: int, ok: bool) -> dict[str, Any]:
        service, client, _ = self._names()
        return {
            "timestamp": self.start_us // 1000,
            "router": self.tel.label,
            "method": self.method[:32],
            "uri": self.uri[:_CLIP],
            "service": service or None,
            "client": client,
            "endpoint": self.endpoint_text(),
            "status": status,
            "success": ok,
            "latencyMs": round((end_us - self.start_us) / 1000.0, 3),
            "traceId": (f"{self.trace_id_high:016x}" if self.trace_id_high else "")
            + f"{self.trace_id:016x}",
            "source": f"{self.peer[0]}:{self.peer[1]}" if self.peer[0] else None,
            "error": (self.error or None) and self.error[:_CLIP],  # type: ignore[index]
        }


def _endpoint_of(ep: Any) -> Endpoint | None:
    return None if ep is None else Endpoint(None, ep.host, ep.port)
