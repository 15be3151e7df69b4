"""io.l5d.k8s at cluster scale (issue 15): a real l5d router process against the fake API server.

Prints, against the issue's targets:
  sizes     RSS and first-request latency for one service of 1 / 1,000 / 10,000
            addresses (EndpointSlices of 100) and for 1,000 services x 10 addresses,
            with the watch connections the API server saw
  churn     20 updates/s of a 10,000-address service (each replaces one slice of 100:
            a 1% change) for --churn-secs: router CPU per update (its CPU during
            churn minus its CPU idle, over the updates), admin /admin/metrics.json
            p50/p99 and the requests routed meanwhile
  state     bytes per watched address in the namer's state (tracemalloc, in process)
            and what loading kubernetes_asyncio costs: all of it vs what l5d-py loads

Every address is 127.x.y.z:P, and one backend listens on 0.0.0.0:P, so each routed
request reaches it whichever endpoint the balancer picks. Run under the bench lock:

    flock /tmp/l5d-bench.lock .venv/bin/python bench/k8s_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from tests.fake_apiserver import FakeApiServer, endpoint_slice, endpoints  # noqa: E402
from tests.util import stop_process  # noqa: E402

SLICE = 100  # endpoints per slice: the EndpointSlice controller's default


def addr_of(i: int, base: int = 10) -> str:
    return f"127.{base + i // 65536}.{(i // 256) % 256}.{i % 256}"


def slices_for(service: str, n: int, port: int, *, base: int = 10, gen: int = 0,
               namespace: str = "default") -> list[dict[str, Any]]:
    """`n` addresses of `service` in slices of SLICE; `gen` shifts the IPs (an update)."""
    out = []
    for s in range(0, n, SLICE):
        eps = [(addr_of(i, base + gen), f"node-{i % 50}") for i in range(s, min(n, s + SLICE))]
        out.append(endpoint_slice(f"{service}-{s // SLICE}", service, eps, {"http": port},
                                  namespace=namespace))
    return out


class Backend:
    """A minimal keep-alive HTTP/1.1 server on 0.0.0.0: 200 `ok` to everything."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests = 0

    async def start(self) -> None:
        backend = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.t = transport
                self.buf = b""

            def data_received(self, data: bytes) -> None:
                self.buf += data
                while b"\r\n\r\n" in self.buf:
                    _, self.buf = self.buf.split(b"\r\n\r\n", 1)
                    backend.requests += 1
                    self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")  # type: ignore[attr-defined]

        self.server = await asyncio.get_running_loop().create_server(Proto, "0.0.0.0", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports free now (held open together so the OS cannot repeat one)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RouterProc:
    """`l5d` with one outgoing router: /svc => /#/io.l5d.k8s/default/http."""

    def __init__(self, tmp: Path, api: FakeApiServer, extra_namer: str = "") -> None:
        self.port, self.admin = _free_ports(2)
        cfg = tmp / f"k8s-scale-{self.port}.yaml"
        cfg.write_text(textwrap.dedent(f"""\
            admin: {{ip: 127.0.0.1, port: {self.admin}}}
            namers:
            - kind: io.l5d.k8s
              host: 127.0.0.1
              port: {api.port}
            {extra_namer}
            routers:
            - protocol: http
              label: outgoing
              dtab: /svc => /#/io.l5d.k8s/default/http
              servers: [{{ip: 127.0.0.1, port: {self.port}}}]
            """))
        self.log_path = tmp / f"l5d-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy")}
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router.cli", "--log-level", "warning", str(cfg)],
            cwd=str(ROOT), stdout=self.log, stderr=subprocess.STDOUT, env=env)

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"l5d exited {self.proc.returncode}: {self.tail()}")
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                _, w = await asyncio.open_connection("127.0.0.1", self.admin)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"l5d did not listen: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""

    @property
    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    @property
    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        stop_process(self.proc, 15)
        self.log.close()


async def get(session: aiohttp.ClientSession, r: RouterProc, host: str,
              path: str = "/") -> tuple[int, float, str]:
    t0 = time.perf_counter()
    async with session.get(f"http://127.0.0.1:{r.port}{path}", headers={"Host": host}) as resp:
        body = await resp.text()
        return resp.status, time.perf_counter() - t0, body


