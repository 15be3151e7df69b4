"""Live reload of an h2 router (router/reload.py), with real grpcio backends and clients.

A changed h2 router is rebuilt under its running servers, as an HTTP/1 one: new streams
take the new config (here a dtab moving the Greeter from v1 to v2) on the connections
already open, a server with new settings on the same port takes over the listening
socket, a new port listens, a stream in flight finishes on the backend it started with,
and a change of protocol is refused with the restart hint while the old config serves.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc

from tests.test_h2_grpc import TIMEOUT, _metrics, backend, h2_config, stubs  # noqa: F401
from tests.util import free_port, wait_until


def _router(port: int, dtab: str, servers_extra: str = "", protocol: str = "h2") -> str:
    ident = "  identifier: {kind: io.l5d.header.path, segments: 1}\n" if protocol == "h2" \
        else ""
    return f"""
- protocol: {protocol}
  label: grpc
  experimental: true
{ident}  dtab: |
    {dtab}
  servers:
  - port: {port}
{servers_extra}"""


def _reload(admin: int) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/admin/reload", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _reload_state(admin: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/reload.json",
                                timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_h2_router_reloads_in_place(stubs, backend, l5d_process) -> None:  # noqa: F811
    pb2, pb2_grpc, _ = stubs
    p1, _ = backend("v1")
    p2, _ = backend("v2")
    rport, rport2, admin = free_port(), free_port(), free_port()
    proc = l5d_process(h2_config(_router(rport, f"/svc => /$/inet/127.0.0.1/{p1};"), admin),
                       log_level="info")
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        assert stub.SayHello(pb2.HelloRequest(name="a"), timeout=TIMEOUT).message == \
            "v1: hello a"
        # a conversation held open across the reload
        release = threading.Event()
        held_replies: list[str] = []

        def held() -> Iterator[Any]:
            yield pb2.HelloRequest(name="before")
            release.wait(TIMEOUT)
            yield pb2.HelloRequest(name="after")

        def converse() -> None:
            for r in stub.Chat(held(), timeout=TIMEOUT):
                held_replies.append(r.message)

        talker = threading.Thread(target=converse)
        talker.start()
        try:
            wait_until(lambda: held_replies == ["v1: hi before"], 20, "the held call's reply")
            # the dtab moves the Greeter to v2; the first server gets another setting (same
            # port: the socket is taken over) and a second server listens
            proc.config_path.write_text(h2_config(_router(
                rport, f"/svc => /$/inet/127.0.0.1/{p2};",
                "    maxConcurrentStreamsPerConnection: 500\n"
                f"  - port: {rport2}\n"), admin))
            status, body = _reload(admin)
            assert status == 200, body
            state = _reload_state(admin)
            assert state["version"] == 2 and state["lastError"] is None, state
            assert any("router grpc" in c for c in state["history"][0]["changes"]), state
            # new streams on the connection opened before the reload take the new dtab
            assert stub.SayHello(pb2.HelloRequest(name="b"), timeout=TIMEOUT).message == \
                "v2: hello b"
        finally:
            release.set()
            talker.join(TIMEOUT)
        # the stream in flight finished where it started
        assert held_replies == ["v1: hi before", "v1: hi after"]
    for port in (rport, rport2):  # new connections, the old port and the new one
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb2_grpc.GreeterStub(ch)
            assert stub.SayHello(pb2.HelloRequest(name="c"), timeout=TIMEOUT).message == \
                "v2: hello c"
    m = _metrics(admin)
    assert m[f"rt/grpc/server/127.0.0.1/{rport}/failures"] == 0
    assert m[f"rt/grpc/server/127.0.0.1/{rport2}/requests"] == 1
    assert m[f"rt/grpc/client/$/inet/127.0.0.1/{p1}/success"] == 2
    assert m[f"rt/grpc/client/$/inet/127.0.0.1/{p2}/success"] == 3

    # a change of protocol cannot be applied live: refused with the hint, v2 keeps serving
    proc.config_path.write_text(h2_config(_router(rport, "/svc => /$/inet/127.0.0.1/1;",
                                                  protocol="http"), admin))
    status, body = _reload(admin)
    assert status == 400, body
    state = _reload_state(admin)
    assert state["version"] == 2
    assert "changed protocol (h2 -> http)" in state["lastError"]
    assert "restart l5d" in state["lastError"]
    with grpc.insecure_channel(f"127.0.0.1:{rport}") as ch:
        stub = pb2_grpc.GreeterStub(ch)
        assert stub.SayHello(pb2.HelloRequest(name="d"), timeout=TIMEOUT).message == \
            "v2: hello d"
