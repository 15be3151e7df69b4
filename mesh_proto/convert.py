"""`dtab/` values <-> `io.linkerd.mesh` messages, as Linkerd's mesh `Converters` and the
interpreter/resolver services map them (pure: no I/O).

- A Path is its labels as bytes; a Dtab's prefix elements are labels or `*`.
- A bound leaf carries only `id` and `residual`: its addresses travel separately
  (Resolver.StreamReplicas per id), so the decoder takes `addr_var(id)`.
- Replicas (an Addr): `bound` endpoints are raw IPv4/IPv6 bytes and a port; an
  endpoint's weight and other metadata ride in `metadata` as strings (Linkerd's
  `endpoint_addr_weight`, `nodeName`).
- The delegate tree is converted from/to the JSON shape of reference §4.1,
  which both sides already produce and serve.

Malformed messages raise `MeshCodecError` naming the part that is wrong.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from dtab.addr import ADDR_NEG, ADDR_PENDING, Addr, AddrBound, Address, AddrFailed, AddrPending
from dtab.addr import AddrNeg as AddrNegT
from dtab.dtab import ANY, Dentry, Dtab, Prefix
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
from dtab.path import Path, label_bytes, label_from_bytes
from mesh_proto import delegator_pb2, dtab_pb2, interpreter_pb2, resolver_pb2

WEIGHT_KEY = "endpoint_addr_weight"
NODE_NAME_KEY = "nodeName"


class MeshCodecError(ValueError):
    """A message that is not what the mesh schema allows (says which part)."""


# -- paths and dtabs


def path_to_pb(path: Path) -> dtab_pb2.Path:
    return dtab_pb2.Path(elems=[label_bytes(e) for e in path.elems])


def path_from_pb(msg: dtab_pb2.Path) -> Path:
    try:
        return Path(tuple(label_from_bytes(e) for e in msg.elems))
    except ValueError as e:
        raise MeshCodecError(f"path: {e}") from None


def path_tree_to_pb(tree: NameTree[Any]) -> dtab_pb2.PathNameTree:
    t = dtab_pb2.PathNameTree
    if isinstance(tree, Leaf):
        return t(leaf=t.Leaf(id=path_to_pb(tree.value)))
    if isinstance(tree, Alt):
        return t(alt=t.Alt(trees=[path_tree_to_pb(x) for x in tree.trees]))
    if isinstance(tree, UnionTree):
        return t(union=t.Union(trees=[t.Union.Weighted(weight=w.weight,
                                                      tree=path_tree_to_pb(w.tree))
                                      for w in tree.weighted]))
    if isinstance(tree, NegTree):
        return t(neg=t.Neg())
    if isinstance(tree, FailTree):
        return t(fail=t.Fail())
    if isinstance(tree, EmptyTree):
        return t(empty=t.Empty())
    raise MeshCodecError(f"not a path name tree: {tree!r}")


def path_tree_from_pb(msg: dtab_pb2.PathNameTree) -> NameTree[Path]:
    node = msg.WhichOneof("node")
    if node == "leaf":
        return Leaf(path_from_pb(msg.leaf.id))
    if node == "alt":
        return Alt(tuple(path_tree_from_pb(x) for x in msg.alt.trees))
    if node == "union":
        return UnionTree(tuple(Weighted(w.weight, path_tree_from_pb(w.tree))
                               for w in msg.union.trees if w.HasField("tree")))
    if node == "neg":
        return Neg
    if node == "fail":
        return Fail
    if node == "empty":
        return Empty
    raise MeshCodecError("a name tree node has none of neg/fail/empty/alt/union/leaf")


def dentry_to_pb(d: Dentry) -> dtab_pb2.Dtab.Dentry:
    elem = dtab_pb2.Dtab.Dentry.Prefix.Elem
    elems = [elem(wildcard=elem.Wildcard()) if e is ANY else elem(label=label_bytes(str(e)))
             for e in d.prefix.elems]
    return dtab_pb2.Dtab.Dentry(prefix=dtab_pb2.Dtab.Dentry.Prefix(elems=elems),
                                dst=path_tree_to_pb(d.dst))


def dentry_from_pb(msg: dtab_pb2.Dtab.Dentry) -> Dentry:
    if not msg.HasField("prefix") or not msg.HasField("dst"):
        raise MeshCodecError("a dentry needs a prefix and a dst")
    elems: list[Any] = []
    for e in msg.prefix.elems:
        which = e.WhichOneof("value")
        if which == "wildcard":
            elems.append(ANY)
        elif which == "label":
            elems.append(label_from_bytes(e.label))
        else:
            raise MeshCodecError("a prefix element is neither a label nor a wildcard")
    try:
        return Dentry(Prefix(tuple(elems)), path_tree_from_pb(msg.dst))
    except (ValueError, TypeError) as e:
        raise MeshCodecError(f"dentry: {e}") from None


def dtab_to_pb(dtab: Dtab) -> dtab_pb2.Dtab:
    return dtab_pb2.Dtab(dentries=[dentry_to_pb(d) for d in dtab.dentries])


def dtab_from_pb(msg: dtab_pb2.Dtab) -> Dtab:
    return Dtab(tuple(dentry_from_pb(d) for d in msg.dentries))


# -- bound trees


def bound_tree_to_pb(tree: NameTree[Any]) -> interpreter_pb2.BoundNameTree:
    """Linkerd's InterpreterService.toBoundNameTree (a leaf without a Path id is Neg)."""
    t = interpreter_pb2.BoundNameTree
    if isinstance(tree, Leaf):
        ident = getattr(tree.value, "id", None)
        if not isinstance(ident, Path):
            return t(neg=t.Neg())
        return t(leaf=t.Leaf(id=path_to_pb(ident), residual=path_to_pb(tree.value.residual)))
    if isinstance(tree, Alt):
        return t(alt=t.Alt(trees=[bound_tree_to_pb(x) for x in tree.trees]))
    if isinstance(tree, UnionTree):
        return t(union=t.Union(trees=[t.Union.Weighted(weight=w.weight,
                                                      tree=bound_tree_to_pb(w.tree))
                                      for w in tree.weighted]))
    if isinstance(tree, NegTree):
        return t(neg=t.Neg())
    if isinstance(tree, FailTree):
        return t(fail=t.Fail())
    if isinstance(tree, EmptyTree):
        return t(empty=t.Empty())
    raise MeshCodecError(f"not a bound tree: {tree!r}")


