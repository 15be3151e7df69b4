"""Parsing dtab text with the one grammar in grammar.lark; Lark never leaks out.

Every failure becomes a `DtabParseError` naming the input, line, column and
what was expected there, so a bad `l5d-dtab` header or config line can be
reported to the person who wrote it.
"""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path as FsPath
from typing import Any

from lark import Lark, Token, Transformer
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.lexer import PatternStr

from dtab.bounded import WeightedLRU, dtab_weight
from dtab.dtab import ANY, Dentry, Dtab, Prefix
from dtab.errors import DtabParseError
from dtab.nametree import Alt, Empty, Fail, Leaf, NameTree, Neg, Union, Weighted
from dtab.path import EMPTY_PATH, Path, label_from_bytes

_GRAMMAR = FsPath(__file__).with_name("grammar.lark")

# Limits checked before Lark (or any recursive code: hashing, show, binding) sees the text.
# Finagle has none; hostile `l5d-dtab` headers do: a 3000-deep tree overflowed the stack
# and a weight of 1e32 broke the formatter. Real dtabs nest a handful of levels.
MAX_NESTING = 32
MAX_WEIGHT = 1e9
_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")

# How an expected terminal reads in a message, and in which order they are listed.
_NAMED = {
    "PREFIX": "a prefix",
    "PATH": "a path",
    "WEIGHT": "a weight",
    "$END": "end of input",
}
_ORDER = ["PREFIX", "PATH", "!", "~", "$", "(", "WEIGHT", "*", "=>", "&", "|", ")", ";", "$END"]


def _decode_label(text: str) -> str:
    if "\\" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        m = _ESCAPE.match(text, i)
        if m:
            out.append(int(m.group(1), 16))
            i = m.end()
        else:
            out.append(ord(text[i]))
            i += 1
    return label_from_bytes(bytes(out))


def _decode_path(text: str) -> Path:
    if text == "/":
        return EMPTY_PATH
    return Path(tuple(_decode_label(e) for e in text[1:].split("/")))


def _decode_prefix(text: str) -> Prefix:
    if text == "/":
        return Prefix(())
    return Prefix(tuple(ANY if e == "*" else _decode_label(e) for e in text[1:].split("/")))


class _BadWeight(ValueError):
    def __init__(self, token: Token) -> None:
        super().__init__(str(token))
        self.token = token


class _Build(Transformer[Token, Any]):
    """Builds values while LALR reduces (no intermediate parse tree)."""

    def start_path(self, c: list[Token]) -> Path:
        return _decode_path(c[0])

    def start_prefix(self, c: list[Token]) -> Prefix:
        return _decode_prefix(c[0])

    def start_tree(self, c: list[NameTree[Path]]) -> NameTree[Path]:
        return c[0]

    def start_dentry(self, c: list[Dentry]) -> Dentry:
        return c[0]

    def start_dtab(self, c: list[Dtab]) -> Dtab:
        return c[0]

    def dtab(self, c: list[Dentry]) -> Dtab:
        return Dtab(tuple(c))

    def dentry(self, c: list[Any]) -> Dentry:
        return Dentry(_decode_prefix(c[0]), c[1])

    def tree(self, c: list[NameTree[Path]]) -> NameTree[Path]:
        return c[0] if len(c) == 1 else Alt(tuple(c))

    def tree1(self, c: list[Weighted[Path]]) -> NameTree[Path]:
        # Finagle keeps a lone member's tree and drops its weight.
        return c[0].tree if len(c) == 1 else Union(tuple(c))

    def weighted(self, c: list[Any]) -> Weighted[Path]:
        weight = float(c[0])
        if not math.isfinite(weight) or weight > MAX_WEIGHT:
            raise _BadWeight(c[0])
        return Weighted(weight, c[1])

    def unweighted(self, c: list[NameTree[Path]]) -> Weighted[Path]:
        return Weighted(1.0, c[0])

    def leaf(self, c: list[Token]) -> NameTree[Path]:
        return Leaf(_decode_path(c[0]))

    def fail(self, _: list[Any]) -> NameTree[Path]:
        return Fail

    def neg(self, _: list[Any]) -> NameTree[Path]:
        return Neg

    def empty(self, _: list[Any]) -> NameTree[Path]:
        return Empty


@cache
def _parser() -> Lark:
    return Lark(
        _GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        start=["start_path", "start_prefix", "start_tree", "start_dentry", "start_dtab"],
        transformer=_Build(),
        propagate_positions=False,
        maybe_placeholders=False,
    )


@cache
def _terminal_text() -> dict[str, str]:
    """Terminal name -> how a person reads it (`'=>'`, `a path`)."""
    out = dict(_NAMED)
    for t in _parser().terminals:
        if isinstance(t.pattern, PatternStr):
            out[t.name] = f"'{t.pattern.value}'"
    return out


def _order_key(name: str, text: str) -> tuple[int, str]:
    key = text.strip("'") if text.startswith("'") else name
    return (_ORDER.index(key) if key in _ORDER else len(_ORDER), text)


def _expected(names: set[str] | frozenset[str] | None) -> str:
    table = _terminal_text()
    items = sorted(
        ((n, table.get(n, n)) for n in (names or ()) if n not in ("WS", "COMMENT")),
        key=lambda nt: _order_key(*nt),
    )
    words = [t for _, t in items]
    if not words:
        return "nothing more"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _quote_input(text: str) -> str:
    shown = text if len(text) <= 200 else text[:200] + "..."
    return f"'{_one_line(shown)}'"