async def admin_get(session: aiohttp.ClientSession, r: RouterProc) -> float:
    t0 = time.perf_counter()
    async with session.get(f"http://127.0.0.1:{r.admin}/admin/metrics.json") as resp:
        await resp.read()
        assert resp.status == 200
    return time.perf_counter() - t0


POLLER = textwrap.dedent("""\
    import http.client, json, sys, time
    port, secs, gap = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out, end = [], time.monotonic() + secs
    while time.monotonic() < end:
        t0 = time.perf_counter()
        c.request("GET", "/admin/metrics.json")
        r = c.getresponse()
        r.read()
        assert r.status == 200, r.status
        out.append(time.perf_counter() - t0)
        time.sleep(gap)
    print(json.dumps(out))
    """)


async def poll_admin(r: RouterProc, secs: float, gap: float) -> list[float]:
    """/admin/metrics.json latencies measured by a separate process, for `secs`."""
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-c", POLLER, str(r.admin), str(secs), str(gap),
        stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    return json.loads(out) if p.returncode == 0 else []


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


# ---- the runs ---------------------------------------------------------------------------


async def run_sizes(tmp: Path, backend: Backend, sizes: list[int], services: int,
                    per_service: int) -> list[str]:
    out = []
    for n in sizes:
        api = FakeApiServer()
        await api.start()
        r = RouterProc(tmp, api)
        try:
            await r.ready()
            idle = r.rss_mb
            for sl in slices_for("big", n, backend.port):
                api.upsert("endpointslices", sl)
            async with aiohttp.ClientSession() as s:
                status, first, body = await get(s, r, "big")
                assert status == 200, (status, body, r.tail())
                await asyncio.sleep(1.0)
                rss = r.rss_mb
            out.append(f"  1 service x {n:>6} addresses: first request {first * 1000:7.1f} ms, "
                       f"RSS {rss:6.1f} MB (idle router {idle:.1f} MB, +{rss - idle:.1f}), "
                       f"watches {api.peak_watches}, peak API connections "
                       f"{api.peak_connections}")
        finally:
            r.close()
            await api.close()
    if services:
        api = FakeApiServer()
        await api.start()
        r = RouterProc(tmp, api)
        try:
            await r.ready()
            idle = r.rss_mb
            for i in range(services):
                for sl in slices_for(f"svc-{i}", per_service, backend.port, base=20 + i % 8):
                    api.upsert("endpointslices", sl)
            lat: list[float] = []
            bad = 0
            t0 = time.monotonic()
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=32)) as s:
                sem = asyncio.Semaphore(16)

                async def one(i: int) -> None:
                    nonlocal bad
                    async with sem:
                        status, took, _ = await get(s, r, f"svc-{i}")
                        lat.append(took)
                        bad += status != 200

                await asyncio.gather(*(one(i) for i in range(services)))
                took_all = time.monotonic() - t0
                await asyncio.sleep(1.0)
                again = [await get(s, r, f"svc-{i}") for i in range(0, services, 50)]
            rss = r.rss_mb
            out.append(
                f"  {services} services x {per_service} addresses: {services - bad}/{services} "
                f"routed in {took_all:.1f}s (16 at a time), first request p50 "
                f"{pct(lat, 50) * 1000:.0f} ms p99 {pct(lat, 99) * 1000:.0f} ms, RSS {rss:.1f} MB "
                f"(+{rss - idle:.1f}); API server: peak {api.peak_watches} watches, peak "
                f"{api.peak_connections} connections, {api.open_connections()} open now "
                f"(target <= 10); warm again: {sum(st == 200 for st, _, _ in again)}/"
                f"{len(again)}")
        finally:
            r.close()
            await api.close()
    return out


_BASE_ENDPOINTS: dict[tuple[str, int, int], dict[str, Any]] = {}


