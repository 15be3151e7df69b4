"""`make bench`: requests/s and latency of l5d-py against a direct baseline and nginx.

On loopback, in one go, for wrk at 50 connections and at 1 connection:
  direct    wrk -> backend (nginx serving a small fixed response)
  nginx     wrk -> nginx keep-alive reverse proxy -> backend
  l5d-1hop  wrk -> l5d-py router -> backend
  l5d-2hop  wrk -> l5d-py outgoing -> l5d-py incoming -> backend (the mesh path)
  nginx-tls wrk -> nginx proxy -> TLS (keep-alive upstream) -> nginx TLS proxy -> backend
  l5d-tls   wrk -> l5d-py outgoing -> TLS -> l5d-py incoming (TLS server) -> backend
            (the TLS rows need the real `l5d` launcher; certificates are made per run)
  l5d-policy  as l5d-1hop, with retries, a retry budget, failure accrual, a requeue
            budget and a total timeout configured (what the policy costs)
  trace-0.001 as l5d-1hop, with io.l5d.zipkin at Linkerd's default sampleRate 0.001
  trace-1.0   the same tracing every request (spans POSTed as v2 JSON to the backend
            nginx, which answers 200: the whole export path runs)
  nginx-2hop  wrk -> nginx proxy -> nginx proxy -> backend (the chain beside l5d-2hop)
  --workers 1 2: l5d-w2 (one hop, `workers: 2`) beside nginx-w2 (worker_processes 2);
            `workers: 1` is l5d-1hop. CPU and RSS count the supervisor and every worker.
Every nginx runs one worker unless named -wN (l5d-py is one process on one core). Each
process gets its own temp dir, config and free port, and is stopped at the
end. `--runs N` repeats everything and prints medians.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def native_status() -> str:
    """What the routers will run: the compiled hot modules or their sources (router/_native)."""
    out = subprocess.run(
        [PY, "-c", "import importlib, router._native as n; "
         "[importlib.import_module(m) for m in n.COMPILED]; print(n.summary())"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout}s")


def wait_http_ok(port: int, timeout: float = 20.0) -> None:
    """Wait until a request through `port` returns 200 (the router has bound the name)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                            "Host: hello", f"http://127.0.0.1:{port}/"],
                           capture_output=True, text=True)
        last = r.stdout
        if last == "200":
            return
        time.sleep(0.1)
    raise RuntimeError(f"no 200 through port {port} (last status {last!r})")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], log: Path, **kw) -> subprocess.Popen:  # noqa: ANN003
        f = open(log, "wb")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


NGINX_COMMON = """
worker_processes {workers};
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
"""

BACKEND_CONF = NGINX_COMMON + """
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {prefix}/body;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{ default_type text/plain; return 200 "hello world\\n"; }}
  }}
}}
"""

PROXY_CONF = NGINX_COMMON + """
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering on;
    }}
  }}
}}
"""

TLS_PROXY_CONF = NGINX_COMMON + """
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  upstream tlsup {{ server 127.0.0.1:{upstream}; keepalive 128; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass https://tlsup;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering on;
      proxy_ssl_session_reuse on;
      proxy_ssl_server_name on;
      proxy_ssl_name l5d;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate {ca};
    }}
  }}
}}
"""

TLS_TERMINATOR_CONF = NGINX_COMMON + """
http {{
  access_log off;
  keepalive_requests 10000000;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port} ssl backlog=4096;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering on;
    }}
  }}
}}
"""

L5D_TLS_IN_CONF = """admin: {{ip: 127.0.0.1, port: {admin}}}
routers:
- protocol: http
  label: {label}
  dtab: /svc/hello => /$/inet/127.0.0.1/{target};
  servers:
  - ip: 127.0.0.1
    port: {port}
    tls: {{certPath: {cert}, keyPath: {key}}}
"""

L5D_TLS_OUT_CONF = """admin: {{ip: 127.0.0.1, port: {admin}}}
routers:
- protocol: http
  label: {label}
  dtab: /svc/hello => /$/inet/127.0.0.1/{target};
  servers:
  - ip: 127.0.0.1
    port: {port}
  client:
    kind: io.l5d.static
    configs:
    - prefix: /$/inet/127.0.0.1/{target}
      tls: {{commonName: l5d, trustCertsBundle: {ca}}}
"""

