"""A Zipkin collector on loopback for the tracing tests, in threads of the test process.

- `HttpCollector`: `POST /api/v2/spans`; every body is validated against the official
  Zipkin v2 API (tests/data/zipkin/zipkin2-api.yaml, `definitions.ListOfSpans`) plus
  the id lengths the schema's unanchored patterns do not enforce. A span that fails
  is kept in `invalid` with the reason (tests assert it stays empty) and the request
  answered 400, as a real collector would.
- `ScribeCollector`: Scribe's framed TBinaryProtocol `Log` call on a TCP port, decoded
  here independently of the router's encoder, each message's base64 thrift Span v1
  turned into the v2 shape (then validated the same way); answers ResultCode OK, or
  TRY_LATER when `try_later` is set.
"""

from __future__ import annotations

import base64
import json
import socket
import socketserver
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_FILE = Path(__file__).parent / "data" / "zipkin" / "zipkin2-api.yaml"
_HEX = set("0123456789abcdef")


def _validator() -> jsonschema.protocols.Validator:
    api = yaml.safe_load(SCHEMA_FILE.read_text())
    schema = {"$ref": "#/definitions/ListOfSpans", "definitions": api["definitions"]}
    return jsonschema.Draft4Validator(schema)


VALIDATOR = _validator()


def span_problems(spans: Any) -> list[str]:
    """Schema errors plus id checks: traceId 16 or 32 lowercase hex, id/parentId 16."""
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                for e in VALIDATOR.iter_errors(spans)]
    if not isinstance(spans, list):
        return problems or ["not a list"]
    for i, s in enumerate(spans):
        if not isinstance(s, dict):
            continue
        for key, lengths in (("traceId", (16, 32)), ("id", (16,)), ("parentId", (16,))):
            v = s.get(key)
            if v is None and key == "parentId":
                continue
            if not isinstance(v, str) or len(v) not in lengths or not set(v) <= _HEX:
                problems.append(f"{i}/{key}: {v!r} is not {' or '.join(map(str, lengths))} "
                                "lowercase hex characters")
        for key in ("timestamp", "duration", "kind", "localEndpoint", "name"):
            if key not in s:
                problems.append(f"{i}: no {key}")
    return problems


class _Collector:
    """What both collectors keep: valid spans, invalid ones with the reason, a server thread."""

    server: Any

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.invalid: list[tuple[str, Any]] = []
        self.lock = threading.Lock()

    def _serve(self, server: Any) -> None:
        self.server = server
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HttpCollector(_Collector):
    def __init__(self, status: int = 202) -> None:
        super().__init__()
        self.posts = 0
        self.status = status
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    spans = json.loads(body)
                    problems = span_problems(spans)
                except ValueError as e:
                    spans, problems = body, [f"not JSON: {e}"]
                ok = self.path == "/api/v2/spans" and not problems
                with collector.lock:
                    collector.posts += 1
                    if ok:
                        collector.spans.extend(spans)
                    else:
                        collector.invalid.append((f"{self.path}: {problems}", spans))
                status = collector.status if ok else 400
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._serve(server)


# --- Scribe ---------------------------------------------------------------------------

class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        if len(out) != n:
            raise ValueError("truncated thrift")
        self.pos += n
        return out

    def i8(self) -> int:
        return self.take(1)[0]

    def i16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def i32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def i64(self) -> int:
        return struct.unpack(">q", self.take(8))[0]

    def binary(self) -> bytes:
        return self.take(self.i32())

    def value(self, ttype: int) -> Any:
        if ttype == 2:
            return self.i8() != 0
        if ttype == 3:
            return self.i8()
        if ttype == 6:
            return self.i16()
        if ttype == 8:
            return self.i32()
        if ttype == 10:
            return self.i64()
        if ttype == 11:
            return self.binary()
        if ttype == 12:
            return self.struct()
        if ttype == 15:
            etype = self.i8()
            return [self.value(etype) for _ in range(self.i32())]
        raise ValueError(f"thrift type {ttype} not expected here")

    def struct(self) -> dict[int, Any]:
        out = {}
        while True:
            ttype = self.i8()
            if ttype == 0:
                return out
            fid = self.i16()
            out[fid] = self.value(ttype)


