"""A fake Kubernetes API server that speaks the wire protocol kubernetes_asyncio uses.

Real behaviour we need to reproduce, because it is what breaks routers in
production (reference §5 pain point 3):
- lists carry `metadata.resourceVersion`; a watch resumes from a version;
- watches are chunked streams of `{"type": ..., "object": ...}` lines;
- a version older than the compacted history gets a `410 Gone` (as an ERROR
  event inside a 200 stream, which is what the real server sends for watches);
- connections drop, and the whole server goes away and comes back.

Test controls: `upsert`, `delete`, `expire_history`, `drop_watches`,
`go_down`, `come_up`; counters of live watches per object so tests can show
one watch shared by many names and idle watches being stopped.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.util import free_port

KINDS = {"endpoints": "Endpoints", "services": "Service", "pods": "Pod",
         "configmaps": "ConfigMap"}  # ConfigMaps: the io.l5d.k8s.configMap interpreter
# kind -> (apiVersion, Kind) of resources served under /apis/<group>/<version> (see the
# EndpointSlice section below).
GROUP_KINDS = {"endpointslices": ("discovery.k8s.io/v1", "EndpointSlice"),
               "ingresses": ("networking.k8s.io/v1", "Ingress")}
# Group/versions Ingresses can be served under (FakeApiServer.ingress_versions picks).
INGRESS_VERSIONS = ("networking.k8s.io/v1", "networking.k8s.io/v1beta1", "extensions/v1beta1")
# (group, version, plural) -> kind of the custom resources served (namerd's dtabs).
CUSTOM_RESOURCES = {("l5d.io", "v1alpha1", "dtabs"): "DTab"}


@dataclass
class _Event:
    rv: int
    kind: str
    namespace: str
    name: str
    type: str
    obj: dict[str, Any]


@dataclass
class _Watcher:
    kind: str
    namespace: str
    name: str | None
    labels: dict[str, str]
    queue: asyncio.Queue[_Event | None] = field(default_factory=asyncio.Queue)
    bookmarks: bool = False  # the client sent allowWatchBookmarks=true

    def matches(self, ev: _Event) -> bool:
        if ev.kind != self.kind or (self.namespace is not None and ev.namespace != self.namespace):
            return False
        if self.name is not None and ev.name != self.name:
            return False
        return _labels_match(ev.obj, self.labels)


def _labels_match(obj: dict[str, Any], selector: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _parse_selector(s: str | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not s:
        return out
    for part in s.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise web.HTTPBadRequest(text=f"unsupported {what}: {s}")
        out[k.strip()] = v.strip().lstrip("=")
    return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeApiServer:
    """An aiohttp app on a loopback port; state lives in memory, controlled by the test."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._rv = 100
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._events: list[_Event] = []
        self._oldest_rv = 0  # versions below this are "compacted": 410 Gone
        self._watchers: list[_Watcher] = []
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.watch_requests: list[tuple[str, str, str | None, str | None]] = []
        self.list_requests: list[tuple[str, str, str | None]] = []
        self.gone_sent = 0
        # Some API servers answer a too-old watch version with HTTP 410 itself
        # rather than an ERROR event in a 200 stream; tests can pick either.
        self.gone_as_http_status = False
        # Also write each Endpoints object as EndpointSlices, as a cluster's controllers do.
        self.mirror_endpoints = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._count_connections])
        self._init_scale_features(app)
        self._init_ingresses(app)
        app.router.add_get("/api/v1/namespaces/{ns}/{kind}", self._collection)
        app.router.add_get("/api/v1/namespaces/{ns}/{kind}/{name}", self._get)
        app.router.add_get("/api/v1/watch/namespaces/{ns}/{kind}/{name}", self._legacy_watch)
        app.router.add_get("/api", self._versions)
        self._add_custom_resource_routes(app)
        self._runner = web.AppRunner(
            app, shutdown_timeout=0.1, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        await self.come_up()

    async def come_up(self) -> None:
        if hasattr(self, "request_log"):
            self.request_log.append([round(time.time(), 3), None, "COME UP", ""])
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await self._site.start()

    async def go_down(self) -> None:
        """Stop listening and cut every open watch: the API server is unreachable."""
        self.request_log.append([round(time.time(), 3), None, "GO DOWN", ""])
        self.drop_watches()
        if self._site is not None:
            await self._site.stop()
            self._site = None
        assert self._runner is not None and self._runner.server is not None
        # Keep-alive connections would otherwise still answer lists: cut them too.
        for transport in list(self._runner.server._connections.values()):
            transport.abort()

    async def close(self) -> None:
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- test controls -------------------------------------------------------------

    def upsert(self, kind: str, obj: dict[str, Any]) -> int:
        """Add or replace an object; emits ADDED or MODIFIED. Returns the new version."""
        meta = obj.setdefault("metadata", {})
        ns = meta.setdefault("namespace", "default")
        key = (kind, ns, meta["name"])
        etype = "MODIFIED" if key in self._objects else "ADDED"
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        obj.setdefault("kind", KINDS.get(kind) or GROUP_KINDS[kind][1])
        obj.setdefault("apiVersion", GROUP_KINDS[kind][0] if kind in GROUP_KINDS else "v1")
        self._objects[key] = obj
        self._emit(_Event(self._rv, kind, ns, meta["name"], etype, obj))
        if kind == "endpoints" and self.mirror_endpoints:
            self._mirror_endpoints(obj)
        return self._rv

    def delete(self, kind: str, namespace: str, name: str) -> None:
        if kind == "endpoints" and self.mirror_endpoints:
            for (k, n, nm) in [key for key in self._objects if key[0] == "endpointslices"
                               and key[1] == namespace and key[2].startswith(name + "-m")]:
                self.delete(k, n, nm)
        obj = self._objects.pop((kind, namespace, name))
        self._rv += 1
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._emit(_Event(self._rv, kind, namespace, name, "DELETED", obj))

    def expire_history(self) -> None:
        """Compact: any watch resuming from a version we have now will get 410 Gone."""
        self._rv += 1
        self._oldest_rv = self._rv
        self._events.clear()

    def drop_watches(self) -> None:
        """Cut every open watch stream (the connection ends mid-stream)."""
        for w in list(self._watchers):
            w.queue.put_nowait(None)

    def live_watches(self, kind: str = "endpoints", namespace: str | None = None,
                     name: str | None = None) -> int:
        return sum(
            1
            for w in self._watchers
            if w.kind == kind
            and (namespace is None or w.namespace == namespace)
            and (name is None or w.name == name)
        )

    def _emit(self, ev: _Event) -> None:
        self._events.append(ev)
        for w in self._watchers:
            if w.matches(ev):
                w.queue.put_nowait(ev)

    # ---- handlers -------------------------------------------------------------------

    async def _versions(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})

    def _kind(self, request: web.Request) -> str:
        kind = request.match_info["kind"]
        if kind not in KINDS:
            raise web.HTTPNotFound(
                text=json.dumps(_status(404, "NotFound", f"the server could not find {kind}")),
                content_type="application/json",
            )
        return kind

    async def _get(self, request: web.Request) -> web.Response:
        kind = self._kind(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        obj = self._objects.get((kind, ns, name))
        if obj is None:
            return web.json_response(
                _status(404, "NotFound", f'{kind} "{name}" not found'), status=404
            )
        return web.json_response(obj)

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        return await self._any_collection(request, self._kind(request), request.match_info["ns"])

    async def _legacy_watch(self, request: web.Request) -> web.StreamResponse:
        kind = self._kind(request)
        return await self._watch(
            request, kind, request.match_info["ns"], request.match_info["name"], {},
            request.query.get("resourceVersion"),
        )

    async def _watch(
        self,
        request: web.Request,
        kind: str,
        ns: str,
        name: str | None,
        labels: dict[str, str],
        rv_text: str | None,
    ) -> web.StreamResponse:
        self.watch_requests.append((kind, ns, name, rv_text))
        if rv_text and int(rv_text) < self._oldest_rv and self.gone_as_http_status:
            self.gone_sent += 1
            msg = f"too old resource version: {rv_text} ({self._oldest_rv})"
            return web.json_response(_status(410, "Expired", msg), status=410)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        try:
            return await self._stream(request, resp, kind, ns, name, labels, rv_text)
        except ConnectionResetError:
            return resp  # the client went away mid-stream: what real watches see all the time

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        kind: str,
        ns: str,
        name: str | None,
        labels: dict[str, str],
        rv_text: str | None,
    ) -> web.StreamResponse:
        await resp.prepare(request)
        w = _Watcher(kind, ns, name, labels,
                     bookmarks=request.query.get("allowWatchBookmarks") == "true")
        if rv_text:
            rv = int(rv_text)
            if rv < self._oldest_rv:
                self.gone_sent += 1
                msg = f"too old resource version: {rv} ({self._oldest_rv})"
                line = {"type": "ERROR", "object": _status(410, "Expired", msg)}
                await resp.write(json.dumps(line).encode() + b"\n")
                return resp
            for ev in self._events:
                if ev.rv > rv and w.matches(ev):
                    w.queue.put_nowait(ev)
        timeout = float(request.query.get("timeoutSeconds", "0") or 0) or None
        self._watchers.append(w)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                wait = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    ev = await asyncio.wait_for(w.queue.get(), wait)
                except TimeoutError:
                    break  # the server-side timeout: a clean end of the stream
                if ev is None:
                    # A dropped connection: cut the transport mid-stream.
                    if request.transport is not None:
                        request.transport.abort()
                    return resp
                line = {"type": ev.type, "object": ev.obj}
                self.events_sent += 1
                await resp.write(json.dumps(line).encode() + b"\n")
        finally:
            self._watchers.remove(w)
        await resp.write_eof()
        return resp


    # ---- custom resources (namerd's dtabs.l5d.io/v1alpha1 DTab) ----------------------
    # Self-contained: the CRD objects share the version counter, event history and
    # watch machinery above, and add what custom resources need: create (409
    # AlreadyExists), replace with optimistic concurrency (409 Conflict on a stale
    # metadata.resourceVersion), delete, and list/watch under /apis/<group>/<version>.

    def _add_custom_resource_routes(self, app: web.Application) -> None:
        base = "/apis/{group}/{version}/namespaces/{ns}/{plural}"
        app.router.add_get(base, self._cr_collection)
        app.router.add_post(base, self._cr_create)
        app.router.add_get(base + "/{name}", self._cr_get)
        app.router.add_put(base + "/{name}", self._cr_replace)
        app.router.add_delete(base + "/{name}", self._cr_delete)
        self.cr_writes: list[tuple[str, str, int]] = []  # (verb, name, HTTP status)

    def _cr_kind(self, request: web.Request) -> str:
        key = (request.match_info["group"], request.match_info["version"],
               request.match_info["plural"])
        kind = CUSTOM_RESOURCES.get(key)
        if kind is None:
            raise web.HTTPNotFound(
                text=json.dumps(_status(404, "NotFound", f"the server could not find {key}")),
                content_type="application/json")
        return request.match_info["plural"]

    def custom_objects(self, plural: str = "dtabs", namespace: str = "default"
                       ) -> dict[str, dict[str, Any]]:
        """Test view: name -> stored object of one custom resource kind."""
        return {nm: obj for (k, n, nm), obj in self._objects.items()
                if k == plural and n == namespace}

    def _cr_store(self, plural: str, ns: str, obj: dict[str, Any], etype: str) -> dict[str, Any]:
        self._rv += 1
        obj = json.loads(json.dumps(obj))
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta["resourceVersion"] = str(self._rv)
        self._objects[(plural, ns, meta["name"])] = obj
        self._emit(_Event(self._rv, plural, ns, meta["name"], etype, obj))
        return obj

    async def _cr_collection(self, request: web.Request) -> web.StreamResponse:
        plural = self._cr_kind(request)
        ns = request.match_info["ns"]
        q = request.query
        if q.get("watch") in ("true", "1", "True"):
            return await self._watch(request, plural, ns, None, {}, q.get("resourceVersion"))
        self.list_requests.append((plural, ns, None))
        items = [obj for (k, n, _), obj in sorted(self._objects.items())
                 if k == plural and n == ns]
        group, version = request.match_info["group"], request.match_info["version"]
        kind = CUSTOM_RESOURCES[(group, version, plural)]
        return web.json_response({"kind": kind + "List", "apiVersion": f"{group}/{version}",
                                  "metadata": {"resourceVersion": str(self._rv)},
                                  "items": items})

    async def _cr_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}).get("name"),
                                                        str):
            raise web.HTTPBadRequest(
                text=json.dumps(_status(400, "BadRequest", "an object with metadata.name")),
                content_type="application/json")
        return body

    async def _cr_create(self, request: web.Request) -> web.Response:
        plural = self._cr_kind(request)
        ns = request.match_info["ns"]
        body = await self._cr_body(request)
        name = body["metadata"]["name"]
        if (plural, ns, name) in self._objects:
            self.cr_writes.append(("create", name, 409))
            return web.json_response(
                _status(409, "AlreadyExists", f'{plural} "{name}" already exists'), status=409)
        body["metadata"].pop("resourceVersion", None)
        self.cr_writes.append(("create", name, 201))
        return web.json_response(self._cr_store(plural, ns, body, "ADDED"), status=201)

    async def _cr_get(self, request: web.Request) -> web.Response:
        plural = self._cr_kind(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        obj = self._objects.get((plural, ns, name))
        if obj is None:
            return web.json_response(_status(404, "NotFound", f'{plural} "{name}" not found'),
                                     status=404)
        return web.json_response(obj)

    async def _cr_replace(self, request: web.Request) -> web.Response:
        plural = self._cr_kind(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        body = await self._cr_body(request)
        cur = self._objects.get((plural, ns, name))
        if cur is None:
            self.cr_writes.append(("replace", name, 404))
            return web.json_response(_status(404, "NotFound", f'{plural} "{name}" not found'),
                                     status=404)
        given = body["metadata"].get("resourceVersion")
        if given is not None and str(given) != cur["metadata"]["resourceVersion"]:
            self.cr_writes.append(("replace", name, 409))
            msg = (f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
                   "modified; please apply your changes to the latest version and try again")
            return web.json_response(_status(409, "Conflict", msg), status=409)
        self.cr_writes.append(("replace", name, 200))
        return web.json_response(self._cr_store(plural, ns, body, "MODIFIED"))

    async def _cr_delete(self, request: web.Request) -> web.Response:
        plural = self._cr_kind(request)
        ns, name = request.match_info["ns"], request.match_info["name"]
        if (plural, ns, name) not in self._objects:
            return web.json_response(_status(404, "NotFound", f'{plural} "{name}" not found'),
                                     status=404)
        self.delete(plural, ns, name)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})


    # ---- cluster scale (issue 15): EndpointSlices, paging, bookmarks, restarts -------
    # Self-contained like the custom resources: what a big cluster's API server does
    # that the tests of io.l5d.k8s at scale need.
    # - discovery.k8s.io/v1 EndpointSlices (namespaced and cluster-wide lists and
    #   watches, label selectors such as kubernetes.io/service-name=x), and API
    #   discovery saying so (`serves_endpointslices = False`: an old cluster);
    # - cluster-wide /api/v1/<kind> lists and watches;
    # - `limit`/`continue` paging of every list (`page_requests` counts pages);
    # - BOOKMARK events for watches that allowed them (`send_bookmarks()`);
    # - `restart(lower_to)`: a fresh store behind the API server: lower resource
    #   versions, a new X-Kubernetes-PF-FlowSchema-UID (`identity_headers`), and watches
    #   from a version it never had streaming whatever comes next (what older API
    #   servers do) or, with `too_large_as_error`, the 504 newer ones send;
    # - connection counting: `open_connections()`, `peak_connections`, `peak_watches`.

    def _init_scale_features(self, app: web.Application) -> None:
        self.serves_endpointslices = True
        self.identity_headers = True
        self.identity = "fs-0000"
        self.too_large_as_error = False
        self.events_sent = 0
        # The last requests, for a failing test to show: (time, peer port, path, status or
        # "..." while it runs); and when the server went down and came up.
        self.request_log: collections.deque[list[Any]] = collections.deque(maxlen=300)
        self.page_requests = 0
        self.peak_connections = 0
        self.peak_watches = 0
        self.bookmarks_sent = 0
        # (namespace or None, service-name label or None, resourceVersion) per slice watch
        self.slice_watch_requests: list[tuple[str | None, str | None, str | None]] = []
        app.on_response_prepare.append(self._identity_headers)
        app.router.add_get("/apis/discovery.k8s.io/v1", self._discovery_v1)
        app.router.add_get("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                           self._slice_collection)
        app.router.add_get("/apis/discovery.k8s.io/v1/endpointslices", self._slice_collection)
        app.router.add_get("/api/v1/{kind}", self._cluster_collection)

    def _init_ingresses(self, app: web.Application) -> None:
        """Ingresses, cluster-wide and per namespace, under each of INGRESS_VERSIONS that
        `ingress_versions` holds (others 404, as an API server without that group)."""
        self.ingress_versions: set[str] = {"networking.k8s.io/v1"}
        self.ingress_requests: list[tuple[str, str | None, bool]] = []  # (version, ns, watch)
        for version in INGRESS_VERSIONS:
            for path in (f"/apis/{version}/ingresses",
                         f"/apis/{version}/namespaces/{{ns}}/ingresses"):
                app.router.add_get(path, self._ingress_collection)

    async def _ingress_collection(self, request: web.Request) -> web.StreamResponse:
        version = request.path.split("/")[2] + "/" + request.path.split("/")[3]
        ns = request.match_info.get("ns")
        self.ingress_requests.append((version, ns, request.query.get("watch") == "true"))
        if version not in self.ingress_versions:
            return web.json_response(_status(404, "NotFound", "the server could not find "
                                             "the requested resource"), status=404)
        return await self._any_collection(request, "ingresses", ns)

    def live_slice_watches(self, service: str | None = None,
                           namespace: str | None = None) -> int:
        """Open EndpointSlice watches: of one service's slices, or (None) of whole scopes."""
        return sum(1 for w in self._watchers if w.kind == "endpointslices"
                   and w.labels.get("kubernetes.io/service-name") == service
                   and (namespace is None or w.namespace == namespace))

    def open_connections(self) -> int:
        """TCP connections open to this API server now."""
        assert self._runner is not None and self._runner.server is not None
        return len(self._runner.server._connections)

    @web.middleware
    async def _count_connections(self, request: web.Request, handler: Any) -> Any:
        if self._runner is not None and self._runner.server is not None:
            self.peak_connections = max(self.peak_connections, self.open_connections())
        self.peak_watches = max(self.peak_watches, len(self._watchers) + (
            1 if request.query.get("watch") == "true" else 0))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        entry = [round(time.time(), 3), peer[1] if peer else None, request.path_qs[:200], "..."]
        self.request_log.append(entry)
        try:
            resp = await handler(request)
            entry[3] = resp.status
            return resp
        except BaseException as e:
            entry[3] = type(e).__name__
            raise

    def show_requests(self, last: int = 60) -> str:
        """The last requests and outages, one a line (for assertion messages)."""
        return "\n".join(" ".join(str(x) for x in e) for e in list(self.request_log)[-last:])

    async def _identity_headers(self, request: web.Request, resp: web.StreamResponse) -> None:
        if self.identity_headers:
            resp.headers["X-Kubernetes-PF-FlowSchema-UID"] = self.identity
            resp.headers["X-Kubernetes-PF-PriorityLevel-UID"] = self.identity + "-pl"

    async def _discovery_v1(self, request: web.Request) -> web.Response:
        if not self.serves_endpointslices:
            return web.json_response(_status(404, "NotFound", "the server could not find "
                                             "the requested resource"), status=404)
        return web.json_response({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "discovery.k8s.io/v1",
            "resources": [{"name": "endpointslices", "singularName": "endpointslice",
                           "namespaced": True, "kind": "EndpointSlice",
                           "verbs": ["get", "list", "watch"]}]})

    def _list_response(self, request: web.Request, kind: str, ns: str | None,
                       name: str | None, labels: dict[str, str]) -> web.Response:
        """A list, paged as the real server pages it (`limit`, then `continue`)."""
        self.page_requests += 1
        q = request.query
        items = [obj for (k, n, nm), obj in sorted(self._objects.items())
                 if k == kind and (ns is None or n == ns) and (name is None or nm == name)
                 and _labels_match(obj, labels)]
        rv, start = str(self._rv), 0
        if q.get("continue"):
            rv, _, offset = q["continue"].partition(":")
            start = int(offset)
        meta: dict[str, Any] = {"resourceVersion": rv}
        limit = int(q.get("limit", "0") or 0)
        if limit:
            if start + limit < len(items):
                meta["continue"] = f"{rv}:{start + limit}"
            items = items[start:start + limit]
        api_version, kind_name = GROUP_KINDS.get(kind, ("v1", KINDS.get(kind, kind)))
        return web.json_response({"kind": kind_name + "List", "apiVersion": api_version,
                                  "metadata": meta, "items": items})

    async def _slice_collection(self, request: web.Request) -> web.StreamResponse:
        if not self.serves_endpointslices:
            raise web.HTTPNotFound()
        return await self._any_collection(request, "endpointslices",
                                          request.match_info.get("ns"))

    async def _cluster_collection(self, request: web.Request) -> web.StreamResponse:
        return await self._any_collection(request, self._kind(request), None)

    async def _any_collection(self, request: web.Request, kind: str,
                              ns: str | None) -> web.StreamResponse:
        q = request.query
        fields = _parse_selector(q.get("fieldSelector"), "fieldSelector")
        name = fields.pop("metadata.name", None)
        if fields:
            raise web.HTTPBadRequest(text=f"unsupported fieldSelector {fields}")
        labels = _parse_selector(q.get("labelSelector"), "labelSelector")
        if q.get("watch") in ("true", "1", "True"):
            rv_text = q.get("resourceVersion")
            if self.too_large_as_error and rv_text and int(rv_text) > self._rv:
                msg = f"Timeout: Too large resource version: {rv_text}, current: {self._rv}"
                return web.json_response(_status(504, "Timeout", msg), status=504)
            if kind == "endpointslices":
                self.slice_watch_requests.append(
                    (ns, labels.get("kubernetes.io/service-name"), rv_text))
            return await self._watch(request, kind, ns, name, labels,  # type: ignore[arg-type]
                                     rv_text)
        self.list_requests.append((kind, ns or "*", name))
        return self._list_response(request, kind, ns, name, labels)

    def _mirror_endpoints(self, obj: dict[str, Any]) -> None:
        """One slice per subset (`<name>-m<i>`), labels and conditions as the controller
        writes them; slices of subsets that went away are deleted."""
        meta = obj["metadata"]
        name, ns = meta["name"], meta["namespace"]
        want = {}
        for i, sub in enumerate(obj.get("subsets") or []):
            eps = [{"ip": a["ip"], "node": a.get("nodeName")} for a in sub.get("addresses") or []]
            eps += [{"ip": a["ip"], "node": a.get("nodeName"), "ready": False, "serving": False,
                     "terminating": False} for a in sub.get("notReadyAddresses") or []]
            ports = {p.get("name") or "": p["port"] for p in sub.get("ports") or []}
            want[f"{name}-m{i}"] = endpoint_slice(f"{name}-m{i}", name, eps, ports, namespace=ns,
                                                  labels=meta.get("labels"))
        if not want:  # a service with no endpoints still has a (empty) slice
            want[f"{name}-m0"] = endpoint_slice(f"{name}-m0", name, [], {}, namespace=ns,
                                                labels=meta.get("labels"))
        for key in [k for k in self._objects if k[0] == "endpointslices" and k[1] == ns
                    and k[2].startswith(name + "-m") and k[2] not in want]:
            self.delete(*key)
        for sl in want.values():
            self.upsert("endpointslices", sl)

    def send_bookmarks(self) -> int:
        """A BOOKMARK with the current version to every watch that allowed them."""
        n = 0
        for w in self._watchers:
            if w.bookmarks:
                w.queue.put_nowait(_Event(self._rv, w.kind, w.namespace or "", "", "BOOKMARK", {
                    "kind": GROUP_KINDS.get(w.kind, ("v1", KINDS.get(w.kind, w.kind)))[1],
                    "apiVersion": GROUP_KINDS.get(w.kind, ("v1",))[0],
                    "metadata": {"resourceVersion": str(self._rv)}}))
                n += 1
        self.bookmarks_sent += n
        return n

    async def restart(self, lower_to: int = 10, *, new_identity: bool = True) -> None:
        """Down, then back with a fresh store: every object again, at versions from
        `lower_to` up (below what clients have seen); the old history is gone."""
        await self.go_down()
        self._rv = lower_to
        self._events.clear()
        self._oldest_rv = 0
        for obj in self._objects.values():
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
        if new_identity:
            self.identity = f"fs-{self._rv:04d}-{id(self) % 9973}"
        await self.come_up()


# ---- object builders ---------------------------------------------------------------


def endpoints(
    name: str,
    ready: list[tuple[str, str]] | None = None,
    ports: dict[str, int] | None = None,
    *,
    not_ready: list[tuple[str, str]] | None = None,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An Endpoints object; `ready`/`not_ready` are (ip, nodeName) pairs."""
    subset: dict[str, Any] = {
        "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in (ports or {}).items()]
    }

    def addr(ip: str, node: str) -> dict[str, Any]:
        return {
            "ip": ip,
            "nodeName": node,
            "targetRef": {"kind": "Pod", "namespace": namespace, "name": f"{name}-{ip}"},
        }

    if ready:
        subset["addresses"] = [addr(ip, node) for ip, node in ready]
    if not_ready:
        subset["notReadyAddresses"] = [addr(ip, node) for ip, node in not_ready]
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    subsets = [subset] if (ready or not_ready) else []
    return {"metadata": meta, "subsets": subsets}


def service(
    name: str,
    ports: list[tuple[str, int, int | str]],
    *,
    namespace: str = "default",
    load_balancer: list[dict[str, str]] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Service; `ports` are (name, port, targetPort). `load_balancer` (a list of
    `{"ip": ...}` / `{"hostname": ...}`) makes it `type: LoadBalancer` with that
    `status.loadBalancer.ingress` (an empty list: provisioning, no ingress yet)."""
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "ports": [
                {"name": n, "port": p, "targetPort": t, "protocol": "TCP"} for n, p, t in ports
            ]
        },
    }
    if labels:
        obj["metadata"]["labels"] = labels
    if load_balancer is not None:
        obj["spec"]["type"] = "LoadBalancer"
        obj["status"] = {"loadBalancer": {"ingress": load_balancer} if load_balancer else {}}
    return obj


