"""TLS across the mesh, end to end: real `l5d` processes, real certificates, real clients.

One "incoming" l5d terminates TLS on three servers (a good certificate, an expired
one, and one that requires client certificates) and serves its admin over TLS. One
"outgoing" l5d has a router per client setup: the right CA, a wrong CA, a wrong
commonName, an expired server, mTLS with and without a client certificate. Every
request goes app -> outgoing (plaintext) -> TLS -> incoming -> echo backend.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path as FsPath

import pytest

from tests.conftest import REPO as REPO_ROOT
from tests.conftest import Echo, _echo_handler, _start_process, _wait_ports
from tests.tls_pki import Pki, make_pki
from tests.util import free_port, stop_process, wait_until


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log_path: FsPath
    admin: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_l5d(root: FsPath, name: str, text: str, ports: list[int]) -> Proc:
    path = root / f"{name}.yaml"
    path.write_text(text)
    log_path = root / f"{name}.log"
    proc = _start_process([sys.executable, "-m", "router.cli", str(path), "--log-level",
                           "info"], log_path, root)
    _wait_ports(proc, ports, log_path)
    return Proc(proc, log_path, ports[-1])


def curl(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "no_proxy")}
    return subprocess.run(["curl", "-sS", "--max-time", str(timeout), *args],
                          capture_output=True, text=True, env=env, timeout=timeout + 10)


def get(port: int, host: str, *headers: str) -> tuple[int, dict[str, str], str]:
    """A plaintext request to a router (what an app with http_proxy sends)."""
    args = ["-i", f"http://127.0.0.1:{port}/tls-check", "-H", f"Host: {host}"]
    for h in headers:
        args += ["-H", h]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "no_proxy")}
    out = subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True,
                         env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    raw_head, _, raw_body = out.stdout.partition(b"\r\n\r\n")
    body = raw_body.decode("utf-8", "replace")
    lines = raw_head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hdrs, body


def metrics(admin_url: str, *curl_args: str) -> dict[str, float]:
    out = curl(*curl_args, f"{admin_url}/admin/metrics.json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def admin_json(url: str, *curl_args: str) -> object:
    out = curl(*curl_args, url)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@dataclass
class Mesh:
    pki: Pki
    root: FsPath
    echo: Echo
    incoming: Proc
    outgoing: Proc
    ports: dict[str, int]  # incoming servers: good, expired, mtls; outgoing routers by label
    client: object  # Pair: the outgoing's client certificate

    @property
    def in_admin(self) -> str:
        return f"https://127.0.0.1:{self.incoming.admin}"

    @property
    def out_admin(self) -> str:
        return f"http://127.0.0.1:{self.outgoing.admin}"


OUT_ROUTERS = ("out", "wrongca", "mismatch", "expired", "mtls", "nocert")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    import threading
    from http.server import ThreadingHTTPServer

    root = tmp_path_factory.mktemp("tls-mesh")
    pki = make_pki(root / "pki")
    good = pki.issue("incoming.l5d.test", "incoming.l5d.test", "127.0.0.1")
    expired = pki.issue("expired.l5d.test", expired=True)
    mtls = pki.issue("mtls.l5d.test")
    client = pki.issue("outgoing.l5d.test")

    echo = Echo("echo", 0, None)  # type: ignore[arg-type]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _echo_handler(echo))
    server.daemon_threads = True
    echo.server, echo.port = server, server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    ports = {k: free_port() for k in ("good", "expired", "mtls", "in_admin", "out_admin")}
    ports.update({f"r_{r}": free_port() for r in OUT_ROUTERS})
    incoming = f"""
admin:
  port: {ports['in_admin']}
  tls: {{certPath: {good.cert}, keyPath: {good.key}}}
telemetry:
- kind: io.l5d.prometheus
routers:
- protocol: http
  label: incoming
  dtab: /svc => /$/inet/127.0.0.1/{echo.port};
  servers:
  - port: {ports['good']}
    tls: {{certPath: {good.cert}, keyPath: {good.key}}}
  - port: {ports['expired']}
    tls: {{certPath: {expired.cert}, keyPath: {expired.key}}}
  - port: {ports['mtls']}
    tls:
      certPath: {mtls.cert}
      keyPath: {mtls.key}
      caCertPath: {pki.ca_pem}
      requireClientAuth: true
