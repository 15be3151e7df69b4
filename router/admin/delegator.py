"""`/delegator.json`: why a name routes where it does (reference §1.11, §4.1).

As in Linkerd's DelegateApiHandler with its default interpreter, `dtab` is the
whole dtab to evaluate (the delegator page pre-fills it with the router's
dtab); an absent `dtab` means the empty dtab. `namespace` is the router label.
A bad dtab or path is a 400 that names it; the evaluation has 2 s, then 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web

from dtab.dtab import Dtab
from dtab.path import Path

log = logging.getLogger(__name__)

TIMEOUT_S = 2.0
LINKER: web.AppKey[Any] = web.AppKey("linker", object)


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


def _find_router(linker: Any, namespace: str | None) -> Any:
    routers = list(getattr(linker, "routers", []) or [])
    if namespace is None:
        return routers[0] if routers else None
    for router in routers:
        if getattr(router, "label", None) == namespace:
            return router
    return None


async def delegate_response(linker: Any, namespace: str | None, dtab: str | None, path: str | None,
                            timeout: float = TIMEOUT_S) -> web.Response:
    try:
        parsed_dtab = Dtab.empty() if dtab is None else Dtab.read(dtab)
    except Exception as e:  # the parser's message says where and what was expected
        return _text(400, f"Invalid dtab: {e}")
    try:
        if path is None:
            raise ValueError("missing path")
        parsed_path = Path.read(path)
    except Exception as e:
        return _text(400, f"Invalid path: {e}")
    router = _find_router(linker, namespace)
    if router is None:
        return _text(404, f"Unknown namespace (router label): {namespace}")
    delegate = getattr(router, "delegate", None)
    if delegate is None:
        return _text(501, f"Name Interpreter for {namespace} cannot show delegations")
    try:
        tree = await asyncio.wait_for(delegate(parsed_dtab, parsed_path), timeout)
    except TimeoutError:
        return _text(503, "Request timed out.")
    except Exception as e:
        log.exception("delegation of %s in %s with dtab %s failed", path, namespace, dtab)
        return _text(500, f"Delegation of {path} failed: {e}")
    body = tree.to_json() if hasattr(tree, "to_json") else tree
    return web.json_response(body)


async def handle(request: web.Request) -> web.Response:
    linker = request.app[LINKER]
    if request.method == "POST":
        ctype = request.content_type
        if ctype != "application/json":
            return _text(415, f"Unsupported content type {ctype}; send application/json")
        raw = await request.text()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict) or not isinstance(body.get("path"), str):
                raise ValueError("need an object with path")
            if not isinstance(body.get("dtab"), str):
                raise ValueError("need an object with dtab")
        except ValueError:
            return _text(400, f"Malformed delegation request: {raw}")
        return await delegate_response(linker, body.get("namespace"), body["dtab"], body["path"])
    q = request.query
    return await delegate_response(linker, q.get("namespace"), q.get("dtab"), q.get("path"))
