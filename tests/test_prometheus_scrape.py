"""A real Prometheus scrapes a real `l5d`'s admin port; the series come back through
Prometheus's HTTP API in Linkerd's label form. promtool parses the live exposition."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiohttp

from tests.test_admin_e2e import L5d, backends, l5d, traffic  # noqa: F401 (fixtures)
from tests.util import free_port, port_open, stop_process

PROM_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: l5d
  metrics_path: /admin/metrics/prometheus
  static_configs:
  - targets: ["127.0.0.1:{admin}"]
"""


async def query(session: aiohttp.ClientSession, port: int, expr: str) -> list[dict]:
    async with session.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}) as r:
        if r.status == 503:  # listening but not ready yet (TSDB starting): nothing to see
            return []
        body = await r.json()
    assert body["status"] == "success", body
    return body["data"]["result"]


async def _check_failures_sum(s: aiohttp.ClientSession, port: int, l5d: L5d,  # noqa: F811
                              deadline: float) -> None:
    """Linkerd's names, `rt:server:failures{exception="..."}`, and `sum()` over the family
    equal to the server's `failures` in metrics.json (Linkerd's export counted the
    failures with an exception twice: once in the unlabelled total, once per exception)."""
    server = f"127.0.0.1/{l5d.proxy}"
    sel = f'rt="outgoing",server="{server}"'
    while True:
        exn = await query(s, port, f'rt:server:failures{{{sel},exception!=""}}')
        plain = await query(s, port, f'rt:server:failures{{{sel},exception=""}}')
        if exn and plain and float(plain[0]["value"][1]) > 0 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert exn and plain, (exn, plain)
    assert {r["metric"]["exception"] for r in exn} <= {"ConnectionFailedException",
                                                       "ChannelClosedException"}
    # Traffic goes on: the scraped sum lies between metrics.json read before and after.
    for _ in range(50):
        async with s.get(l5d.url + "/admin/metrics.json") as r:
            before = (await r.json())[f"rt/outgoing/server/127.0.0.1/{l5d.proxy}/failures"]
        await asyncio.sleep(1.5)  # one scrape interval plus margin
        total = await query(s, port, f'sum(rt:server:failures{{{sel}}})')
        async with s.get(l5d.url + "/admin/metrics.json") as r:
            after = (await r.json())[f"rt/outgoing/server/127.0.0.1/{l5d.proxy}/failures"]
        summed = float(total[0]["value"][1])
        if before <= summed <= after:
            break
    assert before <= summed <= after, (before, summed, after)
    # No series name of our own making.
    names = await query(s, port, 'count by (__name__) ({__name__=~"rt:.*failures.*"})')
    assert {r["metric"]["__name__"] for r in names} == {
        "rt:server:failures", "rt:service:failures", "rt:client:failures",
        "rt:client:service:failures"}


async def test_prometheus_scrapes_linkerd_label_form(l5d: L5d, tmp_path: Path) -> None:  # noqa: F811
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(PROM_CONFIG.format(admin=l5d.admin))
    log = tmp_path / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["/usr/bin/prometheus", f"--config.file={cfg}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    # `dead` resolves to a port nothing listens on: each request fails with an exception.
    (l5d.disco / "dead").write_text(f"127.0.0.1 {free_port()}\n")
    try:
        async with traffic(l5d.proxy, ["world", "broken", "dead"], period=0.05), \
                aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 30
            while not port_open(port):
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "prometheus did not listen"
                await asyncio.sleep(0.1)
            server = f"127.0.0.1/{l5d.proxy}"
            result: list[dict] = []
            while time.monotonic() < deadline:
                result = await query(s, port, 'rt:server:requests{rt="outgoing"}')
                if result and float(result[0]["value"][1]) > 0:
                    break
                await asyncio.sleep(0.3)
            assert result, f"no rt:server:requests series; prometheus log:\n{log.read_text()}"
            labels = result[0]["metric"]
            assert labels["__name__"] == "rt:server:requests"
            assert labels["rt"] == "outgoing" and labels["server"] == server
            assert labels["job"] == "l5d"
            assert float(result[0]["value"][1]) > 0

            svc = await query(s, port, 'rt:service:failures{service="svc/broken"}')
            assert svc and float(svc[0]["value"][1]) > 0 and svc[0]["metric"]["rt"] == "outgoing"
            client = await query(s, port, 'rt:client:success{client="#/io.l5d.fs/world"}')
            assert client and float(client[0]["value"][1]) > 0
            # Counters grow between scrapes, so rate() works on them.
            while time.monotonic() < deadline:
                rate = await query(s, port, 'rate(rt:server:requests{rt="outgoing"}[5s])')
                if rate and float(rate[0]["value"][1]) > 0:
                    break
                await asyncio.sleep(0.3)
            assert rate and float(rate[0]["value"][1]) > 0
            # Latency summaries: quantiles from the last snapshot, cumulative _count.
            while time.monotonic() < deadline:
                q = await query(s, port,
                                'rt:server:request_latency_ms{rt="outgoing",quantile="0.99"}')
                if q:
                    break
                await asyncio.sleep(0.3)
            assert q and float(q[0]["value"][1]) >= 0
            count = await query(s, port, 'rt:server:request_latency_ms_count{rt="outgoing"}')
            assert count and float(count[0]["value"][1]) > 0
            await _check_failures_sum(s, port, l5d, deadline)
            up = await query(s, port, 'up{job="l5d"}')
            assert up and up[0]["value"][1] == "1"

            # promtool parses the exposition the process serves.
            async with s.get(l5d.url + "/admin/metrics/prometheus") as r:
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await r.read()
        check = subprocess.run(["promtool", "check", "metrics"], input=text,
                               capture_output=True, timeout=30)
        err = check.stderr.decode()
        assert "error while linting" not in err and check.returncode in (0, 3), err
        problems = {line.split(" ", 1)[1] for line in err.splitlines() if " " in line}
        # Only Linkerd's own naming (':' separators, `_ms`) is outside promtool's style guide.
        assert problems <= {"metric names should not contain ':'",
                            "metric names should not contain abbreviated units"}, problems
    finally:
        stop_process(proc)
