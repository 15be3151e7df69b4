"""`workers: 2`: one supervisor, two data-path processes sharing the router's port.

Real processes on real ports: requests land on both workers (the kernel's
socket table says which worker holds each connection), metrics.json and
Prometheus add up to the requests sent, a killed worker is replaced while the
other's connections see no failure, SIGTERM drains both.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path as FsPath
from typing import Any

import pytest

from router.config import ConfigError, parse
from router.workers import cpus_available
from tests.util import async_wait_until, free_port, port_open, wait_until
from tests.workers_util import owner_pid

ROUTES = "routers: [{protocol: http, servers: [{port: 4140}]}]\n"


class Backend:
    """A threaded HTTP/1.1 backend; `/slow` answers once `gate` is set (a test holds
    requests in flight for as long as it needs, not for a guessed time)."""

    def __init__(self) -> None:
        backend = self
        self.gate = threading.Event()
        self.hits = 0
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with backend.lock:
                    backend.hits += 1
                if self.path.startswith("/slow"):
                    backend.gate.wait(30)
                body = b"ok\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    try:
        yield b
    finally:
        b.close()


def config(tmp_path: FsPath, backend_port: int, *, workers: int = 2,
           grace_ms: int = 10000) -> tuple[str, int, int]:
    disco = tmp_path / "disco"
    disco.mkdir(exist_ok=True)
    (disco / "web").write_text(f"127.0.0.1 {backend_port}\n")
    port, admin = free_port(), free_port()
    text = f"""
workers: {workers}
admin: {{ip: 127.0.0.1, port: {admin}, shutdownGraceMs: {grace_ms}}}
namers:
- kind: io.l5d.fs
  rootDir: {disco}
routers:
- protocol: http
  label: outgoing
  dtab: /svc => /#/io.l5d.fs;
  servers: [{{ip: 127.0.0.1, port: {port}}}]
