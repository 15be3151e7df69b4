"""Delegation traces: how a path resolved, step by step, for `/delegator.json`.

This mirrors Linkerd's `ConfiguredNamersInterpreter.delegate` and
`DelegateTree` (namer/core), so the admin UI can draw the same tree Linkerd
drew: each dtab rewrite is a `delegate` node carrying the dentry that made it,
every alternative of an Alt is followed (unlike binding, which stops at the
first success), and the result is simplified the way Linkerd simplifies it.

Differences, on purpose:
- a namer Activity that is still Pending is recorded as a leaf whose bound
  address is `{"type":"pending"}` (`DelegateTree.pending` says so), so the
  caller can wait for `dependencies` to change and delegate again;
- a loop is an `exception` node naming the loop rather than a failed request;
- the dtab is consulted exactly as `binding.bind` consults it, so the trace
  never disagrees with routing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dtab.addr import ADDR_PENDING, AddrPending, BoundName
from dtab.binding import (
    MAX_DEPTH,
    MAX_LOOKUPS,
    MAX_NESTING,
    Evaluation,
    Lookup,
    LookupBudgetExceeded,
)
from dtab.dtab import Dentry, Dtab
from dtab.errors import DelegationLoopError
from dtab.nametree import Alt, EmptyTree, FailTree, Leaf, NameTree, NegTree, Union
from dtab.observable import Failed, Ok, Var
from dtab.path import EMPTY_PATH, Path

_FAIL_PREFIX = Path.of("$", "fail")

# One interpreter transformer, as the router hands it to `delegate`: its name
# for the trace and what it does to one bound leaf.
TransformStep = tuple[str, Callable[[BoundName], NameTree[BoundName]]]


def _node_json(kind: str, shown: str, dentry: Dentry | None, **fields: Any) -> dict[str, Any]:
    """A node's JSON in Linkerd's key order: type, path, dentry (none at the root), the rest."""
    out: dict[str, Any] = {"type": kind, "path": shown}
    if dentry is not None:
        out["dentry"] = {"prefix": dentry.prefix.show, "dst": dentry.dst.show}
    out.update(fields)
    return out


class DelegateTree:
    """A node of the trace. `dentry` is None for the root (Linkerd's `Dentry.nop`)."""

    __slots__ = ()
    path: Path
    dentry: Dentry | None

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    def dumps(self) -> str:
        """Compact JSON as Linkerd's Jackson writes it (no spaces, UTF-8 kept)."""
        return json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False)

    @property
    def pending(self) -> bool:
        """True while any leaf's address (or a namer's answer) is not known yet."""
        return any(_addr_pending(b) for b in self.bounds())

    def bounds(self) -> list[BoundName | PendingName]:
        """Every bound name in the tree (transformation inputs included)."""
        out: list[BoundName | PendingName] = []
        _collect_bounds(self, out)
        return out


@dataclass(frozen=True, slots=True)
class DelegateNode(DelegateTree):
    path: Path
    dentry: Dentry | None
    tree: DelegateTree

    def to_json(self) -> dict[str, Any]:
        return _node_json("delegate", self.path.show, self.dentry, delegate=self.tree.to_json())


@dataclass(frozen=True, slots=True)
class LeafNode(DelegateTree):
    """A bound leaf (during evaluation the value may still be a Path to follow)."""

    path: Path
    dentry: Dentry | None
    value: Any  # BoundName (or PendingName) once delegation is done; a Path while running

    def to_json(self) -> dict[str, Any]:
        return _node_json(
            "leaf", self.path.show, self.dentry, bound=_bound_json(self.value, self.path)
        )


@dataclass(frozen=True, slots=True)
class AltNode(DelegateTree):
    path: Path
    dentry: Dentry | None
    trees: tuple[DelegateTree, ...]

    def to_json(self) -> dict[str, Any]:
        return _node_json("alt", self.path.show, self.dentry, alt=[t.to_json() for t in self.trees])


@dataclass(frozen=True, slots=True)
class WeightedNode:
    weight: float
    tree: DelegateTree

    def to_json(self) -> dict[str, Any]:
        return {"weight": self.weight, "tree": self.tree.to_json()}


@dataclass(frozen=True, slots=True)
class UnionNode(DelegateTree):
    path: Path
    dentry: Dentry | None
    trees: tuple[WeightedNode, ...]

    def to_json(self) -> dict[str, Any]:
        return _node_json(
            "union", self.path.show, self.dentry, union=[w.to_json() for w in self.trees]
        )


