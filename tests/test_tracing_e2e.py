"""Distributed tracing through the two-router mesh, against a loopback Zipkin collector.

The mesh of the seeds' walkthrough on loopback: curl -> outgoing -> incoming -> hello
(the demo app, which forwards only the `l5d-ctx-*` headers) -> outgoing -> incoming ->
world. Each of the four router hops emits a SERVER and a CLIENT span, so a request is
one trace of 8 spans. Every span the collector receives is validated against the
official Zipkin v2 API (tests/zipkin_collector.py); the tests assert ids, parent links,
kinds, endpoints and tags, sampling (`sampleRate`, `l5d-sample`), B3 propagation, a
Linkerd-encoded `l5d-ctx-trace` being continued, and a dead collector costing nothing.
"""

from __future__ import annotations

import base64
import json
import re
import statistics
import struct
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _start_process, _wait_ports
from tests.test_e2e_router import curl
from tests.util import free_port, stop_process, wait_until
from tests.zipkin_collector import HttpCollector, ScribeCollector


@dataclass
class Mesh:
    out: int
    incoming: int
    admin: int
    proc: subprocess.Popen[bytes]
    log: Path

    def metrics(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/admin/metrics.json",
                                    timeout=10) as r:
            return json.loads(r.read())


def mesh_config(out: int, incoming: int, admin: int, hello: int, world: int,
                telemetry: str, extra_router: str = "") -> str:
    return textwrap.dedent(f"""\
        admin: {{ip: 127.0.0.1, port: {admin}}}
        routers:
        - protocol: http
          label: outgoing
          dtab: |
            /svc => /$/inet/127.0.0.1/{incoming};
          servers: [{{port: {out}, ip: 127.0.0.1}}]
        - protocol: http
          label: incoming
          dtab: |
            /svc/hello => /$/inet/127.0.0.1/{hello};
            /svc/world => /$/inet/127.0.0.1/{world};
          servers: [{{port: {incoming}, ip: 127.0.0.1}}]
        """) + extra_router + "telemetry:\n" + textwrap.indent(textwrap.dedent(telemetry), "")


def start_demo(tmp: Path, name: str, port: int, proxy: str | None = None
               ) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "router.demo.services", name, "--port", str(port)]
    if proxy:
        args += ["--proxy", proxy]
    log = tmp / f"demo-{name}.log"
    proc = _start_process(args, log, tmp)
    _wait_ports(proc, [port], log)
    return proc


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """hello and world, hello calling world through the outgoing router of the mesh
    (every mesh of this module listens on the outgoing port chosen here)."""
    tmp = tmp_path_factory.mktemp("apps")
    ports = {"hello": free_port(), "world": free_port(), "out": free_port()}
    procs = [start_demo(tmp, "world", ports["world"]),
             start_demo(tmp, "hello", ports["hello"], f"127.0.0.1:{ports['out']}")]
    try:
        yield ports
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def start_mesh(tmp: Path, apps: dict[str, int], telemetry: str, extra_router: str = ""
               ) -> Mesh:
    incoming, admin = free_port(), free_port()
    text = mesh_config(apps["out"], incoming, admin, apps["hello"], apps["world"], telemetry,
                       extra_router)
    cfg = tmp / "l5d.yaml"
    cfg.write_text(text)
    log = tmp / "l5d.log"
    proc = _start_process([sys.executable, "-m", "router.cli", str(cfg), "--log-level", "info"],
                          log, tmp)
    _wait_ports(proc, [apps["out"], incoming, admin], log)
    return Mesh(apps["out"], incoming, admin, proc, log)


@pytest.fixture(scope="module")
def collector() -> Iterator[HttpCollector]:
    c = HttpCollector()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, apps: dict[str, int],
         collector: HttpCollector) -> Iterator[Mesh]:
    """The mesh with every request sampled, spans as Zipkin v2 JSON over HTTP."""
    m = start_mesh(tmp_path_factory.mktemp("mesh"), apps, f"""\
        - kind: io.l5d.zipkin
          transport: http
          host: 127.0.0.1
          port: {collector.port}
          sampleRate: 1.0
          flushIntervalMs: 50
        - kind: io.l5d.recentRequests
          sampleRate: 1.0
          capacity: 50
        - kind: io.l5d.tracelog
          level: INFO
        """)
    try:
        yield m
    finally:
        assert stop_process(m.proc) == 0, m.log.read_text()


