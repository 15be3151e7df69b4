"""The admin endpoints Linkerd users script against, besides metrics and the delegator.

`/logging` (a page with a form) and `/logging.json` (GET the levels; POST
`{"logger": "l5d", "level": "DEBUG"}` or a form with the same fields) change log
levels at run time, as TwitterServer's logging handler does; `/admin/threads`
lists asyncio tasks and OS threads with their top frames; `/admin/server_info`
and `/admin/registry.json` say what is running; `/help` lists the endpoints.
Security categories are in router/admin/security.py (`/logging.json` is control,
as Linkerd has it).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG", "NOTSET")
_STARTED = time.time()
_MAX_LOGGER_NAME = 200


def logger_levels() -> dict[str, str]:
    """Every logger that exists, with its own level ('NOTSET' = inherits), root first."""
    out = {"root": logging.getLevelName(logging.getLogger().level)}
    for name in sorted(logging.Logger.manager.loggerDict):
        obj = logging.Logger.manager.loggerDict[name]
        if isinstance(obj, logging.Logger):
            out[name] = logging.getLevelName(obj.level)
    return out


def set_level(logger: Any, level: Any) -> str | None:
    """Set one logger's level; the error text for bad input, else None."""
    if not isinstance(logger, str) or not logger or len(logger) > _MAX_LOGGER_NAME:
        return f"logger: expected a logger name (up to {_MAX_LOGGER_NAME} characters)"
    if not isinstance(level, str) or level.upper() not in LEVELS:
        return "level: expected one of " + ", ".join(LEVELS)
    target = logging.getLogger() if logger == "root" else logging.getLogger(logger)
    target.setLevel(level.upper())
    logging.getLogger("l5d.admin").info("log level of %s set to %s", logger, level.upper())
    return None


async def _change(request: web.Request) -> tuple[Any, Any]:
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, None
        return (body.get("logger"), body.get("level")) if isinstance(body, dict) else (None, None)
    form = await request.post()
    return form.get("logger"), form.get("level")


def _logging_page(levels: dict[str, str], message: str = "") -> str:
    rows = []
    for name, level in levels.items():
        options = "".join(f'<option{" selected" if lv == level else ""}>{lv}</option>'
                          for lv in LEVELS)
        rows.append(
            f'<tr><td>{html.escape(name)}</td><td><form method="post" action="/logging">'
            f'<input type="hidden" name="logger" value="{html.escape(name, quote=True)}">'
            f'<select name="level">{options}</select> <button>set</button></form></td></tr>')
    note = f"<p>{html.escape(message)}</p>" if message else ""
    return ("<!doctype html><title>l5d logging</title><h1>Log levels</h1>" + note
            + "<table><tr><th>logger</th><th>level</th></tr>" + "".join(rows) + "</table>")


def threads_json() -> dict[str, Any]:
    """asyncio tasks of the running loop and OS threads, each with where it is now."""
    tasks = []
    for task in sorted(asyncio.all_tasks(), key=lambda t: t.get_name()):
        frames = task.get_stack(limit=1)
        where = (f"{frames[0].f_code.co_filename}:{frames[0].f_lineno} "
                 f"in {frames[0].f_code.co_name}") if frames else None
        tasks.append({"name": task.get_name(), "coro": getattr(task.get_coro(), "__qualname__",
                                                               repr(task.get_coro())),
                      "done": task.done(), "where": where})
    current = sys._current_frames()
    threads = []
    for t in threading.enumerate():
        frame = current.get(t.ident) if t.ident is not None else None
        stack = traceback.format_stack(frame, limit=8) if frame is not None else []
        threads.append({"name": t.name, "id": t.ident, "daemon": t.daemon,
                        "alive": t.is_alive(), "stack": [s.strip() for s in stack]})
    return {"tasks": tasks, "threads": threads}


def started_at() -> float:
    """When this process started (unix time): its admin's notion of uptime."""
    return _STARTED


def server_info() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("l5d-py")
    except PackageNotFoundError:
        ver = "unknown"
    now = time.time()
    return {"name": "l5d-py", "version": ver, "python": platform.python_version(),
            "platform": platform.platform(), "pid": os.getpid(), "argv": sys.argv,
            "start_time": int(_STARTED * 1000), "uptime_ms": int((now - _STARTED) * 1000)}