@dataclass(frozen=True, slots=True)
class NegNode(DelegateTree):
    """Nothing here. The empty path prints `~`; `reason` comes from `Neg.because`."""

    path: Path
    dentry: Dentry | None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        out = _node_json("neg", "~" if not self.path.elems else self.path.show, self.dentry)
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class FailNode(DelegateTree):
    path: Path
    dentry: Dentry | None

    def to_json(self) -> dict[str, Any]:
        shown = self.path.show if self.path.startswith(_FAIL_PREFIX) else "!"
        return _node_json("fail", shown, self.dentry)


@dataclass(frozen=True, slots=True)
class EmptyNode(DelegateTree):
    path: Path
    dentry: Dentry | None

    def to_json(self) -> dict[str, Any]:
        return _node_json("empty", self.path.show, self.dentry)


@dataclass(frozen=True, slots=True)
class ExceptionNode(DelegateTree):
    path: Path
    dentry: Dentry | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return _node_json("exception", self.path.show, self.dentry, message=self.message)


@dataclass(frozen=True, slots=True)
class TransformationNode(DelegateTree):
    """Transformer `name` turned `bound` into `tree` (whose leaves carry the new ids)."""

    path: Path
    name: str
    bound: BoundName
    tree: DelegateTree

    @property
    def dentry(self) -> Dentry | None:  # type: ignore[override]
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "transformation",
            "path": self.path.show,
            "name": self.name,
            "bound": _bound_json(self.bound, self.path),
            "tree": self.tree.to_json(),
        }


@dataclass(frozen=True, slots=True)
class PendingName:
    """Stands in for a bound name while the namer has not answered for `path` yet."""

    path: Path


def _bound_json(value: Any, path: Path) -> dict[str, Any]:
    if isinstance(value, BoundName):
        return value.to_json()
    return {"addr": ADDR_PENDING.to_json(), "id": path.show, "path": "/"}


def _addr_pending(b: BoundName | PendingName) -> bool:
    return isinstance(b, PendingName) or isinstance(b.addr.value, AddrPending)


def _collect_bounds(node: DelegateTree, out: list[BoundName | PendingName]) -> None:
    if isinstance(node, LeafNode) and isinstance(node.value, BoundName | PendingName):
        out.append(node.value)
    elif isinstance(node, DelegateNode):
        _collect_bounds(node.tree, out)
    elif isinstance(node, AltNode):
        for t in node.trees:
            _collect_bounds(t, out)
    elif isinstance(node, UnionNode):
        for w in node.trees:
            _collect_bounds(w.tree, out)
    elif isinstance(node, TransformationNode):
        out.append(node.bound)
        _collect_bounds(node.tree, out)


# -- evaluation -----------------------------------------------------------------------


def delegate(
    dtab: Dtab,
    path: Path,
    lookup: Lookup,
    *,
    transform: Sequence[TransformStep] | None = None,
    max_depth: int = MAX_DEPTH,
    max_lookups: int = MAX_LOOKUPS,
) -> DelegateTree:
    """The `/delegator.json` tree for `path` under `dtab`, with `lookup` as the namers.

    `transform` lists the interpreter's transformers in order as `(name, fn)`,
    `fn(bound) -> NameTree[BoundName]`; each bound leaf of the result is
    recorded as a `transformation` node per step, as Linkerd records them.
    """
    tree, _ = delegate_with_dependencies(
        dtab, path, lookup, transform=transform, max_depth=max_depth, max_lookups=max_lookups
    )
    return tree


def delegate_with_dependencies(
    dtab: Dtab,
    path: Path,
    lookup: Lookup,
    *,
    transform: Sequence[TransformStep] | None = None,
    max_depth: int = MAX_DEPTH,
    max_lookups: int = MAX_LOOKUPS,
) -> tuple[DelegateTree, tuple[Var[Any], ...]]:
    """`delegate`, plus the Activities and address Vars to watch while it is `pending`."""
    d = _Delegator(dtab, lookup, max_depth, path, max_lookups)
    try:
        tree = d.bind(LeafNode(EMPTY_PATH, None, path), 0, ())
    except (_TooDeep, LookupBudgetExceeded) as e:
        tree = ExceptionNode(path, None, str(e.error))
    tree = simplify(tree)
    if transform:
        tree = apply_transformers(tree, tuple(transform))
    deps: list[Var[Any]] = list(d.deps)
    for b in tree.bounds():
        if isinstance(b, BoundName) and _addr_pending(b) and not any(x is b.addr for x in deps):
            deps.append(b.addr)
    return tree, tuple(deps)


