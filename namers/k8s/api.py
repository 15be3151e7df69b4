"""How l5d-py reaches the Kubernetes API server (kubernetes_asyncio underneath).

Three ways, in the order a config picks them:
- `host`/`port` given: plain HTTP to a `kubectl proxy` (what Linkerd 1 configs
  say: `host: localhost, port: 8001`), no credentials;
- `kubeconfig` given: that file's current context;
- otherwise the in-cluster service account (KUBERNETES_SERVICE_HOST and the
  mounted token and CA), so no proxy sidecar is needed (reference §5 pain
  point 8). Outside a cluster with none of these we fall back to Linkerd's
  default `localhost:8001` and say so in the log.

Clients are created lazily on first use (so `l5d --validate` needs no cluster)
and kubernetes_asyncio is imported only then: its generated models cost about
45 MB of RSS, which a router without Kubernetes names should not pay. Clients
are shared per target: the namer and the transformers that talk to the same
API server share one connection pool and one `WatchHub`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes_asyncio import client as k8s_client

log = logging.getLogger("l5d.k8s")

DEFAULT_PROXY_HOST = "localhost"
DEFAULT_PROXY_PORT = 8001


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


async def _configuration(target: ApiTarget) -> k8s_client.Configuration:
    from kubernetes_asyncio import client as k8s_client
    from kubernetes_asyncio import config as k8s_config

    cfg = k8s_client.Configuration()
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


class K8sApi:
    """The few calls we make: list one named object, and watch it from a version.

    Responses are read raw (`_preload_content=False`) and parsed to dicts: we
    need three fields of an Endpoints object, not the generated models, and
    a watch is a stream we read line by line.
    """

    def __init__(self, target: ApiTarget) -> None:
        self.target = target
        self._api_client: k8s_client.ApiClient | None = None
        self._core: k8s_client.CoreV1Api | None = None

    async def _v1(self) -> k8s_client.CoreV1Api:
        if self._core is None:
            from kubernetes_asyncio import client as k8s_client

            cfg = await _configuration(self.target)
            self._api_client = k8s_client.ApiClient(cfg)
            self._core = k8s_client.CoreV1Api(self._api_client)
        return self._core

    def _list_fn(self, v1: k8s_client.CoreV1Api, kind: str) -> Any:
        fns = {
            "endpoints": v1.list_namespaced_endpoints,
            "services": v1.list_namespaced_service,
            "pods": v1.list_namespaced_pod,
        }
        return fns[kind]

    async def list(
        self, kind: str, namespace: str, name: str, label_selector: str | None = None
    ) -> tuple[str, dict[str, Any] | None]:
        """(list resourceVersion, the object or None when it does not exist)."""
        v1 = await self._v1()
        kwargs: dict[str, Any] = {"field_selector": f"metadata.name={name}"}
        if label_selector:
            kwargs["label_selector"] = label_selector
        resp = await self._list_fn(v1, kind)(
            namespace, _preload_content=False, _request_timeout=(5, 30), **kwargs
        )
        try:
            body = await resp.read()
            url = str(resp.url)
            if not 200 <= resp.status <= 299:
                raise ApiError(resp.status, _message(body), url)
        finally:
            resp.release()
        data = json.loads(body)
        items = data.get("items") or []
        rv = str(data.get("metadata", {}).get("resourceVersion", ""))
        return rv, (items[0] if items else None)

    async def watch(
        self,
        kind: str,
        namespace: str,
        name: str,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield watch events (`{"type", "object"}`) until the server ends the stream.

        `on_open` runs once the server has accepted the watch (HTTP 2xx).

        An ERROR event raises ApiError with its code (410 when the version is
        too old); a broken connection raises the transport's exception.
        """
        v1 = await self._v1()
        kwargs: dict[str, Any] = {
            "field_selector": f"metadata.name={name}",
            "watch": True,
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_seconds,
        }
        if label_selector:
            kwargs["label_selector"] = label_selector
        resp = await self._list_fn(v1, kind)(
            namespace,
            _preload_content=False,
            _request_timeout=(5, timeout_seconds + 30),
            **kwargs,
        )
        url = str(resp.url)
        try:
            if not 200 <= resp.status <= 299:
                raise ApiError(resp.status, _message(await resp.read()), url)
            if on_open is not None:
                on_open()
            while True:
                line = await resp.content.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    obj = event.get("object") or {}
                    raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "")), url)
                yield event
        finally:
            resp.close()

    async def close(self) -> None:
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None
            self._core = None


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
        return str(data.get("message") or data)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
