"""How l5d-py reaches the Kubernetes API server (kubernetes_asyncio underneath).

Three ways, in the order a config picks them:
- `host`/`port` given: plain HTTP to a `kubectl proxy` (what Linkerd 1 configs
  say: `host: localhost, port: 8001`), no credentials;
- `kubeconfig` given: that file's current context;
- otherwise the in-cluster service account (KUBERNETES_SERVICE_HOST and the
  mounted token and CA), so no proxy sidecar is needed (reference §5 pain
  point 8). Outside a cluster with none of these we fall back to Linkerd's
  default `localhost:8001` and say so in the log.

kubernetes_asyncio stays the client for what it is good at: configuration,
credentials (tokens, exec plugins, client certificates, their refresh) and its
aiohttp session. We do not use its generated API classes or models: they are
~35 of the ~40 MB it costs to import, and we need a few fields of three kinds.
`_light_client()` imports only `client.configuration`, `client.rest`,
`client.api_client` and `config` (about 4 MB); the rest of the package still
loads, in full, the first time anything else in the process asks for it.

Requests go through `ApiClient.call_api` on resource paths, so any API group
(discovery.k8s.io EndpointSlices, networking.k8s.io Ingresses) is one table
entry. Responses are read raw: lists page by page (`limit`/`continue`), watch
streams split into lines here, large lines decoded off the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import types
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from namers.k8s import pieces

log = logging.getLogger("l5d.k8s")

DEFAULT_PROXY_HOST = "localhost"
DEFAULT_PROXY_PORT = 8001
# Bodies and watch lines above this are json-decoded in pieces (pieces.py), a loop turn
# each, rather than in one json.loads (~1 ms per 100 KB here; a thread does not help:
# the C decoder holds the GIL throughout).
PIECES_BYTES = 128 * 1024
READ_CHUNK = 64 * 1024  # bytes taken from the stream at once (a loop turn's worth of copying)
MAX_EVENT_BYTES = 64 * 1024 * 1024  # a watch line longer than this is an error, not a buffer
LIST_PAGE = 500
# Pages of big objects are smaller, so a list never holds much more than a few MB of
# JSON and its decoded dicts at once (memory the allocator keeps after the list).
PAGE_OF = {"endpointslices": 50, "endpoints": 50}

# kind (what WatchKey and the namers say) -> (API group path, resource plural)
RESOURCES: dict[str, tuple[str, str]] = {
    "endpoints": ("/api/v1", "endpoints"),
    "services": ("/api/v1", "services"),
    "pods": ("/api/v1", "pods"),
    "endpointslices": ("/apis/discovery.k8s.io/v1", "endpointslices"),
    "ingresses": ("/apis/networking.k8s.io/v1", "ingresses"),
    "configmaps": ("/api/v1", "configmaps"),  # the io.l5d.k8s.configMap interpreter
}


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP code (410 means: list again)."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"{url}: HTTP {status}: {message}")
        self.status = status
        self.url = url


@dataclass(frozen=True, slots=True)
class ApiTarget:
    """Which API server, and how to authenticate. Hashable: it keys the shared clients."""

    host: str | None = None
    port: int | None = None
    kubeconfig: str | None = None

    @property
    def show(self) -> str:
        if self.host is not None or self.port is not None:
            return f"http://{self.host or DEFAULT_PROXY_HOST}:{self.port or DEFAULT_PROXY_PORT}"
        if self.kubeconfig:
            return f"kubeconfig {self.kubeconfig}"
        return "in-cluster service account"


class _LazyPackage(types.ModuleType):
    """A kubernetes_asyncio package whose `__init__` runs only when something needs it.

    Submodules import as usual through `__path__`; any other attribute (`CoreV1Api`,
    `V1Pod`, ...) runs the real `__init__.py` into this module first, so code that
    wants the whole client still gets it.
    """

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        d = self.__dict__
        base = d["__path__"][0]
        if os.path.exists(os.path.join(base, attr + ".py")) or os.path.isdir(
                os.path.join(base, attr)):
            return importlib.import_module(f"{self.__name__}.{attr}")
        if not d.get("_l5d_full"):
            d["_l5d_full"] = True
            spec = importlib.util.spec_from_file_location(
                self.__name__, os.path.join(base, "__init__.py"),
                submodule_search_locations=[base])
            assert spec is not None and spec.loader is not None
            spec.loader.exec_module(self)
            if attr in self.__dict__:
                return self.__dict__[attr]
        raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")


def _light_client() -> tuple[Any, Any, Any]:
    """(Configuration, ApiClient, config module) without the generated APIs and models."""
    if "kubernetes_asyncio.client" not in sys.modules:
        spec = importlib.util.find_spec("kubernetes_asyncio")
        assert spec is not None and spec.submodule_search_locations
        root = list(spec.submodule_search_locations)[0]
        parent: types.ModuleType | None = None
        for name, path in (("kubernetes_asyncio", root),
                           ("kubernetes_asyncio.client", os.path.join(root, "client")),
                           ("kubernetes_asyncio.client.models",
                            os.path.join(root, "client", "models"))):
            mod = sys.modules.get(name)
            if mod is None:
                mod = _LazyPackage(name)
                mod.__path__ = [path]
                mod.__file__ = os.path.join(path, "__init__.py")
                sys.modules[name] = mod
            if parent is not None:
                setattr(parent, name.rsplit(".", 1)[1], mod)
            parent = mod
    from kubernetes_asyncio.client import api_client, configuration

    client_pkg = sys.modules["kubernetes_asyncio.client"]
    # What kubernetes_asyncio.config imports by name from the client package.
    client_pkg.__dict__.setdefault("Configuration", configuration.Configuration)
    client_pkg.__dict__.setdefault("ApiClient", api_client.ApiClient)
    from kubernetes_asyncio import config as k8s_config

    return configuration.Configuration, api_client.ApiClient, k8s_config


async def _configuration(target: ApiTarget) -> Any:
    configuration_cls, _, k8s_config = _light_client()
    cfg = configuration_cls()
    if target.host is not None or target.port is not None:
        cfg.host = target.show
        return cfg
    if target.kubeconfig:
        await k8s_config.load_kube_config(config_file=target.kubeconfig, client_configuration=cfg)
        return cfg
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=cfg)
        return cfg
    cfg.host = f"http://{DEFAULT_PROXY_HOST}:{DEFAULT_PROXY_PORT}"
    log.warning(
        "k8s: not in a cluster and no host/port/kubeconfig given; using kubectl proxy at %s",
        cfg.host,
    )
    return cfg


def collection_path(kind: str, namespace: str | None) -> str:
    """The REST path of a kind's collection, in one namespace or (None) all of them."""
    try:
        group, plural = RESOURCES[kind]
    except KeyError:
        raise ValueError(f"unknown Kubernetes kind {kind!r}; known: "
                         + ", ".join(sorted(RESOURCES))) from None
    if namespace is None:
        return f"{group}/{plural}"
    return f"{group}/namespaces/{namespace}/{plural}"


