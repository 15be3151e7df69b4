"""Our Lark grammar against a line-by-line model of Finagle's NameTreeParsers.scala.

Finagle parses dtabs with a hand-written recursive-descent parser. The model
below follows its methods one for one (eatWhitespace, parseLabel, parseNumber,
parseWeighted, ...), and hypothesis feeds both parsers the same strings: they
must accept and reject the same inputs and build equal values.

Known, deliberate difference: a weight too large for a double is an error here
(Finagle would read Infinity and print `Infinity*`, which it cannot read back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dtab import (
    ANY,
    Alt,
    Dentry,
    Dtab,
    DtabParseError,
    Empty,
    Fail,
    Leaf,
    NameTree,
    Neg,
    Path,
    Prefix,
    Union,
    Weighted,
)
from dtab.path import SHOWABLE, label_from_bytes

# java.lang.Character.isWhitespace
JAVA_WS = set(" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\u1680\u2028\u2029\u205f\u3000") | {
    chr(c) for c in range(0x2000, 0x200B) if c != 0x2007
}
HEX = set("0123456789abcdefABCDEF")


class Illegal(Exception):
    pass


class FinagleModel:
    """NameTreeParsers.scala, transcribed (one Python method per Scala method)."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0

    def at_end(self) -> bool:
        return self.i >= len(self.s)

    def peek(self) -> str | None:
        return None if self.at_end() else self.s[self.i]

    def next(self) -> None:
        self.i += 1

    def maybe_eat(self, c: str) -> bool:
        if self.peek() != c:
            return False
        self.next()
        return True

    def eat(self, c: str) -> None:
        if not self.maybe_eat(c):
            raise Illegal(f"{c!r} expected at {self.i}")

    def eat_whitespace(self) -> None:
        while not self.at_end() and (self.s[self.i] in JAVA_WS or self.s[self.i] == "#"):
            if self.s[self.i] == "#":
                self.eat_line()
            else:
                self.next()

    def eat_line(self) -> None:
        while not self.at_end() and self.s[self.i] != "\n":
            self.next()
        if not self.at_end():
            self.eat("\n")

    def ensure_end(self) -> None:
        if not self.at_end():
            raise Illegal(f"end of input expected at {self.i}")

    def parse_hex_char(self) -> str:
        c = self.peek()
        if c is not None and c in HEX:
            self.next()
            return c
        raise Illegal("hex char")

    @staticmethod
    def is_label_char(c: str | None) -> bool:
        return c is not None and (c in SHOWABLE or c == "\\")

    def parse_label(self) -> str:
        out = bytearray()
        while True:
            c = self.peek()
            if c is not None and c in SHOWABLE:
                self.next()
                out.append(ord(c))
            elif c == "\\":
                self.next()
                self.eat("x")
                fst = self.parse_hex_char()
                snd = self.parse_hex_char()
                out.append(int(fst + snd, 16))
            else:
                raise Illegal("label char")
            if not self.is_label_char(self.peek()):
                return label_from_bytes(bytes(out))

    def is_prefix_elem_char(self, c: str | None) -> bool:
        return self.is_label_char(c) or c == "*"

    def parse_prefix_elem(self) -> Any:
        if self.peek() == "*":
            self.next()
            return ANY
        return self.parse_label()

    @staticmethod
    def is_number_char(c: str | None) -> bool:
        return c is not None and (c in "0123456789" or c == ".")

    def parse_number(self) -> float:
        sb = ""
        seen_dot = False
        while self.is_number_char(self.peek()):
            if self.peek() == ".":
                if seen_dot:
                    raise Illegal("number char")
                seen_dot = True
            sb += self.s[self.i]
            self.next()
        if sb == ".":
            raise Illegal("weight")
        return float(sb)

    def parse_dentry_prefix(self) -> Prefix:
        self.eat_whitespace()
        self.eat("/")
        if not self.is_prefix_elem_char(self.peek()):
            return Prefix(())
        elems = [self.parse_prefix_elem()]
        while self.maybe_eat("/"):
            elems.append(self.parse_prefix_elem())
        return Prefix(tuple(elems))

    def parse_path(self) -> Path:
        self.eat_whitespace()
        self.eat("/")
        if not self.is_label_char(self.peek()):
            return Path.empty()
        labels = [self.parse_label()]
        while self.maybe_eat("/"):
            labels.append(self.parse_label())
        return Path(tuple(labels))

    def parse_tree(self) -> NameTree[Path]:
        trees = []
        while True:
            trees.append(self.parse_tree1())
            self.eat_whitespace()
            if not self.maybe_eat("|"):
                break
        return Alt(tuple(trees)) if len(trees) > 1 else trees[0]

    def parse_tree1(self) -> NameTree[Path]:
        trees = []
        while True:
            trees.append(self.parse_weighted())
            self.eat_whitespace()
            if not self.maybe_eat("&"):
                break
        return Union(tuple(trees)) if len(trees) > 1 else trees[0].tree

    def parse_simple(self) -> NameTree[Path]:
        self.eat_whitespace()
        c = self.peek()
        if c == "(":
            self.next()
            tree = self.parse_tree()
            self.eat_whitespace()
            self.eat(")")
            return tree
        if c == "/":
            return Leaf(self.parse_path())
        if c == "!":
            self.next()
            return Fail
        if c == "~":
            self.next()
            return Neg
        if c == "$":
            self.next()
            return Empty
        raise Illegal("simple")

    def parse_weighted(self) -> Weighted[Path]:
        self.eat_whitespace()
        weight = 1.0
        if self.is_number_char(self.peek()):
            weight = self.parse_number()
            self.eat_whitespace()
            self.eat("*")
            self.eat_whitespace()
        return Weighted(weight, self.parse_simple())

    def parse_dentry(self) -> Dentry:
        prefix = self.parse_dentry_prefix()
        self.eat_whitespace()
        self.eat("=")
        self.eat(">")
        return Dentry(prefix, self.parse_tree())

    def parse_dtab(self) -> Dtab:
        dentries = []
        while True:
            self.eat_whitespace()
            if not self.at_end():
                dentries.append(self.parse_dentry())
                self.eat_whitespace()
            if not self.maybe_eat(";"):
                break
        return Dtab(tuple(dentries))

    def all(self, parse: Callable[[], Any]) -> Any:
        value = parse()
        self.eat_whitespace()
        self.ensure_end()
        return value