def trace_of(collector: Any, trace_id: str, n: int = 8, timeout: float = 20.0
             ) -> list[dict[str, Any]]:
    def spans() -> list[dict[str, Any]]:
        return [s for s in collector.snapshot() if s["traceId"] == trace_id]

    wait_until(lambda: len(spans()) >= n, timeout, f"{n} spans of trace {trace_id}")
    time.sleep(0.2)  # nothing more should come
    got = spans()
    assert collector.invalid == [], collector.invalid
    return got


def chain(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans ordered root first, each the child of the one before (asserts that shape)."""
    by_parent: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        by_parent.setdefault(s.get("parentId"), []).append(s)
    roots = by_parent.get(None, [])
    assert len(roots) == 1, f"one root span expected, got {roots}"
    out = [roots[0]]
    while len(out) < len(spans):
        children = by_parent.get(out[-1]["id"], [])
        assert len(children) == 1, f"span {out[-1]['id']} should have one child: {children}"
        out.append(children[0])
    return out


def latest_trace(mesh: Mesh, before: set[str], collector: Any) -> str:
    return new_trace(collector, before)


def new_trace(collector: Any, before: set[str]) -> str:
    """The one trace id the collector has received beyond `before` (waits for it)."""
    def new() -> set[str]:
        return {s["traceId"] for s in collector.snapshot()} - before

    wait_until(lambda: bool(new()), 20, "a new trace at the collector")
    ids = new()
    assert len(ids) == 1, ids
    return ids.pop()


def test_hello_world_is_one_trace_of_eight_spans(mesh: Mesh, collector: HttpCollector,
                                                  apps: dict[str, int]) -> None:
    before = {s["traceId"] for s in collector.snapshot()}
    status, _, body = curl(mesh.out, "http://hello/")
    assert (status, body) == (200, "Hello (127.0.0.1) world (127.0.0.1)!!")
    trace_id = latest_trace(mesh, before, collector)
    spans = trace_of(collector, trace_id)
    assert len(spans) == 8
    assert len(trace_id) == 16
    hops = chain(spans)
    # server and client alternate; the routers are outgoing, incoming, outgoing, incoming
    assert [s["kind"] for s in hops] == ["SERVER", "CLIENT"] * 4
    assert [s["localEndpoint"]["serviceName"] for s in hops] == (
        ["outgoing"] * 2 + ["incoming"] * 2) * 2
    for s in hops:
        assert s["name"] == "get"
        assert s["localEndpoint"]["ipv4"] == "127.0.0.1"
        tags = s["tags"]
        assert tags["http.method"] == "GET" and tags["http.uri"] == "/"
        assert tags["http.status_code"] == "200"
        assert tags["l5d.success"] == "true"
        assert "error" not in tags
        assert s["duration"] >= 1
    out_port, in_port = apps["out"], mesh.incoming
    services = ["/svc/hello"] * 4 + ["/svc/world"] * 4
    assert [s["tags"]["service"] for s in hops] == services
    assert [s["tags"]["namer.path"] for s in hops] == services
    clients = [f"/$/inet/127.0.0.1/{in_port}"] * 2 + [f"/$/inet/127.0.0.1/{apps['hello']}"] * 2 \
        + [f"/$/inet/127.0.0.1/{in_port}"] * 2 + [f"/$/inet/127.0.0.1/{apps['world']}"] * 2
    assert [s["tags"]["client"] for s in hops] == clients
    # the outgoing router's client is the incoming router; its residual is the service
    assert hops[1]["tags"]["residual"] == "/hello" and hops[5]["tags"]["residual"] == "/world"
    assert "residual" not in hops[3]["tags"]
    # local endpoints are the router's server; client spans name the endpoint that served
    assert [s["localEndpoint"]["port"] for s in hops] == ([out_port] * 2 + [in_port] * 2) * 2
    endpoints = [hops[i]["tags"]["endpoint"] for i in (1, 3, 5, 7)]
    assert endpoints == [f"127.0.0.1:{in_port}", f"127.0.0.1:{apps['hello']}",
                         f"127.0.0.1:{in_port}", f"127.0.0.1:{apps['world']}"]
    assert hops[3]["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": apps["hello"]}
    assert hops[0]["remoteEndpoint"]["ipv4"] == "127.0.0.1"  # curl
    # nesting in time: each span starts within its parent and ends before it (1 ms slack)
    for parent, child in zip(hops, hops[1:], strict=False):
        assert child["timestamp"] >= parent["timestamp"] - 1000
        assert (child["timestamp"] + child["duration"]
                <= parent["timestamp"] + parent["duration"] + 1000)
    # tracelog wrote the spans' annotations to the log
    text = mesh.log.read_text()
    assert re.search(rf"{trace_id}\.{hops[0]['id']}<:- outgoing SERVER get sr", text), text[-2000:]


def test_failed_request_records_the_l5d_err_text(mesh: Mesh, collector: HttpCollector) -> None:
    before = {s["traceId"] for s in collector.snapshot()}
    status, headers, body = curl(mesh.out, "http://nowhere/")
    assert status == 502
    trace_id = latest_trace(mesh, before, collector)
    spans = trace_of(collector, trace_id, n=3)  # incoming found no route: no client span
    assert len(spans) == 3
    servers = [s for s in spans if s["kind"] == "SERVER"]
    assert {s["tags"]["l5d.success"] for s in servers} == {"false"}
    inner = next(s for s in servers if s["localEndpoint"]["serviceName"] == "incoming")
    assert inner["tags"]["http.status_code"] == "502"
    assert "Unable to route request" in inner["tags"]["error"] or \
        "/svc/nowhere" in inner["tags"]["error"], inner["tags"]


def test_l5d_sample_zero_records_nothing(mesh: Mesh, collector: HttpCollector) -> None:
    before = {s["traceId"] for s in collector.snapshot()}
    for _ in range(3):
        status, _, _ = curl(mesh.out, "http://hello/", "l5d-sample: 0")
        assert status == 200
    # a sampled marker after them: once its trace is in, the unsampled ones would be too
    status, _, _ = curl(mesh.out, "http://world/")
    assert status == 200
    marker = latest_trace(mesh, before, collector)
    assert len(trace_of(collector, marker, n=4)) == 4
    assert {s["traceId"] for s in collector.snapshot()} - before == {marker}


def test_linkerd_encoded_context_is_continued(mesh: Mesh, collector: HttpCollector) -> None:
    """`l5d-ctx-trace` as a Linkerd 1 router writes it (Finagle's TraceId.serialize: span id,
    parent id, trace id, flags as big-endian 64-bit words; flags 6 = sampling known + sampled),
    encoded here independently of the router's code."""
    trace, span, parent = 0x0123456789ABCDEF, 0x1111222233334444, 0x5555666677778888
    ctx = base64.b64encode(struct.pack(">qqqq", span, parent, trace, 2 | 4)).decode()
    status, _, _ = curl(mesh.out, "http://hello/", f"l5d-ctx-trace: {ctx}")
    assert status == 200
    spans = trace_of(collector, f"{trace:016x}")
    # Linkerd's span (not reported here) stands in as the root: ours hang below it
    hops = chain([{"id": f"{span:016x}", "traceId": f"{trace:016x}"}, *spans])
    assert len(hops) == 9
    assert hops[1]["parentId"] == f"{span:016x}"  # our first span: a child of Linkerd's
    assert [s["kind"] for s in hops[1:]] == ["SERVER", "CLIENT"] * 4


def test_128_bit_context_and_debug_flag(mesh: Mesh, collector: HttpCollector) -> None:
    """The 40-byte form (the trace id's high half after the flags) keeps the 128-bit id."""
    low, high, span = 0x0AAAAAAAAAAAAAAA, 0x0BBBBBBBBBBBBBBB, 0x0CCCCCCCCCCCCCCC
    ctx = base64.b64encode(struct.pack(">qqqqq", span, span, low, 2, high)).decode()  # unsampled
    status, _, _ = curl(mesh.out, "http://world/", f"l5d-ctx-trace: {ctx}")
    assert status == 200
    # sampling known and false: the caller decided; nothing is recorded for it
    status, _, _ = curl(mesh.out, "http://world/", "l5d-ctx-trace: " + base64.b64encode(
        struct.pack(">qqqqq", span, span, low, 1, high)).decode())  # debug: always sampled
    assert status == 200
    spans = trace_of(collector, f"{high:016x}{low:016x}", n=4)
    assert len(spans) == 4
    assert all(s.get("debug") is True for s in spans)
    root = next(s for s in spans if s["kind"] == "SERVER" and
                s["localEndpoint"]["serviceName"] == "outgoing")
    assert root["parentId"] == f"{span:016x}"


def test_recent_requests_json(mesh: Mesh) -> None:
    status, _, _ = curl(mesh.out, "http://hello/")
    assert status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{mesh.admin}/requests.json",
                                timeout=10) as r:
        reqs = json.loads(r.read())["requests"]
    assert 1 <= len(reqs) <= 50
    newest = reqs[:4]
    assert {r["router"] for r in newest} == {"outgoing", "incoming"}
    first = reqs[0]
    for key in ("timestamp", "router", "method", "uri", "service", "client", "endpoint",
                "status", "latencyMs", "traceId", "source"):
        assert key in first, first
    assert first["status"] == 200 and first["method"] == "GET"
    assert len({r["traceId"] for r in newest}) == 1  # the last request's four hops
    assert [r["timestamp"] for r in reqs] == sorted((r["timestamp"] for r in reqs),
                                                    reverse=True)