L5D_CONF = """admin:
  ip: 127.0.0.1
  port: {admin}
routers:
- protocol: http
  label: {label}
  dtab: |
    /svc/hello => /$/inet/127.0.0.1/{target};
  servers:
  - ip: 127.0.0.1
    port: {port}
{policy}"""

# The `l5d-policy` target: one hop with communications policy configured (a retry budget
# and retryable classifier, failure accrual, a requeue budget, a total timeout), to show
# what the policy costs per request against `l5d-1hop`, which has none.
POLICY_CONF = """  client:
    failureAccrual:
      kind: io.l5d.consecutiveFailures
      failures: 5
      backoff: {kind: jittered, minMs: 5000, maxMs: 300000}
    requeueBudget: {minRetriesPerSec: 10, percentCanRetry: 0.2, ttlSecs: 10}
  service:
    totalTimeoutMs: 10000
    responseClassifier: {kind: io.l5d.http.retryableRead5XX}
    retries:
      budget: {minRetriesPerSec: 10, percentCanRetry: 0.2, ttlSecs: 10}
      backoff: {kind: jittered, minMs: 10, maxMs: 100}
"""


# The `trace-*` targets: io.l5d.zipkin over HTTP to the backend nginx (`return 200` takes
# the POST), so batching, encoding and sending all cost what they cost.
TRACE_CONF = """telemetry:
- kind: io.l5d.zipkin
  transport: http
  host: 127.0.0.1
  port: {collector}
  sampleRate: {rate}
"""


def start_nginx(procs: Procs, tmp: Path, name: str, conf: str, workers: int = 1,  # noqa: ANN003
                **fmt) -> tuple[int, int]:
    """An nginx; with `workers` > 1 a master and its workers (the pid is the master's)."""
    prefix = tmp / name
    prefix.mkdir()
    port = free_port()
    text = conf.format(prefix=prefix, port=port, workers=workers, **fmt)
    if workers > 1:
        text = text.replace("master_process off;", "master_process on;")
    (prefix / "nginx.conf").write_text(text)
    p = procs.start([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e",
                     str(prefix / "error.log")], prefix / "stdout.log")
    wait_port(port, p)
    return port, p.pid


