"""What a transformer is: a rewrite of bound trees applied after binding, in order."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from dtab.addr import BoundName
from dtab.nametree import NameTree
from dtab.path import Path


@runtime_checkable
class Transformer(Protocol):
    """`prefix` is the transformer's id prefix, e.g. `/io.l5d.k8s.daemonset/default/incoming/l5d`.

    A transformed BoundName gets id `/%` + prefix + original id. `transform`
    must return equal trees for equal inputs and reuse its derived Vars per
    original id (no new subscription per call): it runs on every re-bind.
    """

    prefix: Path

    def transform(self, tree: NameTree[BoundName]) -> NameTree[BoundName]: ...
