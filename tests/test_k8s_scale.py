"""A real l5d process against the fake API server at cluster sizes (issue 15's "Done when").

Behaviour, not speed: every one of 1,000 services routes, with a bounded number of
connections to the API server; a 10,000-address service under churn keeps routing
and the admin keeps answering; the numbers live in bench/k8s_scale.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bench.k8s_scale import SLICE, Backend, RouterProc, addr_of, get, slices_for
from tests.fake_apiserver import FakeApiServer, endpoint_slice, fake_k8s  # noqa: F401
from tests.test_k8s_e2e import Pod, shared_free_ports


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    try:
        yield b
    finally:
        await b.close()


@pytest.mark.timeout(180)
async def test_a_thousand_services_all_route_over_a_few_api_connections(
    fake_k8s: FakeApiServer, backend: Backend, tmp_path: Path  # noqa: F811
) -> None:
    """Was: services 101-1,000 failed with 502 binding timeouts (100 pooled connections,
    one held by each watch)."""
    for i in range(1000):
        for sl in slices_for(f"svc-{i}", 3, backend.port, base=20 + i % 8):
            fake_k8s.upsert("endpointslices", sl)
    r = RouterProc(tmp_path, fake_k8s)
    try:
        await r.ready()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as s:
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> tuple[int, str]:
                async with sem:
                    status, _, body = await get(s, r, f"svc-{i}")
                    return status, body

            results = await asyncio.gather(*(one(i) for i in range(1000)))
            bad = [(i, st, body[:200]) for i, (st, body) in enumerate(results) if st != 200]
            assert bad == [], (bad[:5], r.tail())
            assert backend.requests >= 1000
            # The API server saw a bounded number of connections: 8 watches + 2 lists.
            assert fake_k8s.peak_connections <= 10, fake_k8s.peak_connections
            assert fake_k8s.live_slice_watches() <= 8
            # Still followed: a move of one service reaches the router through the
            # shared watch.
            fake_k8s.upsert("endpointslices", endpoint_slice(
                "svc-500-0", "svc-500", [("127.0.0.99", "n")], {"http": backend.port}))
            deadline = time.monotonic() + 15
            url = f"http://127.0.0.1:{r.admin}/namer_state/io.l5d.k8s.json"
            while True:
                async with s.get(url) as resp:
                    state = (await resp.json())["/#/io.l5d.k8s/default/http/svc-500"]
                if [a["ip"] for a in state["addrs"]] == ["127.0.0.99"]:
                    break
                assert time.monotonic() < deadline, state
                await asyncio.sleep(0.1)
            status, _, _ = await get(s, r, "svc-500")
            assert status == 200
            status, _, _ = await get(s, r, "svc-501")
            assert status == 200
    finally:
        r.close()


@pytest.mark.timeout(180)
async def test_a_10000_address_service_under_churn_keeps_routing_and_the_admin_answers(
    fake_k8s: FakeApiServer, backend: Backend, tmp_path: Path  # noqa: F811
) -> None:
    n = 10_000
    for sl in slices_for("big", n, backend.port):
        fake_k8s.upsert("endpointslices", sl)
    r = RouterProc(tmp_path, fake_k8s)
    try:
        await r.ready()
        async with aiohttp.ClientSession() as s:
            status, _, body = await get(s, r, "big")
            assert status == 200, (body, r.tail())
            stop = asyncio.Event()
            statuses: list[int] = []
            admin_times: list[float] = []

            async def traffic() -> None:
                while not stop.is_set():
                    st, _, _ = await get(s, r, "big")
                    statuses.append(st)
                    await asyncio.sleep(0.01)

            async def admin() -> None:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    async with s.get(f"http://127.0.0.1:{r.admin}/admin/metrics.json") as resp:
                        await resp.read()
                        assert resp.status == 200
                    admin_times.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.05)

            tasks = [asyncio.create_task(traffic()), asyncio.create_task(admin())]
            # 20 updates/s for 4 s, each replacing one slice of 100 (1%) with new IPs.
            for gen in range(1, 81):
                k = gen % (n // SLICE)
                eps = [(addr_of(i, 40 + gen % 2), "n") for i in range(k * SLICE, (k + 1) * SLICE)]
                fake_k8s.upsert("endpointslices", endpoint_slice(f"big-{k}", "big", eps,
                                                                 {"http": backend.port}))
                await asyncio.sleep(0.05)
            # The last update is applied: its addresses are in the router's state.
            last = addr_of(80 % (n // SLICE) * SLICE, 40)
            deadline = time.monotonic() + 20
            while True:
                async with s.get(f"http://127.0.0.1:{r.admin}/namer_state/io.l5d.k8s.json") \
                        as resp:
                    state = await resp.json()
                ips = {a["ip"] for a in state["/#/io.l5d.k8s/default/http/big"]["addrs"]}
                if last in ips:
                    break
                assert time.monotonic() < deadline, "the last update never arrived"
                await asyncio.sleep(0.2)
            assert len(ips) == n
            stop.set()
            await asyncio.gather(*tasks)
        assert statuses and all(st == 200 for st in statuses), statuses
        # Generous for a loaded 2-core machine (the issue saw 1.3 s); the bench has p99.
        assert len(admin_times) >= 20 and sorted(admin_times)[len(admin_times) // 2] < 0.5
    finally:
        r.close()


@pytest.mark.timeout(120)
async def test_endpointslice_only_services_route_split_and_draining(
    fake_k8s: FakeApiServer, tmp_path: Path  # noqa: F811
) -> None:
    """No Endpoints objects at all: a service split over three slices gets requests on
    each slice's pod; a service whose only serving endpoint is terminating drains to
    it (and never to its starting, not-serving one, where nothing listens); once the
    terminating one stops serving, requests get the 502 that says why."""
    ips = ["127.0.3.1", "127.0.3.2", "127.0.3.3", "127.0.3.4"]
    (port,) = shared_free_ports(1, *ips, "127.0.3.5")
    pods = [Pod(f"pod-{ip.rsplit('.', 1)[1]}", ip, port) for ip in ips]
    for p in pods:
        await p.start()
    for k, ip in enumerate(ips[:3]):
        fake_k8s.upsert("endpointslices", endpoint_slice(
            f"split-{k}", "split", [(ip, f"node-{k}")], {"http": port}))
    fake_k8s.upsert("endpointslices", endpoint_slice("draining-0", "draining", [
        {"ip": "127.0.3.4", "node": "n", "ready": False, "serving": True, "terminating": True},
        {"ip": "127.0.3.5", "node": "n", "ready": False, "serving": False,
         "terminating": False},
    ], {"http": port}))
    r = RouterProc(tmp_path, fake_k8s)
    try:
        await r.ready()
        async with aiohttp.ClientSession() as s:
            split = [await get(s, r, "split") for _ in range(60)]
            assert [st for st, _, _ in split] == [200] * 60, split[:3]
            assert {body.strip() for _, _, body in split} == {"pod-1", "pod-2", "pod-3"}
            draining = [await get(s, r, "draining") for _ in range(20)]
            assert [(st, body.strip()) for st, _, body in draining] == [(200, "pod-4")] * 20
            assert fake_k8s.list_requests and all(k != "endpoints"
                                                  for k, _, _ in fake_k8s.list_requests)
            fake_k8s.upsert("endpointslices", endpoint_slice("draining-0", "draining", [
                {"ip": "127.0.3.4", "node": "n", "ready": False, "serving": False,
                 "terminating": True}], {"http": port}))
            deadline = time.monotonic() + 15
            while True:
                status, _, body = await get(s, r, "draining")
                if status != 200:
                    break
                assert time.monotonic() < deadline, "still routed after it stopped serving"
                await asyncio.sleep(0.1)
            assert status == 502 and "no ready endpoints" in body, (status, body)
    finally:
        r.close()
        for p in pods:
            await p.close()
