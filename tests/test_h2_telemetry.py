"""Telemetry of h2 streams: real grpcio calls through two l5d-py h2 routers (outgoing ->
incoming -> a grpcio Greeter), spans at a loopback Zipkin collector validated against the
Zipkin v2 schema (tests/zipkin_collector.py), the h2 access log, recent requests.

As on the HTTP/1 routers: each hop makes a SERVER and a CLIENT span; the client span's
context travels in `l5d-ctx-trace` (or B3 with `tracePropagator: io.l5d.zipkin`) and the
trace id as `l5d-reqid`; `l5d-sample` overrides the sampling decision.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path as FsPath
from typing import Any

import grpc
import pytest

from tests.conftest import REPO, _start_process
from tests.h2_grpc import generated
from tests.test_tracing_e2e import chain, new_trace, trace_of
from tests.util import free_port, port_open, stop_process, wait_until
from tests.zipkin_collector import HttpCollector

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, str]:
    gen = tmp_path_factory.mktemp("helloworld_gen")
    pb2, pb2_grpc = generated(gen)
    return pb2, pb2_grpc, str(gen)


@pytest.fixture(scope="module")
def greeter(stubs: tuple[Any, Any, str], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[int]:
    port = free_port()
    log = tmp_path_factory.mktemp("greeter") / "greeter.log"
    proc = _start_process([sys.executable, "-m", "tests.h2_grpc", "--port", str(port),
                           "--name", "v1", "--gen", stubs[2]], log, REPO)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, "greeter")
        assert proc.poll() is None, log.read_text()
        yield port
    finally:
        stop_process(proc, 5)


@pytest.fixture
def collector() -> Iterator[HttpCollector]:
    c = HttpCollector()
    try:
        yield c
    finally:
        c.close()


def mesh_config(out: int, incoming: int, admin: int, greeter: int, collector: int,
                access_log: FsPath, propagator: str = "io.l5d.default",
                sample_rate: float = 1.0) -> str:
    def router(label: str, port: int, dtab: str, extra: str = "") -> str:
        return f"""
- protocol: h2
  label: {label}
  experimental: true
  identifier: {{kind: io.l5d.header.path, segments: 1}}
  tracePropagator: {{kind: {propagator}}}
  service: {{responseClassifier: {{kind: io.l5d.h2.grpc.neverRetryable}}}}
  dtab: |
    {dtab}
  servers:
  - {{port: {port}, ip: 127.0.0.1}}
{extra}"""
    return (f"admin: {{ip: 127.0.0.1, port: {admin}}}\nrouters:"
            + router("outgoing", out, f"/svc => /$/inet/127.0.0.1/{incoming};")
            + router("incoming", incoming,
                     f"/svc/helloworld.Greeter => /$/inet/127.0.0.1/{greeter};",
                     f"  h2AccessLog: {access_log}\n  h2AccessLogRollPolicy: daily")
            + f"""
telemetry:
- kind: io.l5d.zipkin
  transport: http
  host: 127.0.0.1
  port: {collector}
  sampleRate: {sample_rate}
  flushIntervalMs: 50
- kind: io.l5d.recentRequests
  sampleRate: 1.0
  capacity: 50
- kind: io.l5d.tracelog
  level: INFO