# --- sampleRate 0 and l5d-sample: 1.0; Scribe -------------------------------------------

def test_l5d_sample_one_traces_fully_when_the_rate_is_zero(
        tmp_path: Path, apps: dict[str, int], mesh: Mesh) -> None:
    """With `sampleRate: 0` only `l5d-sample: 1.0` requests are traced, and then on every hop
    (the decision travels in l5d-ctx-trace through hello). Spans go over Scribe here: the
    seeds' telemeter config, unchanged but for the port."""
    stop_process(mesh.proc)  # the module's mesh holds the outgoing port hello calls
    scribe = ScribeCollector()
    try:
        m = start_mesh(tmp_path, apps, f"""\
            - kind: io.l5d.zipkin
              host: 127.0.0.1
              port: {scribe.port}
              sampleRate: 0.0
            """)
        try:
            for _ in range(5):
                assert curl(m.out, "http://hello/")[0] == 200
            assert curl(m.out, "http://hello/", "l5d-sample: 1.0")[0] == 200
            wait_until(lambda: len(scribe.snapshot()) >= 8, 20, "8 spans over scribe")
            time.sleep(1.5)  # a flush interval: nothing else arrives
            spans = scribe.snapshot()
            assert scribe.invalid == [], scribe.invalid
            assert len(spans) == 8 and len({s["traceId"] for s in spans}) == 1
            assert scribe.categories == {"zipkin"}
            hops = chain(spans)
            assert [s["kind"] for s in hops] == ["SERVER", "CLIENT"] * 4
            assert [s["tags"]["service"] for s in hops] == ["/svc/hello"] * 4 + \
                ["/svc/world"] * 4
            assert all(s["tags"]["l5d.success"] == "true" for s in hops)
        finally:
            assert stop_process(m.proc) == 0, m.log.read_text()
    finally:
        scribe.close()


