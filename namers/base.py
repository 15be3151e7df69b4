"""What a namer is: something that turns the path under `/#/<prefix>` into a name tree."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from dtab.addr import BoundName
from dtab.observable import Activity
from dtab.path import Path

# A namer's leaf is either bound (endpoints known) or a further path to evaluate
# against the dtab again (a rewriting namer such as domainToPathPfx).
Name = BoundName | Path

log = logging.getLogger(__name__)


@runtime_checkable
class Namer(Protocol):
    """`lookup` receives the path *after* the namer's own prefix.

    It returns an Activity of a NameTree of names: Pending while unknown,
    Ok(Neg) when the name does not exist here (use `Neg.because(reason)` so
    the delegator and the 502 text can say why), Ok(Leaf(BoundName)) when it
    does. The Activity changes when the answer does; the binding cache
    follows it. Lookups must be cheap to repeat: namers cache per name.
    """

    def lookup(self, path: Path) -> Activity: ...


class ManagedNamer(Namer, Protocol):
    """A namer with background work (watches, file polling)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


async def close_namers(namers: Iterable[tuple[Path, Namer]]) -> None:
    """Close every namer that has background work; one failing does not keep the rest open."""
    for prefix, namer in namers:
        close = getattr(namer, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:
                log.exception("closing namer %s failed", prefix.show)


def bound_names(namers: Iterable[tuple[Path, Namer]]) -> list[str]:
    """Bound ids the enumerating namers (io.l5d.fs, io.l5d.k8s) know, sorted; a
    transformed namer is asked through the namer it wraps."""
    out: set[str] = set()
    for _prefix, namer in namers:
        inner = getattr(namer, "namer", namer)
        names = getattr(inner, "bound_names", None)
        if names is not None:
            out.update(names())
    return sorted(out)
