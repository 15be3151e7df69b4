"""Observable values for things that change: addresses, namer results, dtabs.

Finagle models these as `Var` and `Activity`. We keep the same split: a `Var`
always holds a value and tells observers when it changes; an `Activity` is a
`Var` whose value is `Pending`, `Ok(value)` or `Failed(error)`. Observers are
plain callables run synchronously on the event loop thread that calls `set`,
so there are no locks and no threads here (and no I/O: `dtab` stays pure).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")

Unsubscribe = Callable[[], None]


class Var(Generic[T]):
    """A value that can change; observers see every distinct new value."""

    __slots__ = ("_value", "_observers", "__weakref__")

    def __init__(self, value: T) -> None:
        self._value = value
        self._observers: list[Callable[[T], None]] = []

    @property
    def value(self) -> T:
        return self._value

    def set(self, value: T) -> None:
        """Replace the value; observers run only if it differs from the current one."""
        if value == self._value:
            return
        self._value = value
        for fn in tuple(self._observers):
            fn(value)

    def observe(self, fn: Callable[[T], None], *, initial: bool = False) -> Unsubscribe:
        """Call `fn` on every change (and once now if `initial`); returns an unsubscribe."""
        self._observers.append(fn)
        if initial:
            fn(self._value)

        def unsubscribe() -> None:
            try:
                self._observers.remove(fn)
            except ValueError:
                pass

        return unsubscribe

    @property
    def observed(self) -> bool:
        return bool(self._observers)

    def map(self, f: Callable[[T], U]) -> DerivedVar[U]:
        return DerivedVar((self,), lambda values: f(values[0]))

    @staticmethod
    def combine(sources: Sequence[Var[Any]], f: Callable[[list[Any]], U]) -> DerivedVar[U]:
        return DerivedVar(tuple(sources), f)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._value!r})"


class DerivedVar(Var[U]):
    """A Var computed from others; it follows them until `close()`.

    Derivation is eager (it subscribes at construction) because the things we
    derive (transformed address sets) are held by the binding cache, which
    closes them when the binding goes idle.
    """

    __slots__ = ("_sources", "_f", "_unsubs")

    def __init__(self, sources: tuple[Var[Any], ...], f: Callable[[list[Any]], U]) -> None:
        self._sources = sources
        self._f = f
        super().__init__(f([s.value for s in sources]))
        self._unsubs = [s.observe(self._recompute) for s in sources]

    def _recompute(self, _: object) -> None:
        self.set(self._f([s.value for s in self._sources]))

    def close(self) -> None:
        for unsub in self._unsubs:
            unsub()
        self._unsubs = []


@dataclass(frozen=True, slots=True)
class Pending:
    """Not known yet (a namer is still listing, DNS has not answered)."""


@dataclass(frozen=True, slots=True)
class Ok(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class Failed:
    error: BaseException

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Failed)
            and type(other.error) is type(self.error)
            and str(other.error) == str(self.error)
        )

    def __hash__(self) -> int:
        return hash((type(self.error), str(self.error)))


PENDING = Pending()

ActivityState = Pending | Ok[T] | Failed


class Activity(Var[ActivityState]):
    """A Var of Pending | Ok | Failed: a lookup whose answer arrives and changes later."""

    __slots__ = ()

    def __init__(self, state: ActivityState = PENDING) -> None:
        super().__init__(state)

    @classmethod
    def ok(cls, value: Any) -> Activity:
        return cls(Ok(value))

    def set_ok(self, value: Any) -> None:
        self.set(Ok(value))

    def set_failed(self, error: BaseException) -> None:
        self.set(Failed(error))
