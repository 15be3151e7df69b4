"""Delegation tables: ordered rewrite rules from logical names to other names.

Mirrors Finagle's `Dtab`, `Dentry` and `Dentry.Prefix`. `Dtab.lookup` is on
the request path, so each Dtab precomputes its dentries, last first, as plain
tuples that a lookup compares against the path's labels without allocating.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, overload

from dtab.nametree import Alt, Leaf, NameTree, Neg
from dtab.path import Path, _canonical, show_label


class AnyElem:
    """`*` in a dentry prefix: matches any one label (distinct from a literal `\\x2a`)."""

    _instance: AnyElem | None = None

    def __new__(cls) -> AnyElem:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    show = "*"

    def __repr__(self) -> str:
        return "ANY"

    def __reduce__(self) -> str:
        return "ANY"


ANY = AnyElem()
PrefixElem = str | AnyElem


@dataclass(frozen=True)
class Prefix:
    """A dentry's prefix: labels, any of which may be `ANY` (written `*`)."""

    elems: tuple[PrefixElem, ...] = ()

    def __post_init__(self) -> None:
        elems = tuple(self.elems)
        for e in elems:
            if e is not ANY and (not isinstance(e, str) or not e):
                raise ValueError(f"prefix elements must be non-empty labels or ANY, got {elems!r}")
        object.__setattr__(
            self,
            "elems",
            tuple(e if e is ANY else _canonical(e) for e in elems),  # type: ignore[arg-type]
        )

    @staticmethod
    def read(text: str) -> Prefix:
        from dtab.parser import parse_prefix

        return parse_prefix(text)

    @staticmethod
    def of_path(path: Path) -> Prefix:
        return Prefix(path.elems)

    @property
    def show(self) -> str:
        return "/" + "/".join("*" if e is ANY else show_label(e) for e in self.elems)  # type: ignore[arg-type]

    @property
    def has_wildcard(self) -> bool:
        return any(e is ANY for e in self.elems)

    def matches(self, path: Path) -> bool:
        """Labels equal, `*` matching any one label; the path may be longer."""
        pe = path.elems
        if len(self.elems) > len(pe):
            return False
        return all(e is ANY or e == p for e, p in zip(self.elems, pe, strict=False))

    def __len__(self) -> int:
        return len(self.elems)

    def __str__(self) -> str:
        return self.show

    def __repr__(self) -> str:
        return f"Prefix({self.show})"


@dataclass(frozen=True)
class Dentry:
    """One rule `prefix=>dst`. A `Path` or string prefix is accepted and converted."""

    prefix: Prefix
    dst: NameTree[Path]

    def __post_init__(self) -> None:
        p: Any = self.prefix
        if isinstance(p, Path):
            object.__setattr__(self, "prefix", Prefix(p.elems))
        elif isinstance(p, str):
            object.__setattr__(self, "prefix", Prefix.read(p))
        elif not isinstance(p, Prefix):
            raise TypeError(f"dentry prefix must be a Prefix or Path, got {p!r}")
        if not isinstance(self.dst, NameTree):
            raise TypeError(f"dentry dst must be a NameTree, got {self.dst!r}")

    @staticmethod
    def read(text: str) -> Dentry:
        from dtab.parser import parse_dentry

        return parse_dentry(text)

    @cached_property
    def show(self) -> str:
        return f"{self.prefix.show}=>{self.dst.show}"

    def equiv(self, other: Dentry) -> bool:
        """Finagle's `Equiv[Dentry]`: same prefix, dsts equal once simplified."""
        return self.prefix == other.prefix and self.dst.equiv(other.dst)

    def __str__(self) -> str:
        return self.show

    def __repr__(self) -> str:
        return f"Dentry({self.show})"


# A precomputed dentry: (prefix length, labels to compare when there is no `*`,
# else None, (position, label) pairs to compare when there is, dst, dentry).
_Rule = tuple[int, tuple[str, ...] | None, tuple[tuple[int, str], ...], NameTree[Path], "Dentry"]


def _rewrite(dst: NameTree[Path], suffix: tuple[str, ...]) -> NameTree[Path]:
    """`dst` with the unmatched rest of the path appended to every leaf."""
    if not suffix:
        return dst
    if type(dst) is Leaf:
        return Leaf(Path._make(dst.value.elems + suffix))
    rest = Path._make(suffix)
    return dst.map(lambda p: p + rest)


def _compile(
    dentries: tuple[Dentry, ...],
) -> tuple[dict[str, tuple[_Rule, ...]], tuple[_Rule, ...]]:
    """Rules last dentry first, indexed by the first label a path must have.

    A path only needs the rules filed under its first label plus those whose
    first element is `*` or whose prefix is `/`, so a miss costs one dict probe.
    """
    rules: list[_Rule] = []
    for d in reversed(dentries):
        elems = d.prefix.elems
        if d.prefix.has_wildcard:
            checks = tuple((i, e) for i, e in enumerate(elems) if e is not ANY)
            rules.append((len(elems), None, checks, d.dst, d))  # type: ignore[arg-type]
        else:
            rules.append((len(elems), elems, (), d.dst, d))  # type: ignore[arg-type]

    def first(r: _Rule) -> object:
        return r[4].prefix.elems[0] if r[0] else ANY

    is_generic = [first(r) is ANY for r in rules]
    generic = tuple(r for r, g in zip(rules, is_generic, strict=True) if g)
    index = {
        label: tuple(r for r, g in zip(rules, is_generic, strict=True) if g or first(r) == label)
        for label in {first(r) for r in rules if first(r) is not ANY}
    }
    return index, generic  # type: ignore[return-value]


