"""The admin of `workers: 2` as people read it: `/workers.json` and the dashboard's
workers table (headless Chromium) follow a killed worker's replacement, `workers: 1`
says it is one process, and `/requests.json` merges the workers' recent requests.

Real processes on real ports; which worker holds a connection comes from the kernel's
socket table (tests/workers_util.py).
"""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

from playwright.async_api import Page

from tests.test_ui_browser import browser, page, until  # noqa: F401 (fixtures)
from tests.test_workers import Backend, backend, config, conns_on_every_worker, get_json  # noqa: F401

RECENT = """- kind: io.l5d.recentRequests
  sampleRate: 1.0
  capacity: 10
"""


async def worker_rows(pg: Page) -> list[dict[str, str]]:
    return await pg.eval_on_selector_all("#workers tr.worker", """rows => rows.map(r => ({
        worker: r.dataset.worker, pid: r.querySelector('.pid').textContent,
        state: r.querySelector('.state').textContent,
        restarts: r.querySelector('.restarts').textContent,
        rss: r.querySelector('.rss').textContent,
        exit: r.querySelector('.exit').textContent}))""")


async def test_dashboard_shows_each_worker_and_a_replaced_one(
    page: Page, tmp_path: FsPath, backend: Backend,  # noqa: F811
    l5d_process: Callable[..., Any],
) -> None:
    text, port, admin = config(tmp_path, backend.port)
    proc = l5d_process(text, log_level="info")
    state = get_json(admin, "/workers.json")
    assert state["count"] == 2 and state["supervisor"]["pid"] == proc.proc.pid
    assert state["supervisor"]["rssBytes"] > 1 << 20
    for w in state["workers"]:
        assert w["state"] == "serving" and w["restarts"] == 0 and w["lastExit"] is None
        assert w["uptimeSecs"] >= 0 and w["startedAt"] > 0 and w["rssBytes"] > 1 << 20
    pids = {w["worker"]: w["pid"] for w in state["workers"]}
    assert sorted(pids) == [0, 1]

    await page.goto(f"http://127.0.0.1:{admin}/?interval=200")

    async def rows_serving() -> Any:
        rows = await worker_rows(page)
        return rows if [r["state"] for r in rows] == ["serving", "serving"] else None

    rows = await until(rows_serving, 15, "two serving workers on the dashboard")
    assert {int(r["worker"]): int(r["pid"]) for r in rows} == pids  # type: ignore[union-attr]
    head = await page.text_content("#workers h3") or ""
    assert "2 of 2 serving" in head and f"supervisor pid {proc.proc.pid}" in head

    os.kill(pids[0], signal.SIGKILL)

    def replaced() -> Any:
        w = get_json(admin, "/workers.json")["workers"][0]
        return w if w["state"] == "serving" and w["pid"] != pids[0] else None

    await until(lambda: _async(replaced), 30, "worker 0 replaced")
    w0 = get_json(admin, "/workers.json")["workers"][0]
    assert w0["restarts"] == 1 and w0["lastExit"] == -signal.SIGKILL
    assert w0["lastExitReason"] == "killed by SIGKILL" and w0["lastExitAt"] > 0
    # and for alerts: the supervisor's own gauges and counter, in Prometheus too
    m = get_json(admin, "/admin/metrics.json")
    assert (m["l5d/workers/count"], m["l5d/workers/serving"], m["l5d/workers/restarts"]) \
        == (2, 2, 1)
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/metrics/prometheus",
                                timeout=10) as r:
        prom = r.read().decode().splitlines()
    assert "l5d:workers:restarts 1.0" in prom and "l5d:workers:serving 2.0" in prom

    async def row_replaced() -> Any:
        rows = await worker_rows(page)
        r0 = next((r for r in rows if r["worker"] == "0"), None)
        return r0 if r0 and r0["pid"] == str(w0["pid"]) and r0["state"] == "serving" else None

    r0 = await until(row_replaced, 15, "the dashboard's row for the new worker 0")
    assert r0["restarts"] == "1" and r0["exit"].startswith("killed by SIGKILL")  # type: ignore[index]
    r1 = next(r for r in await worker_rows(page) if r["worker"] == "1")
    assert r1["pid"] == str(pids[1]) and r1["restarts"] == "0" and r1["exit"] == "–"
    assert r1["rss"].endswith(" MB") and float(r1["rss"].split()[0]) > 1
    await page.screenshot(path=str(tmp_path / "dashboard-workers.png"), full_page=True)


