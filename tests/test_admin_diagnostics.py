"""/logging, /logging.json, /admin/threads, /admin/server_info, /admin/registry.json, /help
and the /admin index, through the real admin server (TwitterServer/Linkerd's endpoints)."""

from __future__ import annotations

import logging
import os

from router.config import AdminSecurityConfig
from tests.test_admin_server import admin, make_linker  # noqa: F401


async def test_logging_json_views_and_changes_levels(admin) -> None:  # noqa: F811
    start, http = admin
    h = await start(make_linker())
    name = "l5d.test.diag"
    logging.getLogger(name).setLevel("INFO")
    async with http.get(h.url + "/logging.json") as r:
        levels = await r.json()
        assert r.status == 200 and levels[name] == "INFO" and "root" in levels
    async with http.post(h.url + "/logging.json", json={"logger": name, "level": "debug"}) as r:
        assert r.status == 200 and (await r.json())[name] == "DEBUG"
    assert logging.getLogger(name).level == logging.DEBUG
    async with http.post(h.url + "/logging.json", json={"logger": name, "level": "LOUD"}) as r:
        assert r.status == 400 and "level: expected one of" in (await r.json())["error"]
    async with http.post(h.url + "/logging.json", data="{not json",
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
    assert logging.getLogger(name).level == logging.DEBUG  # bad input changed nothing


async def test_logging_page_form(admin) -> None:  # noqa: F811
    start, http = admin
    h = await start(make_linker())
    name = "l5d.test.form"
    logging.getLogger(name).setLevel("WARNING")
    async with http.get(h.url + "/logging") as r:
        page = await r.text()
        assert r.status == 200 and "<form" in page and name in page
    async with http.post(h.url + "/logging", data={"logger": name, "level": "ERROR"}) as r:
        assert r.status == 200 and f"{name} set to ERROR" in await r.text()
    assert logging.getLogger(name).level == logging.ERROR


async def test_threads_server_info_registry_help_and_index(admin) -> None:  # noqa: F811
    start, http = admin
    h = await start(make_linker())
    async with http.get(h.url + "/admin/threads") as r:
        doc = await r.json()
        assert any(t["name"] == "MainThread" and t["stack"] for t in doc["threads"])
        assert doc["tasks"] and all("name" in t and "where" in t for t in doc["tasks"])
    async with http.get(h.url + "/admin/server_info") as r:
        info = await r.json()
        assert info["name"] == "l5d-py" and info["pid"] == os.getpid()
        assert info["uptime_ms"] >= 0 and info["python"]
    async with http.get(h.url + "/admin/registry.json") as r:
        reg = await r.json()
        assert reg["registry"]["l5d-py"]["telemetry"] == ["io.l5d.prometheus"]
    async with http.get(h.url + "/help") as r:
        text = await r.text()
        for path in ("/logging.json", "/admin/threads", "/admin/server_info",
                     "/admin/registry.json", "/admin/metrics.json", "/prom"):
            assert path in text, path
    async with http.get(h.url + "/admin", headers={"Accept": "text/html"}) as r:
        page = await r.text()
        assert r.content_type == "text/html"
        for path in ("/logging", "/admin/threads", "/delegator", "/prom"):
            assert f'<a href="{path}">' in page, path
    async with http.get(h.url + "/admin") as r:  # scripts get the plain list
        assert "/admin/registry.json" in await r.text()


async def test_changing_levels_is_control(admin) -> None:  # noqa: F811
    """With controlEnabled: false, /logging.json is 404 (Linkerd's control category) and the
    /logging form cannot change a level either."""
    start, http = admin
    h = await start(make_linker(AdminSecurityConfig(control_enabled=False)))
    name = "l5d.test.control"
    logging.getLogger(name).setLevel("INFO")
    async with http.post(h.url + "/logging.json", json={"logger": name, "level": "DEBUG"}) as r:
        assert r.status == 404
    async with http.post(h.url + "/logging", data={"logger": name, "level": "DEBUG"}) as r:
        assert r.status == 403
    async with http.get(h.url + "/logging") as r:
        assert r.status == 200
    assert logging.getLogger(name).level == logging.INFO