AddrVarFor = Callable[[Path], Var[Addr]]


def bound_tree_from_pb(msg: interpreter_pb2.BoundNameTree,
                       addr_var: AddrVarFor) -> NameTree[Any]:
    """The inverse of `bound_tree_to_pb`; `addr_var(id)` gives each leaf's address Var
    (the interpreter keeps one per id, fed by a StreamReplicas call)."""
    from dtab.addr import BoundName

    node = msg.WhichOneof("node")
    if node == "leaf":
        if not msg.leaf.HasField("id"):
            raise MeshCodecError("a bound leaf has no id")
        ident = path_from_pb(msg.leaf.id)
        residual = path_from_pb(msg.leaf.residual)
        return Leaf(BoundName(ident, addr_var(ident), residual))
    if node == "alt":
        return Alt(tuple(bound_tree_from_pb(x, addr_var) for x in msg.alt.trees))
    if node == "union":
        return UnionTree(tuple(Weighted(w.weight, bound_tree_from_pb(w.tree, addr_var))
                               for w in msg.union.trees if w.HasField("tree")))
    if node == "neg":
        return Neg
    if node == "fail":
        return Fail
    if node == "empty":
        return Empty
    raise MeshCodecError("no bound tree (none of neg/fail/empty/alt/union/leaf)")


# -- replicas (addresses)


def _ip_bytes(host: str) -> tuple[Any, bytes]:
    """(address family, packed IP); a host name is resolved (namers give IPs as a rule)."""
    E = resolver_pb2.Endpoint
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            info = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as e:
            raise MeshCodecError(f"endpoint host {host!r} does not resolve: {e}") from None
        ip = ipaddress.ip_address(info[0][4][0])
    return (E.INET6 if ip.version == 6 else E.INET4), ip.packed


