"""`io.l5d.httpController` (:4180): namerd's REST API, as Linkerd's HttpControlService.

Paths under `/api/1` (reference §1.14): `dtabs[/<ns>]` (GET/HEAD/POST/PUT/
DELETE, ETag and If-Match versions), `bind`, `addr`, `resolve`, `delegate`
and `bound-names`. `?watch=true` answers a chunked stream with one document
per line, written on every distinct change, and a bare newline every
`heartbeatSecs` (10 s) while nothing changes, so a router can tell a quiet
namerd from a dead one; an error writes its message as a line and ends the
stream. Statuses are Linkerd's, so `namerctl` works
unchanged: 204 on writes, 400 for a malformed dtab or content type, 404 for
a missing namespace, 409 when POST finds it exists, 412 when If-Match is
stale (no lost update: the store's compare-and-set decides, across replicas).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from dtab.dtab import Dtab
from dtab.errors import DtabParseError
from dtab.json_codec import CodecError, bound_tree_to_json, dtab_from_json, dtab_to_json
from dtab.observable import Failed, Ok, Pending
from dtab.path import Path
from namerd.core import Namerd, follow
from namerd.store import (
    NamespaceExists,
    NamespaceMissing,
    StoreError,
    VersionMismatch,
    parse_version,
)
from namerd.telemetry import Stats

log = logging.getLogger("namerd.http")


def _dumps(value: Any) -> str:
    """Compact JSON, as Linkerd writes it."""
    return json.dumps(value, separators=(",", ":"))

KIND = "io.l5d.httpController"
API = "/api/1"
JSON = "application/json"
DTAB = "application/dtab"
MAX_BODY = 1 << 20


class _BadRequest(Exception):
    pass


def _truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes", "t")


def _dtab_codec(accept: str) -> tuple[str, Callable[[Dtab], str]]:
    """Linkerd's DtabCodec.accept: application/dtab or text/plain give the dtab text."""
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in (DTAB, "text/plain"):
            return media, lambda d: d.show
        if media in (JSON, "*/*", "application/*"):
            break
    return JSON, lambda d: _dumps(dtab_to_json(d))


