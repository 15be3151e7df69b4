"""Interpreters that keep the dtab outside the config: `io.l5d.fs` and `io.l5d.k8s.configMap`.

Both bind names with the router's configured namers (as the default interpreter does)
but take a base dtab from a place that changes while the router runs: a file
(`dtabFile`, e.g. a ConfigMap mount) or one key of a ConfigMap watched through the
Kubernetes API (kubernetes_asyncio, list + watch from the list's resourceVersion, 410
Gone lists again). As in Linkerd's ConfiguredDtabNamer the watched dtab comes first and
the router's own `dtab` after it, so the router's entries win.

A watched dtab that stops parsing (or disappears) never takes routing down: the last
good dtab keeps serving, the error is logged and shown in the interpreter's state
(`/<router>/interpreter_state/<kind>/dtab.json`) until a good one arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from dtab.bounded import LogLimiter, clip
from dtab.dtab import Dtab
from dtab.errors import DtabParseError
from dtab.observable import Var
from router.tls.context import file_identity

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 10.0)

FS = "io.l5d.fs"
CONFIG_MAP = "io.l5d.k8s.configMap"
KINDS = (FS, CONFIG_MAP)
POLL_S = 0.25  # a changed dtab file is in use within this (plus a read)
FIRST_LOAD_TIMEOUT_S = 5.0


def interpreter_params(obj: Any, kind: str) -> dict[str, Any]:
    """This interpreter's keys, checked (`obj` is router.config's cursor: file:line errors).
    An fs dtab file must exist and parse when the config is loaded."""
    if kind == FS:
        path = obj.str("dtabFile", required=True)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise obj.err("dtabFile", f"cannot read dtab file {path}: {e.strerror}",
                          "a readable file holding a dtab") from None
        try:
            Dtab.read(text)
        except DtabParseError as e:
            raise obj.err("dtabFile", f"dtab file {path}: {e}", "a valid dtab") from None
        return {"dtabFile": path}
    if not obj.bool("experimental", False):
        raise obj.err("experimental", f"{kind} is experimental (as in Linkerd): set "
                      "experimental: true to use it", "experimental: true")
    return {
        "name": obj.str("name", required=True),
        "filename": obj.str("filename", required=True),
        "host": obj.str("host", "localhost"),
        "port": obj.int("port", 8001, lo=1, hi=65535),
        "namespace": obj.str("namespace", "default"),
    }


def build_source(kind: str, params: Any, label: str) -> DtabSource:
    p = dict(params)
    if kind == FS:
        return FsDtabSource(p["dtabFile"], label)
    return ConfigMapDtabSource(p["host"], int(p["port"]), p["namespace"], p["name"],
                               p["filename"], label)


class DtabSource:
    """A dtab that changes: `dtab` (a Var), `start()`, `close()`, `state_json()`."""

    kind = ""

    def __init__(self, label: str, where: str) -> None:
        self.label = label
        self.where = where  # the file, or namespace/name/key, for people
        self.dtab: Var[Dtab] = Var(Dtab.empty())
        self.updates = 0
        self.errors = 0
        self.last_update: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    def _good(self, text: str) -> None:
        try:
            dtab = Dtab.read(text)
        except DtabParseError as e:
            self._bad(f"invalid dtab: {e}")
            return
        self.last_error = None
        if dtab != self.dtab.value or self.last_update is None:
            self.updates += 1
            self.last_update = time.time()
            log.info("router %s: %s dtab from %s is now %s", self.label, self.kind, self.where,
                     clip(dtab.show))
        self.dtab.set(dtab)
        self._first.set()

    def _bad(self, problem: str) -> None:
        self.errors += 1
        self.last_error = clip(problem)
        self.last_error_at = time.time()
        _limited.log(logging.ERROR, (self.label, self.where),
                     "router %s: %s dtab from %s: %s; still using the last good dtab %s",
                     self.label, self.kind, self.where, self.last_error,
                     clip(self.dtab.value.show))
        self._first.set()

    async def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._run())
            self.task.add_done_callback(self._ended)
        try:
            await asyncio.wait_for(self._first.wait(), FIRST_LOAD_TIMEOUT_S)
        except TimeoutError:
            log.error("router %s: no dtab from %s within %g s; serving with %s until it "
                      "arrives", self.label, self.where, FIRST_LOAD_TIMEOUT_S,
                      self.dtab.value.show or "the router's dtab alone")

    async def _run(self) -> None:
        raise NotImplementedError

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("router %s: following the dtab in %s stopped: %r; the last good dtab "
                      "stays", self.label, self.where, task.exception())

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    def state_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "source": self.where, "dtab": self.dtab.value.show,
                "updates": self.updates, "errors": self.errors, "lastUpdate": self.last_update,
                "error": self.last_error, "errorAt": self.last_error_at}


class FsDtabSource(DtabSource):
    """`io.l5d.fs`: the dtab in `dtabFile`, re-read when the file (or the `..data` symlink
    a ConfigMap mount swaps) changes."""

    kind = FS

    def __init__(self, path: str, label: str) -> None:
        super().__init__(label, path)
        self.path = path
        self._identity = file_identity((path,))
        self._read()

    def _read(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            self._bad(f"cannot read: {e.strerror}")
            return
        self._good(text)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            ident = file_identity((self.path,))
            if ident != self._identity:
                self._identity = ident
                self._read()


class ConfigMapDtabSource(DtabSource):
    """`io.l5d.k8s.configMap`: the dtab in key `filename` of ConfigMap `namespace/name`."""

    kind = CONFIG_MAP

    def __init__(self, host: str, port: int, namespace: str, name: str, filename: str,
                 label: str) -> None:
        super().__init__(label, f"ConfigMap {namespace}/{name} key {filename}")
        self.host, self.port = host, port
        self.namespace, self.name, self.filename = namespace, name, filename
        self.resource_version = ""
        self.watches = 0

    def _apply(self, obj: dict[str, Any] | None) -> None:
        if obj is None:
            self._bad("the ConfigMap does not exist")
            return
        data = obj.get("data") or {}
        text = data.get(self.filename)
        if not isinstance(text, str):
            self._bad(f"the ConfigMap has no key {self.filename!r} "
                      f"(keys: {', '.join(sorted(data)) or 'none'})")
            return
        self._good(text)

    async def _run(self) -> None:
        from namers.k8s.api import ApiError, ApiTarget, K8sApi

        api = K8sApi(ApiTarget(host=self.host, port=self.port))
        backoff = 0.25
        relist = True
        try:
            while True:
                try:
                    if relist:
                        rv, obj = await api.list("configmaps", self.namespace, self.name)
                        self.resource_version = rv
                        self._apply(obj)
                        relist = False
                    self.watches += 1
                    async for ev in api.watch("configmaps", self.namespace, self.name,
                                              self.resource_version):
                        backoff = 0.25
                        obj = ev.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion")
                        if rv:
                            self.resource_version = str(rv)
                        if ev.get("type") in ("ADDED", "MODIFIED"):
                            self._apply(obj)
                        elif ev.get("type") == "DELETED":
                            self._apply(None)
                except asyncio.CancelledError:
                    raise
                except ApiError as e:
                    if e.status == 410:  # our version is compacted away: list again
                        relist = True
                        continue
                    self._bad(f"Kubernetes API: {e}")
                    relist = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                except Exception as e:  # the API server went away: keep the last good dtab
                    self._bad(f"Kubernetes API at http://{self.host}:{self.port}: "
                              f"{type(e).__name__}: {e}")
                    relist = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            await api.close()

    def state_json(self) -> dict[str, Any]:
        out = super().state_json()
        out["resourceVersion"] = self.resource_version
        out["watches"] = self.watches
        return out