def _meta_strings(meta: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in meta.items()}


def addr_to_pb(addr: Addr) -> resolver_pb2.Replicas:
    R = resolver_pb2.Replicas
    if isinstance(addr, AddrPending):
        return R(pending=R.Pending())
    if isinstance(addr, AddrNegT):
        return R(neg=R.Neg())
    if isinstance(addr, AddrFailed):
        return R(failed=R.Failed(message=addr.cause))
    endpoints = []
    for a in sorted(addr.addresses, key=lambda a: (a.host, a.port)):
        try:
            family, packed = _ip_bytes(a.host)
        except MeshCodecError as e:
            return R(failed=R.Failed(message=str(e)))
        meta = _meta_strings(a.meta)
        if a.weight != 1.0:
            meta.setdefault(WEIGHT_KEY, repr(a.weight))
        endpoints.append(resolver_pb2.Endpoint(
            inet_af=family, address=packed, port=a.port,
            meta=resolver_pb2.Endpoint.Meta(nodeName=str(a.meta.get(NODE_NAME_KEY, ""))),
            metadata=meta))
    return R(bound=R.Bound(endpoints=endpoints, metadata=_meta_strings(addr.meta)))


def addr_from_pb(msg: resolver_pb2.Replicas) -> Addr:
    """Linkerd's Client.fromReplicas (no result at all is Neg)."""
    which = msg.WhichOneof("result")
    if which is None or which == "neg":
        return ADDR_NEG
    if which == "pending":
        return ADDR_PENDING
    if which == "failed":
        return AddrFailed(msg.failed.message or "unknown")
    out = []
    for ep in msg.bound.endpoints:
        try:
            host = str(ipaddress.ip_address(ep.address))
        except ValueError:
            raise MeshCodecError(f"endpoint address {ep.address!r} is not an IPv4/IPv6 address") \
                from None
        if not 0 < ep.port < 65536:
            raise MeshCodecError(f"endpoint {host} has port {ep.port}")
        meta: dict[str, Any] = dict(ep.metadata)
        if ep.meta.nodeName:
            meta.setdefault(NODE_NAME_KEY, ep.meta.nodeName)
        try:
            weight = float(meta.get(WEIGHT_KEY, 1.0))
        except ValueError:
            raise MeshCodecError(f"endpoint {host}:{ep.port}: {WEIGHT_KEY} "
                                 f"{meta[WEIGHT_KEY]!r} is not a number") from None
        out.append(Address(host, ep.port, weight, MappingProxyType(meta)))
    return AddrBound(frozenset(out), MappingProxyType(dict(msg.bound.metadata)))


# -- delegate trees (reference §4.1 JSON <-> BoundDelegateTree)


def _read_shown_path(text: Any) -> Path:
    if not isinstance(text, str) or text in ("~", "!", ""):
        return Path.empty()
    try:
        return Path.read(text)
    except ValueError:
        return Path.empty()


def delegate_json_to_pb(node: Mapping[str, Any]) -> delegator_pb2.BoundDelegateTree:
    """Linkerd's DelegatorService.toDelegateTree, from the §4.1 JSON namerd computes."""
    T = delegator_pb2.BoundDelegateTree
    out = T(path=path_to_pb(_read_shown_path(node.get("path"))))
    dentry = node.get("dentry")
    if isinstance(dentry, Mapping):
        try:
            out.dentry.CopyFrom(dentry_to_pb(Dentry.read(f"{dentry['prefix']}=>{dentry['dst']}")))
        except (KeyError, ValueError) as e:
            raise MeshCodecError(f"delegate node dentry {dentry!r}: {e}") from None
    kind = node.get("type")
    if kind == "delegate":
        out.delegate.CopyFrom(delegate_json_to_pb(node["delegate"]))
    elif kind == "leaf":
        b = node.get("bound") or {}
        out.leaf.CopyFrom(T.Leaf(id=path_to_pb(_read_shown_path(b.get("id"))),
                                 residual=path_to_pb(_read_shown_path(b.get("path")))))
    elif kind == "alt":
        out.alt.CopyFrom(T.Alt(trees=[delegate_json_to_pb(t) for t in node.get("alt", [])]))
    elif kind == "union":
        out.union.CopyFrom(T.Union(trees=[
            T.Union.Weighted(weight=float(w["weight"]), tree=delegate_json_to_pb(w["tree"]))
            for w in node.get("union", [])]))
    elif kind == "neg":
        out.neg.CopyFrom(T.Neg())
    elif kind == "fail":
        out.fail.CopyFrom(T.Fail())
    elif kind == "empty":
        out.empty.CopyFrom(T.Empty())
    elif kind == "exception":
        out.exception = f"BoundDelegateTree Exception: {node.get('message', '')}"
    elif kind == "transformation":
        b = node.get("bound") or {}
        out.transformation.CopyFrom(T.Transformation(
            name=str(node.get("name", "")),
            leaf=T.Leaf(id=path_to_pb(_read_shown_path(b.get("id"))),
                        residual=path_to_pb(_read_shown_path(b.get("path")))),
            tree=delegate_json_to_pb(node["tree"])))
    else:
        raise MeshCodecError(f"unknown delegate node type {kind!r}")
    return out