def finagle(kind: str, s: str) -> Any:
    m = FinagleModel(s)
    try:
        return m.all(getattr(m, f"parse_{kind}"))
    except Illegal:
        return Illegal


def ours(kind: str, s: str) -> Any:
    read = {
        "path": Path.read,
        "dentry_prefix": Prefix.read,
        "tree": NameTree.read,
        "dentry": Dentry.read,
        "dtab": Dtab.read,
    }[kind]
    try:
        return read(s)
    except DtabParseError:
        return Illegal


KINDS = ["path", "dentry_prefix", "tree", "dentry", "dtab"]

dtabish = st.text(
    alphabet=st.sampled_from(list("/ab*&|!~$()=>;#.019\\xAF \n\t") + ["\u3000", "é", "\r"]),
    max_size=24,
)
# Strings built from real tokens hit deep, valid structure more often than raw characters.
tokens = st.sampled_from(
    ["/a", "/b/c", "/", "/*", "/\\x41", " ", "\n", "# c\n", "=>", ";", "|", "&", "(", ")",
     "!", "~", "$", "0.5", "2", ".5", "*", "/a/*/b", "/#/io.l5d.fs", "/$/inet/1"]
)
token_strings = st.lists(tokens, max_size=12).map("".join)


@settings(max_examples=400)
@given(st.sampled_from(KINDS), st.one_of(dtabish, token_strings))
@example("dtab", "/#foo => /biz # c\n | ( /bliz & # c\n /bluth ) # c\n ; #x\n #/ignore=>/me;\n")
@example("tree", "1 * /foo & 2 * /bar | .5 * /bar & .5 * /baz")
@example("dentry", "/foo/*bar/baz => !")
@example("path", "/\\x66\\x6f\\x6F")
@example("dtab", "/=>!;")
@example("dtab", ";")
def test_same_language_and_values_as_finagle(kind: str, text: str) -> None:
    assert ours(kind, text) == finagle(kind, text)


@pytest.mark.parametrize("kind", KINDS)
def test_model_sanity(kind: str) -> None:
    # The model itself must accept something and reject something for each entry point.
    good = {"path": "/a", "dentry_prefix": "/a/*", "tree": "/a", "dentry": "/a=>/b",
            "dtab": "/a=>/b"}[kind]
    assert finagle(kind, good) is not Illegal and finagle(kind, good + " )") is Illegal