def config_map(name: str, data: dict[str, str], *, namespace: str = "default"
               ) -> dict[str, Any]:
    """A ConfigMap with string `data` keys."""
    return {"metadata": {"name": name, "namespace": namespace}, "data": dict(data)}


@pytest.fixture
async def fake_k8s() -> AsyncIterator[FakeApiServer]:
    server = FakeApiServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def ingress(
    name: str,
    rules: list[tuple[str | None, str | None, str, str | int]] = (),  # type: ignore[assignment]
    *,
    default: tuple[str, str | int] | None = None,
    namespace: str = "default",
    ingress_class: str | None = None,
    v1beta1: bool = False,
    path_type: str | None = None,
) -> dict[str, Any]:
    """An Ingress; `rules` are (host, path, serviceName, servicePort). networking.k8s.io/v1
    backends (`service.name`, `service.port.number|name`) unless `v1beta1` (Linkerd's
    extensions/v1beta1 `serviceName`/`servicePort`, `spec.backend`)."""
    def backend(svc: str, port: str | int) -> dict[str, Any]:
        if v1beta1:
            return {"serviceName": svc, "servicePort": port}
        key = "number" if isinstance(port, int) else "name"
        return {"service": {"name": svc, "port": {key: port}}}

    by_host: dict[str | None, list[dict[str, Any]]] = {}
    for host, path, svc, port in rules:
        p: dict[str, Any] = {"backend": backend(svc, port)}
        if path is not None:
            p["path"] = path
        if path_type is not None:
            p["pathType"] = path_type
        by_host.setdefault(host, []).append(p)
    spec: dict[str, Any] = {"rules": [
        ({"host": h} if h else {}) | {"http": {"paths": paths}} for h, paths in by_host.items()]}
    if default is not None:
        spec["backend" if v1beta1 else "defaultBackend"] = backend(*default)
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if ingress_class is not None:
        meta["annotations"] = {"kubernetes.io/ingress.class": ingress_class}
    obj = {"metadata": meta, "spec": spec}
    if v1beta1:
        obj["apiVersion"] = "extensions/v1beta1"
    return obj


