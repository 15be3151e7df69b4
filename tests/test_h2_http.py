"""Plain HTTP/2 (not gRPC) through l5d-py h2 routers, driven by curl and raw sockets.

curl speaks HTTP/2 with prior knowledge, asks for it with `Upgrade: h2c`, and
negotiates it with ALPN under TLS (certificates made by the test); the backend
is an HTTP/2 echo server (tests/h2_echo.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path as FsPath

from tests.h2_echo import H2Echo
from tests.tls_pki import make_pki
from tests.util import free_port


def _router(label: str, port: int, dtab: str, server_extra: str = "",
            router_extra: str = "") -> str:
    return f"""
- protocol: h2
  label: {label}
  dtab: |
    {dtab}
{router_extra}
  servers:
  - port: {port}
{server_extra}"""


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                          text=True, timeout=30)


def test_curl_prior_knowledge_and_h2c_upgrade(l5d_process) -> None:
    with H2Echo() as echo:
        port, admin = free_port(), free_port()
        l5d_process(f"admin: {{port: {admin}}}\nrouters:\n" + _router(
            "h2", port, f"/svc/echo => /$/inet/127.0.0.1/{echo.port};"), log_level="info")
        out = _curl("--http2-prior-knowledge", "-H", "Host: echo", "-D", "-",
                    f"http://127.0.0.1:{port}/hello?x=1")
        assert out.returncode == 0, out.stderr
        head, _, body = out.stdout.partition("\n\n")
        assert head.startswith("HTTP/2 200")
        assert "l5d-success-class: 1.0" in head
        got = json.loads(body)
        assert got["path"] == "/hello?x=1" and got["method"] == "GET"
        hdrs = dict((k, v) for k, v in got["headers"])
        assert hdrs[":authority"] == "echo"
        assert hdrs["l5d-dst-service"] == "/svc/echo"
        # a POST body, and a 1 MB response under flow control
        out = _curl("--http2-prior-knowledge", "-H", "Host: echo", "--data-binary",
                    "@-", f"http://127.0.0.1:{port}/post")
        assert out.returncode == 0, out.stderr
        out = _curl("--http2-prior-knowledge", "-H", "Host: echo", "-o", "/dev/null",
                    "-w", "%{size_download} %{http_version}",
                    f"http://127.0.0.1:{port}/bytes/1000000")
        assert out.stdout == "1000000 2", out.stderr
        # h2c upgrade: curl --http2 on plain http asks with Upgrade: h2c
        out = _curl("--http2", "-H", "Host: echo", "-w", "\n%{http_version}",
                    f"http://127.0.0.1:{port}/upgraded")
        assert out.returncode == 0, out.stderr
        body, _, version = out.stdout.rpartition("\n")
        assert version == "2"
        assert json.loads(body)["path"] == "/upgraded"
        # an unknown name: 400 with l5d-err, as HTTP/1 routers say it
        out = _curl("--http2-prior-knowledge", "-H", "Host: nowhere", "-D", "-",
                    f"http://127.0.0.1:{port}/")
        assert out.stdout.startswith("HTTP/2 502"), out.stdout
        assert "l5d-err: Unable%20to%20route%20request" in out.stdout
        assert "service name: /svc/nowhere" in out.stdout
        # HTTP/1.1 without an upgrade: told this is an HTTP/2 router
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 400 ")
        assert b"This is an HTTP/2 router" in data


def test_curl_http2_over_tls_and_alpn_between_routers(l5d_process, tmp_path: FsPath) -> None:
    """curl --http2 negotiates h2 with ALPN; the outgoing router's TLS client offers h2 to
    the incoming router's TLS server (which the echo server sits behind)."""
    pki = make_pki(tmp_path / "pki")
    leaf = pki.issue("l5d", "l5d", "127.0.0.1")
    with H2Echo() as echo:
        out_port, in_port, admin = free_port(), free_port(), free_port()
        tls_server = f"    tls: {{certPath: {leaf.cert}, keyPath: {leaf.key}}}"
        incoming = _router("incoming", in_port, f"/svc => /$/inet/127.0.0.1/{echo.port};",
                           tls_server)
        client_tls = (f"  client:\n    tls: {{commonName: l5d, trustCerts: [{pki.ca_pem}]}}")
        outgoing = _router("outgoing", out_port, f"/svc => /$/inet/127.0.0.1/{in_port};",
                           tls_server, client_tls)
        l5d_process(f"admin: {{port: {admin}}}\nrouters:\n" + outgoing + incoming,
                    log_level="info")
        out = _curl("--http2", "--cacert", str(pki.ca_pem), "-H", "Host: echo",
                    "-w", "\n%{http_version}", f"https://127.0.0.1:{out_port}/tls")
        assert out.returncode == 0, out.stderr
        body, _, version = out.stdout.rpartition("\n")
        assert version == "2"
        got = json.loads(body)
        assert got["path"] == "/tls"
        hdrs = dict((k, v) for k, v in got["headers"])
        assert hdrs["l5d-dst-service"] == "/svc/echo"  # set by the incoming router
