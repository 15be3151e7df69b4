"""Addresses and bound names: what a namer hands back once a path is resolved.

`Addr` mirrors Finagle's `Addr` (Bound / Neg / Pending / Failed). A `BoundName`
is Finagle's `Name.Bound`: a stable id (the client id, e.g.
`/#/io.l5d.fs/world`), a `Var[Addr]` that follows the endpoints, and the
residual path the namer did not consume. Equality is by id and residual so a
bound tree compares equal across re-binds while its addresses move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dtab.observable import Var
from dtab.path import Path

_EMPTY_META: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Address:
    """One endpoint. `meta` carries e.g. `nodeName`; it does not take part in hashing."""

    host: str
    port: int
    weight: float = 1.0
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_META, hash=False)

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def with_endpoint(self, host: str, port: int) -> Address:
        return Address(host, port, self.weight, self.meta)

    def to_json(self) -> dict[str, Any]:
        meta = dict(self.meta)
        if self.weight != 1.0:
            meta.setdefault("endpoint_addr_weight", self.weight)
        return {"ip": self.host, "port": self.port, "meta": meta}


@dataclass(frozen=True, slots=True)
class AddrBound:
    addresses: frozenset[Address]
    meta: Mapping[str, Any] = field(default_factory=lambda: _EMPTY_META, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        addrs = sorted(self.addresses, key=lambda a: (a.host, a.port))
        return {"type": "bound", "addrs": [a.to_json() for a in addrs], "meta": dict(self.meta)}


@dataclass(frozen=True, slots=True)
class AddrNeg:
    """Resolves to nothing. `reason` is for people (delegator, 502 text), not equality."""

    reason: str = field(default="", compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"type": "neg"}


@dataclass(frozen=True, slots=True)
class AddrPending:
    def to_json(self) -> dict[str, Any]:
        return {"type": "pending"}


@dataclass(frozen=True, slots=True)
class AddrFailed:
    cause: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "failed", "cause": self.cause}


Addr = AddrBound | AddrNeg | AddrPending | AddrFailed
ADDR_PENDING = AddrPending()
ADDR_NEG = AddrNeg()


def bound(*addresses: Address) -> AddrBound:
    return AddrBound(frozenset(addresses))


@dataclass(frozen=True, slots=True)
class BoundName:
    """Finagle's Name.Bound: `id` names the client; `addr` follows the endpoints."""

    id: Path
    addr: Var[Addr] = field(compare=False, hash=False, repr=False)
    residual: Path = field(default_factory=lambda: Path.empty())

    def to_json(self) -> dict[str, Any]:
        return {"addr": self.addr.value.to_json(), "id": self.id.show, "path": self.residual.show}
