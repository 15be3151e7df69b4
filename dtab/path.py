"""Paths: the hierarchical names every request is routed by (Finagle's `Path`).

A label is a sequence of bytes in Finagle. We keep labels as `str` so the hot
path (identifiers, dtab lookups, headers) stays cheap, and map arbitrary bytes
to `str` with UTF-8 + `surrogateescape`: every byte string has exactly one
`str` form and back, so `\\xNN` escapes round-trip byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

# Finagle's Path.showableChars: a label made only of these prints as is.
SHOWABLE = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_:.#$%-")
_SHOWABLE_LABEL = re.compile(r"[0-9A-Za-z_:.#$%\-]+")
# A path with no escapes, whitespace or comments: read without the parser.
_SIMPLE_PATH = re.compile(r"(?:/[0-9A-Za-z_:.#$%\-]+)+")


def label_bytes(label: str) -> bytes:
    """The bytes a label stands for (the inverse of `label_from_bytes`)."""
    return label.encode("utf-8", "surrogateescape")


def label_from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def show_label(label: str) -> str:
    """Finagle's `Path.showElem`: as is when every byte is showable, else all `\\xNN`."""
    if _SHOWABLE_LABEL.fullmatch(label):
        return label
    return "".join(f"\\x{b:02x}" for b in label_bytes(label))


def _canonical(label: str) -> str:
    """One `str` per byte string, so equal bytes mean equal labels."""
    if label.isascii():
        return label
    try:
        return label_from_bytes(label_bytes(label))
    except UnicodeEncodeError as e:  # lone surrogates that are not escaped bytes
        raise ValueError(f"label {label!r} is not encodable as bytes: {e}") from None


@dataclass(frozen=True)
class Path:
    """A name such as `/svc/hello`: a tuple of non-empty labels."""

    elems: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        elems = self.elems
        if type(elems) is not tuple:
            elems = tuple(elems)
            object.__setattr__(self, "elems", elems)
        for e in elems:
            if not e or not isinstance(e, str):
                raise ValueError(f"path labels must be non-empty strings, got {elems!r}")
            if not e.isascii():
                object.__setattr__(self, "elems", tuple(_canonical(x) for x in elems))
                break

    @classmethod
    def _make(cls, elems: tuple[str, ...]) -> Path:
        """Build from labels already known valid (dtab rewrites): skips the checks."""
        p = object.__new__(cls)
        object.__setattr__(p, "elems", elems)
        return p

    @staticmethod
    def empty() -> Path:
        return EMPTY_PATH

    @staticmethod
    def of(*labels: str) -> Path:
        return Path(labels)

    @staticmethod
    def read(text: str) -> Path:
        """Parse Finagle's path syntax (`/a/b`, `/`, `\\xNN` escapes); DtabParseError if bad."""
        if _SIMPLE_PATH.fullmatch(text):
            return Path(tuple(text[1:].split("/")))
        from dtab.parser import parse_path

        return parse_path(text)

    @cached_property
    def show(self) -> str:
        """The canonical form: `/` for the empty path, labels escaped as Finagle does."""
        if not self.elems:
            return "/"
        return "/" + "/".join(show_label(e) for e in self.elems)

    def __len__(self) -> int:
        return len(self.elems)

    @property
    def is_empty(self) -> bool:
        return not self.elems

    def startswith(self, prefix: Path) -> bool:
        n = len(prefix.elems)
        return self.elems[:n] == prefix.elems

    def take(self, n: int) -> Path:
        return Path(self.elems[:n])

    def drop(self, n: int) -> Path:
        return Path(self.elems[n:]) if n else self

    def __add__(self, other: Path) -> Path:
        if not isinstance(other, Path):
            return NotImplemented
        if not other.elems:
            return self
        if not self.elems:
            return other
        return Path(self.elems + other.elems)

    def __str__(self) -> str:
        return self.show

    def __repr__(self) -> str:
        return f"Path({self.show})"


EMPTY_PATH = Path(())