AddrJsonFor = Callable[[Path], dict[str, Any]]


def delegate_pb_to_json(msg: delegator_pb2.BoundDelegateTree,
                        addr_json: AddrJsonFor) -> dict[str, Any]:
    """The §4.1 JSON of a BoundDelegateTree; `addr_json(id)` fills each leaf's address
    (the message carries ids only)."""
    path = path_from_pb(msg.path)
    out: dict[str, Any] = {}
    which = msg.WhichOneof("node")
    shown = path.show
    if which == "neg" and not path.elems:
        shown = "~"
    elif which == "fail" and not path.show.startswith("/$/fail"):
        shown = "!"
    out["type"] = {"delegate": "delegate", "leaf": "leaf", "alt": "alt", "union": "union",
                   "neg": "neg", "fail": "fail", "empty": "empty",
                   "exception": "exception", "transformation": "transformation"
                   }.get(which or "", "")
    if not out["type"]:
        raise MeshCodecError("a delegate tree node has no node")
    out["path"] = shown
    if msg.HasField("dentry") and which != "transformation":
        d = dentry_from_pb(msg.dentry)
        out["dentry"] = {"prefix": d.prefix.show, "dst": d.dst.show}

    def bound(leaf: delegator_pb2.BoundDelegateTree.Leaf) -> dict[str, Any]:
        ident = path_from_pb(leaf.id)
        return {"addr": addr_json(ident), "id": ident.show,
                "path": path_from_pb(leaf.residual).show}

    if which == "delegate":
        out["delegate"] = delegate_pb_to_json(msg.delegate, addr_json)
    elif which == "leaf":
        out["bound"] = bound(msg.leaf)
    elif which == "alt":
        out["alt"] = [delegate_pb_to_json(t, addr_json) for t in msg.alt.trees]
    elif which == "union":
        out["union"] = [{"weight": w.weight, "tree": delegate_pb_to_json(w.tree, addr_json)}
                        for w in msg.union.trees]
    elif which == "exception":
        out["message"] = msg.exception.removeprefix("BoundDelegateTree Exception: ")
    elif which == "transformation":
        out["name"] = msg.transformation.name
        out["bound"] = bound(msg.transformation.leaf)
        out["tree"] = delegate_pb_to_json(msg.transformation.tree, addr_json)
    return out


def leaf_ids(msg: delegator_pb2.BoundDelegateTree) -> list[Path]:
    """Every bound id in a delegate tree (to resolve their addresses before rendering)."""
    out: list[Path] = []
    which = msg.WhichOneof("node")
    if which == "leaf":
        out.append(path_from_pb(msg.leaf.id))
    elif which == "delegate":
        out += leaf_ids(msg.delegate)
    elif which == "alt":
        for t in msg.alt.trees:
            out += leaf_ids(t)
    elif which == "union":
        for w in msg.union.trees:
            out += leaf_ids(w.tree)
    elif which == "transformation":
        out.append(path_from_pb(msg.transformation.leaf.id))
        out += leaf_ids(msg.transformation.tree)
    return out
