"""Trace context codecs (Finagle's TraceId bytes, B3, l5d-sample), the telemeters' config
(file:line errors), B3 propagation and headers through a real router to an echo backend,
and the access log (Linkerd's line, rotation, a full disk)."""

from __future__ import annotations

import base64
import json
import re
import struct
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from router.config import ConfigError, parse
from router.http.trace_headers import (
    TraceContext,
    decode_b3,
    decode_l5d,
    deserialize,
    encode_b3,
    encode_l5d,
    parse_sample,
    serialize,
)
from tests.test_e2e_router import curl, seen_headers
from tests.util import free_port, wait_until
from tests.zipkin_collector import HttpCollector

# --- codecs ---------------------------------------------------------------------------


def test_serialize_is_finagles_layout() -> None:
    """TraceId.serialize: spanId, parentId, traceId, flags (big-endian longs); 40 bytes when
    the trace id has a high half (put after the flags)."""
    ctx = TraceContext(trace_id=3, span_id=1, parent_id=2, sampled=True)
    assert serialize(ctx) == struct.pack(">QQQQ", 1, 2, 3, 2 | 4)
    ctx = TraceContext(trace_id=3, span_id=1, parent_id=2, sampled=False, trace_id_high=9)
    assert serialize(ctx) == struct.pack(">QQQQQ", 1, 2, 3, 2, 9)
    root = TraceContext(trace_id=7, span_id=7)  # no parent: written as the span itself
    assert serialize(root) == struct.pack(">QQQQ", 7, 7, 7, 0)


def test_deserialize_reads_flags_and_roots() -> None:
    ctx = deserialize(struct.pack(">QQQQ", 1, 1, 5, 0))
    assert (ctx.span_id, ctx.parent_id, ctx.trace_id, ctx.sampled, ctx.debug) == (
        1, None, 5, None, False)
    ctx = deserialize(struct.pack(">QQQQ", 1, 2, 5, 1))  # debug implies sampled
    assert ctx.debug and ctx.sampled is True and ctx.parent_id == 2
    ctx = deserialize(struct.pack(">QQQQQ", 1, 2, 5, 2, 0xFFFFFFFFFFFFFFFF))
    assert ctx.sampled is False and ctx.trace_hex() == "ffffffffffffffff0000000000000005"
    with pytest.raises(ValueError, match="Expected 32 or 40 bytes, was: 31"):
        deserialize(b"x" * 31)


def test_l5d_header_round_trip_and_garbage() -> None:
    ctx = TraceContext(0xDEADBEEF, 0xFFFFFFFFFFFFFFFF, 0x1234, True, False, 0xABC)
    back = decode_l5d(encode_l5d(ctx))
    assert back is not None
    assert (back.trace_id, back.span_id, back.parent_id, back.sampled, back.trace_id_high) == (
        0xDEADBEEF, 0xFFFFFFFFFFFFFFFF, 0x1234, True, 0xABC)
    for bad in (b"", b"not base64!", base64.b64encode(b"x" * 33), b"A" * 100):
        assert decode_l5d(bad) is None


def test_l5d_sample_is_clamped() -> None:
    assert parse_sample(b"0.25") == 0.25
    assert parse_sample(b"7") == 1.0 and parse_sample(b"-1") == 0.0
    assert parse_sample(b"nan") is None and parse_sample(b"yes") is None