def _u64hex(v: int) -> str:
    return f"{v & 0xFFFFFFFFFFFFFFFF:016x}"


def _endpoint(e: dict[int, Any]) -> dict[str, Any]:
    ip = e.get(1, 0) & 0xFFFFFFFF
    out: dict[str, Any] = {"ipv4": socket.inet_ntoa(struct.pack(">I", ip))}
    port = e.get(2, 0) & 0xFFFF
    if port:
        out["port"] = port
    if e.get(3):
        out["serviceName"] = e[3].decode()
    return out


def v1_to_v2(s: dict[int, Any]) -> dict[str, Any]:
    """A decoded thrift Span v1 in the v2 JSON shape (as zipkin's V1SpanConverter does)."""
    annotations = {a[2].decode(): a for a in s.get(6, [])}
    kind = "SERVER" if "sr" in annotations else "CLIENT" if "cs" in annotations else None
    first, last = ("sr", "ss") if kind == "SERVER" else ("cs", "cr")
    out: dict[str, Any] = {
        "traceId": (_u64hex(s[12]) if 12 in s else "") + _u64hex(s[1]),
        "id": _u64hex(s[4]), "name": s[3].decode(), "kind": kind,
        "timestamp": s[10], "duration": s[11],
        "localEndpoint": _endpoint(annotations[first][3]),
        "annotations": [{"timestamp": a[1], "value": v} for v, a in annotations.items()
                        if v not in (first, last)],
        "tags": {}, "v1Annotations": [first, last] if first in annotations and
        last in annotations else [],
    }
    if 5 in s:
        out["parentId"] = _u64hex(s[5])
    for b in s.get(8, []):
        key = b[1].decode()
        if key in ("ca", "sa"):
            out["remoteEndpoint"] = _endpoint(b[4])
        else:
            out["tags"][key] = b[2].decode()
    if not out["annotations"]:
        del out["annotations"]
    return out


class ScribeCollector(_Collector):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.categories: set[str] = set()
        self.try_later = False
        collector = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                f = sock.makefile("rb")
                while True:
                    head = f.read(4)
                    if len(head) < 4:
                        return
                    frame = f.read(struct.unpack(">I", head)[0])
                    seqid = collector._take(frame)
                    code = 1 if collector.try_later else 0
                    name = b"Log"
                    body = (struct.pack(">I", 0x80010002) + struct.pack(">i", len(name)) + name
                            + struct.pack(">i", seqid) + b"\x08" + struct.pack(">h", 0)
                            + struct.pack(">i", code) + b"\x00")
                    sock.sendall(struct.pack(">I", len(body)) + body)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._serve(Server(("127.0.0.1", 0), Handler))

    def _take(self, frame: bytes) -> int:
        r = _Reader(frame)
        version = struct.unpack(">I", r.take(4))[0]
        assert version == 0x80010001, hex(version)  # strict binary, CALL
        assert r.binary() == b"Log"
        seqid = r.i32()
        args = r.struct()
        spans, bad = [], []
        for entry in args[1]:
            self.categories.add(entry[1].decode())
            v2 = v1_to_v2(_Reader(base64.b64decode(entry[2], validate=True)).struct())
            v1 = v2.pop("v1Annotations")
            problems = span_problems([v2])
            if len(v1) != 2:
                problems.append("missing the sr/ss or cs/cr annotations")
            (bad if problems else spans).append((problems, v2))
        with self.lock:
            self.calls += 1
            self.spans.extend(s for _, s in spans)
            self.invalid.extend((str(p), s) for p, s in bad)
        return seqid
