"""Binding: evaluate a path through a dtab and namers to a tree of bound names.

This is Finagle's `Namer.bind` driven by Linkerd's `ConfiguredDtabNamer`
lookup, evaluated over the *current* state of each namer's Activity. The
result lists every Activity it consulted so the router's binding cache can
bind again when one of them changes; there is no I/O and no asyncio here.

Rules (Finagle's):
- every path is looked up in the dtab first (`/#/…` and `/$/…` included); only
  when that lookup is `Neg` does the namer callback get the path;
- `Alt`: the first alternative that is not Neg wins, Fail stops the search,
  Empty is a success; an alternative that is Pending or Failed decides it;
- `Union`: members binding to Neg or Fail drop out (`! & !` is Neg); if no member
  is Ok the first failure, else Pending, is the union's state;
- more than `max_depth` nested lookups is a `DelegationLoopError` naming the loop.
Bound trees are simplified and contain no `Alt`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dtab.addr import BoundName
from dtab.dtab import Dtab
from dtab.errors import DelegationLoopError
from dtab.nametree import (
    Alt,
    EmptyTree,
    FailTree,
    Leaf,
    NameTree,
    Neg,
    NegTree,
    Union,
    Weighted,
)
from dtab.observable import PENDING, Activity, ActivityState, Failed, Ok, Pending, Var
from dtab.path import Path

# Finagle's `namerMaxDepth` default.
MAX_DEPTH = 100
# Python frames one evaluation may stack (tree nesting plus delegation steps together):
# the result is as deep, and hashing or printing it recurses as deep again.
MAX_NESTING = 128
# Not in Finagle: a bound on total lookups, so `/a => /a/x & /a/y` (exponential, every
# chain ending at the depth limit) is an error rather than a hang.
MAX_LOOKUPS = 10_000

Lookup = Callable[[Path], "Activity | None"]


@dataclass(frozen=True)
class BindResult:
    """`state` is Pending, Ok(NameTree[BoundName]) or Failed(error).

    `dependencies` are the Activities (and Vars) whose current values decided
    the result, in the order consulted: when any changes, bind again.
    """

    state: ActivityState
    dependencies: tuple[Var[Any], ...] = ()

    @property
    def tree(self) -> NameTree[BoundName] | None:
        return self.state.value if isinstance(self.state, Ok) else None

    @property
    def pending(self) -> bool:
        return isinstance(self.state, Pending)


def bind(
    dtab: Dtab,
    path: Path,
    lookup: Lookup,
    *,
    max_depth: int = MAX_DEPTH,
    max_lookups: int = MAX_LOOKUPS,
) -> BindResult:
    """Bind `path` against `dtab`, asking `lookup` (the namers) when the dtab has nothing."""
    binder = _Binder(dtab, lookup, max_depth, path, max_lookups)
    try:
        state = binder.bind(Leaf(path), 0, ())
    except LookupBudgetExceeded as e:
        state = Failed(e.error)
    return BindResult(state, tuple(binder.deps))


class LookupBudgetExceeded(Exception):
    """Raised through the whole evaluation (no branch may swallow it)."""

    def __init__(self, error: DelegationLoopError) -> None:
        super().__init__(str(error))
        self.error = error


def lookup_once(
    dtab: Dtab, path: Path, lookup: Lookup, deps: list[Var[Any]] | None = None
) -> ActivityState:
    """One Finagle lookup step: the dtab's rewrite, or (when that is Neg) the namer's answer.

    The namer's Activity is appended to `deps`; a callback that raises becomes
    Failed (so one broken namer cannot take a request down with a traceback).
    """
    tree = dtab.lookup(path)
    if tree != Neg:
        return Ok(tree)
    try:
        act = lookup(path)
    except Exception as e:  # surfaced to the caller as Failed
        return Failed(e)
    if act is None:
        return Ok(Neg)
    if deps is not None and not any(d is act for d in deps):
        deps.append(act)
    return act.value


class Evaluation:
    """What one evaluation of `root` carries, shared by binding and delegation.

    The dtab, the namers, the depth and lookup limits, and the Activities
    consulted so far (`deps`).
    """

    __slots__ = ("dtab", "lookup", "max_depth", "root", "deps", "budget", "max_lookups",
                 "nesting")

    def __init__(
        self, dtab: Dtab, lookup: Lookup, max_depth: int, root: Path, max_lookups: int
    ) -> None:
        self.dtab = dtab
        self.lookup = lookup
        self.max_depth = max_depth
        self.root = root
        self.deps: list[Var[Any]] = []
        self.budget = max_lookups
        self.max_lookups = max_lookups
        self.nesting = 0

    def spend(self, chain: tuple[Path, ...]) -> None:
        """Count one lookup; past `max_lookups`, raise `LookupBudgetExceeded` for `chain`."""
        self.budget -= 1
        if self.budget < 0:
            raise LookupBudgetExceeded(
                DelegationLoopError(
                    self.root, chain, self.max_depth, self.dtab.show, max_lookups=self.max_lookups
                )
            )

    def too_deep(self, chain: tuple[Path, ...]) -> DelegationLoopError:
        """The error for a branch that went past `max_depth` through `chain`."""
        return DelegationLoopError(self.root, chain, self.max_depth, self.dtab.show)

    def too_nested(self, chain: tuple[Path, ...]) -> DelegationLoopError:
        """The error for an evaluation nested past MAX_NESTING frames."""
        return DelegationLoopError(self.root, chain, self.max_depth, self.dtab.show,
                                   max_nesting=MAX_NESTING)


class _Binder(Evaluation):
    __slots__ = ()

    def bind(self, tree: NameTree[Any], depth: int, chain: tuple[Path, ...]) -> ActivityState:
        if self.nesting >= MAX_NESTING:
            return Failed(self.too_nested(chain))
        self.nesting += 1
        try:
            return self._bind(tree, depth, chain)
        finally:
            self.nesting -= 1

    def _bind(self, tree: NameTree[Any], depth: int, chain: tuple[Path, ...]) -> ActivityState:
        if depth > self.max_depth:
            return Failed(self.too_deep(chain))
        if isinstance(tree, Leaf):
            value = tree.value
            if isinstance(value, Path):
                self.spend(chain + (value,))
                state = lookup_once(self.dtab, value, self.lookup, self.deps)
                if isinstance(state, Ok):
                    if not isinstance(state.value, NameTree):
                        return Failed(
                            TypeError(
                                f"namer for {value.show} returned {state.value!r}, not a tree"
                            )
                        )
                    return self.bind(state.value, depth + 1, chain + (value,))
                return state
            if isinstance(value, BoundName):
                return Ok(tree)
            return Failed(TypeError(f"name tree leaf {value!r} is neither a Path nor a BoundName"))
        if isinstance(tree, NegTree | FailTree | EmptyTree):
            return Ok(tree)
        if isinstance(tree, Alt):
            return self._bind_alt(tree.trees, depth, chain)
        if isinstance(tree, Union):
            return self._bind_union(tree.weighted, depth, chain)
        return Failed(TypeError(f"not a name tree: {tree!r}"))

    def _bind_alt(
        self, trees: tuple[NameTree[Any], ...], depth: int, chain: tuple[Path, ...]
    ) -> ActivityState:
        neg: NegTree = Neg
        for t in trees:
            state = self.bind(t, depth, chain)
            if not isinstance(state, Ok):
                return state
            v = state.value
            if isinstance(v, NegTree):
                if v.reason and not neg.reason:
                    neg = v
                continue
            return state
        return Ok(neg)

    def _bind_union(
        self, members: tuple[Weighted[Any], ...], depth: int, chain: tuple[Path, ...]
    ) -> ActivityState:
        if not members:
            return Ok(Neg)
        if len(members) == 1:
            return self.bind(members[0].tree, depth, chain)
        oks: list[Weighted[Any]] = []
        failed: Failed | None = None
        for w in members:
            state = self.bind(w.tree, depth, chain)
            if isinstance(state, Ok):
                oks.append(Weighted(w.weight, state.value))
            elif isinstance(state, Failed) and failed is None:
                failed = state
        if not oks:
            return failed if failed is not None else PENDING
        out = Union(tuple(oks)).simplified
        if isinstance(out, NegTree):
            reasons = [w.tree for w in oks if isinstance(w.tree, NegTree) and w.tree.reason]
            if reasons:
                out = reasons[0]
        return Ok(out)