telemetry:
- kind: io.l5d.prometheus
"""
    return text, port, admin


def get_json(admin: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=10) as r:
        return json.loads(r.read())


def worker_pids(admin: int) -> list[int]:
    state = get_json(admin, "/workers.json")
    return [w["pid"] for w in state["workers"] if w["state"] == "serving"]


class Conn:
    """One keep-alive client connection to the router, and the worker that holds it."""

    def __init__(self, port: int) -> None:
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.http.connect()
        self.local_port = self.http.sock.getsockname()[1]
        self.pid: int | None = None
        self.ok = 0
        self.failed: list[str] = []

    def get(self, path: str = "/") -> int:
        self.http.request("GET", path, headers={"Host": "web"})
        resp = self.http.getresponse()
        resp.read()
        return resp.status


def conns_on_every_worker(port: int, pids: list[int], per_worker: int = 1,
                          tries: int = 60) -> list[Conn]:
    """New connections until each worker holds at least `per_worker` of them."""
    conns: list[Conn] = []
    for _ in range(tries):
        c = Conn(port)
        assert c.get() == 200
        wait_until(lambda c=c: owner_pid(port, c.local_port, pids) is not None, 5,
                   "the connection's owner in /proc")
        c.pid = owner_pid(port, c.local_port, pids)
        conns.append(c)
        if all(sum(1 for x in conns if x.pid == p) >= per_worker for p in pids):
            return conns
    raise AssertionError(f"{tries} connections did not reach every worker {pids}: "
                         f"{[c.pid for c in conns]}")


def test_workers_key_is_checked_with_its_line() -> None:
    assert parse("workers: auto\n" + ROUTES).workers == cpus_available()
    assert parse("workers: 3\n" + ROUTES).workers == 3
    assert parse(ROUTES).workers == 1
    for bad in ("0", "-1", "lots", "true", "1.5", "65"):
        with pytest.raises(ConfigError) as e:
            parse(f"admin: {{port: 9990}}\nworkers: {bad}\n" + ROUTES, "l5d.yaml")
        assert e.value.line == 2 and e.value.key == "workers", e.value
        assert "from 1 to 64, or auto" in str(e.value)


def test_requests_land_on_both_workers_and_metrics_add_up(
    tmp_path: FsPath, backend: Backend, l5d_process: Callable[..., Any]
) -> None:
    text, port, admin = config(tmp_path, backend.port)
    proc = l5d_process(text, env={"L5D_HISTOGRAM_SNAPSHOT_SECS": "1"}, log_level="info")
    state = get_json(admin, "/workers.json")
    assert state["supervisor"]["pid"] == proc.proc.pid
    pids = worker_pids(admin)
    assert len(set(pids)) == 2 and proc.proc.pid not in pids
    for pid in pids:
        os.kill(pid, 0)  # alive

    conns = conns_on_every_worker(port, pids, per_worker=2)
    sent = len(conns)
    for c in conns:  # a few more on each connection: 5 requests per connection in all
        for _ in range(4):
            assert c.get() == 200
        sent += 4
    per_pid = {p: 5 * sum(1 for c in conns if c.pid == p) for p in pids}

    server = f"rt/outgoing/server/127.0.0.1/{port}"
    # A worker counts a request when the backend's response completes, which can come a
    # moment after the client read the last byte: poll briefly, then check everything.
    wait_until(lambda: get_json(admin, "/admin/metrics.json").get(f"{server}/requests") == sent,
               5, f"{sent} requests in the merged metrics")
    m = get_json(admin, "/admin/metrics.json")
    assert m[f"{server}/requests"] == sent
    assert m["rt/outgoing/service/svc/web/requests"] == sent
    assert m["rt/outgoing/client/#/io.l5d.fs/web/requests"] == sent
    index = {w["pid"]: w["worker"] for w in state["workers"]}
    for pid, n in per_pid.items():  # per-worker detail: what that process served
        assert m[f"workers/{index[pid]}/{server}/requests"] == n
    assert backend.hits == sent
    # Gauges: connections summed over workers; the balancer's size is each worker's (max).
    assert m["rt/outgoing/client/#/io.l5d.fs/web/loadbalancer/size"] == 1

    # Histograms merged: a snapshot of the workers' windows shows up in metrics.json
    # (tests/test_workers_merge.py checks the arithmetic); Prometheus' cumulative
    # `_count` below is every request.
    wait_until(lambda: get_json(admin, "/admin/metrics.json").get(
        f"{server}/request_latency_ms.count", 0) > 0, 10, "merged latency snapshot")

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/metrics/prometheus",
                                timeout=10) as r:
        prom = r.read().decode()
    line = next(ln for ln in prom.splitlines()
                if ln.startswith("rt:server:requests{") and f'server="127.0.0.1/{port}"' in ln)
    assert float(line.rsplit(" ", 1)[1]) == sent  # one router, not one series per worker
    count = next(ln for ln in prom.splitlines()
                 if ln.startswith("rt:server:request_latency_ms_count{")
                 and f'server="127.0.0.1/{port}"' in ln)
    assert float(count.rsplit(" ", 1)[1]) == sent
    # no per-worker series (the supervisor's own l5d:workers:* gauges are not those)
    assert not any(ln.startswith("workers:") for ln in prom.splitlines())
    assert "workers:0" not in prom and "workers:1" not in prom
    # The admin's other views read the workers too.
    assert "/#/io.l5d.fs/web" in get_json(admin, "/client_state.json")
    servers = get_json(admin, "/server_state.json")
    assert sorted((s.get("worker"), s["port"]) for s in servers if s["router"] == "outgoing") \
        == [(0, port), (1, port)]
    assert [s["port"] for s in servers if s["router"] == "admin"] == [admin]
    for c in conns:
        c.http.close()


def mapped_files(pid: int) -> set[str]:
    """The files process `pid` has mapped (its shared libraries and extension modules)."""
    with open(f"/proc/{pid}/maps") as f:
        return {line.split(maxsplit=5)[5].strip() for line in f if len(line.split()) > 5}


def test_each_process_loads_only_what_it_runs(
    tmp_path: FsPath, backend: Backend, l5d_process: Callable[..., Any]
) -> None:
    """Issue 17's memory targets come from what each process imports: a worker (no
    admin, no TLS here) maps neither aiohttp's nor cryptography's extensions, and the
    supervisor (which serves no router) neither cryptography nor the compiled data path."""
    text, port, admin = config(tmp_path, backend.port)
    proc = l5d_process(text, log_level="info")
    pids = worker_pids(admin)
    conns = conns_on_every_worker(port, pids)  # every worker has served and bound
    m = get_json(admin, "/admin/metrics.json")  # and answered the admin's pulls
    assert m[f"rt/outgoing/server/127.0.0.1/{port}/requests"] >= len(conns)
    get_json(admin, "/client_state.json")
    get_json(admin, "/server_state.json")
    for pid in pids:
        libs = mapped_files(pid)
        assert any("uvloop" in f for f in libs)  # the reading sees extension modules
        for unused in ("aiohttp", "multidict", "yarl", "cryptography"):
            assert not [f for f in libs if f"/{unused}/" in f], (unused, pid)
    libs = mapped_files(proc.proc.pid)
    assert any("/aiohttp/" in f for f in libs)  # the admin is the supervisor's
    for unused in ("cryptography", "/router/http/", "/router/client/"):
        assert not [f for f in libs if unused in f], unused
    for c in conns:
        c.http.close()


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(
    tmp_path: FsPath, backend: Backend, l5d_process: Callable[..., Any]
) -> None:
    text, port, admin = config(tmp_path, backend.port)
    proc = l5d_process(text, log_level="info")
    pids = worker_pids(admin)
    conns = conns_on_every_worker(port, pids, per_worker=2)
    victim = pids[0]
    survivors = [c for c in conns if c.pid != victim]
    stop = threading.Event()

    def hammer(c: Conn) -> None:
        while not stop.is_set():
            try:
                status = c.get()
            except (OSError, http.client.HTTPException) as e:
                c.failed.append(repr(e))
                return
            if status == 200:
                c.ok += 1
            else:
                c.failed.append(f"status {status}")

    threads = [threading.Thread(target=hammer, args=(c,), daemon=True) for c in survivors]
    for t in threads:
        t.start()
    wait_until(lambda: all(c.ok > 0 for c in survivors), 10, "the survivors served")
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        # One snapshot: two reads could see the victim still "serving" in the first (its
        # death not yet noticed) and gone in the second (its slot "restarting").
        serving = worker_pids(admin)
        return len(serving) == 2 and victim not in serving

    wait_until(replaced, 20, "the killed worker to be replaced")
    before = sum(c.ok for c in survivors)
    wait_until(lambda: sum(c.ok for c in survivors) > before + 20, 10, "more requests")
    stop.set()
    for t in threads:
        t.join(10)
    assert all(not c.failed for c in survivors), [c.failed for c in survivors]
    assert all(c.ok > 0 for c in survivors)

    state = get_json(admin, "/workers.json")["workers"]
    replaced = next(w for w in state if w["restarts"] == 1)
    assert replaced["lastExit"] == -signal.SIGKILL and replaced["state"] == "serving"
    assert "exited with -9; restarting" in proc.log()
    # The new worker serves new connections too.
    new_pid = replaced["pid"]
    fresh = conns_on_every_worker(port, worker_pids(admin))
    assert any(c.pid == new_pid for c in fresh)


def test_sigterm_drains_every_worker(tmp_path: FsPath, backend: Backend,
                                     l5d_process: Callable[..., Any]) -> None:
    text, port, admin = config(tmp_path, backend.port)
    proc = l5d_process(text, log_level="info")
    pids = worker_pids(admin)
    index = {w["worker"]: w["pid"] for w in get_json(admin, "/workers.json")["workers"]}
    conns = conns_on_every_worker(port, pids)
    results: dict[int, Any] = {}

    def slow(i: int, c: Conn) -> None:
        try:
            results[i] = c.get("/slow")
        except (OSError, http.client.HTTPException) as e:
            results[i] = repr(e)

    threads = [threading.Thread(target=slow, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    wait_until(lambda: backend.hits >= 2 * len(conns), 10, "slow requests in flight")
    proc.proc.send_signal(signal.SIGTERM)
    # Every worker drains with its request still in flight (the backend holds them):
    wait_until(lambda: all(f"worker {i} [{p}] l5d.worker: draining (grace 10000 ms)"
                           in proc.log() for i, p in index.items()), 20, "both workers draining")
    wait_until(lambda: not port_open(port), 10, "the router port closed by both workers")
    assert results == {} and proc.proc.poll() is None
    # the admin stays up until the workers are done, and says what they are doing
    assert [w["state"] for w in get_json(admin, "/workers.json")["workers"]] == ["draining"] * 2
    backend.gate.set()
    for t in threads:
        t.join(20)
    assert results == {i: 200 for i in range(len(conns))}  # each worker finished its own
    assert proc.proc.wait(20) == 0
    for pid in pids:
        wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 5, f"worker {pid} gone")


def test_sighup_reloads_every_worker_and_sigterm_stops_them(tmp_path: FsPath,
                                                            backend: Backend) -> None:
    """`l5d CONFIG --no-watch` with `workers: 2`: the signal set-up the one-process router
    has (router/cli.py: run) serves the supervisor too: SIGHUP reloads (the workers are
    replaced), SIGINT/SIGTERM drain and exit 0."""
    from tests.conftest import _start_process, _wait_ports

    text, port, admin = config(tmp_path, backend.port, grace_ms=1000)
    path = tmp_path / "l5d.yaml"
    path.write_text(text)
    log_path = tmp_path / "l5d.log"
    proc = _start_process([sys.executable, "-m", "router.cli", str(path), "--no-watch",
                           "--log-level", "info"], log_path, tmp_path)
    try:
        _wait_ports(proc, [port, admin], log_path)
        before = sorted(w["pid"] for w in get_json(admin, "/workers.json")["workers"])
        path.write_text(text.replace("dtab: /svc => /#/io.l5d.fs;",
                                     "dtab: /svc => /#/io.l5d.fs; /svc/other => /svc/web;"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded (SIGHUP): version 2" in log_path.read_text(), 30,
                   "the SIGHUP reload")
        after = get_json(admin, "/workers.json")["workers"]
        assert [w["state"] for w in after] == ["serving", "serving"]
        assert set(before).isdisjoint(w["pid"] for w in after)
        assert get_json(admin, "/admin/reload.json")["version"] == 2
        c = Conn(port)
        c.http.request("GET", "/", headers={"Host": "other"})  # the new dtab's name
        resp = c.http.getresponse()
        resp.read()
        assert resp.status == 200
        c.http.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        log = log_path.read_text()
        assert "SIGINT received" in log and "draining (grace 1000 ms)" in log
        assert log.rstrip().endswith("l5d: stopped"), log[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_taken_port_stops_start_with_nothing_serving(tmp_path: FsPath,
                                                       backend: Backend) -> None:
    import socket

    text, port, admin = config(tmp_path, backend.port)
    (tmp_path / "l5d.yaml").write_text(text)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        out = subprocess.run([sys.executable, "-m", "router.cli", str(tmp_path / "l5d.yaml")],
                             capture_output=True, text=True, timeout=30,
                             cwd=str(FsPath(__file__).parent.parent))
    assert out.returncode == 1, out.stderr
    assert f"router outgoing cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "workers serving" not in out.stderr  # refused before any worker started


async def test_a_config_roll_replaces_every_worker_without_closing_the_port(
    tmp_path: FsPath,
) -> None:
    """`Supervisor.replace_workers` (what a reload calls): new workers on the new config
    serve before the old ones drain; routing follows the new dtab; the count may change."""
    import asyncio

    import aiohttp

    from router.workers.supervisor import Supervisor

    a, b = Backend(), Backend()
    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "a").write_text(f"127.0.0.1 {a.port}\n")
    (disco / "b").write_text(f"127.0.0.1 {b.port}\n")
    port, admin = free_port(), free_port()

    def cfg(target: str, workers: int) -> Any:
        return parse(f"""
