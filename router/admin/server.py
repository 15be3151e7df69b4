"""The admin server (aiohttp) on `admin.port`, loopback unless `admin.ip` is set.

`start_admin(linker)` binds it and starts the histogram snapshot task; the
returned `AdminHandle.close()` stops both. Every handler reads the linker's
live state: routers, metrics registry, config.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from router.admin import delegator, diagnostics, metrics_json, prometheus, workers
from router.admin.history import HISTORY_S, WINDOW_S, history_of
from router.admin.security import Security, setting
from router.metrics import Metrics, snapshot_interval, snapshot_loop

log = logging.getLogger(__name__)

STATIC = resources.files("router.admin") / "static"

ENDPOINTS = (
    ("/", "dashboard: success rate, request rate and latency per router"),
    ("/delegator", "dtab playground: why a name routes where it does"),
    ("/delegator.json", "delegation tree (GET path, dtab, namespace; or POST JSON)"),
    ("/admin/ping", "liveness: pong"),
    ("/admin/metrics.json", "metrics (?tree=1, ?q=a/b, ?pretty=1)"),
    ("/admin/metrics/history.json", "the dashboard's per-second history (?since=<unix time>)"),
    ("/config.json", "the loaded config"),
    ("/client_state.json", "clients and their addresses (?endpoints=1: each endpoint's state)"),
    ("/server_state.json", "servers: where they listen, TLS, handshakes, mTLS peers"),
    ("/bound-names.json", "bound names the namers know"),
    ("/namer_state/<prefix>.json", "a namer's watch state, e.g. /namer_state/io.l5d.k8s.json"),
    ("/admin/shutdown", "POST: drain and exit"),
    ("/admin/reload", "POST: reload the config file (as SIGHUP or a change of the file does)"),
    ("/admin/reload.json", "config version, when it was loaded, the last reload error"),
    *diagnostics.ENDPOINTS,
)


@dataclass
class AdminHandle:
    runner: web.AppRunner
    host: str
    port: int
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    tls_source: Any = None  # router.tls.context.TlsSource when admin.tls is set

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_source is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def close(self) -> None:
        if self.tls_source is not None:
            self.tls_source.unwatch()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self.runner.cleanup()


def prometheus_telemeters(telemetry: Any) -> list[tuple[str, str]]:
    """(path, prefix) of each configured io.l5d.prometheus telemeter."""
    out = []
    for tele in telemetry or []:
        if setting(tele, "kind", None) == "io.l5d.prometheus":
            params = setting(tele, "params", None) or {}
            path = setting(tele, "path", None) or params.get("path", "/admin/metrics/prometheus")
            prefix = setting(tele, "prefix", None) or params.get("prefix", "")
            out.append((str(path), str(prefix)))
    return out


def _router_info(router: Any) -> dict[str, Any]:
    dtab: Any = getattr(router, "base_dtab", None)
    label = getattr(router, "label", "?")
    info: dict[str, Any] = {
        "label": label,
        "dtab": dtab.show if hasattr(dtab, "show") else str(dtab or ""),
    }
    interp: Any = getattr(router, "interpreter", None)
    ns = getattr(getattr(interp, "params", None), "namespace", None)
    if ns is not None and hasattr(interp, "state_json"):  # bound by namerd: the delegator says so
        info["interpreter"] = {"kind": interp.kind, "namespace": ns,
                               "state": f"/{label}/interpreter_state/{interp.kind}/{ns}.json"}
    return info


def _page(name: str, linker: Any) -> web.Response:
    """A static page with the routers (label, dtab) embedded, so it needs no extra endpoint."""
    html = (STATIC / name).read_text(encoding="utf-8")
    data = json.dumps({"routers": [_router_info(r) for r in getattr(linker, "routers", [])]})
    data = data.replace("</", "<\\/")
    html = html.replace(
        "<!--L5D_DATA-->", f'<script id="l5d-data" type="application/json">{data}</script>'
    )
    return web.Response(text=html, content_type="text/html")


def _clients_of(router: Any) -> Any:
    for attr in ("clients", "client_cache"):
        cache = getattr(router, attr, None)
        if cache is not None and hasattr(cache, "snapshot"):
            return cache
    return None


def _namer_states(linker: Any) -> dict[str, Any]:
    """`io.l5d.k8s` -> the namer with a `state_json()` (under any namer transformers)."""
    out = {}
    for prefix, namer in getattr(linker, "namers", []):
        inner = getattr(namer, "namer", namer)  # router.interpreter.TransformedNamer
        if callable(getattr(inner, "state_json", None)):
            out[prefix.show.lstrip("/")] = inner
    return out


def build_app(linker: Any) -> web.Application:
    admin_cfg = getattr(getattr(linker, "config", None), "admin", None)
    security = Security.from_config(setting(admin_cfg, "security", None))
    metrics: Metrics = linker.metrics

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if not security.allows(request.path):
            return web.Response(status=404, text=f"Not found: {request.path}")
        return await handler(request)

    app = web.Application(middlewares=[guard])
    app[delegator.LINKER] = linker
    background: set[asyncio.Task[Any]] = set()

    async def ping(_: web.Request) -> web.Response:
        return web.Response(text="pong")

    def entries() -> list[tuple[str, str]]:
        out = list(ENDPOINTS)
        out += [(f"/namer_state/{prefix}.json", f"state of namer /{prefix}")
                for prefix in sorted(_namer_states(linker))]
        out.append(workers.ENDPOINT)
        if getattr(getattr(linker, "telemetry", None), "recents", None):
            out += [("/requests", "recent requests (io.l5d.recentRequests); JSON: /requests.json")]
        out += [(path, "prometheus exposition") for path, _ in prometheus_telemeters(
            setting(getattr(linker, "config", None), "telemetry", None))]
        return out

    async def index(_: web.Request) -> web.Response:
        return web.Response(text="".join(f"{path}  {what}\n" for path, what in entries()))

    # A supervisor of workers (router/workers) merges its workers' registries on demand.
    refresh = getattr(linker, "refresh_metrics", None)

    async def metrics_handler(request: web.Request) -> web.Response:
        if refresh is not None:
            await refresh()
        q = request.query
        status, body = metrics_json.render(
            metrics,
            q=q.get("q"),
            as_tree=q.get("tree") in ("1", "true"),
            pretty=q.get("pretty") in ("1", "true"),
        )
        return web.Response(status=status, text=body, content_type="application/json")

    async def config_json(_: web.Request) -> web.Response:
        data = getattr(linker, "config_json", None)
        if data is None and hasattr(getattr(linker, "config", None), "to_json"):
            data = linker.config.to_json()
        resp = web.json_response(data or {})
        reloader = getattr(linker, "reloader", None)
        if reloader is not None:  # the body stays Linkerd's shape; which version it is:
            resp.headers["l5d-config-version"] = str(reloader.version)
            resp.headers["l5d-config-loaded-at"] = f"{reloader.loaded_at:.3f}"
        return resp

    def reload_status() -> dict[str, Any]:
        reloader = getattr(linker, "reloader", None)
        if reloader is None:
            return {"configFile": None, "version": 1, "reloadable": False, "lastError": None,
                    "history": []}
        return {"reloadable": reloader.path is not None, **reloader.status_json()}

    history = history_of(linker)

    async def history_json(request: web.Request) -> web.Response:
        raw = request.query.get("since")
        try:
            since = float(raw) if raw else None
        except ValueError:
            return web.Response(status=400, text="since: a unix time in seconds\n")
        return web.json_response({"intervalSecs": 1, "windowSecs": WINDOW_S,
                                  "historySecs": HISTORY_S, "samples": history.since(since)})

    async def reload_json(_: web.Request) -> web.Response:
        return web.json_response(reload_status())

    async def reload(request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405, text="POST to reload the config file")
        reloader = getattr(linker, "reloader", None)
        if reloader is None:
            return web.Response(status=501, text="this process cannot reload its config\n")
        ok = await reloader.reload("POST /admin/reload")
        return web.json_response(reload_status(), status=200 if ok else 400)

    async def client_state(request: web.Request) -> web.Response:
        if hasattr(linker, "client_state"):  # a supervisor: its workers' clients
            return web.json_response(await linker.client_state())
        out: dict[str, Any] = {}
        endpoints = request.query.get("endpoints") in ("1", "true")  # the dashboard's view
        for router in getattr(linker, "routers", []):
            cache = _clients_of(router)
            if cache is not None:
                out.update(cache.snapshot(endpoints=True) if endpoints else cache.snapshot())
        return web.json_response(out)

    async def server_state(_: web.Request) -> web.Response:
        from router.tls.runtime import servers_state

        if hasattr(linker, "server_state"):  # a supervisor: its workers' servers
            return web.json_response(await linker.server_state())
        return web.json_response(servers_state(linker))

    async def bound_names(_: web.Request) -> web.Response:
        names = linker.bound_names()
        if inspect.isawaitable(names):
            names = await names
        return web.json_response(list(names))

    async def namer_state(request: web.Request) -> web.Response:
        prefix = request.match_info["prefix"]
        states = _namer_states(linker)
        namer = states.get(prefix)
        if namer is None:
            known = ", ".join(f"/namer_state/{p}.json" for p in sorted(states)) or "none"
            return web.Response(status=404, text=f"no namer with state at prefix /{prefix}; "
                                f"known: {known}\n")
        return web.json_response(namer.state_json())

    async def interpreter_state(request: web.Request) -> web.Response:
        """`/<router>/interpreter_state/<kind>/<namespace>.json`: a namerd interpreter."""
        label, kind, ns = (request.match_info[k] for k in ("router", "kind", "ns"))
        for r in getattr(linker, "routers", []):
            source = getattr(r, "dtab_source", None)  # io.l5d.fs / io.l5d.k8s.configMap
            if r.label == label and source is not None and source.kind == kind and ns == "dtab":
                return web.json_response(source.state_json())
            interp: Any = getattr(r, "interpreter", None)
            if (r.label == label and getattr(interp, "kind", None) == kind
                    and getattr(getattr(interp, "params", None), "namespace", None) == ns):
                return web.json_response(interp.state_json())
        return web.Response(status=404, text="no router with that interpreter and namespace\n")

    grace_ms = int(setting(admin_cfg, "shutdownGraceMs", 10000))

    async def shutdown(request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(status=405, text="POST to shut down")
        log.info("shutdown requested from the admin port; draining up to %d ms", grace_ms)
        task = asyncio.get_running_loop().create_task(linker.shutdown(grace_ms))
        background.add(task)
        task.add_done_callback(background.discard)
        return web.Response(text=f"shutting down (grace {grace_ms} ms)\n")

    async def dashboard(_: web.Request) -> web.Response:
        return _page("dashboard.html", linker)

    async def delegator_page(_: web.Request) -> web.Response:
        return _page("delegator.html", linker)

    app.router.add_get("/", dashboard)
    app.router.add_get("/delegator", delegator_page)
    app.router.add_route("*", "/delegator.json", delegator.handle)
    app.router.add_get("/admin/ping", ping)
    app.router.add_get("/admin/index.txt", index)
    diagnostics.add_routes(app, linker, entries,  # /admin (links), /logging, /help, ...
                           control_allowed=lambda: security.allows("/logging.json"))
    app.router.add_get("/admin/metrics.json", metrics_handler)
    app.router.add_get("/config.json", config_json)
    app.router.add_get("/client_state.json", client_state)
    app.router.add_get("/server_state.json", server_state)
    app.router.add_get("/bound-names.json", bound_names)
    app.router.add_get(r"/namer_state/{prefix:.+}.json", namer_state)
    app.router.add_get(r"/{router}/interpreter_state/{kind}/{ns}.json", interpreter_state)
    app.router.add_route("*", "/admin/shutdown", shutdown)
    workers.add_routes(app, linker)
    app.router.add_route("*", "/admin/reload", reload)
    app.router.add_get("/admin/reload.json", reload_json)
    app.router.add_get("/admin/metrics/history.json", history_json)
    app.router.add_static("/files/", str(STATIC))
    telemetry = getattr(linker, "telemetry", None)
    if telemetry is not None and telemetry.recents:  # io.l5d.recentRequests
        from router.telemetry.recent import add_routes

        add_routes(app, telemetry, fetch=getattr(linker, "recent_requests", None))

    for path, prefix in prometheus_telemeters(
        setting(getattr(linker, "config", None), "telemetry", None)
    ):
        collector = prometheus.RegistryCollector(metrics, prefix)

        async def prom(_: web.Request, collector: Any = collector) -> web.Response:
            if refresh is not None:
                await refresh()
            body = await prometheus.render_async(collector)
            return web.Response(body=body, headers={"Content-Type": prometheus.CONTENT_TYPE})

        app.router.add_get(path, prom)
    return app


async def start_admin(linker: Any, *, snapshot_secs: float | None = None) -> AdminHandle:
    """Bind the admin server and start snapshotting histograms."""
    admin_cfg = getattr(getattr(linker, "config", None), "admin", None)
    host = setting(admin_cfg, "ip", "127.0.0.1")
    port = int(setting(admin_cfg, "port", 9990))
    runner = web.AppRunner(build_app(linker), access_log=None)
    await runner.setup()
    tls_cfg = setting(admin_cfg, "tls", None)
    ssl_context, tls_source = None, None
    if tls_cfg is not None:
        from router.tls.runtime import rotating_server_context

        ssl_context, tls_source = rotating_server_context(tls_cfg, f"admin {host}:{port}")
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise OSError(e.errno, f"admin server cannot bind {host}:{port}: {e.strerror}") from e
    if port == 0:
        port = runner.addresses[0][1]
    interval = snapshot_secs if snapshot_secs is not None else snapshot_interval()
    handle = AdminHandle(runner, host, port, tls_source=tls_source)
    handle.tasks.append(asyncio.get_running_loop().create_task(
        snapshot_loop(linker.metrics, interval)))
    handle.tasks.append(asyncio.get_running_loop().create_task(history_of(linker).run(
        refresh=getattr(linker, "refresh_metrics", None))))
    log.info("admin serving on %s", handle.url)
    return handle