@dataclass(frozen=True)
class Dtab:
    """An ordered list of dentries; later dentries take precedence on lookup."""

    dentries: tuple[Dentry, ...] = ()
    _index: dict[str, tuple[_Rule, ...]] = field(init=False, repr=False, compare=False, hash=False)
    _generic: tuple[_Rule, ...] = field(init=False, repr=False, compare=False, hash=False)
    _hash: int = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ds = tuple(self.dentries)
        for d in ds:
            if not isinstance(d, Dentry):
                raise TypeError(f"Dtab entries must be Dentry, got {d!r}")
        object.__setattr__(self, "dentries", ds)
        index, generic = _compile(ds)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_generic", generic)
        object.__setattr__(self, "_hash", hash(ds))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Dtab):
            return NotImplemented
        return self._hash == other._hash and self.dentries == other.dentries

    @staticmethod
    def read(text: str) -> Dtab:
        """Parse `/a=>/b;/c=>/d | ~` (comments, whitespace and a trailing `;` allowed)."""
        from dtab.parser import parse_dtab_cached

        return parse_dtab_cached(text)

    @staticmethod
    def empty() -> Dtab:
        return EMPTY_DTAB

    @cached_property
    def show(self) -> str:
        return ";".join(d.show for d in self.dentries)

    def _matches(self, path: Path) -> list[tuple[_Rule, tuple[str, ...]]]:
        pe = path.elems
        n_path = len(pe)
        rules = self._index.get(pe[0], self._generic) if pe else self._generic
        out = []
        for rule in rules:
            n, labels, checks = rule[0], rule[1], rule[2]
            if n > n_path:
                continue
            if labels is not None:
                if pe[:n] != labels:
                    continue
            else:
                for i, label in checks:
                    if pe[i] != label:
                        break
                else:
                    out.append((rule, pe[n:]))
                continue
            out.append((rule, pe[n:]))
        return out

    def lookup(self, path: Path) -> NameTree[Path]:
        """Finagle's `Dtab.lookup`: each matching dentry, last first, rewritten.

        No match is `Neg`, one match is its rewritten tree, several are an `Alt`
        in that order. The result is not simplified (the delegator shows it).
        """
        matches = self._matches(path)
        if not matches:
            return Neg
        if len(matches) == 1:
            rule, rest = matches[0]
            return _rewrite(rule[3], rest)
        return Alt(tuple(_rewrite(rule[3], rest) for rule, rest in matches))

    def lookup_dentries(self, path: Path) -> list[tuple[Dentry, NameTree[Path]]]:
        """Like `lookup`, but keeps which dentry produced each alternative (for delegation)."""
        return [(rule[4], _rewrite(rule[3], rest)) for rule, rest in self._matches(path)]

    @property
    def simplified(self) -> Dtab:
        """Dsts simplified and Neg dentries (no-ops) dropped, as Finagle does."""
        ds = (Dentry(d.prefix, d.dst.simplified) for d in self.dentries)
        return Dtab(tuple(d for d in ds if d.dst != Neg))

    def equiv(self, other: Dtab) -> bool:
        """Finagle's `Equiv[Dtab]`: same length, dentries pairwise equivalent."""
        return len(self) == len(other) and all(
            a.equiv(b) for a, b in zip(self.dentries, other.dentries, strict=True)
        )

    def strip_prefix(self, prefix: Dtab) -> Dtab:
        """This dtab without `prefix`'s dentries at its start (if they are all there)."""
        n = len(prefix.dentries)
        if self.dentries[:n] != prefix.dentries:
            return self
        return Dtab(self.dentries[n:])

    @overload
    def __add__(self, other: Dtab) -> Dtab: ...
    @overload
    def __add__(self, other: Dentry) -> Dtab: ...

    def __add__(self, other: Dtab | Dentry) -> Dtab:
        if isinstance(other, Dentry):
            return Dtab(self.dentries + (other,))
        if isinstance(other, Dtab):
            if not other.dentries:
                return self
            if not self.dentries:
                return other
            return Dtab(self.dentries + other.dentries)
        return NotImplemented

    def __len__(self) -> int:
        return len(self.dentries)

    def __iter__(self) -> Iterator[Dentry]:
        return iter(self.dentries)

    def __getitem__(self, i: int) -> Dentry:
        return self.dentries[i]

    def __str__(self) -> str:
        return self.show

    def __repr__(self) -> str:
        return f"Dtab({self.show})"


EMPTY_DTAB = Dtab(())
