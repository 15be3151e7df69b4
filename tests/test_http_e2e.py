"""The data path inside real `l5d CONFIG` processes: curl through http_proxy, two hops,
overrides two hops deep, router-made errors, and stats visible on the admin port."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from router.http.testing import Backend
from tests.test_http_proxy import RawClient, curl
from tests.util import async_wait_until, free_port, port_open

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """admin:
  ip: 127.0.0.1
  port: {admin}
{admin_extra}routers:
- protocol: http
  label: {label}
  dtab: |
{dtab}
  servers:
  - ip: 127.0.0.1
    port: {port}
{extra}"""


class L5d:
    def __init__(self, tmp: Path, label: str, dtab: str, extra: str = "",
                 admin_extra: str = "") -> None:
        self.port, self.admin = free_port(), free_port()
        self.cfg = tmp / f"{label}.yaml"
        body = "\n".join(f"    {line};" for line in dtab.split(";") if line.strip())
        self.cfg.write_text(CONFIG.format(admin=self.admin, label=label, dtab=body,
                                          port=self.port, extra=extra, admin_extra=admin_extra))
        self.log = tmp / f"{label}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> L5d:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "router.cli", str(self.cfg), cwd=str(ROOT),
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=open(self.log, "wb"), stderr=asyncio.subprocess.STDOUT,  # noqa: SIM115
        )
        await async_wait_until(
            lambda: self.proc.returncode is not None or port_open(self.port), timeout=20,
            what=f"l5d on {self.port}",
        )
        assert self.proc.returncode is None, self.log.read_text()
        return self

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest.fixture
async def env(tmp_path):
    started: list = []

    async def start(kind, *args, **kw):
        obj = await (Backend(*args).start() if kind == "backend" else
                     L5d(tmp_path, *args, **kw).start())
        started.append(obj)
        return obj

    try:
        yield start
    finally:
        for obj in reversed(started):
            if isinstance(obj, L5d):
                await obj.stop()
            else:
                await obj.close()


async def test_real_process_proxy_errors_and_stats(env):
    b1 = await env("backend", "b1")
    l5d = await env("l5d", "outgoing", f"/svc/hello => /$/inet/127.0.0.1/{b1.port}")
    rc, out, err = await curl("-i", "-x", f"http://127.0.0.1:{l5d.port}", "http://hello/echo")
    assert rc == 0, err
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200") and "Via: 1.1 linkerd" in head
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["l5d-dst-service"] == "/svc/hello"
    assert seen["l5d-dst-client"] == f"/$/inet/127.0.0.1/{b1.port}"

    c = await RawClient(l5d.port).connect()
    try:
        r = await c.request(host="nope")
        assert r.status == 502
        assert unquote(r.header("l5d-err")).startswith(
            "Unable to route request!\n\nservice name: /svc/nope\ndtab:\n  /svc/hello => ")
        r = await c.request(headers=[("l5d-dtab", "/svc/hello => (")])
        assert r.status == 400 and "column" in unquote(r.header("l5d-err"))
        dead = free_port()
        r = await c.request(headers=[("l5d-dtab", f"/svc/hello => /$/inet/127.0.0.1/{dead}")])
        assert r.status == 502
        assert unquote(r.header("l5d-err")).startswith(
            f"Unable to establish connection to 127.0.0.1:{dead}.")
        r = await c.request(target="/die")
        assert not r.done
    finally:
        c.close()
    # the process survived the dying backend and keeps serving
    rc, out, _ = await curl("-x", f"http://127.0.0.1:{l5d.port}", "http://hello/echo")
    assert rc == 0 and json.loads(out)["backend"] == "b1"

    rc, out, err = await curl(f"http://127.0.0.1:{l5d.admin}/admin/metrics.json")
    assert rc == 0, err
    metrics = json.loads(out)
    s = f"rt/outgoing/server/127.0.0.1/{l5d.port}/"
    assert metrics[s + "requests"] >= 5
    assert metrics[s + "status/502"] >= 2 and metrics[s + "status/400"] >= 1
    assert metrics["rt/outgoing/service/svc/hello/requests"] >= 4
    assert metrics[f"rt/outgoing/client/$/inet/127.0.0.1/{b1.port}/requests"] >= 2


async def test_two_real_routers_override_reaches_the_second_hop(env):
    v1, v2 = await env("backend", "world-v1"), await env("backend", "world-v2")
    incoming = await env(
        "l5d", "incoming",
        f"/svc/world => /srv/world; /srv/world => /$/inet/127.0.0.1/{v1.port}; "
        f"/srv/world-v2 => /$/inet/127.0.0.1/{v2.port}",
    )
    outgoing = await env("l5d", "outgoing", f"/svc => /$/inet/127.0.0.1/{incoming.port}")
    proxy = f"http://127.0.0.1:{outgoing.port}"
    rc, out, err = await curl("-x", proxy, "http://world/echo")
    assert rc == 0, err
    assert json.loads(out)["backend"] == "world-v1"
    rc, out, err = await curl("-x", proxy, "-H", "l5d-dtab: /srv/world => /srv/world-v2",
                              "-H", "l5d-ctx-user: alice", "http://world/echo")
    assert rc == 0, err
    seen = json.loads(out)
    assert seen["backend"] == "world-v2"
    hdrs = [(k.lower(), v) for k, v in seen["headers"]]
    assert ("l5d-ctx-dtab", "/srv/world=>/srv/world-v2") in hdrs
    assert ("l5d-ctx-user", "alice") in hdrs
    assert [v for k, v in hdrs if k == "via"] == ["1.1 linkerd", "1.1 linkerd"]


def vm_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


async def test_large_bodies_stream_through_a_real_process_without_growing_it(env, tmp_path):
    b1 = await env("backend", "b1")
    l5d = await env("l5d", "outgoing", f"/svc/hello => /$/inet/127.0.0.1/{b1.port}")
    rc, _, err = await curl("-x", f"http://127.0.0.1:{l5d.port}", "http://hello/echo")
    assert rc == 0, err
    before = vm_kb(l5d.proc.pid, "VmRSS")
    # 64 MB down to a client reading at 40 MB/s, and 32 MB up, chunked, from a file
    rc, out, err = await curl("-x", f"http://127.0.0.1:{l5d.port}", "-o", "/dev/null",
                              "--limit-rate", "40M", "-w", "%{size_download}",
                              "http://hello/chunked?n=512&size=131072")
    assert rc == 0, err
    assert int(out) == 64 * 1024 * 1024
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"u" * (32 * 1024 * 1024))
    rc, out, err = await curl("-x", f"http://127.0.0.1:{l5d.port}", "-H",
                              "Transfer-Encoding: chunked", "--data-binary", f"@{upload}",
                              "http://hello/echo")
    assert rc == 0, err
    assert json.loads(out)["body_len"] == 32 * 1024 * 1024
    grown_mb = (vm_kb(l5d.proc.pid, "VmHWM") - before) / 1024
    assert grown_mb < 16, f"the router grew {grown_mb:.1f} MB while streaming 96 MB"
