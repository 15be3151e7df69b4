"""JSON shapes that cross the namerd wire: dtabs, addresses and bound trees (pure).

namerd's httpController and the router's `io.l5d.namerd.http` interpreter both
speak these, so they live here rather than in either package (the router
must not import namerd). Shapes are Linkerd's (reference §1.14 and §4.1):
- a dtab is `[{"prefix": "/svc", "dst": "/#/io.l5d.fs"}, ...]`;
- an addr is `{"type": "bound", "addrs": [{"ip", "port", "meta"}], "meta": {}}`
  or `{"type": "neg" | "pending"}` or `{"type": "failed", "cause": ...}`;
- a bound tree is the delegate-tree codec with no `path`: `leaf` nodes carry
  `"bound": {"addr", "id", "path"}`, `union` members `{"weight", "tree"}`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from dtab.addr import (
    ADDR_NEG,
    ADDR_PENDING,
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    BoundName,
)
from dtab.dtab import Dentry, Dtab
from dtab.nametree import (
    Alt,
    Empty,
    EmptyTree,
    Fail,
    FailTree,
    Leaf,
    NameTree,
    Neg,
    NegTree,
    Weighted,
)
from dtab.nametree import Union as UnionTree
from dtab.observable import Var
from dtab.path import Path


class CodecError(ValueError):
    """A JSON document that is not the shape namerd speaks; says which part."""


# -- dtabs


def dtab_to_json(dtab: Dtab) -> list[dict[str, str]]:
    return [{"prefix": d.prefix.show, "dst": d.dst.show} for d in dtab.dentries]


def dtab_from_json(data: Any) -> Dtab:
    """`[{"prefix", "dst"}]` -> Dtab; a bad entry is a CodecError naming its index."""
    if not isinstance(data, list):
        raise CodecError("a dtab in JSON is a list of {\"prefix\", \"dst\"} objects")
    dentries = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("prefix"), str) \
                or not isinstance(item.get("dst"), str):
            raise CodecError(f"dentry {i}: expected {{\"prefix\": str, \"dst\": str}}")
        try:
            dentries.append(Dentry.read(f"{item['prefix']}=>{item['dst']}"))
        except ValueError as e:
            raise CodecError(f"dentry {i}: {e}") from None
    return Dtab(tuple(dentries))


# -- addresses


def addr_to_json(addr: Addr) -> dict[str, Any]:
    return addr.to_json()


def addr_from_json(data: Any) -> Addr:
    if not isinstance(data, dict):
        raise CodecError("an addr is a JSON object with a \"type\"")
    kind = data.get("type")
    if kind == "bound":
        out = []
        for a in data.get("addrs") or []:
            if not isinstance(a, dict) or not isinstance(a.get("port"), int):
                raise CodecError(f"bad address {a!r}")
            meta = dict(a.get("meta") or {})
            weight = float(meta.get("endpoint_addr_weight", 1.0))
            out.append(Address(str(a.get("ip")), a["port"], weight, MappingProxyType(meta)))
        return AddrBound(frozenset(out), MappingProxyType(dict(data.get("meta") or {})))
    if kind == "neg":
        return ADDR_NEG
    if kind == "pending":
        return ADDR_PENDING
    if kind == "failed":
        return AddrFailed(str(data.get("cause", "")))
    raise CodecError(f"unknown addr type {kind!r}")


# -- bound trees


def bound_tree_to_json(tree: NameTree[Any], *, reasons: bool = False) -> dict[str, Any]:
    """A bound tree as namerd's /api/1/bind answers it (no `path` on nodes). `reasons`
    adds a Neg's `reason` (for people: the 502 text), which namerd's wire leaves out."""
    if isinstance(tree, Leaf):
        value = tree.value
        if isinstance(value, BoundName):
            return {"type": "leaf", "bound": value.to_json()}
        return {"type": "leaf", "bound": {"addr": {"type": "neg"}, "id": str(value), "path": "/"}}
    if isinstance(tree, Alt):
        return {"type": "alt", "alt": [bound_tree_to_json(t, reasons=reasons)
                                       for t in tree.trees]}
    if isinstance(tree, UnionTree):
        return {"type": "union",
                "union": [{"weight": w.weight, "tree": bound_tree_to_json(w.tree, reasons=reasons)}
                          for w in tree.weighted]}
    if isinstance(tree, NegTree):
        if reasons and tree.reason:
            return {"type": "neg", "reason": tree.reason}
        return {"type": "neg"}
    if isinstance(tree, FailTree):
        return {"type": "fail"}
    if isinstance(tree, EmptyTree):
        return {"type": "empty"}
    raise CodecError(f"not a bound tree: {tree!r}")


AddrVarFor = Callable[[Path, Addr], Var[Addr]]


def bound_tree_from_json(data: Any, addr_var: AddrVarFor) -> NameTree[BoundName]:
    """The inverse of `bound_tree_to_json`; `addr_var(id, addr_now)` supplies each leaf's
    address Var (the interpreter keeps one per id, fed by an addr watch)."""
    if not isinstance(data, dict):
        raise CodecError("a bound tree node is a JSON object with a \"type\"")
    kind = data.get("type")
    if kind == "leaf":
        bound = data.get("bound")
        if not isinstance(bound, dict) or not isinstance(bound.get("id"), str):
            raise CodecError("a leaf needs \"bound\": {\"id\", \"addr\", \"path\"}")
        try:
            ident = Path.read(bound["id"])
            residual = Path.read(bound.get("path") or "/")
        except ValueError as e:
            raise CodecError(f"leaf id: {e}") from None
        addr = addr_from_json(bound.get("addr") or {"type": "pending"})
        return Leaf(BoundName(ident, addr_var(ident, addr), residual))
    if kind == "alt":
        return Alt(tuple(bound_tree_from_json(t, addr_var) for t in data.get("alt") or []))
    if kind == "union":
        members = []
        for w in data.get("union") or []:
            if not isinstance(w, dict):
                raise CodecError("a union member is {\"weight\", \"tree\"}")
            members.append(Weighted(float(w.get("weight", 1.0)),
                                    bound_tree_from_json(w.get("tree"), addr_var)))
        return UnionTree(tuple(members))
    if kind == "neg":
        reason = data.get("reason")
        return Neg.because(reason) if isinstance(reason, str) and reason else Neg
    if kind == "fail":
        return Fail
    if kind == "empty":
        return Empty
    raise CodecError(f"unknown bound tree node type {kind!r}")

