"""gRPC through real l5d-py h2 routers: real grpcio servers (subprocesses) and clients.

The helloworld Greeter (tests/data/h2/helloworld.proto, generated at test time)
has one method of each call shape; each test starts its backends and an `l5d`
process on free ports.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path as FsPath
from typing import Any

import grpc
import pytest

from tests.conftest import REPO, _start_process
from tests.h2_grpc import generated
from tests.util import free_port, port_open, stop_process, wait_until

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, str]:
    gen = tmp_path_factory.mktemp("helloworld_gen")
    pb2, pb2_grpc = generated(gen)
    return pb2, pb2_grpc, str(gen)


@pytest.fixture
def backend(stubs: tuple[Any, Any, str], tmp_path: FsPath
            ) -> Iterator[Callable[..., tuple[int, subprocess.Popen[bytes]]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *extra: str) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        log = tmp_path / f"backend-{name}.log"
        proc = _start_process([sys.executable, "-m", "tests.h2_grpc", "--port", str(port),
                               "--name", name, "--gen", stubs[2], *extra], log, REPO)
        procs.append(proc)
        wait_until(lambda: port_open(port) or proc.poll() is not None, 30, f"backend {name}")
        assert proc.poll() is None, log.read_text()
        return port, proc

    try:
        yield start
    finally:
        for p in procs:
            stop_process(p, 5)


def h2_config(routers: str, admin: int) -> str:
    return f"admin: {{port: {admin}}}\nrouters:\n{routers}"


def grpc_router(label: str, port: int, dtab: str, extra: str = "") -> str:
    return f"""