def endpoints_for(service: str, n: int, port: int, *, moved: int | None = None,
                  gen: int = 0) -> dict[str, Any]:
    """One Endpoints object of `n` addresses; the SLICE addresses of block `moved` are
    shifted by `gen` (what an update of 1% of a big Endpoints object looks like). Built
    from one cached base object (its address dicts shared, never mutated), so this
    process can write 20 of them a second."""
    key = (service, n, port)
    base = _BASE_ENDPOINTS.get(key)
    if base is None:
        base = _BASE_ENDPOINTS[key] = endpoints(
            service, [(addr_of(i), f"node-{i % 50}") for i in range(n)], {"http": port})
    subset = base["subsets"][0]
    addresses = list(subset["addresses"])
    if moved is not None:
        for i in range(moved * SLICE, min(n, (moved + 1) * SLICE)):
            addresses[i] = dict(addresses[i], ip=addr_of(i, 40 + gen % 2))
    return {"metadata": dict(base["metadata"]),
            "subsets": [{"ports": subset["ports"], "addresses": addresses}]}


async def run_churn(tmp: Path, backend: Backend, n: int, secs: float, rate: float,
                    source: str = "endpointslices") -> list[str]:
    """Churn of one n-address service: its EndpointSlices (one slice of 100 replaced per
    update) or, `source="endpoints"`, its one Endpoints object (the old-cluster fallback:
    the whole object again, 100 addresses of it moved)."""
    api = FakeApiServer()
    await api.start()
    extra = "  endpointSource: endpoints" if source == "endpoints" else ""
    r = RouterProc(tmp, api, extra_namer=extra)
    try:
        await r.ready()
        if source == "endpoints":
            api.upsert("endpoints", endpoints_for("big", n, backend.port))
        else:
            for sl in slices_for("big", n, backend.port):
                api.upsert("endpointslices", sl)
        async with aiohttp.ClientSession() as s:
            status, _, body = await get(s, r, "big")
            assert status == 200, (body, r.tail())
            await asyncio.sleep(1.0)
            adm: list[float] = []
            statuses: list[int] = []
            stop = asyncio.Event()

            async def admin_loop() -> None:
                # In its own process: this process's loop (the fake API server, the
                # backend) must not add its own delays to what the router's admin takes.
                while not stop.is_set():
                    adm.extend(await poll_admin(r, 2.0, 0.05))

            async def traffic() -> None:
                while not stop.is_set():
                    st, _, _ = await get(s, r, "big")
                    statuses.append(st)
                    await asyncio.sleep(0.01)

            # The same admin polling and traffic with no updates first: the baseline.
            tasks = [asyncio.create_task(admin_loop()), asyncio.create_task(traffic())]
            c0, t0 = r.cpu_s, time.monotonic()
            await asyncio.sleep(secs)
            base_cpu_per_s = (r.cpu_s - c0) / (time.monotonic() - t0)
            base_adm = list(adm)
            adm.clear()
            c1 = r.cpu_s
            t1 = time.monotonic()
            updates = 0
            gen = 0
            nslices = (n + SLICE - 1) // SLICE
            while time.monotonic() - t1 < secs:
                gen += 1
                k = gen % nslices
                if source == "endpoints":
                    api.upsert("endpoints", endpoints_for("big", n, backend.port, moved=k,
                                                          gen=gen))
                else:
                    eps = [(addr_of(i, 40 + gen % 2), f"node-{i % 50}")
                           for i in range(k * SLICE, (k + 1) * SLICE)]
                    api.upsert("endpointslices", endpoint_slice(f"big-{k}", "big", eps,
                                                                {"http": backend.port}))
                updates += 1
                await asyncio.sleep(max(0.0, t1 + updates / rate - time.monotonic()))
            await asyncio.sleep(0.5)  # let the last updates apply
            elapsed = time.monotonic() - t1
            churn_cpu = r.cpu_s - c1 - base_cpu_per_s * elapsed
            stop.set()
            await asyncio.gather(*tasks)
        per_update_ms = churn_cpu / updates * 1000
        ok = sum(1 for st in statuses if st == 200)
        what = "one Endpoints object" if source == "endpoints" else "EndpointSlices"
        return [
            f"  {n} addresses ({what}), {updates} updates in {secs:.1f}s "
            f"({updates / secs:.1f}/s, 1% each): router CPU per update {per_update_ms:.2f} ms "
            "(target <= 10 ms)",
            f"  admin /admin/metrics.json during churn: p50 {pct(adm, 50) * 1000:.1f} ms, "
            f"p99 {pct(adm, 99) * 1000:.1f} ms, max {max(adm) * 1000:.1f} ms over {len(adm)} "
            f"(target p99 < 100 ms); before the churn (same traffic): p50 "
            f"{pct(base_adm, 50) * 1000:.1f} ms, p99 {pct(base_adm, 99) * 1000:.1f} ms",
            f"  requests through the router meanwhile: {ok}/{len(statuses)} 200; baseline "
            f"(same traffic and admin polling, no updates): {base_cpu_per_s * 1000:.0f} ms CPU/s",
        ]
    finally:
        r.close()
        await api.close()