@dataclass(frozen=True, slots=True)
class ListPage:
    resource_version: str
    items: list[dict[str, Any]]
    continue_token: str | None
    # X-Kubernetes-PF-FlowSchema-UID / -PriorityLevel-UID: UIDs of objects in the
    # cluster's storage, sent on every answer of an APF-enabled server. A different
    # value after a reconnect means a different cluster store (restored, recreated).
    identity: str | None = None
    gc_hold: int | None = None  # a large page: pieces.release_gc(this) once handled


def _identity(headers: Any) -> str | None:
    fs = headers.get("X-Kubernetes-PF-FlowSchema-UID")
    pl = headers.get("X-Kubernetes-PF-PriorityLevel-UID")
    return f"{fs}/{pl}" if fs or pl else None


def is_large(data: bytes) -> bool:
    return len(data) >= PIECES_BYTES


async def decode(line: bytes) -> Any:
    """json.loads; a large line in pieces, so the loop never stalls long for it."""
    if is_large(line):
        return await pieces.run(pieces.loads_pieces(line.decode("utf-8")))
    return json.loads(line)


LIST_CONNECTIONS = 2  # lists, discovery and checks share these; watches have their own


class K8sApi:
    """The few calls we make: list (paged), watch from a version, API discovery.

    Two connection pools over one configuration (one set of credentials): lists
    (and discovery, checks) share `list_connections`; each watch has a connection
    of its own, in a pool that is not capped here because whoever opens watches
    bounds them (the hub: `WatchHub.max_watches`, or one per distinct (kind,
    labelSelector) past that). A watch is held for minutes, so a watch in a capped
    shared pool can starve lists: with more watches than the pool, new keys never
    got their first list (issue 15's cliff at 100 services, then at 8 watch groups).
    So the API server sees at most (watches) + `list_connections` connections.
    """

    def __init__(self, target: ApiTarget, *, list_connections: int = LIST_CONNECTIONS) -> None:
        self.target = target
        self.list_connections = list_connections
        self._clients: dict[bool, Any] = {}  # watch? -> kubernetes_asyncio ApiClient
        self._init_lock: asyncio.Lock | None = None
        self._cfg: Any = None
        self.identity: str | None = None  # the last one the server sent

    async def _client(self, watch: bool = False) -> Any:
        client = self._clients.get(watch)
        if client is None:
            if self._init_lock is None:
                self._init_lock = asyncio.Lock()
            async with self._init_lock:
                client = self._clients.get(watch)
                if client is None:
                    _, api_client_cls, _ = _light_client()
                    if self._cfg is None:
                        self._cfg = await _configuration(self.target)
                    # RESTClientObject reads the pool size from the configuration when
                    # it is built; 0 is aiohttp's "no limit".
                    self._cfg.connection_pool_maxsize = 0 if watch else self.list_connections
                    client = self._clients[watch] = api_client_cls(self._cfg)
        return client

    async def _get(self, path: str, query: list[tuple[str, Any]], timeout: Any,
                   watch: bool = False) -> Any:
        client = await self._client(watch)
        try:
            return await client.call_api(
                path, "GET", query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False,
                _request_timeout=timeout)
        except Exception as e:  # kubernetes_asyncio's ApiException for non-2xx
            status = getattr(e, "status", None)
            if isinstance(status, int) and status > 0:
                body = getattr(e, "body", b"") or b""
                raw = body.encode() if isinstance(body, str) else body
                raise ApiError(status, _message(raw), path) from None
            raise

    async def list_page(
        self, kind: str, namespace: str | None, *, field_selector: str | None = None,
        label_selector: str | None = None, limit: int | None = LIST_PAGE,
        continue_token: str | None = None, hold_gc: bool = False,
    ) -> ListPage:
        """One page. `hold_gc`: a large page keeps the collector off (`pieces.hold_gc`)
        until the caller releases `ListPage.gc_hold`."""
        path = collection_path(kind, namespace)
        query: list[tuple[str, Any]] = []
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if label_selector:
            query.append(("labelSelector", label_selector))
        if limit:
            query.append(("limit", limit))
        if continue_token:
            query.append(("continue", continue_token))
        resp = await self._get(path, query, (5, 30))
        raw = resp.aiohttp_response if hasattr(resp, "aiohttp_response") else resp
        try:
            body = await raw.read()
            url = str(raw.url)
            identity = _identity(raw.headers)
            if not 200 <= raw.status <= 299:
                raise ApiError(raw.status, _message(body), url)
        finally:
            raw.release()
        if identity is not None:
            self.identity = identity
        token = pieces.hold_gc() if hold_gc and is_large(body) else None
        try:
            data = await decode(body)
        except BaseException:
            if token is not None:
                pieces.release_gc(token)
            raise
        meta = data.get("metadata") or {}
        return ListPage(str(meta.get("resourceVersion", "")), data.get("items") or [],
                        meta.get("continue") or None, identity, token)

    async def list_all(
        self, kind: str, namespace: str | None, *, field_selector: str | None = None,
        label_selector: str | None = None, page: int | None = None,
    ) -> AsyncIterator[ListPage]:
        """Every page of a list; the resourceVersion to watch from is the first page's.
        A large page holds the collector off until the caller asks for the next one."""
        page = page or PAGE_OF.get(kind, LIST_PAGE)
        token: str | None = None
        while True:
            p = await self.list_page(kind, namespace, field_selector=field_selector,
                                     label_selector=label_selector, limit=page,
                                     continue_token=token, hold_gc=True)
            try:
                yield p
            finally:
                if p.gc_hold is not None:
                    pieces.release_gc(p.gc_hold)
            token = p.continue_token
            if not token:
                return

    async def list(
        self, kind: str, namespace: str, name: str, label_selector: str | None = None
    ) -> tuple[str, dict[str, Any] | None]:
        """(list resourceVersion, the named object or None when it does not exist)."""
        p = await self.list_page(kind, namespace, field_selector=f"metadata.name={name}",
                                 label_selector=label_selector, limit=None)
        return p.resource_version, (p.items[0] if p.items else None)

    async def watch(
        self,
        kind: str,
        namespace: str | None,
        name: str | None,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        on_open: Callable[[], None] | None = None,
        field_selector: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events (`{"type", "object"}`) until the server ends the stream.

        `on_open` runs once the server has accepted the watch (HTTP 2xx). BOOKMARK
        events are asked for (`allowWatchBookmarks`) and yielded like the others.
        An ERROR event raises ApiError with its code (410 when the version is too
        old); a broken connection raises the transport's exception.
        """
        query: list[tuple[str, Any]] = [
            ("watch", "true"), ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"), ("timeoutSeconds", timeout_seconds)]
        fields = [f for f in (f"metadata.name={name}" if name else None, field_selector) if f]
        if fields:
            query.append(("fieldSelector", ",".join(fields)))
        if label_selector:
            query.append(("labelSelector", label_selector))
        path = collection_path(kind, namespace)
        resp = await self._get(path, query, (5, timeout_seconds + 30), watch=True)
        raw = resp.aiohttp_response if hasattr(resp, "aiohttp_response") else resp
        url = str(raw.url)
        try:
            if not 200 <= raw.status <= 299:
                raise ApiError(raw.status, _message(await raw.read()), url)
            identity = _identity(raw.headers)
            if identity is not None:
                self.identity = identity
            if on_open is not None:
                on_open()
            lines = _Lines()
            reader = asyncio.get_running_loop().create_task(
                lines.fill(raw, url), name=f"k8s-watch-read {path}")
            try:
                while True:
                    item = await lines.next()
                    if item is None:
                        return
                    line, later = item
                    if is_large(line) and later:
                        meta = _superseded(line, later)
                        if meta is not None:
                            # A later event of this object is already here: it carries
                            # the whole object, so this one is not decoded (latest wins).
                            yield {"type": "MODIFIED", "object": {"metadata": meta},
                                   "superseded": True}
                            continue
                    # A large event holds the collector off until its consumer asks for
                    # the next one (it has applied this one by then).
                    hold = pieces.hold_gc() if is_large(line) else None
                    try:
                        event = await decode(line)
                        if event.get("type") == "ERROR":
                            obj = event.get("object") or {}
                            raise ApiError(int(obj.get("code", 500)),
                                           str(obj.get("message", "")), url)
                        yield event
                    finally:
                        if hold is not None:
                            pieces.release_gc(hold)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        finally:
            raw.close()

    async def has_resource(self, group_version: str, plural: str) -> bool:
        """API discovery: does the server serve `plural` in `group_version` (e.g.
        discovery.k8s.io/v1 endpointslices)? A 404 is no; other failures raise."""
        path = f"/apis/{group_version}" if "/" in group_version else f"/api/{group_version}"
        try:
            resp = await self._get(path, [], (5, 30))
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        raw = resp.aiohttp_response if hasattr(resp, "aiohttp_response") else resp
        try:
            body = await raw.read()
            if raw.status == 404:
                return False
            if not 200 <= raw.status <= 299:
                raise ApiError(raw.status, _message(body), str(raw.url))
        finally:
            raw.release()
        data = json.loads(body)
        return any(r.get("name") == plural for r in data.get("resources") or [])

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.close()


MAX_BUFFERED = 32 * 1024 * 1024  # bytes of lines read ahead of the consumer, at most
HEAD_BYTES = 64 * 1024  # where a watch line's object metadata is looked for


class _Lines:
    """A watch stream's complete lines, read ahead by a task of their own while the
    consumer decodes (up to MAX_BUFFERED bytes), so a consumer that falls behind sees
    what is already here and can skip events a later one supersedes."""

    def __init__(self) -> None:
        self.queue: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.done = False
        self.error: BaseException | None = None
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    async def fill(self, raw: Any, url: str) -> None:
        try:
            # A line's chunks are joined once it is complete (not `buf += chunk`: a
            # 1 MB event arrives in ~20 chunks, each would copy all before it).
            pending: list[bytes] = []
            size = 0
            async for chunk in raw.content.iter_chunked(READ_CHUNK):
                if b"\n" not in chunk:
                    pending.append(chunk)
                    size += len(chunk)
                    if size > MAX_EVENT_BYTES:
                        raise ValueError(f"{url}: a watch event over {MAX_EVENT_BYTES} bytes")
                    continue
                first, *lines, rest = chunk.split(b"\n")
                if pending:
                    pending.append(first)
                    first = b"".join(pending)
                lines.insert(0, first)
                pending = [rest] if rest else []
                size = len(rest)
                for line in lines:
                    if line.strip():
                        self.queue.append(line)
                        self.size += len(line)
                self.wake.set()
                while self.size > MAX_BUFFERED:
                    self.room.clear()
                    await self.room.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the consumer raises it after the lines before it
            self.error = e
        finally:
            self.done = True
            self.wake.set()

    async def next(self) -> tuple[bytes, list[bytes]] | None:
        """The next line and the lines already read after it; None at the stream's end."""
        while not self.queue:
            if self.done:
                if self.error is not None:
                    raise self.error
                return None
            self.wake.clear()
            await self.wake.wait()
        line = self.queue.popleft()
        self.size -= len(line)
        if self.size <= MAX_BUFFERED:
            self.room.set()
        return line, [x for x in self.queue if is_large(x)] if is_large(line) else []


def _superseded(line: bytes, later: list[bytes]) -> dict[str, Any] | None:
    """`line`'s object metadata if one of the `later` lines is the same object (so
    `line` need not be decoded), else None."""
    meta = pieces.peek_metadata(line[:HEAD_BYTES].decode("utf-8", "ignore"))
    if meta is None or not meta.get("name"):
        return None
    key = (meta.get("namespace"), meta.get("name"))
    for other in later:
        m = pieces.peek_metadata(other[:HEAD_BYTES].decode("utf-8", "ignore"))
        if m is not None and (m.get("namespace"), m.get("name")) == key:
            return meta
    return None


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        return str(data.get("message") or data)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