"""
    disco = root / "disco"
    disco.mkdir()
    for name in ("incoming", "expired", "mtls"):
        port = ports["good" if name == "incoming" else name]
        (disco / name).write_text(f"127.0.0.1 {port}\n")

    def router(label: str, target: str, tls: str) -> str:
        return f"""
- protocol: http
  label: {label}
  dtab: |
    /svc => /#/io.l5d.fs/{target};
    /svc/plain => /$/inet/127.0.0.1/{echo.port};
  servers: [{{port: {ports["r_" + label]}}}]
  client:
    kind: io.l5d.static
    configs:
    - prefix: /#/io.l5d.fs/{{service}}
      tls:
{tls}
"""

    cn = "        commonName: '{service}.l5d.test'\n"
    trust = f"        trustCertsBundle: {pki.ca_pem}\n"
    auth = (f"        clientAuth: {{certPath: {client.cert}, keyPath: {client.key}}}\n")
    outgoing = f"""
admin: {{port: {ports['out_admin']}}}
namers:
- kind: io.l5d.fs
  rootDir: {disco}
routers:""" + "".join([
        router("out", "incoming", cn + trust),
        router("wrongca", "incoming", cn + f"        trustCerts: [{pki.other_ca_pem}]\n"),
        router("mismatch", "incoming", "        commonName: other.l5d.test\n" + trust),
        router("expired", "expired", cn + trust),
        router("mtls", "mtls", cn + trust + auth),
        router("nocert", "mtls", cn + trust),
    ])
    inc = start_l5d(root, "incoming", incoming,
                    [ports["good"], ports["expired"], ports["mtls"], ports["in_admin"]])
    out = start_l5d(root, "outgoing", outgoing, [ports["r_" + r] for r in OUT_ROUTERS]
                    + [ports["out_admin"]])
    try:
        yield Mesh(pki, root, echo, inc, out, ports, client)
    finally:
        stop_process(out.proc)
        stop_process(inc.proc)
        server.shutdown()
        server.server_close()


def test_mesh_over_tls_end_to_end_with_pooled_connections(mesh: Mesh) -> None:
    for _ in range(20):
        status, hdrs, body = get(mesh.ports["r_out"], "hello")
        assert status == 200, (hdrs, body)
    seen = json.loads(body)
    assert seen["target"] == "/tls-check"
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["l5d-dst-service"] == "/svc/hello"  # the incoming router's view
    m = metrics(mesh.out_admin)
    prefix = "rt/out/client/#/io.l5d.fs/incoming"
    assert m[f"{prefix}/tls/connections"] == 1, "keep-alive: one handshake for 20 requests"
    assert m[f"{prefix}/tls/handshake_failures"] == 0
    state = admin_json(mesh.out_admin + "/client_state.json")
    tls = state["/#/io.l5d.fs/incoming"]["tls"]  # type: ignore[index]
    assert tls["commonName"] == "incoming.l5d.test"
    assert "CN=incoming.l5d.test" in tls["peerSubject"]
    # the local hop of the same router is plain: no tls on that client
    status, _, _ = get(mesh.ports["r_out"], "plain")
    assert status == 200
    state = admin_json(mesh.out_admin + "/client_state.json")
    assert "tls" not in state[f"/$/inet/127.0.0.1/{mesh.echo.port}"]  # type: ignore[index]
    servers = admin_json(mesh.in_admin + "/server_state.json", "--cacert", str(mesh.pki.ca_pem))
    good = next(s for s in servers if s["port"] == mesh.ports["good"])  # type: ignore[union-attr]
    assert good["tls"]["handshakes"] >= 1 and good["tls"]["requireClientAuth"] is False
    admin = next(s for s in servers if s["router"] == "admin")  # type: ignore[union-attr]
    assert admin["tls"]["certPath"].endswith("incoming.l5d.test.crt")


def l5d_err(hdrs: dict[str, str]) -> str:
    return urllib.parse.unquote(hdrs.get("l5d-err", ""))


@pytest.mark.parametrize("label, words, reason", [
    ("wrongca", "unable to get local issuer certificate", "untrusted"),
    ("mismatch", "Hostname mismatch", "name_mismatch"),
    ("expired", "certificate has expired", "expired"),
])
def test_bad_server_certificates_are_a_502_saying_which(mesh: Mesh, label: str, words: str,
                                                        reason: str) -> None:
    seen_before = len(mesh.echo.requests)
    status, hdrs, body = get(mesh.ports["r_" + label], "hello")
    assert status == 502
    err = l5d_err(hdrs)
    assert err.startswith("TLS handshake with 127.0.0.1:"), err
    assert "certificate verify failed" in err and words in err, err
    if label == "mismatch":
        assert "expected commonName 'other.l5d.test'" in err
    assert body.startswith("TLS handshake")
    target = "expired" if label == "expired" else "incoming"
    m = metrics(mesh.out_admin)
    prefix = f"rt/{label}/client/#/io.l5d.fs/{target}"
    assert m[f"{prefix}/tls/handshake_failures"] >= 1
    assert m[f"{prefix}/tls/handshake_failures/{reason}"] >= 1
    assert m[f"{prefix}/failures/SslHandshakeException"] >= 1
    # no plaintext fallback: nothing reached the backend
    assert len(mesh.echo.requests) == seen_before


def test_mtls_accepted_with_a_client_certificate_refused_without(mesh: Mesh) -> None:
    status, hdrs, body = get(mesh.ports["r_mtls"], "hello")
    assert status == 200, (hdrs, body)
    servers = admin_json(mesh.in_admin + "/server_state.json", "--cacert", str(mesh.pki.ca_pem))
    mtls = next(s for s in servers if s["port"] == mesh.ports["mtls"])  # type: ignore[union-attr]
    assert mtls["tls"]["requireClientAuth"] is True
    assert any("CN=outgoing.l5d.test" in s for s in mtls["tls"]["peerSubjects"])

    status, hdrs, _ = get(mesh.ports["r_nocert"], "hello")
    assert status == 502
    err = l5d_err(hdrs)
    assert "TLS server refused the connection" in err and "client certificate" in err, err
    m = metrics(mesh.in_admin, "--cacert", str(mesh.pki.ca_pem))
    assert m[f"rt/incoming/server/127.0.0.1/{mesh.ports['mtls']}/tls/handshake_failures"] >= 1

    # the same with curl: refused without a certificate, served with one
    url = f"https://127.0.0.1:{mesh.ports['mtls']}/direct"
    base = ["--cacert", str(mesh.pki.ca_pem), "--resolve", f"mtls.l5d.test:{mesh.ports['mtls']}"
            ":127.0.0.1", "-H", "Host: hello"]
    url = f"https://mtls.l5d.test:{mesh.ports['mtls']}/direct"
    refused = curl(*base, url)
    assert refused.returncode != 0 and refused.stdout == ""
    client = mesh.client
    ok = curl(*base, "--cert", str(client.cert), "--key", str(client.key), url)  # type: ignore[attr-defined]
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["target"] == "/direct"


def test_curl_and_openssl_see_the_real_certificate(mesh: Mesh) -> None:
    port = mesh.ports["good"]
    ok = curl("--cacert", str(mesh.pki.ca_pem), "-H", "Host: hello",
              f"https://127.0.0.1:{port}/via-curl")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["target"] == "/via-curl"
    untrusted = curl("-H", "Host: hello", f"https://127.0.0.1:{port}/x")
    assert untrusted.returncode == 60, untrusted  # curl: peer certificate cannot be verified
    s_client = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
         "incoming.l5d.test", "-verify_hostname", "incoming.l5d.test", "-CAfile",
         str(mesh.pki.ca_pem), "-brief"],
        input="", capture_output=True, text=True, timeout=20)
    text = s_client.stdout + s_client.stderr
    assert "Verification: OK" in text, text
    assert "CN = incoming.l5d.test" in text or "CN=incoming.l5d.test" in text, text
    # the mTLS server asks for a client certificate signed by the CA
    mtls = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{mesh.ports['mtls']}", "-CAfile",
         str(mesh.pki.ca_pem), "-cert", str(mesh.client.cert), "-key",  # type: ignore[attr-defined]
         str(mesh.client.key), "-brief", "-ign_eof"],  # type: ignore[attr-defined]
        input="GET / HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n",
        capture_output=True, text=True, timeout=20)
    assert "HTTP/1.1 200 OK" in mtls.stdout, mtls.stdout + mtls.stderr


def test_plaintext_to_a_tls_port_gets_no_http_response(mesh: Mesh) -> None:
    port = mesh.ports["good"]
    before = metrics(mesh.in_admin, "--cacert", str(mesh.pki.ca_pem))
    key = f"rt/incoming/server/127.0.0.1/{port}/tls/handshake_failures"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: hello\r\n\r\n")
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/" not in data and b"hello" not in data
    assert data == b"" or data[0] == 0x15, data  # nothing, or a TLS alert record
    out = curl(f"http://127.0.0.1:{port}/x", "-H", "Host: hello")
    assert out.returncode != 0 and out.stdout == ""
    wait_until(lambda: metrics(mesh.in_admin, "--cacert", str(mesh.pki.ca_pem))[key]
               >= before[key] + 2, what="handshake failures counted")
    m = metrics(mesh.in_admin, "--cacert", str(mesh.pki.ca_pem))
    assert m[f"{key}/http_request"] >= 1
    prom = curl("--cacert", str(mesh.pki.ca_pem), mesh.in_admin + "/admin/metrics/prometheus")
    labels = f'{{rt="incoming",server="127.0.0.1/{port}"}}'
    assert f"rt:server:tls:handshake_failures{labels}" in prom.stdout, prom.stdout[:2000]
    assert f"rt:server:tls:handshake_failures:http_request{labels}" in prom.stdout
    # and the admin too: https only
    plain_admin = curl(f"http://127.0.0.1:{mesh.incoming.admin}/admin/ping")
    assert "pong" not in plain_admin.stdout


def test_admin_over_tls(mesh: Mesh) -> None:
    ping = curl("--cacert", str(mesh.pki.ca_pem), mesh.in_admin + "/admin/ping")
    assert ping.returncode == 0 and ping.stdout == "pong", ping
    untrusted = curl(mesh.in_admin + "/admin/ping")
    assert untrusted.returncode == 60 and untrusted.stdout == ""
    # the incoming's client has no tls for /$/inet: it never talks plaintext to a TLS
    # admin successfully — the request fails, it is not answered in the clear
    out = curl("-sk", "-i", "-H", f"l5d-dtab: /svc=>/$/inet/127.0.0.1/{mesh.incoming.admin};",
               f"https://127.0.0.1:{mesh.ports['good']}/admin/ping")
    assert out.stdout.startswith("HTTP/1.1 502"), out.stdout
    assert "pong" not in out.stdout


def _ssl_subject(port: int, ca: FsPath) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def test_certificate_rotation_without_restart(tmp_path: FsPath) -> None:
    """A Kubernetes Secret mount: tls.crt -> ..data/tls.crt, ..data -> a timestamped dir."""
    pki = make_pki(tmp_path / "pki")
    mount = tmp_path / "secret"
    mount.mkdir()

    def publish(version: str, pair: object) -> None:
        d = mount / f"..{version}"
        d.mkdir()
        (d / "tls.crt").write_bytes(pair.cert.read_bytes())  # type: ignore[attr-defined]
        (d / "tls.key").write_bytes(pair.key.read_bytes())  # type: ignore[attr-defined]
        tmp_link = mount / "..data_tmp"
        tmp_link.symlink_to(d.name)
        os.replace(tmp_link, mount / "..data")  # the atomic swap kubelet does

    publish("v1", pki.issue("one.l5d.test"))
    for f in ("tls.crt", "tls.key"):
        (mount / f).symlink_to(f"..data/{f}")
    port, admin = free_port(), free_port()
    text = f"""