class _TooDeep(Exception):
    def __init__(self, error: DelegationLoopError) -> None:
        super().__init__(str(error))
        self.error = error


def from_name_tree(path: Path, dentry: Dentry | None, tree: NameTree[Any]) -> DelegateTree:
    """Linkerd's `DelegateTree.fromNameTree(path, dentry, tree)`."""
    if isinstance(tree, Leaf):
        return LeafNode(path, dentry, tree.value)
    if isinstance(tree, NegTree):
        return NegNode(EMPTY_PATH, dentry, tree.reason)
    if isinstance(tree, FailTree):
        return FailNode(path, dentry)
    if isinstance(tree, EmptyTree):
        return EmptyNode(path, dentry)
    if isinstance(tree, Alt):
        return AltNode(path, dentry, tuple(from_name_tree(path, dentry, t) for t in tree.trees))
    if isinstance(tree, Union):
        return UnionNode(
            path,
            dentry,
            tuple(
                WeightedNode(w.weight, from_name_tree(path, dentry, w.tree)) for w in tree.weighted
            ),
        )
    raise TypeError(f"not a name tree: {tree!r}")


class _Delegator(Evaluation):
    __slots__ = ()

    def lookup_node(self, dentry: Dentry | None, path: Path) -> DelegateTree:
        """Linkerd's `delegateLookup`: the dtab's matches, else the namers' answer."""
        matches = self.dtab.lookup_dentries(path)
        result: DelegateTree
        if not matches:
            result = NegNode(path, dentry)
        elif len(matches) == 1:
            d, t = matches[0]
            result = DelegateNode(path, dentry, from_name_tree(path, d, t))
        else:
            result = AltNode(path, dentry, tuple(from_name_tree(path, d, t) for d, t in matches))
        # As in binding (Finagle's Dtab.lookup == Neg): no match, or one match to `~`.
        if matches and not (len(matches) == 1 and isinstance(matches[0][1], NegTree)):
            return result
        try:
            act = self.lookup(path)
        except Exception as e:  # a broken namer shows as an exception node
            return ExceptionNode(path, dentry, _message(e))
        if act is None:
            return result
        if not any(x is act for x in self.deps):
            self.deps.append(act)
        state = act.value
        if isinstance(state, Ok):
            tree = state.value
            if not isinstance(tree, NameTree):
                return ExceptionNode(path, dentry, f"namer returned {tree!r}, not a name tree")
            if isinstance(tree, NegTree):
                if isinstance(result, NegNode) and tree.reason:
                    return NegNode(path, dentry, tree.reason)
                return result
            return from_name_tree(path, dentry, tree)
        if isinstance(state, Failed):
            return ExceptionNode(path, dentry, _message(state.error))
        # Pending: a leaf whose address is pending, so the caller waits and retries.
        return LeafNode(path, dentry, PendingName(path))

    def bind(self, node: DelegateTree, depth: int, chain: tuple[Path, ...]) -> DelegateTree:
        """Linkerd's `delegateBind`: follow Path leaves; bind every Alt/Union branch."""
        if self.nesting >= MAX_NESTING:
            raise _TooDeep(self.too_nested(chain))
        self.nesting += 1
        try:
            return self._bind(node, depth, chain)
        finally:
            self.nesting -= 1

    def _bind(self, node: DelegateTree, depth: int, chain: tuple[Path, ...]) -> DelegateTree:
        if depth > self.max_depth:
            raise _TooDeep(self.too_deep(chain))
        if isinstance(node, LeafNode):
            if isinstance(node.value, Path):
                self.spend(chain + (node.value,))
                looked = self.lookup_node(node.dentry, node.value)
                return self.bind(looked, depth + 1, chain + (node.value,))
            return node
        if isinstance(node, DelegateNode):
            return DelegateNode(node.path, node.dentry, self.bind(node.tree, depth, chain))
        if isinstance(node, AltNode):
            if not node.trees:
                return NegNode(node.path, node.dentry)
            if len(node.trees) == 1:
                return DelegateNode(node.path, node.dentry, self.bind(node.trees[0], depth, chain))
            return AltNode(
                node.path,
                node.dentry,
                tuple(self._bind_branch(node, t, depth, chain) for t in node.trees),
            )
        if isinstance(node, UnionNode):
            if not node.trees:
                return NegNode(node.path, node.dentry)
            if len(node.trees) == 1:
                return DelegateNode(
                    node.path, node.dentry, self.bind(node.trees[0].tree, depth, chain)
                )
            return UnionNode(
                node.path,
                node.dentry,
                tuple(
                    WeightedNode(w.weight, self._bind_branch(node, w.tree, depth, chain))
                    for w in node.trees
                ),
            )
        return node

    def _bind_branch(
        self, parent: DelegateTree, node: DelegateTree, depth: int, chain: tuple[Path, ...]
    ) -> DelegateTree:
        try:
            return self.bind(node, depth, chain)
        except _TooDeep as e:
            return ExceptionNode(parent.path, parent.dentry, str(e.error))