def _marked(text: str, pos: int) -> str:
    """Finagle's pointer: the input with the offending character in brackets."""
    start, end = max(0, pos - 60), min(len(text), pos + 61)
    before = ("..." if start else "") + text[start:pos]
    after = text[pos + 1 : end] + ("..." if end < len(text) else "")
    return f"'{_one_line(before)}[{_one_line(text[pos : pos + 1])}]{_one_line(after)}'"


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _error(kind: str, text: str, pos: int, expected: str, found: str) -> DtabParseError:
    line, column = _line_col(text, pos)
    message = (
        f"invalid {kind} {_quote_input(text)} at line {line}, column {column}: "
        f"expected {expected}; found {found} at {_marked(text, pos)}"
    )
    return DtabParseError(message, text=text, line=line, column=column, expected=expected)


_IN_PATH = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_:.#$%-/*")


def _short(value: str) -> str:
    return f"'{value}'" if len(value) <= 40 else f"'{value[:40]}...'"


def _found_char(text: str, pos: int) -> str:
    if pos >= len(text):
        return "end of input"
    c = text[pos]
    return f"'{c}'" if c.isprintable() else f"{c!r}"


def _accepted(text: str, pos: int, start: str, fallback: Any) -> set[str]:
    """Exactly which tokens could come at `pos` (LALR's own sets over-approximate).

    Re-parses the text before the error interactively and asks the parser what
    it would accept there; only runs on the error path.
    """
    try:
        ip = _parser().parse_interactive(text[:pos], start=start)
        ip.exhaust_lexer()
        return set(ip.accepts())
    except LarkError:
        return set(fallback or ())


_LABEL_OR_SLASH = frozenset(
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_:.#$%-/*\\"
)


def _check_nesting(kind: str, text: str) -> None:
    """Refuse more than MAX_NESTING open parentheses, naming the first one past it.

    A linear scan that knows just enough of the lexer: `#` inside a path is a label
    character, elsewhere it starts a comment to the end of the line.
    """
    if "(" not in text:
        return
    depth = 0
    in_path = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if in_path:
            if c in _LABEL_OR_SLASH:
                i += 1
                continue
            in_path = False
        if c == "/":
            in_path = True
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c == "(":
            depth += 1
            if depth > MAX_NESTING:
                raise _error(kind, text, i, f"at most {MAX_NESTING} nested parentheses",
                             "'('")
        elif c == ")":
            depth = max(0, depth - 1)
        i += 1


def _parse(text: str, start: str, kind: str) -> Any:
    if not isinstance(text, str):
        raise TypeError(f"{kind} text must be str, got {type(text).__name__}")
    _check_nesting(kind, text)
    try:
        return _parser().parse(text, start=start)
    except UnexpectedCharacters as e:
        pos = e.pos_in_stream
        if text[pos] == "\\":
            expected = "'\\x' and two hex digits"
        else:
            expected = _expected(_accepted(text, pos, start, e.allowed))
        raise _error(kind, text, pos, expected, _found_char(text, pos)) from None
    except UnexpectedToken as e:
        tok = e.token
        if tok.type == "$END":
            pos, found = len(text), "end of input"
        else:
            pos = tok.start_pos if tok.start_pos is not None else len(text)
            found = _short(tok.value)
            if tok.type in ("PATH", "PREFIX") and pos > 0 and text[pos - 1] in _IN_PATH:
                # `/a/` or `/a//b`: Lark saw two paths; Finagle says an empty label.
                pos += 1
                raise _error(kind, text, pos, "a label", _found_char(text, pos)) from None
        raise _error(
            kind, text, pos, _expected(_accepted(text, pos, start, e.expected)), found
        ) from None
    except UnexpectedEOF as e:
        raise _error(kind, text, len(text), _expected(set(e.expected)), "end of input") from None
    except VisitError as e:
        if isinstance(e.orig_exc, _BadWeight):
            return _bad_weight(kind, text, e.orig_exc)
        raise _error(kind, text, 0, "valid syntax", str(e.orig_exc)) from None
    except _BadWeight as e:
        return _bad_weight(kind, text, e)
    except (UnexpectedInput, LarkError) as e:  # any other Lark failure: still ours
        raise _error(kind, text, 0, "valid syntax", type(e).__name__) from None


def _bad_weight(kind: str, text: str, e: _BadWeight) -> Any:
    pos = e.token.start_pos or 0
    raise _error(kind, text, pos, f"a finite weight of at most {MAX_WEIGHT:.0f}",
                 _short(e.token.value)) from None


def parse_path(text: str) -> Path:
    return _parse(text, "start_path", "path")


def parse_prefix(text: str) -> Prefix:
    return _parse(text, "start_prefix", "prefix")


def parse_tree(text: str) -> NameTree[Path]:
    return _parse(text, "start_tree", "name tree")


def parse_dentry(text: str) -> Dentry:
    return _parse(text, "start_dentry", "dentry")


def parse_dtab(text: str) -> Dtab:
    return _parse(text, "start_dtab", "dtab")


# Bounded by bytes, not count: 1024 cached 40 KB dtabs held over a GB (issue 8).
PARSED_CACHE_BYTES = 8 * 1024 * 1024
_parsed: WeightedLRU[str, Dtab] = WeightedLRU(PARSED_CACHE_BYTES, max_entries=1024)


def parse_dtab_cached(text: str) -> Dtab:
    """Dtabs are immutable, so the same text (a config, the admin's dtab) is parsed
    once; errors are not cached."""
    hit = _parsed.get(text)
    if hit is None:
        hit = parse_dtab(text)
        _parsed.put(text, hit, len(text) + dtab_weight(hit))
    return hit
