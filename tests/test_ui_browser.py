"""The dashboard and the delegator in headless Chromium against a real `l5d` with real
traffic: live numbers move, unhealthy rows stand out, charts draw, an edited dtab changes
the tree, and a parse error is shown in place. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from tests.test_admin_e2e import (  # noqa: F401 (fixtures)
    Backends,
    L5d,
    backends,
    l5d,
    l5d_with_config,
    send,
    traffic,
)
from tests.util import free_port

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    ctx = await browser.new_context(viewport={"width": 1300, "height": 1000})
    pg = await ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        await ctx.close()
    assert errors == [], errors


async def until(fn: Callable[[], Awaitable[object]], timeout: float = 15.0,
                what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = await fn()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


async def stat(page: Page, router: str, name: str) -> str:
    return (await page.text_content(f"#router-{router} .stat-{name} .value")) or ""


async def inked_pixels(page: Page, selector: str) -> int:
    """Non-blank pixels drawn on a chart's canvas."""
    return await page.eval_on_selector(selector, """c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")


async def test_dashboard_numbers_move_with_traffic(page: Page, l5d: L5d,  # noqa: F811
                                                   backends: Backends,  # noqa: F811
                                                   tmp_path: Path) -> None:
    # A backend taking 20 ms gives the p99 a value the page must show from the window's
    # buckets (instant backends all land in the first bucket and read "1 ms").
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)
        return web.Response(text="slow\n")

    slow_port = await backends.start("slow", 200, handler=slow)
    (l5d.disco / "slow").write_text(f"127.0.0.1 {slow_port}\n")
    await page.goto(l5d.url + "/?interval=500")
    await until(lambda: page.text_content("#status"), what="first poll")
    assert await stat(page, "outgoing", "requests") == "0"
    blank = await inked_pixels(page, "#router-outgoing .chart-rps")

    async with traffic(l5d.proxy, ["world", "slow", "world", "broken"]) as sent:
        first = int(await until(
            lambda: _nonzero(stat(page, "outgoing", "requests")), what="requests > 0"))
        second = int(await until(
            lambda: _above(stat(page, "outgoing", "requests"), first), what="requests moving"))
        assert second > first
        rps = await until(lambda: _nonzero(stat(page, "outgoing", "rps")), what="req/s")
        assert float(str(rps).rstrip("k")) > 0
        # Latency comes from the histogram snapshot (every second in this process).
        p99 = await until(lambda: _ms(stat(page, "outgoing", "p99"), at_least=15),
                          what="p99 latency >= 15 ms (the slow backend's 20 ms)")
        assert p99
        # 1 in 4 requests goes to a backend answering 503: the router's success rate is ~75%.
        sr = await stat(page, "outgoing", "sr")
        assert sr.endswith("%") and 50 < float(sr.rstrip("%")) < 95, sr
        assert "bad" in (await page.get_attribute("#router-outgoing .stat-sr", "class") or "")
        # Per-service and per-client rows; the failing ones stand out.
        await until(lambda: page.query_selector(
            '#router-outgoing table.services tr.unhealthy[data-name="/svc/broken"]'),
            what="unhealthy /svc/broken row")
        world_row = await page.query_selector(
            '#router-outgoing table.services tr[data-name="/svc/world"]')
        assert world_row is not None
        assert "unhealthy" not in (await world_row.get_attribute("class") or "")
        assert "100%" in (await world_row.inner_text())
        await until(lambda: page.query_selector(
            '#router-outgoing table.clients tr.unhealthy[data-name="/#/io.l5d.fs/broken"]'),
            what="unhealthy broken client row")
        assert sent and 200 in sent and 503 in sent
        # The charts have been drawn with data.
        assert await inked_pixels(page, "#router-outgoing .chart-rps") > blank + 50
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    # The second router has no traffic and stays at zero.
    assert await stat(page, "xform", "requests") == "0"


async def _nonzero(coro: Awaitable[str]) -> str | None:
    v = await coro
    return v if v not in ("", "0", "–") and not v.startswith("0.00") else None


async def _above(coro: Awaitable[str], n: int) -> int | None:
    v = await coro
    return int(v) if v.isdigit() and int(v) > n else None


async def _ms(coro: Awaitable[str], at_least: float = 0) -> float | None:
    v = await coro
    if not v.endswith("ms"):
        return None
    n = float(v.split()[0])
    return n if n > 0 and n >= at_least else None


async def test_delegator_tree_follows_dtab_edits_and_shows_parse_errors(
        page: Page, l5d: L5d, backends, tmp_path: Path) -> None:  # noqa: F811
    world, broken = backends.ports["world"], backends.ports["broken"]
    await page.goto(l5d.url + "/delegator")
    # Pre-filled with the router's dtab.
    assert (await page.input_value("#dtab")).strip() == "/svc => /#/io.l5d.fs"
    assert await page.input_value("#router") == "outgoing"

    await page.fill("#path", "/svc/world")
    await page.press("#path", "Enter")
    leaf = await page.wait_for_selector("#tree .node.type-leaf")
    text = await leaf.inner_text()
    assert "/#/io.l5d.fs/world" in text and f"127.0.0.1:{world}" in text
    assert "/svc => /#/io.l5d.fs" in text  # the dentry that matched
    assert "resolves to" in (await page.inner_text("#summary"))
    await page.screenshot(path=str(tmp_path / "delegator-leaf.png"), full_page=True)

    # Edit the dtab in the page: /svc/world now goes to the broken backend first.
    await page.fill("#dtab", "/svc => /#/io.l5d.fs;\n/svc/world => /#/io.l5d.fs/broken;")
    await until(lambda: _tree_has(page, f"127.0.0.1:{broken}"), what="tree after dtab edit")
    primary = await page.inner_text("#tree .node.primary.type-leaf")
    assert "/#/io.l5d.fs/broken" in primary and "/svc/world => /#/io.l5d.fs/broken" in primary
    assert await page.query_selector("#tree .node.type-alt") is not None
    await page.screenshot(path=str(tmp_path / "delegator-edited.png"), full_page=True)

    # A name with no file: Neg, with the namer's reason shown.
    await page.fill("#path", "/svc/nowhere")
    await page.press("#path", "Enter")
    neg = await page.wait_for_selector("#tree .node.type-neg")
    assert "no file" in await neg.inner_text()
    assert "does not resolve" in await page.inner_text("#summary")

    # A parse error is shown in place, next to the dtab, and the tree is cleared.
    await page.fill("#dtab", "/svc => /#/io.l5d.fs |")
    err = await until(lambda: page.text_content("#dtab-error"), what="dtab error")
    assert str(err).startswith("Invalid dtab:") and "column" in str(err)
    assert "invalid" in (await page.get_attribute("#dtab", "class") or "")
    assert (await page.inner_html("#tree")) == ""
    await page.screenshot(path=str(tmp_path / "delegator-error.png"), full_page=True)

    # Fixing it clears the error; the reset button restores the router's dtab.
    await page.click("#reset")
    await until(lambda: _tree_has(page, "/svc/nowhere"), what="tree after reset")
    assert await page.text_content("#dtab-error") == ""
    await page.fill("#path", "not-a-path")
    await page.press("#path", "Enter")
    perr = await until(lambda: page.text_content("#path-error"), what="path error")
    assert str(perr).startswith("Invalid path:")


async def _tree_has(page: Page, needle: str) -> bool:
    return needle in ((await page.text_content("#tree")) or "")


RETRY_CONFIG = """\
admin: {{ip: 127.0.0.1, port: {admin}}}
routers:
- protocol: http
  label: outgoing
  dtab: |
    /svc/flap => /$/inet/127.0.0.1/{flap};
    /svc/steady => /$/inet/127.0.0.1/{steady};
  servers: [{{ip: 127.0.0.1, port: {proxy}}}]
  client: {{failureAccrual: {{kind: none}}}}
  service:
    kind: io.l5d.static
    configs:
    - prefix: /svc/flap
      responseClassifier: {{kind: io.l5d.http.retryableRead5XX}}
"""


async def test_dashboard_retries_column_counts_real_retries(page: Page,
                                                            tmp_path: Path) -> None:
    """A backend failing every other GET under retryableRead5XX: the router retries each
    failure (the client sees only 200s), and the service row's Retries cell shows the
    router's own `retries/total`, while a service without failures shows 0."""
    hits = {"n": 0}

    async def flap(_request: web.Request) -> web.Response:
        hits["n"] += 1
        return web.Response(status=503 if hits["n"] % 2 else 200, text="flap\n")

    servers = Backends()
    await servers.start("flap", 0, flap)
    await servers.start("steady", 200)
    admin, proxy = free_port(), free_port()
    text = RETRY_CONFIG.format(admin=admin, proxy=proxy, flap=servers.ports["flap"],
                               steady=servers.ports["steady"])
    try:
        async with l5d_with_config(tmp_path, text, admin, proxy):
            async with aiohttp.ClientSession() as session:
                statuses = [await send(session, proxy, "flap") for _ in range(10)]
                statuses += [await send(session, proxy, "steady") for _ in range(3)]
                async with session.get(f"http://127.0.0.1:{admin}/admin/metrics.json") as r:
                    m = await r.json()
            assert statuses == [200] * 13  # every failed attempt was retried
            assert hits["n"] == 20
            assert m["rt/outgoing/service/svc/flap/retries/total"] == 10

            await page.goto(f"http://127.0.0.1:{admin}/?interval=500")

            async def retries_cell(name: str) -> str | None:
                row = await page.query_selector(
                    f'#router-outgoing table.services tr[data-name="{name}"]')
                if row is None:
                    return None
                cells = await row.query_selector_all("td")
                return (await cells[-1].inner_text()).strip()

            assert await until(lambda: _equals(retries_cell("/svc/flap"), "10"),
                               what="Retries 10 for /svc/flap") == "10"
            assert await retries_cell("/svc/steady") == "0"
            header = await page.query_selector_all("#router-outgoing table.services th")
            assert ((await header[-1].text_content()) or "").strip() == "Retries"
            await page.screenshot(path=str(tmp_path / "dashboard-retries.png"), full_page=True)
    finally:
        await servers.close()


async def _equals(coro: Awaitable[str | None], want: str) -> str | None:
    v = await coro
    return v if v == want else None


async def test_a_page_load_shows_the_history_fits_800px_and_shows_reload_state(
        browser: Browser, l5d: L5d, tmp_path: Path) -> None:  # noqa: F811
    """History is kept server-side: a page opened after the traffic draws it at once;
    at 800 px nothing overflows; a client row expands to the balancer's endpoints; a
    refused config reload is on the page until a good config arrives."""
    async with traffic(l5d.proxy, ["world", "world", "world", "broken"]):
        await asyncio.sleep(4)  # a few samples of history, no page open
    ctx = await browser.new_context(viewport={"width": 800, "height": 1000})
    pg = await ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await pg.goto(l5d.url + "/")
        await until(lambda: pg.get_attribute("#status", "data-polls"), what="first poll")
        # the first poll already brought seconds of history: the charts have lines
        assert int(await pg.get_attribute("#status", "data-samples") or 0) >= 4
        for chart in ("sr", "rps", "latency"):
            assert await inked_pixels(pg, f"#router-outgoing .chart-{chart}") > 400, chart
        assert "over the last 10 s" in (await pg.text_content("#router-outgoing .window") or "")
        rps = await stat(pg, "outgoing", "rps")
        assert rps not in ("–", "0"), rps
        # 800 px: no horizontal scrolling, no tile or name cut off
        width = await pg.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, width
        for sel in (".stat", "table.clients td", "table.services td", ".chart"):
            overflow = await pg.eval_on_selector_all(sel, """els => els.filter(e => {
                const r = e.getBoundingClientRect();
                return r.right > 800 || e.scrollWidth > e.clientWidth + 1;
            }).map(e => e.className + ':' + e.textContent.slice(0, 40))""")
            assert overflow == [], (sel, overflow)
        # a client row expands to its charts and the balancer's view of each endpoint
        await pg.click('#router-outgoing table.clients tr.client[data-name="/#/io.l5d.fs/world"]')
        panel = await pg.wait_for_selector(
            '#router-outgoing tr.client-panel[data-name="/#/io.l5d.fs/world"] table.endpoints')
        text = await panel.inner_text()
        assert "127.0.0.1:" in text and "available" in text
        assert await inked_pixels(
            pg, '#router-outgoing tr.client-panel[data-name="/#/io.l5d.fs/world"] .chart-rps'
        ) > 200
        await pg.screenshot(path=str(tmp_path / "dashboard-800.png"), full_page=True)
        assert "config version 1" in (await pg.text_content("#reload") or "")
        # a bad config is refused: shown on the page, with its file and line
        cfg = tmp_path / "l5d.yaml"
        good = cfg.read_text()
        cfg.write_text(good.replace("label: outgoing", "label: outgoing\n  dstPrefix: nope"))
        err = await until(lambda: pg.text_content("#reload-error"), what="the reload error")
        assert f"{cfg}:" in str(err) and "dstPrefix" in str(err) and "still serving" in str(err)
        assert "bad" in (await pg.get_attribute("#reload", "class") or "")
        await pg.screenshot(path=str(tmp_path / "dashboard-reload-error.png"), full_page=True)
        cfg.write_text(good.replace("/svc => /#/io.l5d.fs;",
                                    "/svc => /#/io.l5d.fs;\n    /svc/extra => /svc/world;", 1))
        await until(lambda: _reload_ok(pg), what="the error cleared by a good config")
        assert "config version 2" in (await pg.text_content("#reload") or "")
    finally:
        await ctx.close()
    assert errors == [], errors


async def _reload_ok(page: Page) -> bool:
    return (await page.text_content("#reload-error")) == "" and \
        "config version 2" in ((await page.text_content("#reload")) or "")
