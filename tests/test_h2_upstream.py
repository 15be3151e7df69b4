"""Backend connections that fail under an open stream, against a real `l5d` process.

A scripted HTTP/2 backend (tests/h2_scripted.py) acts once the request's HEADERS
reached it, so the router's stream is open every time: a backend that closes
before sending a single byte (not even its SETTINGS) never took the stream, and
the request is requeued (the client's `retries/requeues`); one that spoke first
may have processed it, so that call fails, naming what the backend said.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from typing import Any

import h2.events

from tests.h2_scripted import ScriptedH2
from tests.test_h2_limits import RawH2
from tests.util import free_port, wait_until


def _config(port: int, admin: int, backend: int) -> str:
    return f"""
admin: {{port: {admin}}}
routers:
- protocol: h2
  label: h2
  dtab: /svc => /$/inet/127.0.0.1/{backend};
  servers:
  - port: {port}
"""


def _curl_args(port: int, *extra: str) -> list[str]:
    return ["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge", "-H", "Host: x",
            "-D", "-", *extra, f"http://127.0.0.1:{port}/a"]


def _split(stdout: str) -> tuple[str, str]:
    head, _, body = stdout.partition("\n\n")
    return head, body


def _curl(port: int, *extra: str) -> tuple[str, str]:
    """(response head, body) of a request through the router."""
    out = subprocess.run(_curl_args(port, *extra), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return _split(out.stdout)


def _metrics(admin: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/metrics.json",
                                timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_a_connection_closed_before_the_backend_spoke_is_requeued(l5d_process) -> None:
    with ScriptedH2(["silent_close", "silent_close"]) as backend:
        port, admin = free_port(), free_port()
        proc = l5d_process(_config(port, admin, backend.port), log_level="info")
        # twice sent again, the POST body replayed each time
        head, body = _curl(port, "--data-binary", "payload")
        assert head.startswith("HTTP/2 200"), head + body
        assert body == "served by connection 2: payload\n"
        assert backend.seen == ["silent_close", "silent_close", "serve"]
        head, body = _curl(port)
        assert head.startswith("HTTP/2 200") and body == "served by connection 2: \n"
        client = f"rt/h2/client/$/inet/127.0.0.1/{backend.port}"
        m = _metrics(admin)
        assert m[f"{client}/retries/requeues"] == 2
        assert m[f"{client}/success"] == 2
        assert "before the backend sent any HTTP/2 frame" in proc.log()


def test_a_backend_that_spoke_then_closed_fails_that_call_naming_it(l5d_process) -> None:
    """It may have processed the request: not sent again (no retry policy here)."""
    with ScriptedH2(["preface_close", "goaway_error"]) as backend:
        port, admin = free_port(), free_port()
        proc = l5d_process(_config(port, admin, backend.port), log_level="info")
        head, body = _curl(port)
        assert head.startswith("HTTP/2 502"), head + body
        # (a FIN or, with our frames unread, a reset: either way after its SETTINGS)
        assert body.startswith(f"connection to 127.0.0.1:{backend.port} closed mid-stream")
        assert "before the backend" not in body and "GOAWAY" not in body
        # a GOAWAY with an error: the failure says what the backend sent, and it is logged
        head, body = _curl(port)
        assert head.startswith("HTTP/2 502"), head + body
        assert "closed mid-stream after GOAWAY PROTOCOL_ERROR (last stream 1): 'bad frame'" \
            in body, body
        assert (f"127.0.0.1:{backend.port} sent GOAWAY PROTOCOL_ERROR (last stream 1): "
                "'bad frame'") in proc.log()
        head, body = _curl(port)
        assert head.startswith("HTTP/2 200") and body == "served by connection 2: \n"
        assert backend.seen == ["preface_close", "goaway_error", "serve"]
        m = _metrics(admin)
        assert m.get(f"rt/h2/client/$/inet/127.0.0.1/{backend.port}/retries/requeues", 0) == 0


def test_a_stream_waiting_for_a_connection_that_is_lost_goes_to_a_new_one(
        l5d_process) -> None:
    """The backend allows one stream at a time: the second request waits for it at the
    router. When the connection goes, the first call fails (the backend had it), the
    waiting one was never written and is requeued on a new connection."""
    with ScriptedH2(["hold_one"]) as backend:
        port, admin = free_port(), free_port()
        l5d_process(_config(port, admin, backend.port), log_level="info")
        first = subprocess.Popen(_curl_args(port), stdout=subprocess.PIPE, text=True)
        wait_until(lambda: backend.held == 1, 20, "the first request at the backend")
        second = subprocess.Popen(_curl_args(port, "--data-binary", "two"),
                                  stdout=subprocess.PIPE, text=True)
        wait_until(lambda: _metrics(admin).get(f"rt/h2/server/127.0.0.1/{port}/h2/streams")
                   == 2, 20, "the second request waiting at the router")
        assert backend.held == 1
        backend.drop()
        out1, _ = first.communicate(timeout=30)
        out2, _ = second.communicate(timeout=30)
        head, body = _split(out1)
        assert head.startswith("HTTP/2 502") and "closed mid-stream" in body, out1
        head, body = _split(out2)
        assert head.startswith("HTTP/2 200"), out2
        assert body == "served by connection 1: two\n"
        assert backend.seen == ["hold_one", "serve"]
        m = _metrics(admin)
        assert m[f"rt/h2/client/$/inet/127.0.0.1/{backend.port}/retries/requeues"] == 1


def test_a_backend_resetting_streams_it_answered_is_not_a_rapid_reset(l5d_process) -> None:
    """Rapid reset (CVE-2023-44487) is a client opening and cancelling streams; a backend
    that ends the streams the router opened (RST_STREAM NO_ERROR after a complete answer)
    is not one: its connection stays, every call succeeds."""
    with ScriptedH2(["answer_reset"]) as backend:
        port, admin = free_port(), free_port()
        proc = l5d_process(_config(port, admin, backend.port), log_level="info")
        c = RawH2(port)
        n = 900  # the router's rapid-reset limit is 200 per second per connection
        for i in range(n):
            c.request(f"/{i}", end=False)
        c.send()
        statuses: list[str] = []
        c.sock.settimeout(30)
        while len(statuses) < n:
            data = c.sock.recv(65536)
            if not data:
                break
            for e in c.conn.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    statuses.append(dict(e.headers)[":status"])
                elif isinstance(e, h2.events.DataReceived):
                    c.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            c.send()  # acks and window updates
        c.close()
        assert statuses.count("200") == n, (statuses.count("200"), proc.log()[-2000:])
        assert backend.seen == ["answer_reset"]  # one connection all along
        assert "rapid reset" not in proc.log()


def test_a_backend_refusing_every_stream_fails_the_call_naming_it(l5d_process) -> None:
    """REFUSED_STREAM is sent again (nothing was processed), boundedly; the failure then
    names the endpoint that refused."""
    with ScriptedH2(["refuse"]) as backend:
        port, admin = free_port(), free_port()
        l5d_process(_config(port, admin, backend.port), log_level="info")
        head, body = _curl(port)
        assert head.startswith("HTTP/2 502"), head + body
        assert body == ("backend reset the stream (REFUSED_STREAM) "
                        f"(endpoint 127.0.0.1:{backend.port})"), body
        assert backend.seen == ["refuse"]