def test_dead_or_slow_collector_costs_no_latency(tmp_path: Path, apps: dict[str, int],
                                                 mesh: Mesh) -> None:
    """A collector that accepts and never answers (Scribe) and one that refuses (HTTP): every
    response is unchanged, no request waits for them, and the failures are counted."""
    stop_process(mesh.proc)
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(100)  # accepts (the kernel's backlog), never reads or answers
    refused = free_port()
    m = start_mesh(tmp_path, apps, f"""\
        - kind: io.l5d.zipkin
          host: 127.0.0.1
          port: {hole.getsockname()[1]}
          sampleRate: 1.0
          flushIntervalMs: 20
          timeoutMs: 5000
        - kind: io.l5d.zipkin
          transport: http
          host: 127.0.0.1
          port: {refused}
          sampleRate: 1.0
          flushIntervalMs: 20
        """, extra_router=textwrap.dedent(f"""\
        - protocol: http
          label: plain
          dtab: |
            /svc/world => /$/inet/127.0.0.1/{apps['world']};
          servers: [{{port: {(plain := free_port())}, ip: 127.0.0.1}}]
        """))
    try:
        wait_until(lambda: _port_open(plain), 10, "plain router")
        traced, untraced = [], []
        for _ in range(40):
            for port, into in ((m.out, traced), (plain, untraced)):
                t0 = time.monotonic()
                status, _, body = curl(port, "http://world/")
                into.append(time.monotonic() - t0)
                assert (status, body) == (200, "world (127.0.0.1)!!")
        # curl's own start dominates both; a request waiting on the collector would add
        # seconds (the black hole's timeout is 5 s)
        assert max(traced) < 2.5, traced
        assert statistics.median(traced) < statistics.median(untraced) * 2 + 0.05, (
            statistics.median(traced), statistics.median(untraced))
        metrics = m.metrics()
        wait_until(lambda: m.metrics().get("telemetry/zipkin/spans_failed", 0) > 0, 15,
                   "failed spans counted")
        assert metrics.get("telemetry/zipkin/spans_recorded", 0) >= 80 * 2
        lines = [ln for ln in m.log.read_text().splitlines() if "zipkin: sending" in ln]
        assert 1 <= len(lines) <= 4, lines  # rate-limited: one per kind of failure per 30 s
    finally:
        assert stop_process(m.proc) == 0, m.log.read_text()
        hole.close()