async def _async(fn: Callable[[], Any]) -> Any:
    return fn()


async def test_one_worker_says_it_is_one_process(
    page: Page, tmp_path: FsPath, backend: Backend,  # noqa: F811
    l5d_process: Callable[..., Any],
) -> None:
    text, _port, admin = config(tmp_path, backend.port, workers=1)
    proc = l5d_process(text, log_level="info")
    state = get_json(admin, "/workers.json")
    assert state["count"] == 1 and state["supervisor"] is None
    assert state["note"].startswith("workers: 1: this process serves every router itself")
    [w] = state["workers"]
    assert w["pid"] == proc.proc.pid and w["state"] == "serving" and w["restarts"] == 0
    assert w["rssBytes"] > 1 << 20
    await page.goto(f"http://127.0.0.1:{admin}/?interval=200")
    line = await until(lambda: page.text_content("#workers.single"), 15, "the workers line")
    assert line == f"1 worker: this process (pid {proc.proc.pid}) serves every router"
    assert await page.query_selector("#workers table") is None


async def test_recent_requests_of_both_workers_merged_newest_first(
    page: Page, tmp_path: FsPath, backend: Backend,  # noqa: F811
    l5d_process: Callable[..., Any],
) -> None:
    text, port, admin = config(tmp_path, backend.port)
    proc = l5d_process(text + RECENT, log_level="info")
    index = {w["pid"]: w["worker"] for w in get_json(admin, "/workers.json")["workers"]}
    conns = conns_on_every_worker(port, list(index))
    # one connection on each worker, requests alternating between them: 12 in all
    a = next(c for c in conns if index[c.pid] == 0)
    b = next(c for c in conns if index[c.pid] == 1)
    sent: list[tuple[str, int]] = []
    for i in range(6):
        for c in (a, b):
            uri = f"/w{index[c.pid]}/{i}"
            assert c.get(uri) == 200
            sent.append((uri, index[c.pid]))
    served = {uri: w for uri, w in sent}

    reqs = get_json(admin, "/requests.json")["requests"]
    assert "workersNotRead" not in get_json(admin, "/requests.json")
    mine = [r for r in reqs if r["uri"] in served]  # conns_on_every_worker's "/" left out
    # as many as one process keeps (capacity 10), newest first, each with its worker
    assert len(reqs) == 10
    assert [r["timestamp"] for r in reqs] == sorted((r["timestamp"] for r in reqs), reverse=True)
    assert all(r["worker"] == served[r["uri"]] for r in mine)
    for w in (0, 1):  # each worker's own order is exact: newest first
        theirs = [r["uri"] for r in mine if r["worker"] == w]
        assert theirs == [u for u, x in reversed(sent) if x == w][:len(theirs)]
    # the newest ones are there from both workers (the oldest fell out past capacity)
    assert {r["uri"] for r in mine} >= {u for u, _ in sent[4:]}
    assert {r["worker"] for r in mine} == {0, 1}
    assert proc.proc.poll() is None
    for c in conns:
        c.http.close()

    # the /requests page shows them with a worker column
    await page.goto(f"http://127.0.0.1:{admin}/requests")
    await until(lambda: page.eval_on_selector_all("#requests tbody tr", "rs => rs.length === 10"),
                15, "ten rows on /requests")
    assert await page.text_content("#requests thead th.worker") == "worker"
    last = await page.eval_on_selector_all("#requests tbody tr",
                                           "rs => rs.map(r => r.lastElementChild.textContent)")
    assert set(last) == {"0", "1"}
