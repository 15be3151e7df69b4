"""Name trees: what a dtab rewrites a path into, and what binding produces.

Mirrors Finagle's `NameTree`: `Leaf`, `Alt` (fallback, `|`), `Union` of
`Weighted` members (load split, `&`), and the constants `Neg` (`~`, "not
here, try the next alternative"), `Fail` (`!`, "stop") and `Empty` (`$`,
"exists, but has nobody"). `show`, `simplified` and `eval` follow Finagle's
code case by case, so printed dtabs and evaluation agree byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")

DEFAULT_WEIGHT = 1.0
_CENTS = Decimal("0.01")
# Enough digits for any finite double to two decimals (the default 28 raised
# InvalidOperation on a weight of 1e32; Java's BigDecimal has no such limit).
_EXACT = Context(prec=400)


def format_weight(weight: float) -> str:
    """Java's `%.2f`: half-up on the shortest decimal form of the double (0.125 -> 0.13).

    `repr` gives the shortest decimal that reads back as the same double, which
    is the digit string Java's Formatter rounds, so `0.135` prints `0.14` here
    as it does in Finagle (C's printf would say `0.13`).
    """
    if math.isnan(weight):
        return "NaN"
    if math.isinf(weight):
        return "Infinity" if weight > 0 else "-Infinity"
    d = Decimal(repr(float(weight)))
    return f"{d.quantize(_CENTS, rounding=ROUND_HALF_UP, context=_EXACT):f}"


def show_value(value: object) -> str:
    """How a leaf prints: paths (and anything with `.show`) by their show; bound names by id."""
    show = getattr(value, "show", None)
    if isinstance(show, str):
        return show
    ident = getattr(value, "id", None)
    if ident is not None and isinstance(getattr(ident, "show", None), str):
        return ident.show
    return str(value)


class NameTree(Generic[T]):
    """Base of all name tree nodes; values are immutable and hashable."""

    __slots__ = ()

    @staticmethod
    def read(text: str) -> NameTree[Any]:
        """Parse a tree such as `/a | 0.3*/b & 0.7*/c`; raises DtabParseError."""
        from dtab.parser import parse_tree

        return parse_tree(text)

    @property
    def show(self) -> str:
        """Finagle's canonical text: `" | "`, `" & "`, weights when not 1, parens as needed."""
        return _show(self)

    def map(self, f: Callable[[T], U]) -> NameTree[U]:
        """The same shape with every leaf value replaced by `f(value)`."""
        return _map(self, f)

    @property
    def simplified(self) -> NameTree[T]:
        """An evaluation-equivalent, smaller tree (Finagle's `NameTree.simplify`)."""
        return _simplify(self)

    def equiv(self, other: NameTree[T]) -> bool:
        """Finagle's `Equiv[NameTree]`: equal once both are simplified."""
        return _simplify(self) == _simplify(other)

    def eval(self) -> frozenset[T] | None:
        """Finagle's `eval`: the leaf set chosen by Alt/Union rules; None when Neg or Fail."""
        out = _eval(self)
        return out if isinstance(out, frozenset) else None

    def leaves(self) -> Iterator[T]:
        """Every leaf value, depth first."""
        if isinstance(self, Leaf):
            yield self.value
        elif isinstance(self, Alt):
            for t in self.trees:
                yield from t.leaves()
        elif isinstance(self, Union):
            for w in self.weighted:
                yield from w.tree.leaves()

    def __str__(self) -> str:
        return self.show


@dataclass(frozen=True, slots=True)
class Leaf(NameTree[T]):
    value: T

    def __repr__(self) -> str:
        return f"Leaf({self.value!r})"


@dataclass(frozen=True, slots=True)
class Alt(NameTree[T]):
    """Fallback: the first alternative that is not Neg wins; Fail stops the search."""

    trees: tuple[NameTree[T], ...]

    def __post_init__(self) -> None:
        if type(self.trees) is not tuple:
            object.__setattr__(self, "trees", tuple(self.trees))

    @staticmethod
    def of(*trees: NameTree[T]) -> Alt[T]:
        return Alt(trees)

    def __repr__(self) -> str:
        return f"Alt({', '.join(map(repr, self.trees))})"


@dataclass(frozen=True, slots=True)
class Weighted(Generic[T]):
    """A union member and its share of the traffic (1.0 unless written)."""

    weight: float
    tree: NameTree[T]

    def __post_init__(self) -> None:
        if type(self.weight) is not float:
            object.__setattr__(self, "weight", float(self.weight))

    def __repr__(self) -> str:
        return f"Weighted({self.weight!r}, {self.tree!r})"


@dataclass(frozen=True, slots=True)
class Union(NameTree[T]):
    """Weighted load split over every member that binds (Neg and Fail members drop out)."""

    weighted: tuple[Weighted[T], ...]

    def __post_init__(self) -> None:
        ws = tuple(self.weighted)
        for w in ws:
            if not isinstance(w, Weighted):
                raise TypeError(f"Union members must be Weighted, got {w!r}")
        if type(self.weighted) is not tuple:
            object.__setattr__(self, "weighted", ws)

    @staticmethod
    def of(*trees: NameTree[T]) -> Union[T]:
        """A union of equally weighted trees."""
        return Union(tuple(Weighted(DEFAULT_WEIGHT, t) for t in trees))

    @property
    def trees(self) -> tuple[NameTree[T], ...]:
        return tuple(w.tree for w in self.weighted)

    def __repr__(self) -> str:
        return f"Union({', '.join(map(repr, self.weighted))})"


@dataclass(frozen=True, slots=True)
class NegTree(NameTree[Any]):
    """`~`: nothing here. `reason` is for people (delegator, 502 text), never equality."""

    reason: str = field(default="", compare=False)

    def because(self, reason: str) -> NegTree:
        """A Neg that says why (e.g. "service default/hello not found"); equal to `Neg`."""
        return NegTree(reason)

    def __hash__(self) -> int:
        return 0x4E4547

    def __repr__(self) -> str:
        return f"Neg.because({self.reason!r})" if self.reason else "Neg"


@dataclass(frozen=True, slots=True)
class FailTree(NameTree[Any]):
    """`!`: resolution failed; stop, do not fall back."""

    def __hash__(self) -> int:
        return 0x4641494C

    def __repr__(self) -> str:
        return "Fail"


@dataclass(frozen=True, slots=True)
class EmptyTree(NameTree[Any]):
    """`$`: the name exists but has no members right now (counts as success)."""

    def __hash__(self) -> int:
        return 0x454D505459

    def __repr__(self) -> str:
        return "Empty"


Neg = NegTree()
Fail = FailTree()
Empty = EmptyTree()


# -- show: a case-by-case mirror of Finagle's NameTree.show/show1/showSimple ----------


def _unwrap_single(tree: NameTree[Any]) -> NameTree[Any]:
    """One-member Alts and Unions print as their member (the union's weight is lost)."""
    while True:
        if isinstance(tree, Union) and len(tree.weighted) == 1:
            tree = tree.weighted[0].tree
        elif isinstance(tree, Alt) and len(tree.trees) == 1:
            tree = tree.trees[0]
        else:
            return tree


def _show(tree: NameTree[Any]) -> str:
    tree = _unwrap_single(tree)
    if isinstance(tree, Alt):
        return " | ".join(_show1(t) for t in tree.trees)
    return _show1(tree)


def _show1(tree: NameTree[Any]) -> str:
    tree = _unwrap_single(tree)
    if isinstance(tree, Union):
        return " & ".join(
            _show_simple(w.tree)
            if w.weight == DEFAULT_WEIGHT
            else f"{format_weight(w.weight)}*{_show_simple(w.tree)}"
            for w in tree.weighted
        )
    if isinstance(tree, Alt):
        return f"({_show(tree)})"
    return _show_simple(tree)


def _show_simple(tree: NameTree[Any]) -> str:
    tree = _unwrap_single(tree)
    if isinstance(tree, Union | Alt):
        return f"({_show(tree)})"
    if isinstance(tree, Leaf):
        return show_value(tree.value)
    if isinstance(tree, FailTree):
        return "!"
    if isinstance(tree, NegTree):
        return "~"
    if isinstance(tree, EmptyTree):
        return "$"
    raise TypeError(f"not a name tree: {tree!r}")


# -- map / simplify / eval ------------------------------------------------------------


def _map(tree: NameTree[Any], f: Callable[[Any], Any]) -> NameTree[Any]:
    if isinstance(tree, Leaf):
        return Leaf(f(tree.value))
    if isinstance(tree, Alt):
        return Alt(tuple(_map(t, f) for t in tree.trees))
    if isinstance(tree, Union):
        return Union(tuple(Weighted(w.weight, _map(w.tree, f)) for w in tree.weighted))
    return tree


def _simplify(tree: NameTree[Any]) -> NameTree[Any]:
    if isinstance(tree, Alt):
        if not tree.trees:
            return Neg
        if len(tree.trees) == 1:
            return _simplify(tree.trees[0])
        alts: list[NameTree[Any]] = []
        for t in tree.trees:
            s = _simplify(t)
            if isinstance(s, FailTree):
                alts.append(s)
                break
            if not isinstance(s, NegTree):
                alts.append(s)
        if not alts:
            return Neg
        return alts[0] if len(alts) == 1 else Alt(tuple(alts))
    if isinstance(tree, Union):
        if not tree.weighted:
            return Neg
        if len(tree.weighted) == 1:
            return _simplify(tree.weighted[0].tree)
        members: list[Weighted[Any]] = []
        for w in tree.weighted:
            s = _simplify(w.tree)
            if not isinstance(s, FailTree | NegTree):
                members.append(Weighted(w.weight, s))
        if not members:
            return Neg
        return members[0].tree if len(members) == 1 else Union(tuple(members))
    return tree


def _eval(tree: NameTree[Any]) -> frozenset[Any] | FailTree | NegTree:
    """Finagle's private eval: Fail, Neg, or the set of leaf values picked."""
    if isinstance(tree, Leaf):
        return frozenset((tree.value,))
    if isinstance(tree, EmptyTree):
        return frozenset()
    if isinstance(tree, FailTree | NegTree):
        return tree
    if isinstance(tree, Alt):
        for t in tree.trees:
            r = _eval(t)
            if not isinstance(r, NegTree):
                return r
        return Neg
    if isinstance(tree, Union):
        if len(tree.weighted) == 1:
            return _eval(tree.weighted[0].tree)
        acc: list[frozenset[Any]] = []
        for w in tree.weighted:
            r = _eval(w.tree)
            if isinstance(r, frozenset):
                acc.append(r)
        return frozenset().union(*acc) if acc else Neg
    raise TypeError(f"not a name tree: {tree!r}")
