"""End to end: a real `l5d` process on free loopback ports, driven by curl and a Python client.

One l5d process per test module section serves several routers (one per
identifier), so the suite pays for few process starts.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import textwrap
import time
import urllib.parse
from pathlib import Path as FsPath

import pytest

from tests.util import free_port, wait_until


def curl(proxy_port: int | None, url: str, *headers: str, method: str = "GET",
         data: str | None = None, direct: bool = False) -> tuple[int, dict[str, str], str]:
    """curl through `http_proxy` (or directly); returns (status, headers lowercased, body)."""
    args = ["curl", "-s", "-S", "-i", "--max-time", "20", "-X", method, url]
    for h in headers:
        args += ["-H", h]
    if data is not None:
        args += ["--data-binary", data]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "no_proxy")}
    if not direct:
        env["http_proxy"] = f"http://127.0.0.1:{proxy_port}"
    out = subprocess.run(args, capture_output=True, env=env, timeout=30, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body.decode("utf-8", "replace")


def seen_headers(body: str) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def write_disco(root: FsPath, name: str, *ports: int) -> None:
    tmp = root / f".{name}.tmp"
    tmp.write_text("".join(f"127.0.0.1 {p}\n" for p in ports))
    os.replace(tmp, root / name)


@pytest.fixture
def disco(tmp_path: FsPath) -> FsPath:
    d = tmp_path / "disco"
    d.mkdir()
    return d


def identifiers_config(disco: FsPath, echo_port: int) -> tuple[str, dict[str, int]]:
    ports = {k: free_port() for k in (
        "token", "mah", "path", "header", "static", "list", "clear", "ingress", "admin")}
    text = textwrap.dedent(f"""
    admin: {{port: {ports['admin']}}}
    namers:
    - kind: io.l5d.fs
      rootDir: {disco}
      pollIntervalMs: 50
    routers:
    - protocol: http
      label: token
      dtab: |
        /svc => /#/io.l5d.fs;
        /svc/direct => /$/inet/127.0.0.1/{echo_port};
        /svc/reversed => /$/io.buoyant.rinet/{echo_port}/127.0.0.1;
        /svc/byname => /$/inet/localhost/{echo_port};
        /svc/localport => /$/inet/{echo_port}/residual;
        /svc/fixed => /$/fixedinet/127.0.0.1/{echo_port};
        /svc/unknownnamer => /$/io.l5d.nosuch/x;
        /svc/badinet => /$/inet/127.0.0.1;
        /svc/nil => /$/nil;
        /svc/failing => /$/fail;
        /svc/split => 1 * /#/io.l5d.fs/echo & 1 * /#/io.l5d.fs/echo2;
        /svc/dead => /#/io.l5d.fs/dead;
      servers: [{{port: {ports['token']}}}]
    - protocol: http
      label: mah
      dstPrefix: /http
      identifier: {{kind: io.l5d.methodAndHost}}
      dtab: |
        /http/1.1/*/echo => /#/io.l5d.fs/echo;
      servers: [{{port: {ports['mah']}}}]
    - protocol: http
      label: path
      identifier: {{kind: io.l5d.path, segments: 1, consume: true}}
      dtab: /svc => /#/io.l5d.fs
      servers: [{{port: {ports['path']}}}]
    - protocol: http
      label: header
      identifier: {{kind: io.l5d.header}}
      dtab: /svc => /#/io.l5d.fs
      servers: [{{port: {ports['header']}}}]
    - protocol: http
      label: static
      identifier: {{kind: io.l5d.static, path: /echo}}
      dtab: /svc => /#/io.l5d.fs
      servers: [{{port: {ports['static']}}}]
    - protocol: http
      label: list
      identifier:
      - kind: io.l5d.header
      - kind: io.l5d.header.token
        header: X-Service
      dtab: /svc => /#/io.l5d.fs
      servers: [{{port: {ports['list']}}}]
    - protocol: http
      label: clear
      dtab: /svc => /#/io.l5d.fs
      servers: [{{port: {ports['clear']}, clearContext: true}}]
    - protocol: http
      label: ingress
      dtab: |
        /svc => /$/io.buoyant.http.domainToPathPfx/domain;
        /domain/test/echo/www => /#/io.l5d.fs/echo;
        /svc => /$/io.buoyant.http.subdomainOfPfx/example.com/sub;
        /sub/echo => /#/io.l5d.fs/echo2;
        /svc => /$/io.buoyant.hostportPfx/hp;
        /hp/api/8080 => /#/io.l5d.fs/echo;
        /hp/api/9090 => /$/io.buoyant.porthostPfx/ph/api:9090;
        /ph/9090/api => /#/io.l5d.fs/echo2;
      servers: [{{port: {ports['ingress']}}}]
    """)
    return text, ports


@pytest.fixture
def routers(l5d_process, echo_backend, disco):
    echo = echo_backend("echo")
    echo2 = echo_backend("echo2")
    write_disco(disco, "echo", echo.port)
    write_disco(disco, "echo2", echo2.port)
    write_disco(disco, "dead", free_port())  # nothing listens there
    text, ports = identifiers_config(disco, echo.port)
    proc = l5d_process(text)
    return proc, ports, echo, echo2


def test_header_token_default_and_forwarded_headers(routers) -> None:
    proc, ports, echo, _ = routers
    status, hdrs, body = curl(ports["token"], "http://echo/some/path?q=1")
    assert status == 200, body
    req = json.loads(body)
    assert req["name"] == "echo" and req["target"] == "/some/path?q=1"  # origin form
    h = seen_headers(body)
    assert h["l5d-dst-service"] == "/svc/echo"
    assert h["l5d-dst-client"] == "/#/io.l5d.fs/echo"
    assert "l5d-reqid" in h
    assert "linkerd" in h["via"]
    assert "proxy-connection" not in h  # hop-by-hop dropped
    assert "linkerd" in hdrs["via"]


def test_builtin_namers_through_the_router(routers) -> None:
    _, ports, echo, _ = routers
    # Bound ids as Finagle/Linkerd name them (NamerTest "Namer.global: /$/inet" and
    # "/$/fixedinet", RinetTest "rinet binds").
    for host, client in (("direct", f"/$/inet/127.0.0.1/{echo.port}"),
                         ("reversed", f"/$/io.buoyant.rinet/{echo.port}/127.0.0.1"),
                         ("localport", f"/$/inet/{echo.port}"),
                         ("fixed", f"/$/fixedinet/127.0.0.1/{echo.port}")):
        status, _, body = curl(ports["token"], f"http://{host}/x")
        assert status == 200, (host, body)
        assert seen_headers(body)["l5d-dst-client"] == client
    assert seen_headers(curl(ports["token"], "http://localport/")[2])[
        "l5d-dst-residual"] == "/residual"
    # An unknown or malformed /$/ name is an error that says so (Finagle: ClassNotFoundException)
    for host, kind in (("unknownnamer", "io.l5d.nosuch"), ("badinet", "inet")):
        status, hdrs, body = curl(ports["token"], f"http://{host}/")
        assert status == 502, (host, body)
        assert f"unknown namer '{kind}'" in body, body
        assert "unknown namer" in urllib.parse.unquote(hdrs["l5d-err"])
    for host, backend in (("www.echo.test", "echo"), ("echo.example.com", "echo2"),
                          ("api:8080", "echo"), ("api:9090", "echo2")):
        status, hdrs, body = curl(ports["ingress"], f"http://{host}/")
        assert status == 200, (host, body)
        assert json.loads(body)["name"] == backend, host
        assert seen_headers(body)["l5d-dst-service"] == f"/svc/{host}"
    status, _, body = curl(ports["token"], "http://byname/x")  # DNS, asynchronously
    assert status == 200, body
    assert seen_headers(body)["l5d-dst-client"] == f"/$/inet/localhost/{echo.port}"
    status, hdrs, body = curl(ports["token"], "http://failing/")
    assert status == 502 and "l5d-err" in hdrs


def test_method_and_host(routers) -> None:
    _, ports, _, _ = routers
    status, _, body = curl(ports["mah"], "http://ECHO/a")
    assert status == 200, body
    assert seen_headers(body)["l5d-dst-service"] == "/http/1.1/GET/echo"
    status, _, body = curl(ports["mah"], "http://echo/a", method="POST", data="hi")
    assert status == 200 and json.loads(body)["body"] == "hi"
    assert seen_headers(body)["l5d-dst-service"] == "/http/1.1/POST/echo"


def test_path_identifier_consumes_the_segment(routers) -> None:
    _, ports, _, _ = routers
    status, _, body = curl(ports["path"], "http://anything/echo/rest/of/it?x=1")
    assert status == 200, body
    assert json.loads(body)["target"] == "/rest/of/it?x=1"
    assert seen_headers(body)["l5d-dst-service"] == "/svc/echo"
    status, hdrs, body = curl(ports["path"], "http://anything/")
    assert status == 400
    assert "not enough segments in path" in urllib.parse.unquote(hdrs["l5d-err"])


def test_header_static_and_list_identifiers(routers) -> None:
    _, ports, _, _ = routers
    status, _, body = curl(ports["header"], "http://ignored/", "l5d-name: /echo2")
    assert status == 200 and json.loads(body)["name"] == "echo2"
    status, hdrs, body = curl(ports["header"], "http://ignored/")
    assert status == 400
    err = urllib.parse.unquote(hdrs["l5d-err"])
    assert err.startswith('Unknown destination: Request("GET /", from /127.0.0.1:')
    assert err.endswith("/ l5d-name header is absent")
    assert body.startswith("Unknown destination")
    # a value that is not a path: 400 naming the header (Linkerd's HeaderIdentifier: Path.read
    # throws, RoutingFactory answers UnknownDst with the message)
    status, hdrs, body = curl(ports["header"], "http://ignored/", "l5d-name: echo2")
    assert status == 400
    assert "l5d-name header is not a path" in urllib.parse.unquote(hdrs["l5d-err"])
    status, _, body = curl(ports["static"], "http://whatever/")
    assert status == 200 and json.loads(body)["name"] == "echo"
    status, _, body = curl(ports["list"], "http://x/", "X-Service: echo2")
    assert status == 200 and json.loads(body)["name"] == "echo2"
    status, _, body = curl(ports["list"], "http://x/", "X-Service: echo2", "l5d-name: /echo")
    assert status == 200 and json.loads(body)["name"] == "echo"


def test_l5d_dtab_override_and_bad_dtab(routers) -> None:
    _, ports, _, _ = routers
    status, _, body = curl(ports["token"], "http://echo/", "l5d-dtab: /svc/echo => /svc/echo2")
    assert status == 200 and json.loads(body)["name"] == "echo2"
    h = seen_headers(body)
    assert h["l5d-ctx-dtab"] == "/svc/echo=>/svc/echo2"
    assert "l5d-dtab" not in h
    status, hdrs, body = curl(ports["token"], "http://echo/", "l5d-dtab: /svc/echo => =>")
    assert status == 400 and "l5d-err" in hdrs


def test_error_statuses(routers) -> None:
    _, ports, _, _ = routers
    status, hdrs, body = curl(ports["token"], "http://nosuch/")
    assert status == 502
    assert body.startswith("Unable to route request!")
    assert "service name: /svc/nosuch" in body and "/svc => /#/io.l5d.fs" in body
    assert "no file" in body  # the namer's reason reaches the person reading the 502
    assert urllib.parse.unquote(hdrs["l5d-err"]).startswith("Unable to route request!")
    status, hdrs, body = curl(ports["token"], "http://dead/")
    assert status == 502
    assert "Unable to establish connection to 127.0.0.1:" in body
    assert "l5d-err" in hdrs
    status, hdrs, body = curl(ports["token"], "http://nil/")
    assert status == 502 and "l5d-err" in hdrs


def test_clear_context_strips_l5d_headers_both_ways(routers) -> None:
    _, ports, _, _ = routers
    status, hdrs, body = curl(ports["clear"], "http://echo/", "l5d-dtab: /svc/echo => /svc/echo2",
                              "l5d-ctx-dtab: /svc/echo => /svc/echo2", "l5d-custom: x")
    assert status == 200
    req = json.loads(body)
    assert req["name"] == "echo"  # the override was dropped, not applied
    h = seen_headers(body)
    assert "l5d-custom" not in h and "l5d-ctx-dtab" not in h
    assert not [k for k in hdrs if k.startswith("l5d-")]  # backend's l5d-* stripped too
    # without clearContext the backend's l5d-* header comes back
    status, hdrs, _ = curl(ports["token"], "http://echo/")
    assert hdrs.get("l5d-backend-secret") == "leak"
    # clearContext empties router error bodies
    status, hdrs, body = curl(ports["clear"], "http://nosuch/")
    assert status == 502 and body == "" and "l5d-err" not in hdrs


def test_weighted_union_splits_traffic(routers) -> None:
    _, ports, echo, echo2 = routers
    names = [json.loads(curl(ports["token"], "http://split/")[2])["name"] for _ in range(40)]
    assert names.count("echo") > 5 and names.count("echo2") > 5


def test_python_client_keep_alive_through_the_proxy(routers) -> None:
    _, ports, echo, _ = routers
    conn = http.client.HTTPConnection("127.0.0.1", ports["token"], timeout=10)
    try:
        for i in range(5):
            conn.request("GET", f"http://echo/k/{i}", headers={"Host": "echo"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            assert json.loads(body)["target"] == f"/k/{i}"
        conn.request("POST", "/upload", body=b"x" * 100_000, headers={"Host": "echo"})
        resp = conn.getresponse()
        assert resp.status == 200 and len(json.loads(resp.read())["body"]) == 100_000
    finally:
        conn.close()


def test_live_fs_change_reroutes_without_restart(routers, disco) -> None:
    _, ports, echo, echo2 = routers
    status, _, _ = curl(ports["token"], "http://moving/")
    assert status == 502  # no file yet
    write_disco(disco, "moving", echo.port)
    wait_until(lambda: curl(ports["token"], "http://moving/")[0] == 200, 10, "file created")
    assert json.loads(curl(ports["token"], "http://moving/")[2])["name"] == "echo"
    write_disco(disco, "moving", echo2.port)

    def moved() -> bool:
        status, _, body = curl(ports["token"], "http://moving/")
        return status == 200 and json.loads(body)["name"] == "echo2"

    wait_until(moved, 10, "edit seen")


def test_admin_delegator_and_bound_names(routers) -> None:
    proc, ports, _, _ = routers
    q = urllib.parse.urlencode({"path": "/svc/echo", "dtab": "/svc=>/#/io.l5d.fs",
                                "namespace": "token"})
    status, _, body = curl(None, f"http://127.0.0.1:{proc.admin_port}/delegator.json?{q}",
                           direct=True)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["delegate"]["bound"]["id"] == "/#/io.l5d.fs/echo"
    q = urllib.parse.urlencode({"path": "/svc/x", "dtab": "/svc=>/$/io.l5d.nosuch",
                                "namespace": "token"})
    status, _, body = curl(None, f"http://127.0.0.1:{proc.admin_port}/delegator.json?{q}",
                           direct=True)
    assert status == 200, body
    leaf = json.loads(body)["delegate"]
    assert leaf["type"] == "exception", leaf
    assert "unknown namer 'io.l5d.nosuch'" in leaf["message"]
    status, _, body = curl(None, f"http://127.0.0.1:{proc.admin_port}/bound-names.json",
                           direct=True)
    assert "/#/io.l5d.fs/echo" in json.loads(body)
    status, _, body = curl(None, f"http://127.0.0.1:{proc.admin_port}/config.json", direct=True)
    assert [r["label"] for r in json.loads(body)["routers"]][:2] == ["token", "mah"]


def test_l5d_dtab_override_reaches_two_hops(l5d_process, demo_service, disco) -> None:
    """hello -> (router) -> world, with `l5d-dtab: /svc/world => /svc/world-v2` at hop one."""
    router_port, admin_port = free_port(), free_port()
    world = demo_service("world")
    world_v2 = demo_service("world-v2")
    hello = demo_service("hello", proxy=f"127.0.0.1:{router_port}")
    write_disco(disco, "world", world.port)
    write_disco(disco, "world-v2", world_v2.port)
    write_disco(disco, "hello", hello.port)
    l5d_process(textwrap.dedent(f"""
    admin: {{port: {admin_port}}}
    namers:
    - kind: io.l5d.fs
      rootDir: {disco}
    routers:
    - protocol: http
      label: outgoing
      dtab: /svc => /#/io.l5d.fs
      servers: [{{port: {router_port}}}]
    """))
    status, _, body = curl(router_port, "http://hello")
    assert (status, body) == (200, "Hello (127.0.0.1) world (127.0.0.1)!!")
    status, _, body = curl(router_port, "http://hello", "l5d-dtab: /svc/world => /svc/world-v2")
    assert (status, body) == (200, "Hello (127.0.0.1) earth (127.0.0.1)!!")


def test_bad_config_exits_before_listening_and_port_in_use_exits_cleanly(tmp_path) -> None:
    import socket
    import sys

    port = free_port()
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"routers:\n- protocol: http\n  servers: [{{port: {port}, ip: [1]}}]\n")
    out = subprocess.run([sys.executable, "-m", "router.cli", str(bad)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and f"{bad}:3: routers[0].servers[0].ip" in out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        admin = free_port()
        good = tmp_path / "good.yaml"
        good.write_text(f"admin: {{port: {admin}}}\nrouters:\n- protocol: http\n"
                        f"  servers: [{{port: {port}}}]\n")
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "router.cli", str(good)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1, out.stderr
        assert time.monotonic() - t0 < 20
        assert "cannot start" in out.stderr


def test_sigterm_drains_and_exits_zero(l5d_process, echo_backend, disco) -> None:
    echo = echo_backend("echo")
    write_disco(disco, "echo", echo.port)
    port, admin = free_port(), free_port()
    proc = l5d_process(textwrap.dedent(f"""
    admin: {{port: {admin}, shutdownGraceMs: 2000}}
    namers:
    - kind: io.l5d.fs
      rootDir: {disco}
    routers:
    - protocol: http
      dtab: /svc => /#/io.l5d.fs
      servers: [{{port: {port}}}]
    """))
    assert curl(port, "http://echo/")[0] == 200
    assert proc.stop() == 0
    assert "shutting down" in proc.log()


def test_binding_timeout_is_a_502_with_linkerds_text(l5d_process) -> None:
    """A namer that never answers (a k8s API server that accepts and stays silent)."""
    import socket

    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        port, admin = free_port(), free_port()
        l5d_process(textwrap.dedent(f"""
        admin: {{port: {admin}}}
        namers:
        - kind: io.l5d.k8s
          host: 127.0.0.1
          port: {hole.getsockname()[1]}
        routers:
        - protocol: http
          dtab: /svc => /#/io.l5d.k8s/default/http
          bindingTimeoutMs: 500
          servers: [{{port: {port}}}]
        """))
        t0 = time.monotonic()
        status, hdrs, body = curl(port, "http://hello/")
        elapsed = time.monotonic() - t0
    assert status == 502
    assert body.strip() == (
        "Exceeded 500.milliseconds binding timeout while resolving name: /svc/hello")
    assert "l5d-err" in hdrs
    assert 0.4 < elapsed < 5


def test_a_routing_loop_is_stopped_by_max_call_depth(l5d_process) -> None:
    port, admin = free_port(), free_port()
    l5d_process(textwrap.dedent(f"""
    admin: {{port: {admin}}}
    routers:
    - protocol: http
      dtab: /svc/loop => /$/inet/127.0.0.1/{port}
      servers: [{{port: {port}, maxCallDepth: 3}}]
    """))
    status, hdrs, body = curl(port, "http://loop/")
    assert status == 400, body
    assert "Maximum number of calls (3) has been exceeded. Please check for proxy loops." in body
