"""A finished span, as the data path records it, and its Zipkin v2 JSON.

The request path only builds a `Span` (plain attributes, ints for ids, epoch
microseconds) and hands it to the exporters; encoding happens in the
exporter's flush task. v2 JSON goes through py_zipkin's encoder (the design
card's zipkin-py); Scribe's thrift encoding is in `scribe.py` (py_zipkin 1.x
dropped its V1_THRIFT encoder).
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _py_zipkin() -> Any:
    """py_zipkin, imported once a span is encoded (it costs ~90 ms at start)."""
    import py_zipkin
    import py_zipkin.encoding as enc

    return enc, enc.get_encoder(enc.Encoding.V2_JSON), {
        "SERVER": py_zipkin.Kind.SERVER, "CLIENT": py_zipkin.Kind.CLIENT}


class Endpoint:
    """Zipkin's endpoint: who recorded a span (local) or who was on the other side (remote)."""

    __slots__ = ("service", "ip", "port")

    def __init__(self, service: str | None, ip: str | None, port: int | None) -> None:
        self.service = service
        self.ip = ip
        self.port = port

    def zipkin(self) -> Any:
        ipv4 = ipv6 = None
        if self.ip:
            if ":" in self.ip:
                ipv6 = self.ip
            else:
                ipv4 = self.ip
        return _py_zipkin()[0].Endpoint(self.service.lower() if self.service else None, ipv4, ipv6,
                         self.port or None)


class Span:
    """One side of one hop: SERVER (the request as this router received it) or CLIENT
    (the request as this router sent it on). Ids are unsigned 64-bit ints."""

    __slots__ = ("trace_id", "trace_id_high", "span_id", "parent_id", "kind", "name",
                 "timestamp_us", "duration_us", "local", "remote", "tags", "annotations",
                 "debug")

    def __init__(self, trace_id: int, trace_id_high: int | None, span_id: int,
                 parent_id: int | None, kind: str, name: str, timestamp_us: int,
                 duration_us: int, local: Endpoint, remote: Endpoint | None,
                 tags: dict[str, str], annotations: list[tuple[int, str]] | None = None,
                 debug: bool = False) -> None:
        self.trace_id = trace_id
        self.trace_id_high = trace_id_high
        self.span_id = span_id
        self.parent_id = parent_id
        self.kind = kind
        self.name = name
        self.timestamp_us = timestamp_us
        self.duration_us = max(1, duration_us)  # Zipkin: under one microsecond rounds up
        self.local = local
        self.remote = remote
        self.tags = tags
        self.annotations = annotations or []
        self.debug = debug

    @property
    def trace_hex(self) -> str:
        low = f"{self.trace_id:016x}"
        return low if self.trace_id_high is None else f"{self.trace_id_high:016x}{low}"

    def to_v2_json(self) -> str:
        """Zipkin v2 JSON (one element of `ListOfSpans`), encoded by py_zipkin."""
        enc, v2, kinds = _py_zipkin()
        span = enc.Span(
            trace_id=self.trace_hex,
            name=self.name,
            parent_id=None if self.parent_id is None else f"{self.parent_id:016x}",
            span_id=f"{self.span_id:016x}",
            kind=kinds[self.kind],
            # py_zipkin takes seconds; it multiplies by 1e6 and truncates, so a
            # quarter-microsecond keeps whole microseconds exact through the float.
            timestamp=(self.timestamp_us + 0.25) / 1e6,
            duration=(self.duration_us + 0.25) / 1e6,
            local_endpoint=self.local.zipkin(),
            remote_endpoint=self.remote.zipkin() if self.remote is not None else None,
            debug=self.debug,
            annotations={value: (ts + 0.25) / 1e6 for ts, value in self.annotations},
            tags=self.tags,
        )
        out = v2.encode_span(span)
        if self.debug:  # py_zipkin's v2 encoder leaves `debug` out
            out = out[:-1] + ', "debug": true}'
        return out

    def describe(self) -> dict[str, Any]:
        """A plain summary (tracelog lines, tests)."""
        return {"traceId": self.trace_hex, "id": f"{self.span_id:016x}",
                "parentId": None if self.parent_id is None else f"{self.parent_id:016x}",
                "kind": self.kind, "name": self.name, "timestamp": self.timestamp_us,
                "duration": self.duration_us, "tags": dict(self.tags)}


def encode_list(spans: list[Span]) -> bytes:
    """`ListOfSpans` as the body of `POST /api/v2/spans`."""
    return ("[" + ",".join(s.to_v2_json() for s in spans) + "]").encode()