""")


def start_mesh(l5d_process: Callable[..., Any], greeter: int, collector: HttpCollector,
               tmp_path: FsPath, **kw: Any) -> tuple[Any, int, int, FsPath]:
    out, incoming, admin = free_port(), free_port(), free_port()
    access_log = tmp_path / "h2-access.log"
    proc = l5d_process(mesh_config(out, incoming, admin, greeter, collector.port, access_log,
                                   **kw), log_level="info")
    return proc, out, incoming, access_log


def test_grpc_call_through_two_h2_routers_is_one_trace(
        stubs: Any, greeter: int, collector: HttpCollector, l5d_process: Any,
        tmp_path: FsPath) -> None:
    pb2, pb2_grpc, _ = stubs
    proc, out, incoming, access_log = start_mesh(l5d_process, greeter, collector, tmp_path)
    assert "not traced" not in proc.log_path.read_text()
    before = {s["traceId"] for s in collector.snapshot()}
    with grpc.insecure_channel(f"127.0.0.1:{out}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        reply, call = stub.SayHello.with_call(pb2.HelloRequest(name="t"), timeout=TIMEOUT)
    assert reply.message == "v1: hello t"
    md = dict(call.trailing_metadata())
    trace_id = new_trace(collector, before)
    spans = trace_of(collector, trace_id, n=4)
    assert len(spans) == 4
    hops = chain(spans)  # one root, each span the parent of the next
    assert [s["kind"] for s in hops] == ["SERVER", "CLIENT", "SERVER", "CLIENT"]
    assert [s["localEndpoint"]["serviceName"] for s in hops] == ["outgoing"] * 2 + [
        "incoming"] * 2
    assert [s["localEndpoint"]["port"] for s in hops] == [out] * 2 + [incoming] * 2
    for s in hops:
        assert s["name"] == "post"
        tags = s["tags"]
        assert tags["http.method"] == "POST"
        assert tags["http.uri"] == "/helloworld.Greeter/SayHello"
        assert tags["http.status_code"] == "200"
        assert tags["grpc.status_code"] == "0"
        assert tags["l5d.success"] == "true"
        assert tags["service"] == "/svc/helloworld.Greeter"
        assert "error" not in tags
    assert hops[1]["tags"]["endpoint"] == f"127.0.0.1:{incoming}"
    assert hops[1]["tags"]["residual"] == "/helloworld.Greeter"
    assert hops[3]["tags"]["endpoint"] == f"127.0.0.1:{greeter}"
    assert hops[3]["remoteEndpoint"] == {"ipv4": "127.0.0.1", "port": greeter}
    # the backend saw the incoming router's client span as its context, the trace as reqid
    assert md["l5d-reqid"] == trace_id
    assert "l5d-ctx-trace" in md
    # tracelog wrote the spans' annotations to the log
    wait_until(lambda: re.search(rf"{trace_id}\.{hops[0]['id']}<:- outgoing SERVER post sr",
                                 proc.log_path.read_text()) is not None, 10, "tracelog line")

    # the incoming router's h2 access log: Linkerd's h2 AccessLogger line
    wait_until(lambda: access_log.exists() and access_log.read_text().strip() != "", 10,
               "an access log line")
    lines = access_log.read_text().splitlines()
    assert len(lines) == 1, lines
    m = re.fullmatch(r'(\S+) (\S+) - - \[([^\]]+)\] "POST (\S+) HTTP/2" (\d+) - "-" "([^"]*)"',
                     lines[0])
    assert m is not None, lines
    assert m.group(1) == f"127.0.0.1:{out}"  # the caller's :authority, passed on
    assert m.group(2) == "127.0.0.1"
    assert time.strptime(m.group(3), "%d/%m/%Y:%H:%M:%S %z")
    assert m.group(4) == "/helloworld.Greeter/SayHello"
    assert m.group(5) == "200"
    assert m.group(6).startswith("grpc-python/")

    # recent requests: both hops of the call, newest first
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin_port}/requests.json",
                                timeout=10) as r:
        reqs = json.loads(r.read())["requests"]
    assert {r["router"] for r in reqs} == {"outgoing", "incoming"}
    assert {r["traceId"] for r in reqs} == {trace_id}
    assert all(r["uri"] == "/helloworld.Greeter/SayHello" and r["status"] == 200
               for r in reqs)
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin_port}/admin/metrics.json",
                                timeout=10) as r:
        metrics = json.loads(r.read())
    assert metrics["rt/incoming/access_log/lines"] == 1


def test_streaming_failed_and_unroutable_calls_are_traced(
        stubs: Any, greeter: int, collector: HttpCollector, l5d_process: Any,
        tmp_path: FsPath) -> None:
    pb2, pb2_grpc, _ = stubs
    _, out, _, access_log = start_mesh(l5d_process, greeter, collector, tmp_path)
    with grpc.insecure_channel(f"127.0.0.1:{out}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        before = {s["traceId"] for s in collector.snapshot()}
        chat = stub.Chat(iter([pb2.HelloRequest(name=str(i)) for i in range(5)]),
                         timeout=TIMEOUT)
        assert [r.message for r in chat] == [f"v1: hi {i}" for i in range(5)]
        hops = chain(trace_of(collector, new_trace(collector, before), n=4))
        assert {s["tags"]["http.uri"] for s in hops} == {"/helloworld.Greeter/Chat"}
        assert {s["tags"]["l5d.success"] for s in hops} == {"true"}

        # a gRPC error status (in the trailers; grpc.neverRetryable): failed spans
        before = {s["traceId"] for s in collector.snapshot()}
        with pytest.raises(grpc.RpcError) as err:
            stub.SayHello(pb2.HelloRequest(name="x", fail_code=13), timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.INTERNAL
        hops = chain(trace_of(collector, new_trace(collector, before), n=4))
        for s in hops:
            assert s["tags"]["grpc.status_code"] == "13"
            assert s["tags"]["l5d.success"] == "false"
            assert s["tags"]["error"] == "grpc-status 13"

        # a call the incoming router cannot route: its server span only, with the reason
        before = {s["traceId"] for s in collector.snapshot()}
        with pytest.raises(grpc.RpcError) as err:  # outgoing routes any /svc, incoming not
            ch.unary_unary("/other.Service/Method")(b"", timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        spans = trace_of(collector, new_trace(collector, before), n=3)
        inner = next(s for s in spans if s["kind"] == "SERVER"
                     and s["localEndpoint"]["serviceName"] == "incoming")
        assert inner["tags"]["l5d.success"] == "false"
        assert "Unable to route request" in inner["tags"]["error"], inner["tags"]
        assert inner["tags"]["http.status_code"] == "200"  # gRPC: the status is in the head
        assert inner["tags"]["grpc.status_code"] == "14"
    wait_until(lambda: access_log.exists() and len(access_log.read_text().splitlines()) >= 3,
               10, "three access log lines")
    assert [line.split('"')[1] for line in access_log.read_text().splitlines()] == [
        "POST /helloworld.Greeter/Chat HTTP/2", "POST /helloworld.Greeter/SayHello HTTP/2",
        "POST /other.Service/Method HTTP/2"]


def test_b3_propagation_and_l5d_sample(stubs: Any, greeter: int, collector: HttpCollector,
                                        l5d_process: Any, tmp_path: FsPath) -> None:
    """`tracePropagator: io.l5d.zipkin`: the context crosses the hop as B3 headers (no
    l5d-ctx-trace reaches the backend); with sampleRate 0 only `l5d-sample: 1` is traced."""
    pb2, pb2_grpc, _ = stubs
    _, out, _, _ = start_mesh(l5d_process, greeter, collector, tmp_path,
                              propagator="io.l5d.zipkin", sample_rate=0.0)
    with grpc.insecure_channel(f"127.0.0.1:{out}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        for _ in range(3):
            _, call = stub.SayHello.with_call(pb2.HelloRequest(name="u"), timeout=TIMEOUT)
            assert "l5d-ctx-trace" not in dict(call.trailing_metadata())
        before = {s["traceId"] for s in collector.snapshot()}
        assert before == set()  # nothing sampled so far
        _, call = stub.SayHello.with_call(pb2.HelloRequest(name="s"), timeout=TIMEOUT,
                                          metadata=[("l5d-sample", "1.0")])
        md = dict(call.trailing_metadata())
        assert "l5d-ctx-trace" not in md and "l5d-sample" not in md
        trace_id = new_trace(collector, before)
        hops = chain(trace_of(collector, trace_id, n=4))
        assert [s["kind"] for s in hops] == ["SERVER", "CLIENT", "SERVER", "CLIENT"]
        assert md["l5d-reqid"] == trace_id
    assert {s["traceId"] for s in collector.snapshot()} == {trace_id}