admin: {{port: {admin}}}
routers:
- protocol: http
  dtab: /svc => /$/inet/127.0.0.1/{admin};
  servers:
  - port: {port}
    tls: {{certPath: {mount}/tls.crt, keyPath: {mount}/tls.key}}
"""
    proc = start_l5d(tmp_path, "rotating", text, [port, admin])
    try:
        assert "CN=one.l5d.test" in _ssl_subject(port, pki.ca_pem)
        publish("v2", pki.issue("two.l5d.test"))
        wait_until(lambda: "CN=two.l5d.test" in _ssl_subject(port, pki.ca_pem), timeout=10,
                   what="the rotated certificate served")
        assert proc.proc.poll() is None
        wait_until(lambda: "TLS files changed on disk" in proc.log(), timeout=5,
                   what="the rotation logged")
        # a broken swap (a key of another certificate) keeps serving the last good one
        bad = pki.issue("three.l5d.test")
        other = pki.issue("four.l5d.test")
        d = mount / "..v3"
        d.mkdir()
        (d / "tls.crt").write_bytes(bad.cert.read_bytes())
        (d / "tls.key").write_bytes(other.key.read_bytes())
        tmp_link = mount / "..data_tmp"
        tmp_link.symlink_to(d.name)
        os.replace(tmp_link, mount / "..data")
        wait_until(lambda: "cannot be used" in proc.log(), timeout=10, what="error logged")
        assert "CN=two.l5d.test" in _ssl_subject(port, pki.ca_pem)
        ping = curl("--cacert", str(pki.ca_pem), "--resolve", f"two.l5d.test:{port}:127.0.0.1",
                    "-H", "Host: x", f"https://two.l5d.test:{port}/admin/ping")
        assert ping.stdout == "pong", ping
        # the seeds' check (linkerd-tls.yml): a dtab override through the TLS server
        seeds = curl("-sk", "-H", f"l5d-dtab: /svc=>/$/inet/127.0.0.1/{admin};",
                     f"https://127.0.0.1:{port}/admin/ping")
        assert seeds.stdout == "pong", seeds
        state = admin_json(f"http://127.0.0.1:{admin}/server_state.json")
        tls = state[0]["tls"]  # type: ignore[index]
        assert tls["certificateGeneration"] == 2 and "does not match" in tls["lastReloadError"]
    finally:
        stop_process(proc.proc)


def test_local_tls_mesh_config_and_the_seeds_check(tmp_path: FsPath) -> None:
    """configs/mesh-tls-local.yaml (`make run-tls`), with free ports and demo_certs' files."""
    import threading
    from http.server import ThreadingHTTPServer

    from router.tls.demo_certs import make

    certs = tmp_path / "tls"
    make(certs)
    echo = Echo("world", 0, None)  # type: ignore[arg-type]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _echo_handler(echo))
    server.daemon_threads = True
    echo.server, echo.port = server, server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "world").write_text(f"127.0.0.1 {echo.port}\n")
    out, inc, admin = free_port(), free_port(), free_port()
    text = ((REPO_ROOT / "configs" / "mesh-tls-local.yaml").read_text()
            .replace(".run/tls", str(certs)).replace("configs/disco", str(disco))
            .replace("4140", str(out)).replace("4141", str(inc)).replace("9990", str(admin)))
    proc = start_l5d(tmp_path, "mesh-tls-local", text, [out, inc, admin])
    try:
        status, _, body = get(out, "world")
        assert status == 200 and json.loads(body)["name"] == "world"
        m = metrics(f"http://127.0.0.1:{admin}")
        assert m[f"rt/outgoing/client/$/inet/127.0.0.1/{inc}/tls/connections"] == 1
        direct = curl("--cacert", str(certs / "cacertificate.pem"), "-H", "Host: world",
                      f"https://localhost:{inc}/")
        assert direct.returncode == 0 and json.loads(direct.stdout)["name"] == "world"
        seeds = curl("-sk", "-H", f"l5d-dtab: /svc=>/$/inet/127.0.0.1/{admin};",
                     f"https://127.0.0.1:{inc}/admin/ping")
        assert seeds.stdout == "pong", seeds
    finally:
        stop_process(proc.proc)
        server.shutdown()
        server.server_close()
