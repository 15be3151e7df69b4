"""Dtab storage: namespaces of versioned dtabs, observed live, written with versions.

Linkerd's `DtabStore`: `list`, `observe(ns)`, `create`, `update(ns, dtab,
version)` (compare-and-set: a stale version is `VersionMismatch`, the 412 of
the REST API), `put` (unconditional), `delete`. Every store keeps its whole
state in one `Var` of `{namespace: VersionedDtab}` so the interfaces (REST
watches, the interpreters namerd binds with) follow changes by observing it,
whichever replica wrote them.

A version is opaque bytes: an 8-byte big-endian counter in memory (v1 is
`AAAAAAAAAAE=` as an ETag), the resourceVersion's UTF-8 in Kubernetes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from dtab.dtab import Dtab
from dtab.errors import ParamError
from dtab.observable import Var


@dataclass(frozen=True, slots=True)
class VersionedDtab:
    dtab: Dtab
    version: bytes

    @property
    def etag(self) -> str:
        return version_string(self.version)


def version_string(version: bytes) -> str:
    """The ETag of a version (Linkerd's `DtabStore.versionString`: base64)."""
    return base64.b64encode(version).decode("ascii")


def parse_version(etag: str) -> bytes | None:
    """An If-Match value back to version bytes; None when it is not base64."""
    text = etag.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':  # a quoted ETag is still that ETag
        text = text[1:-1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


class StoreError(Exception):
    """A storage failure other than the three a caller can act on (500 in the API)."""


class NamespaceExists(StoreError):
    def __init__(self, ns: str) -> None:
        super().__init__(f"dtab namespace {ns!r} already exists")
        self.ns = ns


class NamespaceMissing(StoreError):
    def __init__(self, ns: str) -> None:
        super().__init__(f"dtab namespace {ns!r} does not exist")
        self.ns = ns


class VersionMismatch(StoreError):
    def __init__(self, ns: str) -> None:
        super().__init__(f"dtab namespace {ns!r} has changed since the version given "
                         "(read it again and retry)")
        self.ns = ns


State = Mapping[str, VersionedDtab]
_EMPTY: State = MappingProxyType({})


class DtabStore(Protocol):
    kind: str
    #: `{ns: VersionedDtab}`, replaced (never mutated) on every change.
    state: Var[State]

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def create(self, ns: str, dtab: Dtab) -> None: ...
    async def update(self, ns: str, dtab: Dtab, version: bytes) -> None: ...
    async def put(self, ns: str, dtab: Dtab) -> None: ...
    async def delete(self, ns: str) -> None: ...
    def state_json(self) -> dict[str, Any]: ...


def state_json(state: State) -> dict[str, Any]:
    return {ns: {"version": v.etag, "dtab": v.dtab.show} for ns, v in sorted(state.items())}


class InMemoryDtabStore:
    """`io.l5d.inMemory`: not shared, not durable; seeded from `namespaces:`."""

    kind = "io.l5d.inMemory"

    def __init__(self, namespaces: Mapping[str, Dtab] | None = None) -> None:
        self._counter = 0
        init = {ns: VersionedDtab(d, self._next()) for ns, d in (namespaces or {}).items()}
        self.state: Var[State] = Var(MappingProxyType(init) if init else _EMPTY)

    def _next(self) -> bytes:
        self._counter += 1
        return self._counter.to_bytes(8, "big")

    def _set(self, ns: str, dtab: Dtab | None) -> None:
        new = dict(self.state.value)
        if dtab is None:
            del new[ns]
        else:
            new[ns] = VersionedDtab(dtab, self._next())
        self.state.set(MappingProxyType(new))

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(self, ns: str, dtab: Dtab) -> None:
        if ns in self.state.value:
            raise NamespaceExists(ns)
        self._set(ns, dtab)

    async def update(self, ns: str, dtab: Dtab, version: bytes) -> None:
        cur = self.state.value.get(ns)
        if cur is None:
            raise NamespaceMissing(ns)
        if cur.version != version:
            raise VersionMismatch(ns)
        self._set(ns, dtab)

    async def put(self, ns: str, dtab: Dtab) -> None:
        self._set(ns, dtab)

    async def delete(self, ns: str) -> None:
        if ns not in self.state.value:
            raise NamespaceMissing(ns)
        self._set(ns, None)

    def state_json(self) -> dict[str, Any]:
        return {"state": state_json(self.state.value)}


def build_store(kind: str, params: Mapping[str, Any]) -> DtabStore:
    """A store from its config entry; a bad parameter is a ParamError naming the key."""
    if kind == "io.l5d.inMemory":
        spaces = params.get("namespaces") or {}
        if not isinstance(spaces, Mapping):
            raise ParamError("namespaces", "expected a mapping of namespace: dtab")
        seeded = {}
        for ns, text in spaces.items():
            if not isinstance(text, str):
                raise ParamError("namespaces", f"{ns}: expected a dtab string")
            try:
                seeded[str(ns)] = Dtab.read(text)
            except ValueError as e:
                raise ParamError("namespaces", f"{ns}: invalid dtab: {e}") from None
        return InMemoryDtabStore(seeded)
    if kind == "io.l5d.k8s":
        from namerd.k8s_store import K8sDtabStore

        return K8sDtabStore.from_params(params)
    raise ParamError("kind", f"unknown storage kind {kind!r}")


STORAGE_KINDS = ("io.l5d.inMemory", "io.l5d.k8s")