- protocol: h2
  label: {label}
  experimental: true
  identifier: {{kind: io.l5d.header.path, segments: 1}}
  dtab: |
    {dtab}
  servers:
  - port: {port}
{extra}"""


def metadata_of(call: Any) -> dict[str, str]:
    return {k: v for k, v in call.trailing_metadata()}


def test_all_four_call_shapes_through_one_router(stubs, backend, l5d_process) -> None:
    pb2, pb2_grpc, _ = stubs
    port, _ = backend("v1")
    rport, admin = free_port(), free_port()
    l5d_process(h2_config(grpc_router(
        "grpc", rport, f"/svc/helloworld.Greeter => /$/inet/127.0.0.1/{port};"), admin),
        log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        reply, call = stub.SayHello.with_call(pb2.HelloRequest(name="world"), timeout=TIMEOUT)
        assert reply.message == "v1: hello world"
        md = metadata_of(call)
        assert md["server"] == "v1"  # trailers came back through the router
        assert md["l5d-dst-service"] == "/svc/helloworld.Greeter"
        assert md["l5d-dst-client"] == f"/$/inet/127.0.0.1/{port}"
        assert call.code() == grpc.StatusCode.OK

        replies = list(stub.SayHelloStream(pb2.HelloRequest(name="s", count=50,
                                                            payload_size=1000),
                                           timeout=TIMEOUT))
        assert [r.message for r in replies] == [f"v1: {i}" for i in range(50)]
        assert all(len(r.payload) == 1000 for r in replies)

        reply = stub.CollectHellos(iter([pb2.HelloRequest(name=n) for n in "abcde"]),
                                   timeout=TIMEOUT)
        assert reply.message == "v1: hello a,b,c,d,e"

        chat = stub.Chat(iter([pb2.HelloRequest(name=str(i)) for i in range(20)]),
                         timeout=TIMEOUT)
        assert [r.message for r in chat] == [f"v1: hi {i}" for i in range(20)]

        # a gRPC error status (in the trailers) reaches the caller as the backend sent it
        with pytest.raises(grpc.RpcError) as err:
            stub.SayHello(pb2.HelloRequest(name="x", fail_code=7), timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details() == "v1 failing"


def test_two_routers_and_a_per_request_dtab_reaching_v2(stubs, backend, l5d_process) -> None:
    """outgoing -> incoming: the override in l5d-dtab is applied two hops away (it travels as
    l5d-ctx-dtab), as the HTTP/1 routers do."""
    pb2, pb2_grpc, _ = stubs
    p1, _ = backend("v1")
    p2, _ = backend("v2")
    out_port, in_port, admin = free_port(), free_port(), free_port()
    incoming = grpc_router("incoming", in_port,
                           f"/srv/v1 => /$/inet/127.0.0.1/{p1}; "
                           f"/srv/v2 => /$/inet/127.0.0.1/{p2}; "
                           "/svc/helloworld.Greeter => /srv/v1;")
    outgoing = grpc_router("outgoing", out_port, f"/svc => /$/inet/127.0.0.1/{in_port};")
    proc = l5d_process(h2_config(outgoing + incoming, admin), log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{out_port}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        reply, call = stub.SayHello.with_call(pb2.HelloRequest(name="a"), timeout=TIMEOUT)
        assert reply.message == "v1: hello a"
        assert metadata_of(call)["l5d-dst-client"] == f"/$/inet/127.0.0.1/{p1}"
        reply, call = stub.SayHello.with_call(
            pb2.HelloRequest(name="b"), timeout=TIMEOUT,
            metadata=[("l5d-dtab", "/svc/helloworld.Greeter => /srv/v2")])
        assert reply.message == "v2: hello b"
        md = metadata_of(call)
        assert md["l5d-ctx-dtab"] == "/svc/helloworld.Greeter=>/srv/v2"
        # the streaming shapes take the same route
        replies = list(stub.SayHelloStream(
            pb2.HelloRequest(name="s", count=3), timeout=TIMEOUT,
            metadata=[("l5d-dtab", "/svc/helloworld.Greeter => /srv/v2")]))
        assert [r.message for r in replies] == ["v2: 0", "v2: 1", "v2: 2"]
        chat = stub.Chat(iter([pb2.HelloRequest(name="x")]), timeout=TIMEOUT)
        assert [r.message for r in chat] == ["v1: hi x"]
    metrics = _metrics(proc.admin_port)
    assert metrics[f"rt/outgoing/server/127.0.0.1/{out_port}/requests"] == 4
    assert metrics[f"rt/incoming/server/127.0.0.1/{in_port}/requests"] == 4
    assert metrics["rt/incoming/service/svc/helloworld.Greeter/requests"] == 4
    assert metrics[f"rt/incoming/client/$/inet/127.0.0.1/{p2}/success"] == 2
    assert metrics[f"rt/incoming/client/$/inet/127.0.0.1/{p1}/success"] == 2


def _metrics(admin_port: int) -> dict[str, Any]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/admin/metrics.json",
                                timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_unroutable_call_gets_grpc_unavailable_with_reason(stubs, l5d_process) -> None:
    pb2, pb2_grpc, _ = stubs
    rport, admin = free_port(), free_port()
    l5d_process(h2_config(grpc_router("grpc", rport, "/svc/other => /$/inet/127.0.0.1/1;"),
                          admin), log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.SayHello(pb2.HelloRequest(name="x"), timeout=TIMEOUT)
        e = err.value
        assert e.code() == grpc.StatusCode.UNAVAILABLE
        assert "Unable to route request!" in e.details()
        assert "service name: /svc/helloworld.Greeter" in e.details()
        md = dict(e.trailing_metadata())
        assert md["l5d-err"].startswith("Unable%20to%20route%20request")
        # a backend that refuses connections: UNAVAILABLE too, naming the endpoint
        with pytest.raises(grpc.RpcError) as err:
            stub.SayHello(pb2.HelloRequest(name="x"), timeout=TIMEOUT, metadata=[
                ("l5d-dtab", "/svc/helloworld.Greeter => /$/inet/127.0.0.1/1")])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Unable to establish connection to 127.0.0.1:1" in err.value.details()


def test_backend_dying_mid_stream_fails_only_that_call(stubs, backend, l5d_process) -> None:
    pb2, pb2_grpc, _ = stubs
    p1, proc1 = backend("v1")
    p2, _ = backend("v2")
    rport, admin = free_port(), free_port()
    l5d_process(h2_config(grpc_router(
        "grpc", rport, f"/srv/v1 => /$/inet/127.0.0.1/{p1}; "
        f"/srv/v2 => /$/inet/127.0.0.1/{p2}; /svc/helloworld.Greeter => /srv/v2;"), admin),
        log_level="info")
    to_v1 = [("l5d-dtab", "/svc/helloworld.Greeter => /srv/v1")]
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        # a long stream from v2 on the same client connection, read while v1 dies
        other = stub.SayHelloStream(pb2.HelloRequest(name="o", count=200, payload_size=100),
                                    timeout=TIMEOUT)
        first = next(other)
        dying = stub.SayHelloStream(pb2.HelloRequest(name="d", count=100, die_after=5),
                                    timeout=TIMEOUT, metadata=to_v1)
        got = []
        with pytest.raises(grpc.RpcError) as err:
            for r in dying:
                got.append(r.message)
        assert got == [f"v1: {i}" for i in range(5)]
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "closed mid-stream" in err.value.details()
        assert proc1.wait(10) == 3
        rest = [r.message for r in other]
        assert [first.message] + rest == [f"v2: {i}" for i in range(200)]
        assert stub.SayHello(pb2.HelloRequest(name="after"), timeout=TIMEOUT).message == \
            "v2: hello after"


def _classified_router(tmp_path: FsPath, rport: int, admin: int, ports: list[int],
                       classifier: str, retries: str = "") -> str:
    disco = tmp_path / "disco"
    disco.mkdir(exist_ok=True)
    (disco / "greeter").write_text("".join(f"127.0.0.1 {p}\n" for p in ports))
    return f"""