workers: {workers}
admin: {{ip: 127.0.0.1, port: {admin}, shutdownGraceMs: 2000}}
namers: [{{kind: io.l5d.fs, rootDir: {disco}}}]
routers:
- protocol: http
  label: outgoing
  dtab: /svc/web => /#/io.l5d.fs/{target};
  servers: [{{ip: 127.0.0.1, port: {port}}}]
""", "roll.yaml")

    sup = Supervisor(cfg("a", 2))
    await sup.start()
    statuses: list[int | str] = []
    stop = asyncio.Event()

    async def keep_asking(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with session.get(f"http://127.0.0.1:{port}/",
                                       headers={"Host": "web"}) as r:
                    await r.read()
                    statuses.append(r.status)
            except aiohttp.ClientError as e:
                statuses.append(repr(e))
            await asyncio.sleep(0.005)

    try:
        old_pids = [s.pid for s in sup.slots]
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as session:
            asker = asyncio.create_task(keep_asking(session))
            await async_wait_until(lambda: statuses.count(200) >= 10, 20, "answers from a")
            assert a.hits >= 10 and b.hits == 0
            await sup.replace_workers(cfg("b", 3))
            new_pids = [s.pid for s in sup.slots]
            assert len(new_pids) == 3 and not set(new_pids) & set(old_pids)
            for pid in old_pids:
                wait_until(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), 10, "old gone")
            b_before = b.hits
            a_after = a.hits
            await async_wait_until(lambda: b.hits >= b_before + 10, 20, "answers from b")
            stop.set()
            await asker
        assert b.hits > b_before and a.hits == a_after  # all new requests follow the new dtab
        assert statuses.count(200) > 20
        # Connections refused or reset while a worker's listener closed (see README: without
        # net.ipv4.tcp_migrate_req a closed SO_REUSEPORT listener drops its accept queue).
        failed = [s for s in statuses if s != 200]
        assert len(failed) <= 2, failed
        assert [w["state"] for w in sup.workers_state()["workers"]] == ["serving"] * 3
    finally:
        await sup.shutdown(1000)
        a.close()
        b.close()


async def test_a_worker_that_cannot_start_in_a_roll_is_not_restarted(tmp_path: FsPath) -> None:
    """A config roll whose first new worker fails (its port is held by another socket,
    which `reload_config`'s own check would have refused first) raises StartError, leaves
    the old workers serving, and does not keep restarting the failed one: it is not one
    of the supervisor's workers."""
    import socket

    import aiohttp

    from router.workers.supervisor import StartError, Supervisor

    a = Backend()
    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "web").write_text(f"127.0.0.1 {a.port}\n")
    port, admin, held = free_port(), free_port(), free_port()

    def cfg(p: int) -> Any:
        return parse(f"""
workers: 2
admin: {{ip: 127.0.0.1, port: {admin}, shutdownGraceMs: 1000}}
namers: [{{kind: io.l5d.fs, rootDir: {disco}}}]
routers:
- protocol: http
  label: outgoing
  dtab: /svc => /#/io.l5d.fs;
  servers: [{{ip: 127.0.0.1, port: {p}}}]
""", "roll.yaml")

    sup = Supervisor(cfg(port))
    await sup.start()
    holder = socket.socket()
    holder.bind(("127.0.0.1", held))
    holder.listen()
    try:
        old = [(s.index, s.pid) for s in sup.slots]
        with pytest.raises(StartError, match=f"router outgoing cannot listen on "
                           f"127.0.0.1:{held}: .*address already in use"):
            await sup.replace_workers(cfg(held))

        def serve_tasks() -> list[Any]:
            return [t for t in sup._tasks if t.get_name().startswith("worker ")]

        # the failed worker's task ends (it would sleep and respawn if it were restarted)
        await async_wait_until(lambda: len(serve_tasks()) == 2, 20,
                               "only the two old workers' tasks")
        assert [(s.index, s.pid) for s in sup.slots] == old
        assert [w["state"] for w in sup.workers_state()["workers"]] == ["serving"] * 2
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                async with session.get(f"http://127.0.0.1:{port}/",
                                       headers={"Host": "web"}) as r:
                    assert r.status == 200
    finally:
        holder.close()
        await sup.shutdown(1000)
        a.close()
