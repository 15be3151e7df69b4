"""`/requests` (io.l5d.recentRequests) in headless Chromium: the last requests show up,
newest first, with their service, client, status and trace id; a failed one in red."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from playwright.async_api import Browser

from tests.test_e2e_router import curl
from tests.test_ui_browser import browser, until  # noqa: F401 (fixture)
from tests.util import free_port


async def test_requests_page_lists_recent_requests(browser: Browser,  # noqa: F811
                                                   l5d_process: Any, echo_backend: Any,
                                                   tmp_path: Path) -> None:
    echo = echo_backend("web")
    port, admin = free_port(), free_port()
    l5d = l5d_process(textwrap.dedent(f"""\
        admin: {{ip: 127.0.0.1, port: {admin}}}
        routers:
        - protocol: http
          label: edge
          dtab: |
            /svc/web => /$/inet/127.0.0.1/{echo.port};
          servers: [{{port: {port}, ip: 127.0.0.1}}]
        telemetry:
        - kind: io.l5d.recentRequests
          sampleRate: 1.0
          capacity: 5
        """))
    ctx = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        await page.goto(f"http://127.0.0.1:{l5d.admin_port}/requests")
        await until(lambda: page.text_content("#status"), what="first poll")
        assert await page.locator("#requests tbody tr").count() == 0
        for i in range(7):
            status, headers, _ = curl(l5d.ports["edge"], f"http://web/item/{i}")
            assert status == 200
        status, _, _ = curl(l5d.ports["edge"], "http://nowhere/<b>x</b>")
        assert status == 502
        rows = page.locator("#requests tbody tr")
        await until(lambda: _count_is(rows, 5), what="five rows (the capacity)")
        first = await rows.nth(0).locator("td").all_text_contents()
        assert first[1:4] == ["edge", "GET", "/<b>x</b>"]  # text, never markup
        assert first[4] == "/svc/nowhere" and first[7] == "502"
        assert "failed" in (await rows.nth(0).get_attribute("class") or "")
        second = await rows.nth(1).locator("td").all_text_contents()
        assert second[3] == "/item/6" and second[4] == "/svc/web"
        assert second[5] == f"/$/inet/127.0.0.1/{echo.port}"
        assert second[6] == f"127.0.0.1:{echo.port}" and second[7] == "200"
        assert len(second[9]) == 16 and int(second[9], 16)
        await page.screenshot(path=str(tmp_path / "requests.png"))
    finally:
        await ctx.close()
    assert errors == [], errors


async def _count_is(rows: Any, n: int) -> bool:
    return await rows.count() == n