def run_state(n: int) -> list[str]:
    """Bytes per address the namer keeps: decoded slices, the Addresses, the Addr set."""
    from dtab.addr import AddrBound
    from namers.k8s.endpoints import EndpointSet
    from namers.k8s.watch import decode_object

    raw = slices_for("big", n, 8080)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    groups: dict[str, Any] = {}
    for sl in raw:
        groups.update(decode_object("endpointslices", sl))
    eps = EndpointSet(groups, "endpointslices")
    from namers.k8s.endpoints import resolve_port

    addr = AddrBound(resolve_port(eps, "http").addresses)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(addr.addresses) == n
    del raw
    code = textwrap.dedent("""\
        import sys
        def rss():
            for l in open('/proc/self/status'):
                if l.startswith('VmRSS'):
                    return int(l.split()[1]) / 1024
        import aiohttp, yaml, json, ssl, asyncio
        base = rss()
        if sys.argv[1] == 'full':
            import kubernetes_asyncio.client, kubernetes_asyncio.config
        else:
            from namers.k8s.api import _light_client
            _light_client()
        print(rss() - base, len([m for m in sys.modules if m.startswith('kubernetes_asyncio')]))
        """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = {}
    for how in ("full", "light"):
        p = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                           env=env, cwd=str(ROOT), check=True)
        mb, mods = p.stdout.split()
        res[how] = (float(mb), int(mods))
    return [
        f"  namer state for {n} addresses: {used / n:.0f} bytes/address (decoded slices, "
        "Address objects, the Addr set; target <= 500)",
        f"  loading kubernetes_asyncio: all of it +{res['full'][0]:.1f} MB "
        f"({res['full'][1]} modules); what l5d-py loads +{res['light'][0]:.1f} MB "
        f"({res['light'][1]} modules: configuration, api_client, rest, config)",
    ]


async def main_async(args: argparse.Namespace) -> int:
    backend = Backend()
    await backend.start()
    lines: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            sizes = [1, 1000] if args.quick else [1, 1000, 10000]
            services = 200 if args.quick else 1000
            print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
            if "sizes" in args.only:
                print("sizes", flush=True)
                for line in await run_sizes(tmp, backend, sizes, services, 10):
                    print(line, flush=True)
                    lines.append(line)
            for source in ("endpointslices", "endpoints"):
                if ("churn" if source == "endpointslices" else "endpoints") in args.only:
                    print(f"churn ({source})", flush=True)
                    for line in await run_churn(tmp, backend, 10000, args.churn_secs, 20.0,
                                                source):
                        print(line, flush=True)
                        lines.append(line)
    finally:
        await backend.close()
    if "state" in args.only:
        print("state", flush=True)
        for line in run_state(10000):
            print(line, flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}", flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, shorter churn")
    p.add_argument("--churn-secs", type=float, default=10.0)
    p.add_argument("--only", default="sizes,churn,endpoints,state",
                   help="comma-separated sections: sizes, churn (EndpointSlices), "
                        "endpoints (the Endpoints fallback's churn), state")
    args = p.parse_args()
    args.only = set(args.only.split(","))
    if args.quick:
        args.churn_secs = min(args.churn_secs, 4.0)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
