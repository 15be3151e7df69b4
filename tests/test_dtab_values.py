"""Paths, name trees, dentries and dtabs: construction, show bytes and lookup."""

from __future__ import annotations

import pytest

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


def leaf(s: str) -> Leaf[Path]:
    return Leaf(Path.read(s))


def test_path_basics() -> None:
    p = Path.read("/a/b/c")
    assert p.elems == ("a", "b", "c")
    assert p == Path.of("a", "b", "c")
    assert len(p) == 3
    assert p.startswith(Path.of("a", "b")) and not p.startswith(Path.of("b"))
    assert p.take(2) == Path.of("a", "b") and p.drop(2) == Path.of("c")
    assert Path.of("a") + Path.of("b") == Path.of("a", "b")
    assert Path.empty().show == "/" and Path.read("/") == Path.empty()
    assert hash(Path.read("/a/b")) == hash(Path.of("a", "b"))
    with pytest.raises(ValueError):
        Path.of("a", "")


def test_lookup_order_last_dentry_first_with_residual() -> None:
    d = Dtab.read("/a=>/b;/a/x=>/c;/a=>/d | /e")
    assert d.lookup(Path.read("/a/x/y")) == Alt.of(
        Alt.of(leaf("/d/x/y"), leaf("/e/x/y")), leaf("/c/y"), leaf("/b/x/y")
    )
    assert d.lookup(Path.read("/q")) == Neg
    assert d.lookup(Path.read("/a/x")) == Alt.of(
        Alt.of(leaf("/d/x"), leaf("/e/x")), leaf("/c"), leaf("/b/x")
    )


def test_neg_because_is_neg() -> None:
    n = Neg.because("service default/hello not found")
    assert n == Neg and hash(n) == hash(Neg) and n.show == "~"
    assert n.reason == "service default/hello not found"


def test_parse_error_is_ours() -> None:
    with pytest.raises(DtabParseError) as e:
        Dtab.read("/a=>")
    assert e.value.line == 1 and e.value.column == 5
    assert "'/a=>'" in str(e.value) and "expected a path" in str(e.value)


def test_smoke_show() -> None:
    text = "/svc=>/#/io.l5d.fs;/svc/*/x=>/a | /b & 0.13*/c;/x=>~"
    d = Dtab.read(text)
    assert d.show == text
    assert d[1].prefix == Prefix(("svc", ANY, "x"))
    assert NameTree.read("! | $").show == "! | $"
    assert Union((Weighted(0.5, Fail), Weighted(1, Empty))).show == "0.50*! & $"
    assert Dentry.read("/a=>/b").show == "/a=>/b"