def family(pid: int) -> list[int]:
    """`pid` and its children (an nginx master's workers, an l5d supervisor's)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        kids = []
    return [pid, *kids]


def start_l5d(procs: Procs, tmp: Path, name: str, target: int, launcher: str,
              profile: str | None = None, policy: bool = False,
              workers: int = 1, telemetry: str = "") -> tuple[int, int]:
    d = tmp / name
    d.mkdir()
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if launcher == "l5d":
        cfg = d / "l5d.yaml"
        cfg.write_text(f"workers: {workers}\n" + L5D_CONF.format(
            admin=free_port(), label=name, target=target, port=port,
            policy=(POLICY_CONF if policy else "") + telemetry))
        args = [PY, "-m", "router.cli", "--log-level", "warning", str(cfg)]
    else:
        args = [PY, str(ROOT / "bench" / "launch_static.py"), str(port),
                f"/svc/hello => /$/inet/127.0.0.1/{target}", "--label", name]
        if profile:
            args += ["--profile", str(Path(profile).resolve())]
    p = procs.start(args, d / "l5d.log", env=env, cwd=str(ROOT))
    wait_port(port, p)
    return port, p.pid


def start_l5d_conf(procs: Procs, tmp: Path, name: str, conf: str, **fmt) -> tuple[int, int]:  # noqa: ANN003
    """A real `l5d` process on a config template (the TLS rows)."""
    d = tmp / name
    d.mkdir()
    port = free_port()
    cfg = d / "l5d.yaml"
    cfg.write_text(conf.format(admin=free_port(), label=name, port=port, **fmt))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = procs.start([PY, "-m", "router.cli", "--log-level", "warning", str(cfg)], d / "l5d.log",
                    env=env, cwd=str(ROOT))
    wait_port(port, p)
    return port, p.pid


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    cpu_us: float = 0.0  # CPU time of the proxy process(es) per request, in microseconds
    sys_us: float = 0.0  # the kernel's part of it (system time)
    rest_us: float = 0.0  # CPU per request of the rest of the path: wrk and the backend


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """(user + system, system) CPU time of processes, from /proc (robust to a shared, busy
    machine). The system part is the kernel's: syscalls, loopback TCP, waking the peer."""
    tick = os.sysconf("SC_CLK_TCK")
    total = system = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        system += int(fields[12]) / tick
    return total, system


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        raise ValueError(f"unparsable latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(port: int, conns: int, duration: float, threads: int) -> Result:
    """One wrk run; `rest_us` starts as wrk's own CPU per request (from its rusage)."""
    p = subprocess.Popen(
        ["wrk", "-t", str(min(threads, conns)), "-c", str(conns), "-d",
         f"{max(1, round(duration))}s", "--latency", "-H", "Host: hello", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, p.args, out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    wrk_us = (usage.ru_utime + usage.ru_stime) * 1e6 / max(total, 1)
    return Result(rps, p50, p99, errs, total, rest_us=wrk_us)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    cur = peak = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def pick_launcher(choice: str) -> str:
    if choice != "auto":
        return choice
    r = subprocess.run([PY, "-c", "import router.cli, router.router"], cwd=str(ROOT),
                       capture_output=True)
    return "l5d" if r.returncode == 0 else "static"


def one_run(args: argparse.Namespace, launcher: str) -> tuple[dict, dict]:
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="l5d-bench-"))
    try:
        backend, be_pid = start_nginx(procs, tmp, "backend", BACKEND_CONF)
        proxy, px_pid = start_nginx(procs, tmp, "nginx-proxy", PROXY_CONF, backend=backend)
        one, one_pid = start_l5d(procs, tmp, "l5d-1hop", backend, launcher, args.profile)
        incoming, in_pid = start_l5d(procs, tmp, "incoming", backend, launcher)
        outgoing, out_pid = start_l5d(procs, tmp, "outgoing", incoming, launcher)
        chain_in, chain_in_pid = start_nginx(procs, tmp, "nginx-chain-in", PROXY_CONF,
                                             backend=backend)
        chain, chain_pid = start_nginx(procs, tmp, "nginx-chain-out", PROXY_CONF,
                                       backend=chain_in)
        targets = {"direct": backend, "nginx": proxy, "l5d-1hop": one, "l5d-2hop": outgoing,
                   "nginx-2hop": chain}
        measured = {"direct": [be_pid], "nginx": [px_pid], "l5d-1hop": [one_pid],
                    "l5d-2hop": [out_pid, in_pid], "nginx-2hop": [chain_pid, chain_in_pid]}
        many: dict[str, int] = {}  # l5d-wN -> the supervisor's pid
        for n in (w for w in args.workers if w > 1):
            if launcher != "l5d":
                raise SystemExit("--workers above 1 needs the real l5d launcher")
            ng, ng_pid = start_nginx(procs, tmp, f"nginx-w{n}", PROXY_CONF, workers=n,
                                     backend=backend)
            lw, lw_pid = start_l5d(procs, tmp, f"l5d-w{n}", backend, launcher, workers=n)
            targets[f"nginx-w{n}"], targets[f"l5d-w{n}"] = ng, lw
            measured[f"nginx-w{n}"], measured[f"l5d-w{n}"] = [ng_pid], [lw_pid]
            many[f"l5d-w{n}"] = lw_pid
        if launcher == "l5d" and not args.no_tls:
            from router.tls.demo_certs import make

            certs = tmp / "certs"
            make(certs)
            tls = {"cert": certs / "certificate.pem", "key": certs / "key.pk8",
                   "ca": certs / "cacertificate.pem"}
            term, term_pid = start_nginx(procs, tmp, "nginx-tls-terminator",
                                         TLS_TERMINATOR_CONF, backend=backend, **tls)
            front, front_pid = start_nginx(procs, tmp, "nginx-tls-proxy", TLS_PROXY_CONF,
                                           upstream=term, **tls)
            tin, tin_pid = start_l5d_conf(procs, tmp, "tls-incoming", L5D_TLS_IN_CONF,
                                          target=backend, **tls)
            tout, tout_pid = start_l5d_conf(procs, tmp, "tls-outgoing", L5D_TLS_OUT_CONF,
                                            target=tin, **tls)
            targets.update({"nginx-tls": front, "l5d-tls": tout})
            measured.update({"nginx-tls": [front_pid, term_pid], "l5d-tls": [tout_pid, tin_pid]})
        if launcher == "l5d":
            pol, pol_pid = start_l5d(procs, tmp, "l5d-policy", backend, launcher, policy=True)
            targets["l5d-policy"], measured["l5d-policy"] = pol, [pol_pid]
            for rate in ("0.001", "1.0"):
                name = f"trace-{rate}"
                tr, tr_pid = start_l5d(procs, tmp, name, backend, launcher, telemetry=TRACE_CONF
                                       .format(collector=backend, rate=rate))
                targets[name], measured[name] = tr, [tr_pid]
        for port in targets.values():
            wait_http_ok(port)
        results: dict = {}
        for conns in args.connections:
            for name, port in targets.items():
                wrk(port, conns, min(1.0, args.duration), args.threads)  # warm-up
                pids = [p for pid in measured[name] for p in family(pid)]
                rest = [] if name == "direct" else family(be_pid)
                t0, s0 = cpu_seconds(pids)
                b0 = cpu_seconds(rest)[0]
                r = wrk(port, conns, args.duration, args.threads)
                t1, s1 = cpu_seconds(pids)
                r.cpu_us = (t1 - t0) * 1e6 / max(r.requests, 1)
                r.sys_us = (s1 - s0) * 1e6 / max(r.requests, 1)
                r.rest_us += (cpu_seconds(rest)[0] - b0) * 1e6 / max(r.requests, 1)
                results[(name, conns)] = r
        mem = {"l5d-1hop": rss_mb(one_pid), "l5d-2hop": (
            rss_mb(out_pid)[0] + rss_mb(in_pid)[0], rss_mb(out_pid)[1] + rss_mb(in_pid)[1])}
        for name, sup in many.items():  # the supervisor (with the admin), then each worker
            mem[name] = [rss_mb(p) for p in family(sup)]
        return results, mem
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def scaling_bound(med, name: str, conns: int, workers: int) -> float:  # noqa: ANN001
    """The best wN / w1 the machine allows: with every CPU busy, requests/s is at most CPUs
    over the whole path's CPU per request (the proxy's, wrk's, the backend's) as measured
    with one worker, and no more than N times one worker's."""
    per_request_us = med((name, conns), "cpu_us") + med((name, conns), "rest_us")
    most = cpus() * 1e6 / per_request_us
    return min(most / med((name, conns), "rps"), float(workers))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--runs", type=int, default=1, help="repeat everything, print medians")
    ap.add_argument("--connections", type=int, nargs="+", default=[50, 1])
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--launcher", choices=["auto", "l5d", "static"], default="auto",
                    help="l5d: the real `l5d CONFIG` process; static: bench/launch_static.py")
    ap.add_argument("--no-tls", action="store_true", help="skip the nginx-tls and l5d-tls rows")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], metavar="N",
                    help="also l5d-wN (workers: N) beside nginx-wN for each N above 1")
    ap.add_argument("--profile", metavar="OUT",
                    help="with --launcher static: the l5d-1hop process writes cProfile stats "
                         "to OUT when it stops (a single run's numbers are then skewed)")
    args = ap.parse_args()
    if args.profile and args.launcher != "static":
        ap.error("--profile needs --launcher static")
    for tool in ("wrk", "curl"):
        if not shutil.which(tool):
            print(f"{tool} is not installed (make system-deps)", file=sys.stderr)
            return 2
    launcher = pick_launcher(args.launcher)
    print(f"l5d-py bench: launcher={launcher}, {args.runs} run(s) x {args.duration:g}s per wrk, "
          f"nginx worker_processes 1, wrk threads {args.threads}; {native_status()}", flush=True)
    runs = []
    for i in range(args.runs):
        res, mem = one_run(args, launcher)
        runs.append((res, mem))
        print(f"  run {i + 1}/{args.runs} done", flush=True)

    def med(key, field) -> float:  # noqa: ANN001
        return statistics.median(getattr(r[0][key], field) for r in runs)

    wide = [f"{k}-w{n}" for n in args.workers if n > 1 for k in ("nginx", "l5d")]
    names = [n for n in ("direct", "nginx", "l5d-1hop", "nginx-2hop", "l5d-2hop", "l5d-policy",
                         "trace-0.001", "trace-1.0",
                         "nginx-tls", "l5d-tls", *wide)
             if (n, args.connections[0]) in runs[0][0]]
    hdr = (f"{'target':<11} {'conns':>5} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
           f"{'/direct':>8} {'/nginx':>8} {'cpu us/req':>10} {'sys us':>6} {'errors':>6}")
    print()
    print(hdr)
    print("-" * len(hdr))
    for conns in args.connections:
        d, n = med(("direct", conns), "rps"), med(("nginx", conns), "rps")
        for name in names:
            key = (name, conns)
            rps = med(key, "rps")
            errs = sum(r[0][key].errors for r in runs)
            print(f"{name:<11} {conns:>5} {rps:>10.0f} {med(key, 'p50_ms'):>8.2f} "
                  f"{med(key, 'p99_ms'):>8.2f} {rps / d:>8.2f} {rps / n:>8.2f} "
                  f"{med(key, 'cpu_us'):>10.1f} {med(key, 'sys_us'):>6.1f} {errs:>6}")
        if ("nginx-2hop", conns) in runs[0][0]:
            print(f"{'':<10} {'':>5} l5d-2hop / nginx-2hop: "
                  f"{med(('l5d-2hop', conns), 'rps') / med(('nginx-2hop', conns), 'rps'):.2f}")
        for w in (w for w in args.workers if w > 1):
            one = med(("l5d-1hop", conns), "rps")
            print(f"{'':<10} {'':>5} l5d-w{w} / l5d-1hop: "
                  f"{med((f'l5d-w{w}', conns), 'rps') / one:.2f} "
                  f"(at most {scaling_bound(med, 'l5d-1hop', conns, w):.2f} here), "
                  f"nginx-w{w} / nginx: {med((f'nginx-w{w}', conns), 'rps') / n:.2f} "
                  f"(at most {scaling_bound(med, 'nginx', conns, w):.2f}), l5d-w{w} / nginx-w{w}: "
                  f"{med((f'l5d-w{w}', conns), 'rps') / med((f'nginx-w{w}', conns), 'rps'):.2f}")
        if ("l5d-tls", conns) in runs[0][0]:
            t = med(("l5d-tls", conns), "rps")
            nt = med(("nginx-tls", conns), "rps")
            print(f"{'':<10} {'':>5} l5d-tls / nginx-tls: {t / nt:.2f} (req/s), "
                  f"l5d-tls / l5d-2hop: {t / med(('l5d-2hop', conns), 'rps'):.2f}")
    print()
    for name in ("l5d-1hop", "l5d-2hop"):
        cur = statistics.median(r[1][name][0] for r in runs)
        peak = statistics.median(r[1][name][1] for r in runs)
        procs = "1 process" if name == "l5d-1hop" else "2 processes, summed"
        print(f"{name} RSS after load: {cur:.1f} MB (peak {peak:.1f} MB; {procs})")
    for name in (f"l5d-w{w}" for w in args.workers if w > 1):
        per = [statistics.median(r[1][name][i][0] for r in runs)
               for i in range(min(len(r[1][name]) for r in runs))]
        print(f"{name} RSS after load: supervisor+admin {per[0]:.1f} MB, workers "
              + ", ".join(f"{x:.1f}" for x in per[1:]) + " MB")
    print("cpu us/req: CPU time the measured process(es) spent per request (direct: the "
          "backend; nginx: the proxy; l5d-2hop, l5d-tls: both routers; nginx-tls: both "
          "nginx). It does not depend on what else the machine is running, unlike req/s; sys us "
          "is its kernel part.")
    if any(w > 1 for w in args.workers):
        print(f"at most: the wN / 1-worker ratio if N workers scaled perfectly on this machine's "
              f"{cpus()} CPUs, which wrk and the backend share: CPUs / (the proxy's CPU + wrk's "
              f"and the backend's CPU, per request in the 1-worker run), over the 1-worker "
              f"req/s. Past it the machine, not the proxy, is the limit.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
