"""RSS of a real l5d router process under the floods of issue 8, and the bound it holds.

  dtab flood  distinct 40 KB `l5d-dtab` headers, one per request (the router is
              configured with maxDtabHeaderKB: 64 so they are accepted; the default
              8 KB refuses them with 400 — also shown)
  host flood  tens of thousands of distinct Host values, each an unknown name

The router uses an io.l5d.fs namer and the header.token identifier (the default),
as `make run` does. `hello` points at a closed port: routing, binding and the
caches do their full work; the 502s are not what is measured. RSS is VmRSS from
/proc after each step. Run it under the bench lock:

    flock /tmp/l5d-bench.lock .venv/bin/python bench/floods.py [--dtabs N,N] [--hosts N,N]
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import free_port, wait_port  # noqa: E402

# The byte budgets of the caches a flood fills (see README "Limits and timeouts").
from dtab.parser import PARSED_CACHE_BYTES  # noqa: E402
from router.binding import DEFAULT_MAX_BYTES as BINDING_BYTES  # noqa: E402
from router.http.dtab_headers import CACHE_BYTES as HEADER_DTAB_BYTES  # noqa: E402
from router.http.proxy import ROUTE_CACHE_BYTES  # noqa: E402
from router.http.server import NAME_CACHE_BYTES  # noqa: E402
from router.stats import SERVICE_STATS_BYTES  # noqa: E402

MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def dtab_of(size: int, tag: int) -> str:
    parts: list[str] = []
    n = 0
    while n < size:
        s = f"/svc/t{tag}x{len(parts)}=>/#/io.l5d.fs/b{len(parts)} | /$/inet/127.0.0.1/80"
        parts.append(s)
        n += len(s) + 1
    return ";".join(parts)


class Router:
    def __init__(self, tmp: Path, max_dtab_kb: int | None) -> None:
        disco = tmp / "disco"
        disco.mkdir()
        (disco / "hello").write_text(f"127.0.0.1 {free_port()}\n")  # closed port
        self.port, admin = free_port(), free_port()
        extra = f"maxDtabHeaderKB: {max_dtab_kb}" if max_dtab_kb else ""
        cfg = tmp / "floods.yaml"
        cfg.write_text(textwrap.dedent(f"""\
            admin: {{port: {admin}}}
            namers:
            - kind: io.l5d.fs
              rootDir: {disco}
            routers:
            - protocol: http
              dtab: /svc => /#/io.l5d.fs
              {extra}
              servers:
              - port: {self.port}
            """))
        self.log = open(tmp / "l5d.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router.cli", "--log-level", "warning", str(cfg)],
            cwd=str(ROOT), stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, self.proc)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def get(self, host: str, headers: dict[str, str] | None = None) -> int:
        for attempt in range(2):
            try:
                self.conn.request("GET", "/", headers={"Host": host, **(headers or {})})
                r = self.conn.getresponse()
                r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                return r.status
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    @property
    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def close(self) -> None:
        self.conn.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def warm(r: Router) -> float:
    for _ in range(50):
        r.get("hello")
    time.sleep(0.5)
    return r.rss


def dtab_flood(steps: list[int], size: int) -> list[str]:
    out = []
    with tempfile.TemporaryDirectory() as d:
        r = Router(Path(d), max_dtab_kb=max(64, size // 1024 + 1))
        try:
            base = warm(r)
            out.append(f"dtab flood ({size // 1000} KB dtabs, maxDtabHeaderKB raised): "
                       f"RSS {base:.0f} MB after warm-up")
            sent, t0 = 0, time.monotonic()
            statuses: dict[int, int] = {}
            for target in steps:
                while sent < target:
                    s = r.get("hello", {"l5d-dtab": dtab_of(size, sent)})
                    statuses[s] = statuses.get(s, 0) + 1
                    sent += 1
                out.append(f"  {sent:>6} distinct dtabs: RSS {r.rss:.0f} MB "
                           f"(+{r.rss - base:.0f}), {time.monotonic() - t0:.0f}s, "
                           f"statuses {statuses}")
        finally:
            r.close()
    with tempfile.TemporaryDirectory() as d:
        r = Router(Path(d), max_dtab_kb=None)
        try:
            s = r.get("hello", {"l5d-dtab": dtab_of(size, 0)})
            out.append(f"  with the default maxDtabHeaderKB (8): a {size // 1000} KB "
                       f"l5d-dtab gets {s}")
        finally:
            r.close()
    return out


def host_flood(steps: list[int]) -> list[str]:
    out = []
    with tempfile.TemporaryDirectory() as d:
        r = Router(Path(d), max_dtab_kb=None)
        try:
            base = warm(r)
            out.append(f"host flood (distinct unknown Host values): RSS {base:.0f} MB "
                       "after warm-up")
            sent, t0 = 0, time.monotonic()
            for target in steps:
                while sent < target:
                    r.get(f"unknown-{sent}.example.com")
                    sent += 1
                out.append(f"  {sent:>6} distinct hosts: RSS {r.rss:.0f} MB "
                           f"(+{r.rss - base:.0f}), {time.monotonic() - t0:.0f}s")
            s = r.get("h" * 60_000)
            out.append(f"  a 60,000-character Host: {s}; log {Path(d, 'l5d.log').stat().st_size}"
                       " bytes in total")
        finally:
            r.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtabs", default="100,300,600", help="cumulative dtab counts to report at")
    ap.add_argument("--dtab-size", type=int, default=40_000)
    ap.add_argument("--hosts", default="10000,30000,60000",
                    help="cumulative host counts to report at")
    args = ap.parse_args()
    budget = (PARSED_CACHE_BYTES + HEADER_DTAB_BYTES + BINDING_BYTES + ROUTE_CACHE_BYTES
              + NAME_CACHE_BYTES + SERVICE_STATS_BYTES)
    print(f"cache budgets these floods fill: {budget / MB:.0f} MB of estimated bytes "
          f"(parsed dtabs {PARSED_CACHE_BYTES // MB} + l5d-dtab {HEADER_DTAB_BYTES // MB} + "
          f"bindings {BINDING_BYTES // MB} + routes {ROUTE_CACHE_BYTES // MB} + names "
          f"{NAME_CACHE_BYTES // MB} + service stats {SERVICE_STATS_BYTES // MB})")
    for line in dtab_flood([int(x) for x in args.dtabs.split(",")], args.dtab_size):
        print(line, flush=True)
    for line in host_flood([int(x) for x in args.hosts.split(",")]):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
