"""Python cost per proxied request, without sockets: the data path's callbacks driven directly.

A request is fed to a server connection and a canned nginx-like response to the
pooled upstream connection, N times, with fake transports, so the number is the
interpreter's share alone (syscalls and the kernel excluded). Use it to check an
optimisation before the real benchmark: `python bench/dataplane_micro.py [N] [--profile]`.

`--instructions` runs it twice under `valgrind --tool=callgrind` (N and 3N requests)
and prints the difference in instructions per request: a count that does not move
with the machine's load (the wall/CPU numbers do, on a shared machine).

`--router l5d` routes with the real `Router` built from `make bench`'s l5d config
(io.l5d.header.token identifier, binding cache, interpreter) instead of the static
test double, so the number is what the `l5d-1hop` process pays in Python.

`--mesh` sends what a router in the two-router chain sees instead: a request carrying
the headers an outgoing l5d adds and a response carrying what an l5d answers with.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dtab.path import Path as NPath  # noqa: E402
from router.client.pool import UpstreamConnection  # noqa: E402
from router.http.server import HttpServer, RouterRuntime, ServerConnection  # noqa: E402
from router.http.testing import StaticRouter, StaticServerConfig  # noqa: E402
from router.stats import ServerStats  # noqa: E402

REQUEST = (b"GET /index.html HTTP/1.1\r\nHost: hello\r\nUser-Agent: curl/8.0\r\n"
           b"Accept: */*\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 18:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
            b"hello world\n")
# --mesh: what a router in the two-router chain sees. The request carries what an outgoing
# l5d adds (Via, l5d-dst-*, l5d-reqid) and the response what an l5d answers with
# (l5d-success-class, Via): the outgoing router sees the latter, the incoming the former.
MESH_REQUEST = (b"GET /index.html HTTP/1.1\r\nHost: hello\r\nUser-Agent: curl/8.0\r\n"
                b"Accept: */*\r\nVia: 1.1 linkerd\r\nl5d-dst-service: /svc/hello\r\n"
                b"l5d-dst-client: /$/inet/127.0.0.1/4141\r\nl5d-reqid: 5a3f9c0e00000001\r\n\r\n")
MESH_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 24 Nov 2026 18:00:00 GMT\r\n"
                 b"Content-Type: text/plain\r\nl5d-success-class: 1.0\r\nVia: 1.1 linkerd\r\n"
                 b"Content-Length: 12\r\n\r\nhello world\n")


class FakeTransport:
    def __init__(self) -> None:
        self.out = 0

    def write(self, data: bytes) -> None:
        self.out += len(data)

    def writelines(self, parts) -> None:  # noqa: ANN001
        for p in parts:
            self.out += len(p)

    def get_extra_info(self, name: str, default=None):  # noqa: ANN001, ANN201
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


L5D_CONF = """routers:
- protocol: http
  label: micro
  dtab: |
    /svc/hello => /$/inet/127.0.0.1/8080;
  servers:
  - ip: 127.0.0.1
    port: 4140
{policy}"""


def make_router(kind: str):  # noqa: ANN201
    if kind == "static":
        return StaticRouter([StaticServerConfig(4140)], "/svc/hello => /$/inet/127.0.0.1/8080")
    from bench.run import POLICY_CONF, TRACE_CONF
    from router.config import parse
    from router.router import Linker

    policy = POLICY_CONF if kind == "l5d-policy" else ""
    if kind.startswith("trace-"):  # spans are built and buffered; no flush task runs here
        policy = TRACE_CONF.format(collector=1, rate=kind[len("trace-"):])
    return Linker(parse(L5D_CONF.format(policy=policy))).routers[0]


async def main(n: int, profile: bool, kind: str, mesh: bool = False) -> None:
    request, response = (MESH_REQUEST, MESH_RESPONSE) if mesh else (REQUEST, RESPONSE)
    router = make_router(kind)
    rt = RouterRuntime(router)
    server = HttpServer(rt, router.config.servers[0])
    server.stats = ServerStats(router.metrics, server.ip, server.port)
    tree = await router.bind(router.base_dtab, NPath.read("/svc/hello"))
    client = rt.clients.get(tree.value)
    ep = client.balancer.endpoints[0]
    up = UpstreamConnection(ep)
    up_t = FakeTransport()
    up.connection_made(up_t)
    ep.idle.append(up)
    sc = ServerConnection(server)
    down_t = FakeTransport()
    sc.connection_made(down_t)
    for _ in range(1000):  # warm up
        sc.data_received(request)
        up.data_received(response)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    t0 = time.process_time()
    for _ in range(n):
        sc.data_received(request)
        up.data_received(response)
    dt = time.process_time() - t0
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(80)
    assert server.stats.requests.value == n + 1000, server.stats.requests.value
    assert ep.idle == [up]
    print(f"{dt / n * 1e6:.2f} us of Python per proxied request ({n} requests)")


def instructions(n: int, kind: str, mesh: bool = False) -> float:
    """Instructions per request under callgrind: (Ir(3n) - Ir(n)) / 2n, so start-up,
    imports and warm-up cancel out. PYTHONHASHSEED is fixed so both runs hash alike."""
    counts = []
    for k in (n, 3 * n):
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, __file__, str(k), "--router", kind, *(["--mesh"] if mesh else [])],
            env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True,
            check=True)
        m = re.search(r"Collected : (\d+)", out.stderr)
        if m is None:
            raise SystemExit(f"no callgrind total in: {out.stderr[-2000:]}")
        counts.append(int(m.group(1)))
    return (counts[1] - counts[0]) / (2 * n)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=50_000, help="requests (default 50000)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile table")
    ap.add_argument("--router", choices=["static", "l5d", "l5d-policy", "trace-0.001",
                                                   "trace-1.0"], default="static")
    ap.add_argument("--mesh", action="store_true",
                    help="l5d-dst-*/l5d-reqid/Via on the request, l5d-success-class/Via on the "
                         "response: a router in the two-router chain")
    ap.add_argument("--instructions", action="store_true",
                    help="instructions per request under callgrind (N defaults to 2000 here)")
    a = ap.parse_args()
    if a.instructions:
        n = a.n if a.n != 50_000 else 2000
        print(f"{instructions(n, a.router, a.mesh):,.0f} instructions per proxied request "
              f"(callgrind, {n} and {3 * n} requests, --router {a.router}"
              f"{' --mesh' if a.mesh else ''})")
    else:
        asyncio.run(main(a.n, a.profile, a.router, a.mesh))