def _read_dtab(content_type: str, body: bytes) -> Dtab:
    media = content_type.split(";")[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadRequest("the body is not UTF-8") from None
    if media in (DTAB, "text/plain"):
        try:
            return Dtab.read(text)
        except DtabParseError as e:
            raise _BadRequest(str(e)) from None
    if media == JSON:
        try:
            return dtab_from_json(json.loads(text))
        except (ValueError, CodecError) as e:
            raise _BadRequest(f"invalid dtab JSON: {e}") from None
    raise _CtBad(content_type)


class _CtBad(Exception):
    def __init__(self, ct: str) -> None:
        super().__init__(f'Invalid Content-Type "{ct[:100]}". ')


def _path_param(request: web.Request) -> Path:
    text = request.query.get("path", "")
    try:
        return Path.read(text)
    except (DtabParseError, ValueError) as e:
        raise web.HTTPBadRequest(text=f"Invalid path: {text[:200]} / {e}") from None


def _dtab_param(request: web.Request) -> Dtab:
    text = request.query.get("dtab")
    if not text:
        return Dtab.empty()
    try:
        return Dtab.read(text)
    except DtabParseError as e:
        raise web.HTTPBadRequest(text=f"Invalid dtab: {e}") from None


def _ns(request: web.Request) -> str:
    return request.match_info["ns"]


class HttpController:
    def __init__(self, namerd: Namerd, heartbeat_s: float = 10.0) -> None:
        self.namerd = namerd
        self.store = namerd.store
        self.heartbeat_s = heartbeat_s
        self.stats = Stats(namerd.metrics.scope("interface", KIND), "watches")
        self.stat = self.stats.of()

    @web.middleware
    async def _observe(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """interface/io.l5d.httpController/*: every call and its status (a watch is not
        timed: it lasts as long as the watcher wants)."""
        t0 = self.stat.start()
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            self.stats.scope.counter("status", str(e.status)).incr()
            self.stat.done(t0, e.status < 500)
            raise
        except Exception:
            self.stats.scope.counter("status", "500").incr()
            self.stat.done(t0, False)
            raise
        self.stats.scope.counter("status", str(resp.status)).incr()
        self.stat.done(t0, resp.status < 500, timed=type(resp) is not web.StreamResponse)
        return resp

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._observe])
        r = app.router
        r.add_get(f"{API}/dtabs", self.list_dtabs)
        r.add_get(f"{API}/dtabs/", self.list_dtabs)
        r.add_route("*", API + "/dtabs/{ns:[^/]+}", self.dtab)
        for what in ("bind", "addr", "resolve", "delegate"):
            r.add_get(f"{API}/{what}/{{ns:[^/]+}}", getattr(self, what))
        r.add_get(f"{API}/bound-names", self.bound_names)
        return app

    def _synced(self) -> None:
        if not getattr(self.store, "synced", True):
            raise web.HTTPServiceUnavailable(
                text=f"dtab storage {self.store.kind} is not available yet\n")

    # -- /api/1/dtabs
    async def list_dtabs(self, request: web.Request) -> web.StreamResponse:
        self._synced()
        def names() -> tuple[Any, Any]:
            return sorted(self.store.state.value), (self.store.state,)

        if _truthy(request.query.get("watch")):
            return await self._stream(request, JSON, follow(names), _dumps)
        return web.Response(text=_dumps(names()[0]) + "\n", content_type=JSON)

    async def dtab(self, request: web.Request) -> web.StreamResponse:
        method = request.method
        ns = _ns(request)
        if method in ("GET", "HEAD"):
            self._synced()
            media, render = _dtab_codec(request.headers.get("Accept", JSON))
            if method == "GET" and _truthy(request.query.get("watch")):
                def current() -> tuple[Any, Any]:
                    return self.store.state.value.get(ns), (self.store.state,)

                async def values() -> AsyncIterator[Any]:
                    async for vd in follow(current):
                        if vd is not None:
                            yield vd.dtab
                return await self._stream(request, media, values(), render)
            vd = self.store.state.value.get(ns)
            if vd is None:
                return web.Response(status=404)
            headers = {"ETag": vd.etag}
            if method == "HEAD":
                return web.Response(headers=headers)
            return web.Response(text=render(vd.dtab) + "\n", headers=headers,
                                content_type=media)
        if method in ("PUT", "POST"):
            body = await request.read()
            try:
                dtab = _read_dtab(request.headers.get("Content-Type", ""), body)
            except _CtBad as e:
                return web.Response(status=400, text=str(e))
            except _BadRequest as e:
                return web.Response(status=400, text=str(e)[:2000])
            try:
                if method == "POST":
                    await self.store.create(ns, dtab)
                else:
                    stamp = request.headers.get("If-Match")
                    if stamp is None:
                        await self.store.put(ns, dtab)
                    else:
                        version = parse_version(stamp)
                        if version is None:
                            return web.Response(status=412,
                                                text="If-Match is not a version namerd gave\n")
                        await self.store.update(ns, dtab, version)
            except NamespaceExists:
                return web.Response(status=409)
            except NamespaceMissing:
                return web.Response(status=404)
            except VersionMismatch:
                return web.Response(status=412)
            except StoreError as e:
                log.error("%s %s: %s", method, ns, e)
                return web.Response(status=500, text=f"{e}\n"[:2000])
            log.info("%s dtab %s: %s", method, ns, dtab.show[:500])
            return web.Response(status=204)
        if method == "DELETE":
            try:
                await self.store.delete(ns)
            except NamespaceMissing:
                return web.Response(status=404)
            except StoreError as e:
                log.error("DELETE %s: %s", ns, e)
                return web.Response(status=500, text=f"{e}\n"[:2000])
            return web.Response(status=204)
        return web.Response(status=404)

    # -- names
    async def bind(self, request: web.Request) -> web.StreamResponse:
        ns, path, extra = _ns(request), _path_param(request), _dtab_param(request)

        def compute() -> tuple[Any, Any]:
            return self.namerd.bind(ns, extra, path)

        def render(state: Any) -> str:
            if isinstance(state, Failed):
                raise _StreamError(str(state.error))
            return _dumps(bound_tree_to_json(state.value))

        values = _skip_pending(follow(compute))
        if _truthy(request.query.get("watch")):
            return await self._stream(request, JSON, values, render)
        return await self._once(values, render)

    async def addr(self, request: web.Request) -> web.StreamResponse:
        ns, path = _ns(request), _path_param(request)

        def compute() -> tuple[Any, Any]:
            return self.namerd.addr(ns, path)

        return await self._addr_response(request, compute)

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        ns, path, extra = _ns(request), _path_param(request), _dtab_param(request)

        def compute() -> tuple[Any, Any]:
            return self.namerd.resolve(ns, extra, path)

        return await self._addr_response(request, compute)

    async def _addr_response(self, request: web.Request, compute: Any) -> web.StreamResponse:
        def render(addr: Any) -> str:
            return _dumps(addr.to_json())

        if _truthy(request.query.get("watch")):
            return await self._stream(request, JSON, follow(compute), render)
        return await self._once(_skip_pending_addr(follow(compute)), render)

    async def delegate(self, request: web.Request) -> web.Response:
        ns, path, extra = _ns(request), _path_param(request), _dtab_param(request)
        try:
            tree = await self.namerd.delegate(ns, extra, path)
        except TimeoutError:
            return web.Response(status=503, text="Request timed out.")
        return web.json_response(tree)

    async def bound_names(self, request: web.Request) -> web.Response:
        return web.json_response(self.namerd.bound_names())

    # -- responses
    async def _once(self, values: AsyncIterator[Any], render: Callable[[Any], str],
                    timeout_s: float = 10.0) -> web.Response:
        try:
            async with asyncio.timeout(timeout_s):
                async for value in values:
                    try:
                        return web.Response(text=render(value) + "\n", content_type=JSON)
                    except _StreamError as e:
                        return web.Response(status=500, text=f"{e}\n"[:2000])
        except TimeoutError:
            return web.Response(status=503, text="Request timed out.")
        finally:
            await values.aclose()  # type: ignore[attr-defined]
        return web.Response(status=500)

    async def _stream(self, request: web.Request, media: str, values: AsyncIterator[Any],
                      render: Callable[[Any], str]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": media})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        nxt: asyncio.Future[Any] | None = None
        self.stats.open_streams += 1
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(anext(values))
                done, _ = await asyncio.wait({nxt}, timeout=self.heartbeat_s or None)
                if not done:  # nothing changed: a newline says namerd is alive
                    await resp.write(b"\n")
                    continue
                try:
                    value = nxt.result()
                except StopAsyncIteration:
                    break
                finally:
                    nxt = None
                try:
                    line = render(value)
                except _StreamError as e:
                    await resp.write(f"{e}\n".encode()[:2000])
                    break
                await resp.write(line.encode() + b"\n")
        except (ConnectionResetError, ConnectionError):
            return resp  # the watcher went away
        finally:
            self.stats.open_streams -= 1
            if nxt is not None:
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
            await values.aclose()  # type: ignore[attr-defined]
        await resp.write_eof()
        return resp


class _StreamError(Exception):
    pass


async def _skip_pending(values: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for state in values:
            if isinstance(state, Ok | Failed):
                yield state
            elif not isinstance(state, Pending):
                raise TypeError(f"unexpected bind state {state!r}")
    finally:
        await values.aclose()  # type: ignore[attr-defined]


async def _skip_pending_addr(values: AsyncIterator[Any]) -> AsyncIterator[Any]:
    from dtab.addr import AddrPending

    try:
        async for addr in values:
            if not isinstance(addr, AddrPending):
                yield addr
    finally:
        await values.aclose()  # type: ignore[attr-defined]


async def start_http_controller(namerd: Namerd, ip: str, port: int,
                                heartbeat_s: float = 10.0) -> Any:
    """Serve the REST API; returns a handle with `.port` and `async close()`."""
    from namerd.serving import serve_app

    return await serve_app(HttpController(namerd, heartbeat_s).app(), ip, port, KIND)
