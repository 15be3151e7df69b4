"""namerd's admin server (aiohttp): the namespaces, a dtab page per namespace with the
delegator, and the JSON endpoints Linkerd's namerd admin has.

`/` lists namespaces; `/dtab/<ns>` shows that namespace's dtab and version and
a delegator form; `/dtab/delegator.json?namespace=&path=&dtab=` is the
delegate tree (reference §4.1) under the stored dtab plus `dtab`;
`/config.json`, `/storage/dtabs.json` (the store's state, its watch for
io.l5d.k8s), `/admin/ping`, and the metrics (namerd/telemetry.py) as
`/admin/metrics.json` and `/admin/metrics/prometheus`, with the router's exporters.
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

from aiohttp import web

from dtab.dtab import Dtab
from dtab.path import Path
from namerd.core import Namerd
from namerd.serving import AppHandle, serve_app
from router.admin import prometheus
from router.admin.metrics_json import render as render_metrics_json
from router.admin.server import prometheus_telemeters, snapshot_interval

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>namerd: {title}</title>
<style>body{{font-family:sans-serif;margin:2em}} pre{{background:#f4f4f4;padding:1em}}
input{{width:40em}} td{{padding:0 1em}}</style></head>
<body><h1>namerd</h1>{body}</body></html>
"""

_DELEGATOR = """
<h2>Delegator</h2>
<form id="d"><p>path <input id="path" value="/svc/"></p>
<p>extra dtab <input id="dtab" value=""></p><button>delegate</button></form>
<pre id="out"></pre>
<script>
document.getElementById('d').onsubmit = async (ev) => {{
  ev.preventDefault();
  const q = new URLSearchParams({{namespace: {ns_json}, path: path.value, dtab: dtab.value}});
  const r = await fetch('/dtab/delegator.json?' + q);
  const t = await r.text();
  try {{ out.textContent = JSON.stringify(JSON.parse(t), null, 2); }}
  catch (e) {{ out.textContent = r.status + ' ' + t; }}
}};
</script>
"""


def build_app(namerd: Namerd) -> web.Application:
    store = namerd.store

    async def index(_: web.Request) -> web.Response:
        rows = "".join(
            f'<tr><td><a href="/dtab/{html.escape(ns)}">{html.escape(ns)}</a></td>'
            f"<td><code>{html.escape(vd.etag)}</code></td></tr>"
            for ns, vd in sorted(store.state.value.items()))
        body = (f"<p>storage <code>{html.escape(store.kind)}</code></p><h2>Namespaces</h2>"
                f"<table><tr><th>namespace</th><th>version</th></tr>{rows}</table>")
        return web.Response(text=_PAGE.format(title="namespaces", body=body),
                            content_type="text/html")

    async def dtab_page(request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        vd = store.state.value.get(ns)
        if vd is None:
            return web.Response(status=404, text=f"no dtab namespace {ns[:100]!r}\n")
        shown = ";\n".join(d.show for d in vd.dtab.dentries)
        body = (f'<p><a href="/">namespaces</a></p><h2>{html.escape(ns)}</h2>'
                f"<p>version <code>{html.escape(vd.etag)}</code></p>"
                f"<pre>{html.escape(shown)}</pre>"
                + _DELEGATOR.format(ns_json=html.escape(json.dumps(ns), quote=False)))
        return web.Response(text=_PAGE.format(title=html.escape(ns), body=body),
                            content_type="text/html")

    async def delegator_json(request: web.Request) -> web.Response:
        q = request.query
        ns = q.get("namespace", "default")
        try:
            path = Path.read(q.get("path", ""))
        except ValueError as e:
            return web.Response(status=400, text=f"Invalid path: {e}")
        try:
            extra = Dtab.read(q.get("dtab", "") or "")
        except ValueError as e:
            return web.Response(status=400, text=f"Invalid dtab: {e}")
        try:
            tree = await namerd.delegate(ns, extra, path)
        except TimeoutError:
            return web.Response(status=503, text="Request timed out.")
        return web.json_response(tree)

    async def config_json(_: web.Request) -> web.Response:
        return web.json_response(namerd.config.to_json())

    async def storage_json(_: web.Request) -> web.Response:
        return web.json_response(store.state_json())

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def metrics_json(request: web.Request) -> web.Response:
        q = request.query
        status, body = render_metrics_json(
            namerd.metrics, q=q.get("q"), as_tree=q.get("tree") in ("1", "true"),
            pretty=q.get("pretty") in ("1", "true"))
        return web.Response(status=status, text=body, content_type="application/json")

    def exposition(prefix: str) -> Any:
        async def handler(_: web.Request) -> web.Response:
            return web.Response(body=prometheus.render(namerd.metrics, prefix),
                                headers={"Content-Type": prometheus.CONTENT_TYPE})
        return handler

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/dtab/delegator.json", delegator_json)
    app.router.add_get("/dtab/{ns}", dtab_page)
    app.router.add_get("/config.json", config_json)
    app.router.add_get("/storage/dtabs.json", storage_json)
    app.router.add_get("/admin/ping", ping)
    app.router.add_get("/admin/metrics.json", metrics_json)
    # always at Linkerd's default path; an io.l5d.prometheus telemeter may add its own
    # path and prefix (prometheus_telemeters is the router admin's reading of the config)
    served = {"/admin/metrics/prometheus": ""}
    for path, prefix in prometheus_telemeters(namerd.config.telemetry):
        served[path] = prefix
    for path, prefix in served.items():
        app.router.add_get(path, exposition(prefix))
    return app


async def start_admin(namerd: Namerd) -> AppHandle:
    cfg = namerd.config.admin
    handle = await serve_app(build_app(namerd), cfg.ip, cfg.port, "namerd admin")
    handle.background = asyncio.get_running_loop().create_task(
        _snapshot_forever(namerd, snapshot_interval()), name="namerd metrics snapshots")
    return handle


async def _snapshot_forever(namerd: Namerd, interval: float) -> None:
    """Histograms are exported from their last snapshot (a minute, as Linkerd)."""
    while True:
        await asyncio.sleep(interval)
        namerd.metrics.snapshot_histograms()



