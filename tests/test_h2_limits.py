"""Abuse and flow-control limits of the h2 routers, against a real `l5d` process.

A raw HTTP/2 client (the `h2` library over a socket) floods a router with
rapid resets, PINGs and SETTINGS, oversized headers and zero windows; each
flood costs only its own connection, and the router goes on serving others.
A 100 MB gRPC stream to a slow reader passes with the router's RSS flat.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path as FsPath
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from tests.conftest import REPO, _start_process
from tests.h2_echo import H2Echo
from tests.h2_grpc import generated
from tests.util import free_port, port_open, stop_process, wait_until


class RawH2:
    """A client that sends whatever it is told, and reads only when asked."""

    def __init__(self, port: int, settings: dict[int, int] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.send()

    def send(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str = "/", end: bool = True, **extra: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                     (":authority", "echo"), (":path", path),
                                     *extra.items()], end_stream=end)
        return sid

    def events(self, timeout: float = 10.0) -> list[Any]:
        """Read until the peer closes or `timeout` passes; every event seen."""
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                out += self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                break
            if any(isinstance(e, h2.events.ConnectionTerminated) for e in out):
                break
        return out

    def close(self) -> None:
        self.sock.close()


def _goaway(events: list[Any]) -> Any:
    return next((e for e in events if isinstance(e, h2.events.ConnectionTerminated)), None)


def _metrics(admin: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/metrics.json",
                                timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _curl_ok(port: int) -> bool:
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge",
                          "-H", "Host: echo", f"http://127.0.0.1:{port}/still"],
                         capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and '"/still"' in out.stdout


def _config(port: int, admin: int, echo_port: int, server_extra: str = "") -> str:
    return f"""
admin: {{port: {admin}}}
routers:
- protocol: h2
  label: h2
  dtab: /svc => /$/inet/127.0.0.1/{echo_port};
  servers:
  - port: {port}
{server_extra}
"""


def test_floods_cost_only_their_connection(l5d_process) -> None:
    with H2Echo() as echo:
        port, admin = free_port(), free_port()
        l5d_process(_config(port, admin, echo.port), log_level="info")
        key = f"rt/h2/server/127.0.0.1/{port}/h2"

        # rapid reset (CVE-2023-44487): open and cancel streams as fast as possible
        c = RawH2(port)
        for _ in range(2000):
            sid = c.request()
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
            try:
                c.send()
            except OSError:
                break
        ev = _goaway(c.events())
        assert ev is not None and ev.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        c.close()
        assert _curl_ok(port)

        # ping flood, never reading the acks
        c = RawH2(port)
        try:
            for i in range(50_000):
                c.conn.ping(i.to_bytes(8, "big"))
                if i % 100 == 0:
                    c.send()
            c.send()
        except OSError:
            pass  # the router closed the connection: that is the point
        c.close()
        assert _curl_ok(port)

        # settings flood
        c = RawH2(port)
        try:
            for i in range(5000):
                c.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100 + i})
                if i % 50 == 0:
                    c.send()
            c.send()
        except OSError:
            pass
        ev = _goaway(c.events())
        assert ev is None or ev.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        c.close()

        # a header list past maxHeaderListBytes (8 KB, maxHeadersKB): this connection ends
        c = RawH2(port)
        c.request("/", **{"x-big": "v" * 20_000})
        c.send()
        ev = _goaway(c.events())
        assert ev is not None
        c.close()

        assert _curl_ok(port)
        wait_until(lambda: _metrics(admin).get(f"{key}/ping_flood", 0) >= 1, 10, "ping metric")
        m = _metrics(admin)
        assert m[f"{key}/rapid_reset"] == 1
        assert m[f"{key}/settings_flood"] == 1
        assert m[f"{key}/protocol_error"] >= 1


def test_concurrency_limit_and_zero_window_stall(l5d_process) -> None:
    with H2Echo() as echo:
        port, admin = free_port(), free_port()
        l5d_process(_config(port, admin, echo.port, """
    maxConcurrentStreamsPerConnection: 10
    h2Limits: {stallTimeoutMs: 500}"""), log_level="info")
        # the router advertises the limit
        c = RawH2(port, {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        c.sock.settimeout(5)
        c.conn.receive_data(c.sock.recv(65536))
        assert c.conn.remote_settings.max_concurrent_streams == 10
        # a stream whose reader never opens its window is reset after stallTimeoutMs
        sid = c.request("/bytes/100000")
        c.send()
        events = c.events(timeout=8)
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert [e.stream_id for e in resets] == [sid]
        c.close()
        wait_until(lambda: _metrics(admin).get(
            f"rt/h2/server/127.0.0.1/{port}/h2/stalled_streams", 0) == 1, 10, "stall metric")
        assert _curl_ok(port)


def _rss_kb(pid: int) -> int:
    for line in FsPath(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_100mb_stream_to_a_slow_reader_keeps_rss_flat(l5d_process, tmp_path) -> None:
    gen = tmp_path / "gen"
    pb2, pb2_grpc = generated(gen)
    bport = free_port()
    backend = _start_process([sys.executable, "-m", "tests.h2_grpc", "--port", str(bport),
                              "--name", "big", "--gen", str(gen)], tmp_path / "b.log", REPO)
    try:
        wait_until(lambda: port_open(bport), 30, "grpc backend")
        port, admin = free_port(), free_port()
        proc = l5d_process(f"""
admin: {{port: {admin}}}
routers:
- protocol: h2
  label: grpc
  identifier: {{kind: io.l5d.header.path, segments: 1}}
  dtab: /svc => /$/inet/127.0.0.1/{bport};
  servers: [{{port: {port}}}]
""", log_level="info")
        pid = proc.proc.pid
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = pb2_grpc.GreeterStub(ch)
            stub.SayHello(pb2.HelloRequest(name="warm"), timeout=30)
            base = _rss_kb(pid)
            peak = base
            total = 0
            stream = stub.SayHelloStream(pb2.HelloRequest(name="big", count=100,
                                                          payload_size=1 << 20), timeout=300)
            for i, reply in enumerate(stream):
                total += len(reply.payload)
                if i % 5 == 0:
                    time.sleep(0.2)  # a slow reader: the backend is slowed, not buffered
                    peak = max(peak, _rss_kb(pid))
            assert total == 100 << 20
        # the router held at most windows' worth, never the stream (100 MB)
        assert peak - base < 30_000, f"RSS grew {peak - base} kB (from {base} kB)"
    finally:
        stop_process(backend, 5)


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