def _port_open(port: int) -> bool:
    from tests.util import port_open

    return port_open(port)


@pytest.mark.parametrize("name", ["tracing.yaml", "tracing-scribe.yaml"])
def test_shipped_tracing_configs_trace_the_demo(tmp_path: Path, name: str) -> None:
    """`make run CONFIG=configs/<name>` on free ports: hello -> world is one trace of 8."""
    from tests.conftest import REPO

    disco = tmp_path / "disco"
    disco.mkdir()
    ports = {n: free_port() for n in ("hello", "world", "world-v2")}
    for n, p in ports.items():
        (disco / n).write_text(f"127.0.0.1 {p}\n")
    out, incoming, admin = free_port(), free_port(), free_port()
    collector: Any = HttpCollector() if name == "tracing.yaml" else ScribeCollector()
    text = (REPO / "configs" / name).read_text()
    for old, new in (("4140", out), ("4141", incoming), ("port: 9990", f"port: {admin}"),
                     ("port: 9411", f"port: {collector.port}"),
                     ("port: 9410", f"port: {collector.port}"),
                     ("rootDir: configs/disco", f"rootDir: {disco}")):
        assert str(old) in text or old == "port: 9410" or old == "port: 9411", old
        text = text.replace(str(old), str(new))
    cfg = tmp_path / name
    cfg.write_text(text)
    log = tmp_path / "run.log"
    proc = _start_process([sys.executable, "-m", "router.demo.run", str(cfg)], log, tmp_path)
    try:
        _wait_ports(proc, [out, incoming, admin, *ports.values()], log)
        status, _, body = curl(out, "http://hello")
        assert (status, body) == (200, "Hello (127.0.0.1) world (127.0.0.1)!!")
        wait_until(lambda: len(collector.snapshot()) >= 8, 20, "8 spans")
        spans = collector.snapshot()
        assert collector.invalid == []
        assert len({s["traceId"] for s in spans}) == 1
        assert [s["kind"] for s in chain(spans)] == ["SERVER", "CLIENT"] * 4
    finally:
        assert stop_process(proc) == 0, log.read_text()
        collector.close()