def registry_json(linker: Any) -> dict[str, Any]:
    """What this process runs, in the shape of Finagle's /admin/registry.json."""
    cfg = getattr(linker, "config", None)
    routers: dict[str, Any] = {}
    for r in getattr(cfg, "routers", ()) or ():
        routers[r.label] = {
            "protocol": r.protocol,
            "servers": [f"{s.ip}:{s.port}" for s in r.servers],
            "identifiers": [i.kind for i in r.identifiers],
            "interpreter": {"kind": r.interpreter.kind,
                            "transformers": [t.kind for t in r.interpreter.transformers]},
            "dtab": r.dtab.show,
        }
    namers = {n.prefix.show: n.kind for n in getattr(cfg, "namers", ()) or ()}
    telemetry = [t.kind for t in getattr(cfg, "telemetry", ()) or ()]
    return {"registry": {"l5d-py": {"server_info": server_info(), "routers": routers,
                                    "namers": namers, "telemetry": telemetry}}}


def add_routes(app: web.Application, linker: Any,
               endpoints: Callable[[], Sequence[tuple[str, str]]],
               control_allowed: Callable[[], bool] = lambda: True) -> None:
    """Mount the endpoints; `endpoints()` gives (path, what) for /help and /admin.

    The /logging page is UI, but its form changes levels: that is control, so it is
    refused when `control_allowed()` is false (admin security controlEnabled: false)."""

    async def logging_page(request: web.Request) -> web.Response:
        message = ""
        if request.method == "POST":
            if not control_allowed():
                return web.Response(status=403, text="changing log levels is control, and "
                                    "admin security has control disabled")
            logger, level = await _change(request)
            error = set_level(logger, level)
            if error is not None:
                return web.Response(status=400, text=_logging_page(logger_levels(), error),
                                    content_type="text/html")
            message = f"{logger} set to {str(level).upper()}"
        return web.Response(text=_logging_page(logger_levels(), message),
                            content_type="text/html")

    async def logging_json(request: web.Request) -> web.Response:
        if request.method == "POST":
            logger, level = await _change(request)
            error = set_level(logger, level)
            if error is not None:
                return web.json_response({"error": error}, status=400)
        elif request.method != "GET":
            return web.Response(status=405, text="GET the levels or POST {logger, level}")
        return web.json_response(logger_levels())

    async def threads(_: web.Request) -> web.Response:
        return web.json_response(threads_json())

    async def info(_: web.Request) -> web.Response:
        return web.json_response(server_info())

    async def registry(_: web.Request) -> web.Response:
        return web.json_response(registry_json(linker))

    async def help_text(_: web.Request) -> web.Response:
        return web.Response(text="".join(f"{p}  {w}\n" for p, w in endpoints()))

    async def admin_index(request: web.Request) -> web.Response:
        if "text/html" not in request.headers.get("Accept", ""):
            return await help_text(request)
        items = "".join(
            f'<li><a href="{html.escape(p, quote=True)}">{html.escape(p)}</a> '
            f"{html.escape(w)}</li>" for p, w in endpoints())
        return web.Response(text=f"<!doctype html><title>l5d admin</title><h1>l5d-py admin</h1>"
                            f"<ul>{items}</ul>", content_type="text/html")

    app.router.add_route("*", "/logging", logging_page)
    app.router.add_route("*", "/logging.json", logging_json)
    app.router.add_get("/admin/threads", threads)
    app.router.add_get("/admin/server_info", info)
    app.router.add_get("/admin/registry.json", registry)
    app.router.add_get("/help", help_text)
    app.router.add_get("/admin", admin_index)


ENDPOINTS = (
    ("/logging", "log levels: a page with a form to change them"),
    ("/logging.json", "log levels (GET); POST {\"logger\": ..., \"level\": ...} to change one"),
    ("/admin/threads", "asyncio tasks and threads, with where each is"),
    ("/admin/server_info", "version, Python, pid, start time and uptime"),
    ("/admin/registry.json", "what runs: routers, identifiers, transformers, namers"),
    ("/help", "this list"),
)
