"""`make bench`, the h2 rows: gRPC unary load with h2load against a direct baseline and nginx.

On loopback, in one go, h2load (nghttp2-client) sending gRPC unary calls
(POST /helloworld.Greeter/SayHello, content-type application/grpc, a 12-byte
length-prefixed HelloRequest; -c connections x -m streams each):
  direct        h2load -> backend (nginx, HTTP/2 prior knowledge, a fixed reply
                with `grpc-status: 0` trailers)
  nginx-grpc    h2load -> nginx grpc_pass (one worker, keep-alive) -> backend
  l5d-h2-1hop   h2load -> l5d-py h2 router (io.l5d.header.path segments 1) -> backend
  l5d-h2-2hop   h2load -> l5d-py outgoing -> l5d-py incoming -> backend
The backend's reply is not a real protobuf message: routers never parse messages, so
the load on them is a unary call's (HEADERS, DATA, trailers each way). CPU us/req is
the proxy processes' user+system time per completed request (stable on a busy machine,
unlike req/s). Run under `flock /tmp/l5d-bench.lock` (make bench does).
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402  (bench/run.py: the HTTP/1 rows' helpers)
    NGINX_COMMON,
    Procs,
    cpu_seconds,
    rss_mb,
    start_l5d_conf,
    start_nginx,
)

GRPC_PATH = "/helloworld.Greeter/SayHello"
# gRPC framing: not compressed, 7-byte message: HelloRequest{name: "world"}
REQUEST = b"\x00\x00\x00\x00\x07\x0a\x05world"

BACKEND_CONF = NGINX_COMMON + """
http {{
  access_log off;
  keepalive_requests 10000000;
  http2_max_concurrent_streams 1000;
  client_body_temp_path {prefix}/body;
  server {{
    listen 127.0.0.1:{port} http2 reuseport backlog=4096;
    location / {{
      default_type application/grpc;
      add_trailer grpc-status 0;
      return 200 "hello world";
    }}
  }}
}}
"""

GRPC_PROXY_CONF = NGINX_COMMON + """
http {{
  access_log off;
  keepalive_requests 10000000;
  http2_max_concurrent_streams 1000;
  client_body_temp_path {prefix}/body;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} http2 backlog=4096;
    location / {{ grpc_pass grpc://backend; }}
  }}
}}
"""

L5D_H2_CONF = """admin: {{ip: 127.0.0.1, port: {admin}}}
routers:
- protocol: h2
  label: {label}
  identifier: {{kind: io.l5d.header.path, segments: 1}}
  dtab: /svc => /$/inet/127.0.0.1/{target};
  servers:
  - port: {port}
"""


def h2load(port: int, conns: int, streams: int, duration: int, body: Path) -> dict[str, float]:
    out = subprocess.run(
        ["h2load", "-c", str(conns), "-m", str(streams), "-D", str(duration),
         "--warm-up-time", "1", "-d", str(body), "-H", "content-type: application/grpc",
         "-H", "te: trailers", f"http://127.0.0.1:{port}{GRPC_PATH}"],
        capture_output=True, text=True, timeout=duration + 60).stdout
    rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    if rps is None or done is None:
        raise RuntimeError(f"h2load output not understood:\n{out}")
    lat = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", out)
    return {"rps": float(rps.group(1)), "done": int(done.group(1)),
            "ok": int(done.group(2)), "failed": int(done.group(3)) + int(done.group(4)),
            "mean": lat.group(3) if lat else "?"}


def one_run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="l5d-h2-bench-"))
    body = tmp / "request.bin"
    body.write_bytes(REQUEST)
    try:
        backend, be_pid = start_nginx(procs, tmp, "backend", BACKEND_CONF)
        proxy, px_pid = start_nginx(procs, tmp, "nginx-grpc", GRPC_PROXY_CONF, backend=backend)
        one, one_pid = start_l5d_conf(procs, tmp, "l5d-h2-1hop", L5D_H2_CONF, target=backend)
        inc, in_pid = start_l5d_conf(procs, tmp, "incoming", L5D_H2_CONF, target=backend)
        out, out_pid = start_l5d_conf(procs, tmp, "outgoing", L5D_H2_CONF, target=inc)
        targets = {"direct": (backend, [be_pid]), "nginx-grpc": (proxy, [px_pid]),
                   "l5d-h2-1hop": (one, [one_pid]), "l5d-h2-2hop": (out, [out_pid, in_pid])}
        results: dict[str, dict[str, float]] = {}
        for name, (port, pids) in targets.items():
            h2load(port, args.connections, args.streams, 1, body)  # connect, warm caches
            t0 = cpu_seconds(pids)[0]
            r = h2load(port, args.connections, args.streams, args.duration, body)
            r["cpu_us"] = (cpu_seconds(pids)[0] - t0) * 1e6 / max(r["done"], 1)
            if name.startswith("l5d"):
                r["rss"] = sum(rss_mb(p)[0] for p in pids)
            results[name] = r
        return results
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per h2load run")
    ap.add_argument("--runs", type=int, default=1, help="repeat everything, print medians")
    ap.add_argument("--connections", type=int, default=10)
    ap.add_argument("--streams", type=int, default=10, help="concurrent streams a connection")
    args = ap.parse_args()
    if not shutil.which("h2load"):
        print("h2load is not installed (make system-deps: nghttp2-client)", file=sys.stderr)
        return 2
    print(f"l5d-py h2 bench: gRPC unary, h2load -c {args.connections} -m {args.streams}, "
          f"{args.runs} run(s) x {args.duration}s, nginx worker_processes 1", flush=True)
    runs = [one_run(args) for _ in range(args.runs)]

    def med(name: str, key: str) -> float:
        return statistics.median(float(r[name][key]) for r in runs)

    hdr = (f"{'target':<12} {'req/s':>9} {'/direct':>8} {'/nginx':>8} {'cpu us/req':>10} "
           f"{'failed':>7} {'RSS MB':>7}")
    print()
    print(hdr)
    print("-" * len(hdr))
    d, n = med("direct", "rps"), med("nginx-grpc", "rps")
    for name in runs[0]:
        rps = med(name, "rps")
        failed = sum(int(r[name]["failed"]) for r in runs)
        rss = f"{med(name, 'rss'):>7.1f}" if "rss" in runs[0][name] else f"{'':>7}"
        print(f"{name:<12} {rps:>9.0f} {rps / d:>8.2f} {rps / n:>8.2f} "
              f"{med(name, 'cpu_us'):>10.1f} {failed:>7} {rss}")
    print("cpu us/req: the measured process(es)' CPU per request (direct: the backend; "
          "nginx-grpc: the proxy; l5d-h2-2hop: both routers).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