admin: {{port: {admin}}}
namers:
- kind: io.l5d.fs
  rootDir: {disco}
routers:
- protocol: h2
  label: grpc
  identifier: {{kind: io.l5d.header.path, segments: 1}}
  dtab: /svc/helloworld.Greeter => /#/io.l5d.fs/greeter;
  client:
    failureAccrual: {{kind: none}}
  service:
    responseClassifier: {{kind: {classifier}}}
{retries}
  servers:
  - port: {rport}
"""


def test_grpc_status_in_trailers_counts_as_failure(stubs, backend, l5d_process,
                                                   tmp_path) -> None:
    """neverRetryable: a 200 whose trailers say UNAVAILABLE is a failure in every stat."""
    pb2, pb2_grpc, _ = stubs
    bad, _ = backend("bad", "--fail-code", "14")
    rport, admin = free_port(), free_port()
    proc = l5d_process(_classified_router(tmp_path, rport, admin, [bad],
                                          "io.l5d.h2.grpc.neverRetryable"), log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as err:
                stub.SayHello(pb2.HelloRequest(name="x"), timeout=TIMEOUT)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert err.value.details() == "bad failing"  # the backend's, not the router's
            assert dict(err.value.trailing_metadata())["l5d-success-class"] == "0.0"
        replies = list(stub.SayHelloStream(pb2.HelloRequest(name="s", count=2),
                                           timeout=TIMEOUT))
        assert len(replies) == 2
    m = _metrics(proc.admin_port)
    svc = "rt/grpc/service/svc/helloworld.Greeter"
    assert (m[f"{svc}/requests"], m[f"{svc}/success"], m[f"{svc}/failures"]) == (4, 1, 3)
    assert m["rt/grpc/client/#/io.l5d.fs/greeter/failures"] == 3
    assert m.get(f"{svc}/retries/total", 0) == 0


def test_grpc_default_classifier_retries_unavailable(stubs, backend, l5d_process,
                                                     tmp_path) -> None:
    """io.l5d.h2.grpc.default: UNAVAILABLE is retryable; the unary request fits the retry
    buffer, so a call that reached the failing endpoint is retried on the other."""
    pb2, pb2_grpc, _ = stubs
    bad, _ = backend("bad", "--fail-code", "14")
    good, _ = backend("good")
    rport, admin = free_port(), free_port()
    retries = "    retries: {budget: {minRetriesPerSec: 1000, percentCanRetry: 1.0}}"
    proc = l5d_process(_classified_router(tmp_path, rport, admin, [bad, good],
                                          "io.l5d.h2.grpc.default", retries),
                       log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        for i in range(20):
            assert stub.SayHello(pb2.HelloRequest(name=str(i)), timeout=TIMEOUT).message == \
                f"good: hello {i}"
    m = _metrics(proc.admin_port)
    svc = "rt/grpc/service/svc/helloworld.Greeter"
    assert m[f"{svc}/success"] == 20 and m[f"{svc}/failures"] == 0
    assert m[f"{svc}/retries/total"] >= 1
    assert m["rt/grpc/client/#/io.l5d.fs/greeter/failures"] == m[f"{svc}/retries/total"]


def test_total_timeout_ends_a_slow_call_with_deadline_exceeded(stubs, backend, l5d_process,
                                                               tmp_path) -> None:
    """service totalTimeoutMs on h2: a stream still running when it fires ends with a gRPC
    status (DEADLINE_EXCEEDED) and l5d-err; a call within it is untouched."""
    pb2, pb2_grpc, _ = stubs
    port, _ = backend("v1")
    rport, admin = free_port(), free_port()
    l5d_process(h2_config(grpc_router("grpc", rport, f"/svc => /$/inet/127.0.0.1/{port};",
                                      "  service: {totalTimeoutMs: 1500}"), admin),
                log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        assert stub.SayHello(pb2.HelloRequest(name="q"), timeout=TIMEOUT).message == \
            "v1: hello q"

        def slow() -> Iterator[Any]:
            yield pb2.HelloRequest(name="a")
            import time

            time.sleep(4)
            yield pb2.HelloRequest(name="b")

        got = []
        with pytest.raises(grpc.RpcError) as err:
            for r in stub.Chat(slow(), timeout=TIMEOUT):
                got.append(r.message)
        assert got == ["v1: hi a"]
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "exceeded 1500.milliseconds" in err.value.details()


def test_l5d_ctx_deadline_is_read_tightened_passed_on_and_enforced(stubs, backend,
                                                                    l5d_process) -> None:
    """As on HTTP/1: the strictest incoming `l5d-ctx-deadline` wins, the service's
    totalTimeoutMs tightens it, the next hop gets it; an expired one fails at once with
    DEADLINE_EXCEEDED (the backend never sees it); a live one cuts a call still running."""
    import threading
    import time

    pb2, pb2_grpc, _ = stubs
    port, _ = backend("v1")
    out_port, in_port, admin = free_port(), free_port(), free_port()
    outgoing = grpc_router("outgoing", out_port, f"/svc => /$/inet/127.0.0.1/{in_port};")
    incoming = grpc_router("incoming", in_port, f"/svc => /$/inet/127.0.0.1/{port};",
                           "  service: {totalTimeoutMs: 20000}")
    proc = l5d_process(h2_config(outgoing + incoming, admin), log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{out_port}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        # no deadline from the caller: the incoming router's totalTimeoutMs makes one
        before = time.time_ns()
        _, call = stub.SayHello.with_call(pb2.HelloRequest(name="a"), timeout=TIMEOUT)
        ts, dl = map(int, metadata_of(call)["l5d-ctx-deadline"].split())
        assert before <= ts and ts + 20 * 10**9 == dl
        # two from the caller: the strictest (latest timestamp, earliest deadline) goes on
        now = time.time_ns()
        sent = [f"{now - 10**9} {now + 9 * 10**9}", f"{now} {now + 12 * 10**9}"]
        _, call = stub.SayHello.with_call(
            pb2.HelloRequest(name="b"), timeout=TIMEOUT,
            metadata=[("l5d-ctx-deadline", sent[0]), ("l5d-ctx-deadline", sent[1])])
        ts, dl = map(int, metadata_of(call)["l5d-ctx-deadline"].split())
        assert dl == now + 9 * 10**9 and ts >= now
        served = _metrics(proc.admin_port)[f"rt/incoming/client/$/inet/127.0.0.1/{port}/requests"]
        # expired: fails fast at the first hop with a gRPC status, nothing forwarded
        with pytest.raises(grpc.RpcError) as err:
            stub.SayHello(pb2.HelloRequest(name="c"), timeout=TIMEOUT, metadata=[
                ("l5d-ctx-deadline", f"{now - 2 * 10**9} {now - 10**9}")])
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "expired" in err.value.details()
        assert "l5d-ctx-deadline" in dict(err.value.trailing_metadata())["l5d-err"]
        # live but short: a call still running when it passes ends with DEADLINE_EXCEEDED
        release = threading.Event()

        def held() -> Iterator[Any]:
            yield pb2.HelloRequest(name="x")
            release.wait(TIMEOUT)

        soon = time.time_ns() + 500 * 10**6
        got = []
        try:
            with pytest.raises(grpc.RpcError) as err:
                for r in stub.Chat(held(), timeout=TIMEOUT, metadata=[
                        ("l5d-ctx-deadline", f"{time.time_ns()} {soon}")]):
                    got.append(r.message)
        finally:
            release.set()
        assert got == ["v1: hi x"]
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "left of the request deadline (l5d-ctx-deadline)" in err.value.details()
    m = _metrics(proc.admin_port)
    assert m[f"rt/incoming/client/$/inet/127.0.0.1/{port}/requests"] == served + 1
    assert m[f"rt/outgoing/server/127.0.0.1/{out_port}/failures/DeadlineExceeded"] == 1


def test_via_on_requests_and_responses_bounds_a_routing_loop(stubs, backend,
                                                             l5d_process) -> None:
    """Linkerd's h2 ViaHeaderFilter: each hop appends `h2 linkerd` to the request's and the
    response's `via`; maxCallDepth (h2 default 10) counts those hops, so a router whose
    dtab sends calls back to itself answers the 11th with an error instead of looping."""
    pb2, pb2_grpc, _ = stubs
    port, _ = backend("v1")
    out_port, in_port, loop_port, admin = free_port(), free_port(), free_port(), free_port()
    outgoing = grpc_router("outgoing", out_port, f"/svc => /$/inet/127.0.0.1/{in_port};")
    incoming = grpc_router("incoming", in_port, f"/svc => /$/inet/127.0.0.1/{port};")
    loop = grpc_router("loop", loop_port, f"/svc => /$/inet/127.0.0.1/{loop_port};")
    proc = l5d_process(h2_config(outgoing + incoming + loop, admin), log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{out_port}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        _, call = stub.SayHello.with_call(pb2.HelloRequest(name="a"), timeout=TIMEOUT,
                                          metadata=[("via", "1.1 upstream")])
        assert metadata_of(call)["seen-via"] == "1.1 upstream, h2 linkerd, h2 linkerd"
        assert dict(call.initial_metadata())["via"] == "h2 linkerd, h2 linkerd"
    with grpc.insecure_channel(f"127.0.0.1:{loop_port}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.SayHello(pb2.HelloRequest(name="l"), timeout=TIMEOUT)
        assert "Maximum number of calls (10) has been exceeded" in err.value.details()
        # the router-made answer says `h2 linkerd` too, and each hop back appends its own
        via = dict(err.value.trailing_metadata())["via"]
        assert via == ", ".join(["h2 linkerd"] * 12)
    m = _metrics(proc.admin_port)
    assert m[f"rt/loop/server/127.0.0.1/{loop_port}/requests"] == 12  # the caller's + 11 hops
    assert m[f"rt/loop/server/127.0.0.1/{loop_port}/failures/MaxCallDepthExceeded"] == 1


def test_classification_timeout_lets_a_held_stream_go_on(stubs, backend, l5d_process) -> None:
    """A retrying gRPC classifier holds the response head until the trailers decide; a
    conversation (bidi: the next request waits for the last reply) cannot end first, so
    after classificationTimeoutMs the held reply goes on and the call is no longer
    retryable (Linkerd's ClassifiedRetryFilter); a short call is still classified."""
    import queue

    pb2, pb2_grpc, _ = stubs
    port, _ = backend("v1")
    rport, admin = free_port(), free_port()
    proc = l5d_process(h2_config(grpc_router(
        "grpc", rport, f"/svc => /$/inet/127.0.0.1/{port};",
        "  service:\n    responseClassifier: {kind: io.l5d.h2.grpc.default}\n"
        "    classificationTimeoutMs: 200"), admin), log_level="info")
    replies: queue.Queue[str] = queue.Queue()

    def conversation() -> Iterator[Any]:
        for i in range(3):
            yield pb2.HelloRequest(name=str(i))
            if replies.get(timeout=TIMEOUT) != f"v1: hi {i}":  # each turn waits for its reply
                return

    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        got = []
        for r in stub.Chat(conversation(), timeout=TIMEOUT):
            got.append(r.message)
            replies.put(r.message)
        assert got == ["v1: hi 0", "v1: hi 1", "v1: hi 2"]
        assert stub.SayHello(pb2.HelloRequest(name="q"), timeout=TIMEOUT).message == \
            "v1: hello q"
    assert "classificationTimeoutMs" not in proc.log_path.read_text()  # no longer warned
    m = _metrics(proc.admin_port)
    svc = "rt/grpc/service/svc/helloworld.Greeter"
    assert m[f"{svc}/retries/classification_timeout"] == 1
    assert m[f"{svc}/success"] == 2


def test_h2_router_under_workers(stubs, backend, l5d_process) -> None:
    """`workers: 2`: each worker process serves the h2 router on the shared port."""
    pb2, pb2_grpc, _ = stubs
    port, _ = backend("v1")
    rport, admin = free_port(), free_port()
    l5d_process("workers: 2\n" + h2_config(grpc_router(
        "grpc", rport, f"/svc => /$/inet/127.0.0.1/{port};"), admin), log_level="info")
    for i in range(6):  # new channels: new connections, spread by the kernel
        with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
            stub = pb2_grpc.GreeterStub(ch)
            assert stub.SayHello(pb2.HelloRequest(name=str(i)), timeout=TIMEOUT).message == \
                f"v1: hello {i}"


def test_goaway_drains_streams_in_flight(stubs, backend, l5d_process) -> None:
    """The incoming router is stopped (SIGTERM) mid-call: it sends GOAWAY, the outgoing
    router's stream on that connection completes; then the listener is gone."""
    import threading
    import time

    pb2, pb2_grpc, _ = stubs
    port, _ = backend("v1")
    out_port, in_port, admin1, admin2 = free_port(), free_port(), free_port(), free_port()
    inc = l5d_process(h2_config(grpc_router("incoming", in_port,
                                            f"/svc => /$/inet/127.0.0.1/{port};"), admin1),
                      log_level="info")
    l5d_process(h2_config(grpc_router("outgoing", out_port,
                                      f"/svc => /$/inet/127.0.0.1/{in_port};"), admin2),
                log_level="info")
    started = threading.Event()

    def slow() -> Iterator[Any]:
        yield pb2.HelloRequest(name="a")
        started.wait(10)
        time.sleep(1.0)  # the incoming router is draining by now
        yield pb2.HelloRequest(name="b")

    with grpc.insecure_channel(f"127.0.0.1:{out_port}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        chat = stub.Chat(slow(), timeout=TIMEOUT)
        assert next(chat).message == "v1: hi a"
        inc.proc.send_signal(15)  # SIGTERM: graceful shutdown, GOAWAY to the outgoing router
        started.set()
        assert [r.message for r in chat] == ["v1: hi b"]
        assert inc.proc.wait(20) == 0
        with pytest.raises(grpc.RpcError) as err:  # nobody there any more
            stub.SayHello(pb2.HelloRequest(name="c"), timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_request_outgrowing_the_retry_buffer_is_not_retried(stubs, backend, l5d_process,
                                                            tmp_path) -> None:
    """retryBufferSize.requestBytes: 4: every request body is longer, so nothing is
    replayed: UNAVAILABLE reaches the caller and is counted as too long to retry."""
    pb2, pb2_grpc, _ = stubs
    bad, _ = backend("bad", "--fail-code", "14")
    rport, admin = free_port(), free_port()
    retries = ("    retries: {budget: {minRetriesPerSec: 1000, percentCanRetry: 1.0}}\n"
               "    retryBufferSize: {requestBytes: 4}")
    proc = l5d_process(_classified_router(tmp_path, rport, admin, [bad],
                                          "io.l5d.h2.grpc.default", retries),
                       log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.SayHello(pb2.HelloRequest(name="a longer name"), timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    m = _metrics(proc.admin_port)
    svc = "rt/grpc/service/svc/helloworld.Greeter"
    assert m.get(f"{svc}/retries/total", 0) == 0
    assert m[f"{svc}/retries/request_stream_too_long"] == 1
