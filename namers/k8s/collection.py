"""A watched collection: every object of one API-group resource (all namespaces or one).

`watch.py` follows single named objects (an Endpoints, a Service); the ingress
identifier needs every Ingress of the cluster. Same rules, kept by this loop:
list (which gives a resourceVersion), watch from it, `410 Gone` lists again, an
unreachable API server or a broken stream retries with `watch.Backoff` resuming
from the last version seen, and the last known objects stay published meanwhile.

`state` is a Var of `{(namespace, name): object}` in Linkerd's order (IngressCache:
the list's order, then an ADDED or MODIFIED object moves to the end). Before the first
list it is None. `versions` are group/versions tried in order: the first one the API
server serves (not 404) is kept, so `networking.k8s.io/v1` on a current cluster and
`extensions/v1beta1` on one from Linkerd's time both work.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from dtab.bounded import clip
from dtab.observable import Var
from namers.k8s.api import ApiTarget, _configuration
from namers.k8s.watch import Backoff

log = logging.getLogger("l5d.k8s")

Objects = dict[tuple[str, str], dict[str, Any]]
WATCH_TIMEOUT_S = 300


class _Gone(Exception):
    """The watch's resourceVersion is older than the server's history: list again."""


class _NotServed(Exception):
    """This group/version is not served by the API server (404)."""


class CollectionWatch:
    def __init__(
        self,
        target: ApiTarget,
        plural: str,
        versions: tuple[str, ...],
        namespace: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.target = target
        self.plural = plural
        self.versions = versions
        self.namespace = namespace
        self.backoff = backoff or Backoff()
        self.state: Var[Objects | None] = Var(None)
        self.version: str | None = None  # the group/version in use, once found
        self.resource_version: str | None = None
        self.lists = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._listed = asyncio.Event()
        self._api_client: Any = None
        self._custom: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def show(self) -> str:
        where = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        return f"{self.plural} ({where}) via {self.target.show}"

    # -- lifecycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"k8s-watch {self.plural}")

    async def wait_listed(self, timeout_s: float) -> bool:
        """True once the first list arrived (within `timeout_s`)."""
        try:
            await asyncio.wait_for(self._listed.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = self._custom = None

    # -- the loop
    async def _api(self) -> Any:
        if self._custom is None:
            from kubernetes_asyncio import client as k8s_client

            self._api_client = k8s_client.ApiClient(await _configuration(self.target))
            self._custom = k8s_client.CustomObjectsApi(self._api_client)
        return self._custom

    async def _call(self, version: str, **kwargs: Any) -> Any:
        api = await self._api()
        group, _, ver = version.rpartition("/")
        if self.namespace is None:
            return await api.list_cluster_custom_object(group, ver, self.plural,
                                                        _preload_content=False, **kwargs)
        return await api.list_namespaced_custom_object(group, ver, self.namespace, self.plural,
                                                       _preload_content=False, **kwargs)

    async def _list(self) -> None:
        for version in ([self.version] if self.version else self.versions):
            resp = await self._call(version, _request_timeout=(5, 30))
            try:
                body = await resp.read()
                if resp.status == 404 and self.version is None:
                    continue  # not served here: the next group/version
                if not 200 <= resp.status <= 299:
                    raise OSError(f"list of {self.plural} ({version}): HTTP {resp.status}: "
                                  f"{clip(body.decode('utf-8', 'replace'), 200)}")
            finally:
                resp.release()
            data = json.loads(body)
            self.version = version
            self.lists += 1
            self.resource_version = str((data.get("metadata") or {}).get("resourceVersion", ""))
            objs: Objects = {}
            for item in data.get("items") or []:
                objs[_key(item)] = item
            self.state.set(objs)
            self._listed.set()
            return
        raise _NotServed(f"the API server serves {self.plural} in none of "
                         + ", ".join(self.versions))

    async def _watch(self) -> None:
        assert self.version is not None and self.resource_version is not None
        resp = await self._call(self.version, watch=True, resource_version=self.resource_version,
                                allow_watch_bookmarks=True, timeout_seconds=WATCH_TIMEOUT_S,
                                _request_timeout=(5, WATCH_TIMEOUT_S + 30))
        try:
            if resp.status == 410:
                raise _Gone()
            if not 200 <= resp.status <= 299:
                raise OSError(f"watch of {self.plural}: HTTP {resp.status}")
            self._healthy()
            while True:
                line = await resp.content.readline()
                if not line:
                    return  # the server's timeout: resume from where we are
                if not line.strip():
                    continue
                event = json.loads(line)
                etype, obj = event.get("type"), event.get("object") or {}
                if etype == "ERROR":
                    if int(obj.get("code", 500)) == 410:
                        raise _Gone()
                    raise OSError(f"watch of {self.plural}: {clip(str(obj.get('message')))}")
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self.resource_version = str(rv)
                if etype in ("ADDED", "MODIFIED", "DELETED"):
                    objs = dict(self.state.value or {})
                    objs.pop(_key(obj), None)
                    if etype != "DELETED":
                        objs[_key(obj)] = obj  # Linkerd's IngressCache: to the end
                    self.state.set(objs)
        finally:
            resp.close()

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                    self._healthy()
                started = time.monotonic()
                await self._watch()
                if time.monotonic() - started < 1.0:
                    attempt += 1  # a stream that ended at once: do not spin
                    await asyncio.sleep(self.backoff.delay(attempt))
                else:
                    attempt = 0
            except asyncio.CancelledError:
                raise
            except _Gone:
                log.info("k8s: %s: resourceVersion too old; listing again", self.show)
                self.resource_version = None
            except Exception as e:  # an outage (or a 404 group): keep the last state, retry
                self.failures += 1
                self.last_error = clip(f"{type(e).__name__}: {e}")
                self.last_error_at = time.time()
                delay = self.backoff.delay(attempt)
                attempt += 1
                level = logging.WARNING if attempt == 1 or attempt % 20 == 0 else logging.DEBUG
                log.log(level, "k8s: %s failed (%d in a row): %s; retrying in %.2fs, keeping "
                        "the last known state", self.show, attempt, self.last_error, delay)
                await asyncio.sleep(delay)

    def _healthy(self) -> None:
        self.last_error = self.last_error_at = None


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "")
