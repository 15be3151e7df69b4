"""Dtabs, paths and name trees with Finagle's syntax and semantics (pure: no I/O).

`from dtab import Path, Dentry, Dtab, NameTree` is the public API; values are
immutable and hashable, every one has `.show`, and `X.read(x.show) == x`.
"""

from dtab.dtab import ANY, Dentry, Dtab, Prefix
from dtab.errors import DtabParseError
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
    Union,
    Weighted,
)
from dtab.path import Path

__all__ = [
    "ANY",
    "Alt",
    "Dentry",
    "Dtab",
    "DtabParseError",
    "Empty",
    "EmptyTree",
    "Fail",
    "FailTree",
    "Leaf",
    "NameTree",
    "Neg",
    "NegTree",
    "Path",
    "Prefix",
    "Union",
    "Weighted",
]
