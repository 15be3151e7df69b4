"""`io.l5d.k8s` storage: dtabs as `DTab` custom resources (`dtabs.l5d.io/v1alpha1`).

Kubernetes is the distributed store: every namerd replica lists and watches
the same resources, so a write through one reaches the others through their
watches. The resourceVersion is the dtab's version (its UTF-8 bytes; the
ETag is their base64, as Linkerd's K8sDtabStore has it), and optimistic
concurrency is the API server's: a replace carrying a stale resourceVersion
is a 409 from the API server and `VersionMismatch` (412) here — no lost
update, whichever replica the writers went through.

The object is Linkerd's shape: `{"apiVersion": "l5d.io/v1alpha1", "kind":
"DTab", "metadata": {"name": <namespace>, ...}, "dentries": [{"prefix",
"dst"}]}`. Unlike Linkerd, a write's answer is applied at once (read your
writes), and the watch resumes from the last version it saw, listing again on
410 Gone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dtab.dtab import Dtab
from dtab.errors import ParamError
from dtab.json_codec import CodecError, dtab_from_json, dtab_to_json
from dtab.observable import Var
from namerd.store import (
    NamespaceExists,
    NamespaceMissing,
    State,
    StoreError,
    VersionedDtab,
    VersionMismatch,
    state_json,
)
from namers.k8s.api import ApiTarget, _configuration

log = logging.getLogger("namerd.k8s")

GROUP = "l5d.io"
VERSION = "v1alpha1"
PLURAL = "dtabs"
KIND = "DTab"
WATCH_TIMEOUT_S = 300
RETRY_MIN_S = 0.1
RETRY_MAX_S = 10.0


def _rv_key(rv: str) -> tuple[int, str]:
    """Order resourceVersions: numeric ones as numbers (what etcd gives), else as text."""
    return (int(rv), "") if rv.isdigit() else (-1, rv)


class K8sDtabStore:
    kind = "io.l5d.k8s"

    def __init__(self, target: ApiTarget, namespace: str = "default") -> None:
        self.target = target
        self.namespace = namespace
        self.state: Var[State] = Var(MappingProxyType({}))
        self.synced = False
        self.watch_state: dict[str, Any] = {"lists": 0, "watches": 0, "gone": 0,
                                            "errors": 0, "last_error": None,
                                            "resourceVersion": None}
        self._api_client: Any = None
        self._custom: Any = None
        self._task: asyncio.Task[None] | None = None
        self._first_sync = asyncio.Event()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> K8sDtabStore:
        host = params.get("host")
        port = params.get("port")
        if host is not None and not isinstance(host, str):
            raise ParamError("host", "expected a host name")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 < port < 65536):
            raise ParamError("port", "expected a port number (1-65535)")
        ns = params.get("namespace", "default")
        if not isinstance(ns, str) or not ns:
            raise ParamError("namespace", "expected a Kubernetes namespace name")
        kubeconfig = params.get("kubeconfig")
        if kubeconfig is not None and not isinstance(kubeconfig, str):
            raise ParamError("kubeconfig", "expected a file path")
        # neither host/port nor kubeconfig: the in-cluster service account (as the namer)
        return cls(ApiTarget(host, port, kubeconfig), ns)

    # -- lifecycle
    async def _api(self) -> Any:
        if self._custom is None:
            from kubernetes_asyncio import client as k8s_client

            cfg = await _configuration(self.target)
            self._api_client = k8s_client.ApiClient(cfg)
            self._custom = k8s_client.CustomObjectsApi(self._api_client)
        return self._custom

    async def start(self, wait_s: float = 5.0) -> None:
        """Start following the resources; wait (bounded) for the first list."""
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="namerd k8s")
        try:
            await asyncio.wait_for(self._first_sync.wait(), wait_s)
        except TimeoutError:
            log.error("k8s storage: no dtab list from %s within %.0fs; serving 503 until it "
                      "answers (%s)", self.target.show, wait_s, self.watch_state["last_error"])

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None
            self._custom = None

    # -- following
    async def _follow(self) -> None:
        delay = RETRY_MIN_S
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._list()
                    delay = RETRY_MIN_S
                rv = await self._watch(rv)
                delay = RETRY_MIN_S  # the watch ran and ended cleanly
            except asyncio.CancelledError:
                raise
            except _Gone:
                self.watch_state["gone"] += 1
                rv = None  # compacted history: list again
            except Exception as e:
                self.watch_state["errors"] += 1
                self.watch_state["last_error"] = f"{type(e).__name__}: {e}"[:500]
                log.warning("k8s storage: %s (retrying in %.1fs)",
                            self.watch_state["last_error"], delay)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, RETRY_MAX_S)
                # a broken watch resumes from the last version seen (410 then lists again)

    async def _list(self) -> str:
        api = await self._api()
        data = await api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, _request_timeout=(5, 30))
        self.watch_state["lists"] += 1
        new: dict[str, VersionedDtab] = {}
        for item in data.get("items") or []:
            entry = self._entry(item)
            if entry is not None:
                new[entry[0]] = entry[1]
        self.state.set(MappingProxyType(new))
        rv = str(data.get("metadata", {}).get("resourceVersion", ""))
        self.watch_state["resourceVersion"] = rv
        self.synced = True
        self._first_sync.set()
        return rv

    async def _watch(self, rv: str) -> str:
        api = await self._api()
        resp = await api.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, watch=True, resource_version=rv,
            allow_watch_bookmarks=True, timeout_seconds=WATCH_TIMEOUT_S,
            _preload_content=False, _request_timeout=(5, WATCH_TIMEOUT_S + 30))
        self.watch_state["watches"] += 1
        try:
            if resp.status == 410:
                raise _Gone()
            if not 200 <= resp.status <= 299:
                raise StoreError(f"watch of {PLURAL}: HTTP {resp.status}")
            while True:
                line = await resp.content.readline()
                if not line:
                    return rv  # the server ended the watch: resume from where we are
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if int(obj.get("code", 500)) == 410:
                        raise _Gone()
                    raise StoreError(f"watch of {PLURAL}: {obj.get('message', obj)}")
                rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                self.watch_state["resourceVersion"] = rv
                if kind in ("ADDED", "MODIFIED"):
                    self._apply(obj)
                elif kind == "DELETED":
                    self._remove(obj)
        finally:
            resp.close()

    def _entry(self, obj: Mapping[str, Any]) -> tuple[str, VersionedDtab] | None:
        meta = obj.get("metadata") or {}
        name, rv = meta.get("name"), meta.get("resourceVersion")
        if not isinstance(name, str) or rv is None:
            log.error("k8s storage: a DTab without name or resourceVersion: %.200s", obj)
            return None
        try:
            dtab = dtab_from_json(obj.get("dentries") or [])
        except CodecError as e:
            log.error("k8s storage: DTab %s has a bad dentries list (%s); ignoring it", name, e)
            return None
        return name, VersionedDtab(dtab, str(rv).encode())

    def _apply(self, obj: Mapping[str, Any]) -> None:
        entry = self._entry(obj)
        if entry is None:
            return
        name, vd = entry
        cur = self.state.value.get(name)
        if cur is not None and _rv_key(cur.version.decode()) >= _rv_key(vd.version.decode()):
            return  # our own write's answer got here first, or an older event
        new = dict(self.state.value)
        new[name] = vd
        self.state.set(MappingProxyType(new))

    def _remove(self, obj: Mapping[str, Any]) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if isinstance(name, str) and name in self.state.value:
            new = dict(self.state.value)
            del new[name]
            self.state.set(MappingProxyType(new))

    # -- writes
    def _object(self, ns: str, dtab: Dtab, rv: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": ns, "namespace": self.namespace}
        if rv is not None:
            meta["resourceVersion"] = rv
        return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta,
                "dentries": dtab_to_json(dtab)}

    def _check_synced(self) -> None:
        if not self.synced:
            raise StoreError(f"k8s storage has not listed dtabs from {self.target.show} yet: "
                             f"{self.watch_state['last_error']}")

    async def create(self, ns: str, dtab: Dtab) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        api = await self._api()
        try:
            obj = await api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self._object(ns, dtab),
                _request_timeout=(5, 30))
        except ApiException as e:
            if e.status == 409:
                raise NamespaceExists(ns) from None
            raise StoreError(f"creating DTab {ns}: HTTP {e.status} {e.reason}") from None
        self._apply(obj)

    async def update(self, ns: str, dtab: Dtab, version: bytes) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            rv = version.decode("utf-8")
        except UnicodeDecodeError:
            raise VersionMismatch(ns) from None
        api = await self._api()
        try:
            obj = await api.replace_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, ns, self._object(ns, dtab, rv),
                _request_timeout=(5, 30))
        except ApiException as e:
            if e.status == 409:
                raise VersionMismatch(ns) from None
            if e.status == 404:
                raise NamespaceMissing(ns) from None
            raise StoreError(f"replacing DTab {ns}: HTTP {e.status} {e.reason}") from None
        self._apply(obj)

    async def put(self, ns: str, dtab: Dtab) -> None:
        """Replace at the current version, or create; a race with another writer is a
        VersionMismatch the caller retries (as Linkerd's K8sDtabStore.put)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        api = await self._api()
        try:
            cur = await api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, ns, _request_timeout=(5, 30))
        except ApiException as e:
            if e.status == 404:
                await self.create(ns, dtab)
                return
            raise StoreError(f"reading DTab {ns}: HTTP {e.status} {e.reason}") from None
        rv = str((cur.get("metadata") or {}).get("resourceVersion", ""))
        try:
            await self.update(ns, dtab, rv.encode())
        except NamespaceMissing:
            await self.create(ns, dtab)

    async def delete(self, ns: str) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        api = await self._api()
        try:
            await api.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, ns, _request_timeout=(5, 30))
        except ApiException as e:
            if e.status == 404:
                raise NamespaceMissing(ns) from None
            raise StoreError(f"deleting DTab {ns}: HTTP {e.status} {e.reason}") from None
        self._remove({"metadata": {"name": ns}})

    def state_json(self) -> dict[str, Any]:
        return {"state": state_json(self.state.value), "synced": self.synced,
                "target": self.target.show, "namespace": self.namespace,
                "watch": dict(self.watch_state)}


class _Gone(Exception):
    """410: the watch's version was compacted away."""