def _message(e: BaseException) -> str:
    return str(e) or type(e).__name__


# -- simplification and transformers (Linkerd's DelegateTree.simplify / flatMap) -----


def with_dentry(node: DelegateTree, dentry: Dentry | None) -> DelegateTree:
    if isinstance(node, TransformationNode):
        return node
    return replace(node, dentry=dentry)  # type: ignore[type-var]


def simplify(node: DelegateTree) -> DelegateTree:
    """Linkerd's `DelegateTree.simplify`: drop rewrite steps that changed nothing."""
    if isinstance(node, DelegateNode):
        s = simplify(node.tree)
        collapse = not isinstance(s, NegNode | FailNode | EmptyNode) and s.path == node.path
        return with_dentry(s, node.dentry) if collapse else DelegateNode(node.path, node.dentry, s)
    if isinstance(node, AltNode):
        if not node.trees:
            return NegNode(node.path, node.dentry)
        if len(node.trees) == 1:
            return simplify(DelegateNode(node.path, node.dentry, node.trees[0]))
        out: list[DelegateTree] = []
        for t in node.trees:
            s = simplify(t)
            if isinstance(s, AltNode) and s.path == node.path:
                out.extend(s.trees)
            else:
                out.append(s)
        return AltNode(node.path, node.dentry, tuple(out))
    if isinstance(node, UnionNode):
        if not node.trees:
            return NegNode(node.path, node.dentry)
        if len(node.trees) == 1:
            return simplify(DelegateNode(node.path, node.dentry, node.trees[0].tree))
        return UnionNode(
            node.path,
            node.dentry,
            tuple(WeightedNode(w.weight, simplify(w.tree)) for w in node.trees),
        )
    return node


def apply_transformers(node: DelegateTree, steps: tuple[TransformStep, ...]) -> DelegateTree:
    """Replace each bound leaf with the chain of transformation nodes it went through."""
    if isinstance(node, LeafNode) and isinstance(node.value, BoundName):
        return _transform_leaf(node.path, node.dentry, node.value, steps)
    if isinstance(node, DelegateNode):
        return DelegateNode(node.path, node.dentry, apply_transformers(node.tree, steps))
    if isinstance(node, AltNode):
        return AltNode(
            node.path, node.dentry, tuple(apply_transformers(t, steps) for t in node.trees)
        )
    if isinstance(node, UnionNode):
        return UnionNode(
            node.path,
            node.dentry,
            tuple(WeightedNode(w.weight, apply_transformers(w.tree, steps)) for w in node.trees),
        )
    if isinstance(node, TransformationNode):
        return replace(node, tree=apply_transformers(node.tree, steps))
    return node


def _transform_leaf(
    path: Path, dentry: Dentry | None, bound: BoundName, steps: tuple[TransformStep, ...]
) -> DelegateTree:
    if not steps:
        return LeafNode(path, dentry, bound)
    name, fn = steps[0]
    try:
        tree = fn(bound)
    except Exception as e:  # shown in the trace, not raised into the admin handler
        return TransformationNode(
            path, name, bound, ExceptionNode(path, dentry, f"transformer {name}: {_message(e)}")
        )
    return TransformationNode(path, name, bound, _transformed(path, dentry, tree, steps[1:]))


def _transformed(
    path: Path, dentry: Dentry | None, tree: NameTree[Any], rest: tuple[TransformStep, ...]
) -> DelegateTree:
    if isinstance(tree, Leaf) and isinstance(tree.value, BoundName):
        return _transform_leaf(tree.value.id, dentry, tree.value, rest)
    if isinstance(tree, Alt):
        return AltNode(path, dentry, tuple(_transformed(path, dentry, t, rest) for t in tree.trees))
    if isinstance(tree, Union):
        return UnionNode(
            path,
            dentry,
            tuple(
                WeightedNode(w.weight, _transformed(path, dentry, w.tree, rest))
                for w in tree.weighted
            ),
        )
    return from_name_tree(path, dentry, tree)