def endpoint_slice(
    name: str,
    service: str,
    endpoints: list[tuple[str, str]] | list[dict[str, Any]],
    ports: dict[str, int] | None = None,
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    address_type: str = "IPv4",
) -> dict[str, Any]:
    """An EndpointSlice of `service`. `endpoints` are (ip, nodeName) pairs (ready), or
    dicts with ip, node, and any of ready/serving/terminating/zone/hints (a list of zones)."""
    eps = []
    for e in endpoints:
        if isinstance(e, tuple):
            e = {"ip": e[0], "node": e[1]}
        cond = {c: e[c] for c in ("ready", "serving", "terminating") if c in e}
        if not cond:
            cond = {"ready": True, "serving": True, "terminating": False}
        out: dict[str, Any] = {"addresses": [e["ip"]], "conditions": cond,
                               "targetRef": {"kind": "Pod", "namespace": namespace,
                                             "name": f"{service}-{e['ip']}"}}
        if e.get("node"):
            out["nodeName"] = e["node"]
        if e.get("zone"):
            out["zone"] = e["zone"]
        if e.get("hints"):
            out["hints"] = {"forZones": [{"name": z} for z in e["hints"]]}
        eps.append(out)
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": {"kubernetes.io/service-name": service,
                                       "endpointslice.kubernetes.io/managed-by":
                                           "endpointslice-controller.k8s.io", **(labels or {})}}
    return {"metadata": meta, "addressType": address_type, "endpoints": eps,
            "ports": [{"name": n, "port": p, "protocol": "TCP"}
                      for n, p in (ports or {}).items()]}