def test_b3_multi_and_single_headers() -> None:
    ctx = decode_b3({b"x-b3-traceid": b"463ac35c9f6413ad48485a3953bb6124",
                     b"x-b3-spanid": b"a2fb4a1d1a96d312", b"x-b3-parentspanid": b"0020000000000001",
                     b"x-b3-sampled": b"1"})
    assert ctx is not None and ctx.trace_hex() == "463ac35c9f6413ad48485a3953bb6124"
    assert (ctx.span_id, ctx.parent_id, ctx.sampled) == (0xA2FB4A1D1A96D312, 0x20000000000001,
                                                         True)
    single = decode_b3(
        {b"b3": b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90"})
    assert single is not None and single.debug and single.sampled is True
    assert single.parent_id == 0x05E3AC9A4F6E3B90
    decision_only = decode_b3({b"b3": b"0"})
    assert decision_only is not None and decision_only.sampled is False
    assert decode_b3({b"x-b3-traceid": b"zz", b"x-b3-spanid": b"1"}) is None
    lines = encode_b3(TraceContext(5, 6, 7, False)).decode()
    assert lines == ("x-b3-traceid: 0000000000000005\r\nx-b3-spanid: 0000000000000006\r\n"
                     "x-b3-parentspanid: 0000000000000007\r\nx-b3-sampled: 0\r\n")


# --- config -------------------------------------------------------------------------------

ROUTER = """\
routers:
- protocol: http
  dtab: /svc => /$/inet/127.0.0.1/1;
  servers: [{port: 4999}]
"""


@pytest.mark.parametrize("telemeter, line, key, words", [
    ("- kind: io.l5d.zipkin\n  sampleRate: 2\n", 7, "sampleRate", "out of range"),
    ("- kind: io.l5d.zipkin\n  transport: kafka\n", 7, "transport", "scribe, http"),
    ("- kind: io.l5d.zipkin\n  hots: x\n", 7, "hots", "unknown key"),
    ("- kind: io.l5d.recentRequests\n  capacity: 5\n", 6, "sampleRate", "required"),
    ("- kind: io.l5d.tracelog\n  level: LOUD\n", 7, "level", "unknown level"),
])
def test_telemeter_params_are_checked_with_their_line(telemeter: str, line: int, key: str,
                                                      words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(ROUTER + "telemetry:\n" + telemeter, "t.yaml")
    assert e.value.line == line and key in str(e.value) and words in str(e.value), str(e.value)
    assert "t.yaml" in str(e.value)


def test_router_keys_are_checked_with_their_line() -> None:
    for extra, key in (("  httpAccessLogRollPolicy: fortnightly\n  httpAccessLog: a.log\n",
                        "httpAccessLogRollPolicy"),
                       ("  httpAccessLogRotateCount: 3\n", "httpAccessLogRotateCount"),
                       ("  tracePropagator: {kind: io.l5d.b3}\n", "kind")):
        with pytest.raises(ConfigError) as e:
            parse(ROUTER.replace("  servers:", extra + "  servers:"), "t.yaml")
        assert e.value.line == 4 and key in str(e.value), str(e.value)


def test_defaults_are_linkerds() -> None:
    cfg = parse(ROUTER + "telemetry:\n- kind: io.l5d.zipkin\n- kind: io.l5d.tracelog\n"
                "- kind: io.l5d.recentRequests\n  sampleRate: 0.5\n", "t.yaml")
    z, t, r = (dict(x.params) for x in cfg.telemetry)
    assert (z["host"], z["port"], z["sampleRate"], z["transport"]) == (
        "localhost", 9410, 0.001, "scribe")
    assert (t["sampleRate"], t["level"]) == (1.0, "INFO")
    assert (r["sampleRate"], r["capacity"]) == (0.5, 10)
    http = parse(ROUTER + "telemetry:\n- kind: io.l5d.zipkin\n  transport: http\n", "t.yaml")
    assert dict(http.telemetry[0].params)["port"] == 9411
    assert cfg.routers[0].trace_propagator == "io.l5d.default"
    assert cfg.routers[0].access_log is None


# --- through a router -------------------------------------------------------------------

def _router(l5d_process: Any, backend: int, extra: str = "", telemetry: str = "") -> Any:
    port, admin = free_port(), free_port()
    return l5d_process(textwrap.dedent(f"""\
        admin: {{ip: 127.0.0.1, port: {admin}}}
        routers:
        - protocol: http
          label: edge
          dtab: /svc => /$/inet/127.0.0.1/{backend};
        """) + textwrap.indent(extra, "  ")
        + f"  servers: [{{port: {port}, ip: 127.0.0.1}}]\n"
        + ("telemetry:\n" + telemetry if telemetry else ""), log_level="info")


def test_b3_headers_round_trip(l5d_process: Any, echo_backend: Any) -> None:
    echo = echo_backend("b3")
    collector = HttpCollector()
    try:
        l5d = _router(l5d_process, echo.port, "tracePropagator:\n  kind: io.l5d.zipkin\n",
                      f"- kind: io.l5d.zipkin\n  transport: http\n  host: 127.0.0.1\n"
                      f"  port: {collector.port}\n  sampleRate: 0.0\n  flushIntervalMs: 50\n")
        trace, span = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
        status, _, body = curl(l5d.ports["edge"], "http://web/", f"X-B3-TraceId: {trace}",
                               f"X-B3-SpanId: {span}", "X-B3-Sampled: 1")
        assert status == 200
        seen = seen_headers(body)
        assert seen["x-b3-traceid"] == trace  # the same trace, 128 bits kept
        assert seen["x-b3-sampled"] == "1"  # the caller's decision travels (sampleRate 0)
        assert "l5d-ctx-trace" not in seen and seen["l5d-reqid"] == trace[16:]
        wait_until(lambda: len(collector.snapshot()) >= 2, 15, "two spans")
        assert collector.invalid == []
        server = next(s for s in collector.snapshot() if s["kind"] == "SERVER")
        client = next(s for s in collector.snapshot() if s["kind"] == "CLIENT")
        assert server["traceId"] == client["traceId"] == trace
        assert server["parentId"] == span  # our server span is the caller's child
        assert seen["x-b3-parentspanid"] == server["id"] == client["parentId"]
        assert seen["x-b3-spanid"] == client["id"]
        # the single `b3` header, a decision of 0: no spans, the decision passed on
        status, _, body = curl(l5d.ports["edge"], "http://web/", f"b3: {trace}-{span}-0")
        seen = seen_headers(body)
        assert seen["x-b3-sampled"] == "0" and seen["x-b3-traceid"] == trace
        assert "b3" not in seen
    finally:
        collector.close()


def test_default_propagator_writes_l5d_ctx_trace_and_reqid(l5d_process: Any,
                                                          echo_backend: Any) -> None:
    echo = echo_backend("ctx")
    l5d = _router(l5d_process, echo.port, "", "- kind: io.l5d.zipkin\n  sampleRate: 0.0\n"
                  "  port: 1\n")
    status, _, body = curl(l5d.ports["edge"], "http://web/", "l5d-sample: 1")
    assert status == 200
    seen = seen_headers(body)
    assert "l5d-sample" not in seen  # consumed: the decision is in the context
    ctx = decode_l5d(seen["l5d-ctx-trace"].encode())
    assert ctx is not None and ctx.sampled is True and ctx.parent_id is not None
    assert seen["l5d-reqid"] == f"{ctx.trace_id:016x}"
    # an incoming context is continued: same trace, the client span a grandchild
    incoming = TraceContext(0x1234, 0x99, None, False)
    status, _, body = curl(l5d.ports["edge"], "http://web/",
                           f"l5d-ctx-trace: {encode_l5d(incoming).decode()}")
    ctx = decode_l5d(seen_headers(body)["l5d-ctx-trace"].encode())
    assert ctx is not None and ctx.trace_id == 0x1234 and ctx.sampled is False
    assert ctx.span_id not in (0x99, ctx.parent_id)


def test_without_telemetry_trace_headers_pass_through(l5d_process: Any,
                                                      echo_backend: Any) -> None:
    """No telemeter: the exchange runs no tracing code; the context is passed on as it came."""
    echo = echo_backend("plain")
    l5d = _router(l5d_process, echo.port)
    ctx = encode_l5d(TraceContext(5, 6, 7, True)).decode()
    status, _, body = curl(l5d.ports["edge"], "http://web/", f"l5d-ctx-trace: {ctx}",
                           "l5d-sample: 0.5")
    seen = seen_headers(body)
    assert seen["l5d-ctx-trace"] == ctx and seen["l5d-sample"] == "0.5"
    assert re.fullmatch(r"[0-9a-f]{16}", seen["l5d-reqid"])


# --- access log -------------------------------------------------------------------------

# Linkerd's line: host remote - - [dd/MM/yyyy:HH:mm:ss z] "METHOD uri HTTP/1.1" status bytes
# "referer" "user agent"
LINE = re.compile(r'(?P<host>\S+) (?P<remote>\S+) - - \[(?P<time>\d\d/\d\d/\d{4}:\d\d:\d\d:\d\d '
                  r'\w+)\] "(?P<method>\S+) (?P<uri>\S+) HTTP/1\.1" (?P<status>\d{3}) '
                  r'(?P<bytes>\d+|-) "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"')


def test_access_log_lines_parse(l5d_process: Any, echo_backend: Any, tmp_path: Path) -> None:
    echo = echo_backend("log")
    path = tmp_path / "access.log"
    l5d = _router(l5d_process, echo.port, f"httpAccessLog: {path}\n")
    curl(l5d.ports["edge"], "http://web/a?b=1", "Referer: http://x/", 'User-Agent: te"st')
    curl(l5d.ports["edge"], "http://web/post", method="POST", data="xyz")
    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= 2, 10,
               "two access log lines")
    lines = path.read_text().splitlines()
    m = [LINE.fullmatch(x) for x in lines]
    assert all(m), lines
    first, second = m[0], m[1]
    assert first is not None and second is not None
    assert (first["host"], first["remote"], first["method"], first["uri"], first["status"]) == (
        "web", "127.0.0.1", "GET", "/a?b=1", "200")
    assert first["referer"] == "http://x/" and first["agent"] == 'te\\"st'
    assert int(first["bytes"]) > 0
    assert time.strptime(first["time"], "%d/%m/%Y:%H:%M:%S %Z")
    assert (second["method"], second["uri"]) == ("POST", "/post")
    metrics = _metrics(l5d.admin_port)
    assert metrics["rt/edge/access_log/lines"] == 2


def test_access_log_rotates_by_size_and_keeps_rotate_count(l5d_process: Any, echo_backend: Any,
                                                          tmp_path: Path) -> None:
    echo = echo_backend("rot")
    path = tmp_path / "rot.log"
    l5d = _router(l5d_process, echo.port, f"httpAccessLog: {path}\n"
                  "httpAccessLogRollPolicy: 1.kilobyte\nhttpAccessLogRotateCount: 2\n")
    for i in range(30):
        curl(l5d.ports["edge"], f"http://web/{'x' * 100}{i}")
        time.sleep(0.03)  # several writer rounds, so the file rolls more than twice
    wait_until(lambda: f"x{29} " in path.read_text() if path.exists() else False, 10,
               "the last line")
    rolled = sorted(p for p in tmp_path.iterdir() if p.name.startswith("rot.log."))
    assert 1 <= len(rolled) <= 2, rolled
    assert path.stat().st_size <= 1024 + 400


def test_a_full_disk_never_takes_the_router_down(l5d_process: Any, echo_backend: Any) -> None:
    """/dev/full: every write fails with ENOSPC. Requests are served, failures counted."""
    echo = echo_backend("full")
    l5d = _router(l5d_process, echo.port, "httpAccessLog: /dev/full\n")
    for _ in range(20):
        status, _, _ = curl(l5d.ports["edge"], "http://web/")
        assert status == 200
    wait_until(lambda: _metrics(l5d.admin_port).get("rt/edge/access_log/write_failures", 0)
               >= 20, 10, "write failures counted")
    assert l5d.proc.poll() is None
    assert l5d.log().count("writing") <= 2  # once a minute, not per line


def _metrics(admin: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/metrics.json", timeout=10) as r:
        return json.loads(r.read())


def test_workers_trace_and_log_too(l5d_process: Any, echo_backend: Any, tmp_path: Path) -> None:
    """With `workers: 2` the telemetry runs in each worker, where the requests are."""
    echo = echo_backend("w")
    collector = HttpCollector()
    path = tmp_path / "w.log"
    port, admin = free_port(), free_port()
    try:
        l5d_process(textwrap.dedent(f"""\
            workers: 2
            admin: {{ip: 127.0.0.1, port: {admin}}}
            routers:
            - protocol: http
              label: edge
              dtab: /svc => /$/inet/127.0.0.1/{echo.port};
              httpAccessLog: {path}
              servers: [{{port: {port}, ip: 127.0.0.1}}]
            telemetry:
            - kind: io.l5d.zipkin
              transport: http
              host: 127.0.0.1
              port: {collector.port}
              sampleRate: 1.0
              flushIntervalMs: 50
            - kind: io.l5d.recentRequests
              sampleRate: 1.0
            """), log_level="info")
        for i in range(6):
            assert curl(port, f"http://web/{i}")[0] == 200
        wait_until(lambda: len(collector.snapshot()) >= 12, 15, "12 spans from the workers")
        assert collector.invalid == []
        wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= 6, 10,
                   "six access log lines")
        assert all(LINE.fullmatch(x) for x in path.read_text().splitlines())
        # the supervisor's /requests.json merges the workers' recent requests
        # (tests/test_workers_admin.py checks the order and which worker served each)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/requests.json",
                                    timeout=10) as r:
            reqs = json.loads(r.read())["requests"]
        assert sorted(r["uri"] for r in reqs) == [f"/{i}" for i in range(6)]
        assert {r["worker"] for r in reqs} <= {0, 1}
    finally:
        collector.close()
