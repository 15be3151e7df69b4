"""Paths, name trees, dentries and dtabs: parsing, Finagle's exact `show`, lookup.

Cases marked "Finagle" mirror twitter/finagle's PathTest, NameTreeParsersTest,
NameTreeTest and DtabTest.
"""

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
from dtab.nametree import format_weight


def leaf(s: str) -> Leaf[Path]:
    return Leaf(Path.read(s))


def u(*members: tuple[float, NameTree[Path]]) -> Union[Path]:
    return Union(tuple(Weighted(w, t) for w, t in members))


# -- Path ---------------------------------------------------------------------------


def test_path_api() -> None:
    p = Path.read("/a/b/c")
    assert p.elems == ("a", "b", "c")
    assert p == Path.of("a", "b", "c") == Path(("a", "b", "c"))
    assert len(p) == 3 and len(Path.empty()) == 0
    assert p.startswith(Path.of("a", "b")) and p.startswith(Path.empty())
    assert not p.startswith(Path.of("b")) and not Path.of("ab").startswith(Path.of("a"))
    assert p.take(2) == Path.of("a", "b") and p.drop(2) == Path.of("c")
    assert p.take(0) == Path.empty() and p.drop(3) == Path.empty()
    assert Path.of("a") + Path.of("b") == Path.of("a", "b")
    assert p + Path.empty() == p and Path.empty() + p == p
    assert hash(Path.read("/a/b")) == hash(Path.of("a", "b"))
    assert {Path.read("/x"): 1}[Path.of("x")] == 1


def test_path_rejects_empty_labels() -> None:
    with pytest.raises(ValueError):
        Path.of("a", "")


@pytest.mark.parametrize(
    ("text", "elems"),
    [
        ("/", ()),  # Finagle
        ("  /foo/bar  ", ("foo", "bar")),  # Finagle: surrounding whitespace is free
        ("/\\x66\\x6f\\x6F", ("foo",)),  # Finagle: either-case hex digits
        ("/#/io.l5d.fs/a:b/$/%/x_y-z", ("#", "io.l5d.fs", "a:b", "$", "%", "x_y-z")),
        ("# comment\n/a # trailing", ("a",)),
        ("/a#b", ("a#b",)),  # '#' inside a label is a label char, not a comment
    ],
)
def test_path_read(text: str, elems: tuple[str, ...]) -> None:
    assert Path.read(text) == Path(elems)


@pytest.mark.parametrize(
    "text",
    ["", "/foo/bar/", "/{}", "/\\?", "/\\x?", "/\\x0?", "/\\X41", "/foo^bar", "foo", "/a b",
     "/a//b", "//", "/*", "/a/*", "/é"],
)
def test_path_read_invalid(text: str) -> None:
    with pytest.raises(DtabParseError):
        Path.read(text)


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (Path.read("/foo/bar"), "/foo/bar"),  # Finagle PathTest
        (Path.empty(), "/"),
        (Path.of("a b"), "/\\x61\\x20\\x62"),  # one bad byte escapes the whole label
        (Path.of("é"), "/\\xc3\\xa9"),  # UTF-8 bytes, lowercase hex
        (Path.of("a/b", "ok"), "/\\x61\\x2f\\x62/ok"),
        (Path.of("*"), "/\\x2a"),
        (Path.read("/\\x41\\x42"), "/AB"),  # escapes of showable bytes print plainly
        (Path.read("/\\xFF"), "/\\xff"),
    ],
)
def test_path_show(path: Path, shown: str) -> None:
    assert path.show == shown
    assert str(path) == shown
    assert Path.read(shown) == path


def test_path_arbitrary_bytes_round_trip() -> None:
    p = Path.read("/\\xff\\x00\\x80x")
    assert p.show == "/\\xff\\x00\\x80\\x78"
    assert Path.read(p.show) == p
    # the same bytes spelled as text are the same label
    assert Path.read("/\\xc3\\xa9") == Path.of("é")


# -- NameTree: parse ----------------------------------------------------------------


def test_name_tree_parse_finagle_cases() -> None:
    # Finagle NameTreeParsersTest
    assert NameTree.read("! | ~ | $") == Alt.of(Fail, Neg, Empty)
    assert NameTree.read("/foo/bar") == leaf("/foo/bar")
    assert NameTree.read("  /foo & /bar  ") == u((1.0, leaf("/foo")), (1.0, leaf("/bar")))
    assert NameTree.read("  /foo | /bar  ") == Alt.of(leaf("/foo"), leaf("/bar"))
    assert NameTree.read("/foo & /bar | /bar & /baz") == Alt.of(
        u((1.0, leaf("/foo")), (1.0, leaf("/bar"))), u((1.0, leaf("/bar")), (1.0, leaf("/baz")))
    )
    assert NameTree.read("1 * /foo & 2 * /bar | .5 * /bar & .5 * /baz") == Alt.of(
        u((1.0, leaf("/foo")), (2.0, leaf("/bar"))), u((0.5, leaf("/bar")), (0.5, leaf("/baz")))
    )


@pytest.mark.parametrize(
    "text",
    ["", "#", "/foo &", "/foo & 0.1.2 * /bar", "/foo & . * /bar", "()", "/a |", "| /a", "(/a",
     "/a)", "1e3*/a", "-1*/a", "/a*", "0.5/a", "0.5 *", "/a /b", "~~", "/a & & /b", "/a=>/b"],
)
def test_name_tree_invalid(text: str) -> None:
    with pytest.raises(DtabParseError):
        NameTree.read(text)


def test_precedence_and_nesting_are_kept() -> None:
    # & binds tighter than |; parentheses are kept as structure, never flattened.
    assert NameTree.read("/a | /b & /c") == Alt.of(leaf("/a"), Union.of(leaf("/b"), leaf("/c")))
    assert NameTree.read("(/a | /b) & /c") == Union.of(Alt.of(leaf("/a"), leaf("/b")), leaf("/c"))
    assert NameTree.read("/a | (/b | /c)") == Alt.of(leaf("/a"), Alt.of(leaf("/b"), leaf("/c")))
    assert NameTree.read("(/a | /b) | /c") == Alt.of(Alt.of(leaf("/a"), leaf("/b")), leaf("/c"))
    assert NameTree.read("/a & (/b & /c)") == Union.of(leaf("/a"), Union.of(leaf("/b"), leaf("/c")))
    assert NameTree.read("((/a))") == leaf("/a")
    # a lone weighted member is just its tree (Finagle drops the weight)
    assert NameTree.read("0.5 * /a") == leaf("/a")
    assert NameTree.read("0.5*/a | /b") == Alt.of(leaf("/a"), leaf("/b"))


def test_weights() -> None:
    assert NameTree.read("1. * /a & 0 * /b") == u((1.0, leaf("/a")), (0.0, leaf("/b")))
    with pytest.raises(DtabParseError) as e:
        NameTree.read("1" * 400 + " * /a & /b")
    assert "finite weight" in str(e.value)


# -- NameTree: show -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/a|/b", "/a | /b"),
        ("/a&/b", "/a & /b"),
        ("/a | (/b | /c)", "/a | (/b | /c)"),
        ("(/a | /b) | /c", "(/a | /b) | /c"),
        ("/a & (/b & /c)", "/a & (/b & /c)"),
        ("(/a & /b) & /c", "(/a & /b) & /c"),
        ("/a | /b & /c", "/a | /b & /c"),
        ("(/a | /b) & /c", "(/a | /b) & /c"),
        ("0.5*/a & 0.5*/b", "0.50*/a & 0.50*/b"),
        ("1*/a & 2*/b", "/a & 2.00*/b"),
        ("1.0 * /a & .5*/b", "/a & 0.50*/b"),
        ("0.3 * /a & 0.7 * /b", "0.30*/a & 0.70*/b"),
        ("0.125*/a & /b", "0.13*/a & /b"),  # Java HALF_UP
        ("0.135*/a & /b", "0.14*/a & /b"),  # Java rounds the shortest decimal, not the binary
        ("2.675*/a & /b", "2.68*/a & /b"),
        ("0.995*/a & /b", "1.00*/a & /b"),  # not exactly 1: printed
        ("0.5*(/a | /b) & /c", "0.50*(/a | /b) & /c"),
        ("2*(/a & /b) & /c", "2.00*(/a & /b) & /c"),
        ("! | ~ | $", "! | ~ | $"),
        ("/a  &  ~  |  $ ", "/a & ~ | $"),
    ],
)
def test_tree_show(text: str, shown: str) -> None:
    tree = NameTree.read(text)
    assert tree.show == shown
    if "1.00*" not in shown:  # 0.995 prints as 1.00, which reads back as weight 1
        assert NameTree.read(shown).show == shown


def test_format_weight_is_java_half_up() -> None:
    assert format_weight(0.125) == "0.13"
    assert format_weight(0.005) == "0.01"
    assert format_weight(1.005) == "1.01"
    assert format_weight(0.994) == "0.99"
    assert format_weight(3.0) == "3.00"
    assert format_weight(1e20) == "100000000000000000000.00"
    assert format_weight(float("inf")) == "Infinity"


def test_show_of_constructed_trees_follows_finagle() -> None:
    a, b = leaf("/a"), leaf("/b")
    # one-member unions and alts print as their member; the union's weight is lost
    assert Union((Weighted(0.5, a),)).show == "/a"
    assert Alt.of(a).show == "/a"
    assert Union.of(Alt.of(a), b).show == "/a & /b"
    assert Alt.of(Union((Weighted(0.5, a),)), b).show == "/a | /b"
    # empty Alt/Union print like Finagle's mkString of nothing
    assert Alt.of().show == ""
    assert Alt.of(Alt.of(), a).show == "() | /a"
    assert Union(()).show == ""


# -- Dentry / Dtab: parse and show --------------------------------------------------


def test_dentry_parse_finagle_cases() -> None:
    assert Dentry.read("/=>!") == Dentry(Path.empty(), Fail)
    assert Dentry.read("/ => !") == Dentry(Path.empty(), Fail)
    assert Dentry.read("/foo/*/bar => !") == Dentry(Prefix(("foo", ANY, "bar")), Fail)
    assert Dentry.read("/foo/bar/baz => !") == Dentry(Path.read("/foo/bar/baz"), Fail)
    assert Dentry.read("/a=>/b").prefix == Prefix(("a",))
    assert Dentry("/svc", leaf("/x")).show == "/svc=>/x"


@pytest.mark.parametrize(
    "text",
    ["/foo/*bar/baz => !", "/&!", "/a = > /b", "/a", "/a=>", "=>/b", "/a=>/b;", "/a/**=>/b",
     "/a*=>/b", "/a/=>/b", "a=>/b"],
)
def test_dentry_invalid(text: str) -> None:
    with pytest.raises(DtabParseError):
        Dentry.read(text)


def test_wildcard_vs_escaped_star() -> None:
    any_prefix = Dentry.read("/a/*=>/b").prefix
    star_label = Dentry.read("/a/\\x2a=>/b").prefix
    assert any_prefix != star_label
    assert any_prefix.show == "/a/*" and star_label.show == "/a/\\x2a"
    assert Prefix.read(star_label.show) == star_label


def test_dtab_parse_finagle_cases() -> None:
    assert Dtab.read("") == Dtab.empty()
    assert Dtab.read("  /=>!  ") == Dtab((Dentry(Path.empty(), Fail),))
    assert Dtab.read("/=>!;") == Dtab((Dentry(Path.empty(), Fail),))
    assert Dtab.read("/=>!;/foo=>/bar") == Dtab(
        (Dentry(Path.empty(), Fail), Dentry(Path.of("foo"), leaf("/bar")))
    )
    assert len(Dtab.read("\n  /b => /c;\n  /a => /b;\n  ")) == 2  # trailing ';'


def test_dtab_comments_finagle_case() -> None:
    text = """
# a comment
      /#foo => /biz  # another comment
             | ( /bliz & # yet another comment
                 /bluth ) # duh bluths
             ; #finalmente
      #/ignore=>/me;
    """
    assert Dtab.read(text) == Dtab(
        (Dentry(Path.of("#foo"), Alt.of(leaf("/biz"), Union.of(leaf("/bliz"), leaf("/bluth")))),)
    )


@pytest.mark.parametrize("text", ["", "   ", "# only a comment", "\n\t\n", "# a\n# b\n"])
def test_empty_dtabs(text: str) -> None:
    assert Dtab.read(text) == Dtab.empty()
    assert Dtab.read(text).show == ""


@pytest.mark.parametrize(
    "text", [";", "/a=>/b;;", ";/a=>/b", "/a=>/b /c=>/d", "/a=>/b;/c", "/a=>/b|", "/a => /b ; ;"]
)
def test_dtab_invalid(text: str) -> None:
    with pytest.raises(DtabParseError):
        Dtab.read(text)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/a => /b ; /c=>/d", "/a=>/b;/c=>/d"),
        ("/svc => /#/io.l5d.fs ;", "/svc=>/#/io.l5d.fs"),
        ("/a=>/b|/c;/d=>0.3*/e&0.7*/f", "/a=>/b | /c;/d=>0.30*/e & 0.70*/f"),
        ("/a/*/b => ~", "/a/*/b=>~"),
        ("/ => !", "/=>!"),
        ("/\\x20 => /\\x41", "/\\x20=>/A"),
    ],
)
def test_dtab_show(text: str, shown: str) -> None:
    d = Dtab.read(text)
    assert d.show == shown
    assert str(d) == shown
    assert Dtab.read(shown) == d


# -- parse errors -------------------------------------------------------------------


def test_parse_error_names_input_line_column_and_expectation() -> None:
    with pytest.raises(DtabParseError) as e:
        Dtab.read("/a=>")
    err = e.value
    assert (err.line, err.column) == (1, 5)
    assert err.text == "/a=>"
    assert err.expected.startswith("a path")
    assert str(err) == (
        "invalid dtab '/a=>' at line 1, column 5: "
        "expected a path, '!', '~', '$', '(' or a weight; found end of input at '/a=>[]'"
    )


def test_parse_error_points_like_finagle() -> None:
    # Finagle NameTreeParsersTest "error messages"
    with pytest.raises(DtabParseError) as e:
        Path.read("/foo^bar")
    assert "'/foo[^]bar'" in str(e.value)
    with pytest.raises(DtabParseError) as e:
        Path.read("/foo/bar/")
    assert "'/foo/bar/[]'" in str(e.value)


def test_parse_error_multiline_position() -> None:
    with pytest.raises(DtabParseError) as e:
        Dtab.read("/a=>/b;\n/c => /d\n  /e=>/f")
    assert (e.value.line, e.value.column) == (3, 3)
    assert "line 3, column 3" in str(e.value)
    assert "expected '&', '|', ';' or end of input" in str(e.value)
    assert "found '/e'" in str(e.value)


@pytest.mark.parametrize(
    ("reader", "text", "column", "expected"),
    [
        (Path.read, "/foo/bar/", 10, "a label"),
        (Path.read, "/foo^bar", 5, "end of input"),
        (Path.read, "/a\\x4", 3, "'\\x' and two hex digits"),
        (NameTree.read, "/a & . * /b", 6, "a path, '!', '~', '$', '(' or a weight"),
        (NameTree.read, "(/a", 4, "'&', '|' or ')'"),
        (Dentry.read, "/a -> /b", 4, "'=>'"),
        (Dtab.read, "/a=>/b;;", 8, "a prefix or end of input"),
        (Dtab.read, "/a=>/b)", 7, "'&', '|', ';' or end of input"),
    ],
)
def test_parse_error_expectations(reader, text: str, column: int, expected: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DtabParseError) as e:
        reader(text)
    assert e.value.column == column
    assert e.value.expected == expected
    assert f"'{text}'" in str(e.value)


def test_parse_errors_do_not_leak_lark() -> None:
    for bad in ["/a=>", "/\\xZZ", "((((", "/a=>/b)", "0.1.2*/a", "~" * 50]:
        with pytest.raises(DtabParseError) as e:
            Dtab.read(bad)
        assert type(e.value) is DtabParseError
        assert "lark" not in str(e.value).lower() and "Token" not in str(e.value)
        assert e.value.__cause__ is None and e.value.__suppress_context__


def test_non_string_input_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        Dtab.read(b"/a=>/b")  # type: ignore[arg-type]


# -- lookup -------------------------------------------------------------------------


def test_lookup_all_prefixes_in_reverse_order() -> None:
    # Finagle DtabTest
    dtab = Dtab.read("/foo/bar=>/xxx;/foo=>/yyy")
    assert dtab.lookup(Path.read("/foo/bar/baz")) == Alt.of(leaf("/yyy/bar/baz"), leaf("/xxx/baz"))
    assert dtab.lookup(Path.read("/foo/bar/baz")).equiv(NameTree.read("/yyy/bar/baz | /xxx/baz"))


def test_lookup_expands_names() -> None:
    # Finagle DtabTest "Expand names"
    dtab = Dtab.read("/foo/bar => /xxx|/yyy&/zzz")
    assert dtab.lookup(Path.read("/foo/bar/baz")) == NameTree.read("/xxx/baz | /yyy/baz & /zzz/baz")


def test_lookup_wildcards() -> None:
    # Finagle DtabTest "dtab rewrites with wildcards"
    dtab = Dtab.read("/a/*/c => /d")
    assert dtab.lookup(Path.read("/a/b/c/e/f")) == leaf("/d/e/f")
    assert dtab.lookup(Path.read("/a/zzz/c")) == leaf("/d")
    assert dtab.lookup(Path.read("/a/b/x")) == Neg
    assert dtab.lookup(Path.read("/a/b")) == Neg
    assert Dtab.read("/*=>/x").lookup(Path.read("/q/r")) == leaf("/x/r")
    assert Dtab.read("/\\x2a=>/x").lookup(Path.read("/q")) == Neg


def test_lookup_order_and_residuals() -> None:
    d = Dtab.read("/a=>/b;/a/x=>/c;/a=>/d | /e;/zzz=>/nope")
    assert d.lookup(Path.read("/a/x/y")) == Alt.of(
        Alt.of(leaf("/d/x/y"), leaf("/e/x/y")), leaf("/c/y"), leaf("/b/x/y")
    )
    assert d.lookup(Path.read("/a")) == Alt.of(Alt.of(leaf("/d"), leaf("/e")), leaf("/b"))
    assert d.lookup(Path.read("/q")) == Neg
    assert d.lookup(Path.read("/ab")) == Neg  # prefixes match whole labels
    assert Dtab.read("/=>/root").lookup(Path.read("/a/b")) == leaf("/root/a/b")
    assert Dtab.read("/a=>/b").lookup(Path.empty()) == Neg


def test_lookup_is_not_simplified() -> None:
    d = Dtab.read("/a=>~ | /b & ! | $")
    assert d.lookup(Path.read("/a/c")) == Alt.of(
        Neg, Union.of(leaf("/b/c"), Fail), Empty
    )
    assert Dtab.read("/a=>~").lookup(Path.read("/a")) == Neg
    assert Dtab.read("/a=>~;/a=>~").lookup(Path.read("/a")) == Alt.of(Neg, Neg)


# -- Dtab values --------------------------------------------------------------------


def test_dtab_concat_and_collection() -> None:
    d1 = Dtab.read("/foo => /bar")
    d2 = Dtab.read("/foo=>/biz;/biz=>/$/inet/8080;/bar=>/$/inet/9090")
    assert d1 + d2 == Dtab.read("/foo=>/bar;/foo=>/biz;/biz=>/$/inet/8080;/bar=>/$/inet/9090")
    assert d1 + Dtab.empty() == d1 and Dtab.empty() + d1 == d1
    assert d1 + Dentry.read("/x=>/y") == Dtab.read("/foo=>/bar;/x=>/y")
    assert len(d2) == 3 and d2[0] == Dentry.read("/foo=>/biz") and list(d2)[2] == d2[2]
    assert {d2: 1}[Dtab.read(d2.show)] == 1
    # Finagle "Dtab is a Scala collection"
    upper = Dtab(
        tuple(Dentry.read(f"{e.prefix.show.upper()}=>{e.dst.show.upper()}") for e in d1)
    )
    assert upper[0] == Dentry(Prefix(("FOO",)), leaf("/BAR"))


def test_strip_prefix() -> None:
    # Finagle DtabTest "Dtab.stripPrefix"
    d1 = Dtab.read("/foo=>/bar;/baz=>/xxx/yyy")
    d2 = Dtab.read("/foo=>/bar;/baz=>/xxx/yyy")
    assert len(d1.strip_prefix(d1)) == 0 and len(d1.strip_prefix(d2)) == 0
    assert (d1 + Dentry.read("/foo => /123")).strip_prefix(d1).equiv(Dtab.read("/foo=>/123"))
    assert d1.strip_prefix(d1 + Dentry.read("/s => /b")).equiv(d1)
    assert len(Dtab.empty().strip_prefix(d1)) == 0


def test_dtab_simplified_and_equiv() -> None:
    d = Dtab.read("/a=>~ | ~;/b=>/c | ~;/d=>/e & ~")
    assert d.simplified == Dtab.read("/b=>/c;/d=>/e")
    assert d.equiv(Dtab.read("/a=>~;/b=>/c;/d=>/e"))
    assert not d.equiv(Dtab.read("/a=>~;/b=>/c"))


# -- NameTree semantics -------------------------------------------------------------

EVAL_CASES = [  # Finagle NameTreeTest "NameTree.eval/simplified"
    ("~", None),
    ("/ok", {"/ok"}),
    ("/ok & /ok1", {"/ok", "/ok1"}),
    ("/ok & ~ & /blah & $", {"/ok", "/blah"}),
    ("$ & $ & $", set()),
    ("~ & ~ & (~ | ~)", None),
    ("~ | /foo | /bar", {"/foo"}),
    ("~ | $ | /blah", set()),
    ("~ | (~ | $) | /blah", set()),
    ("(~|$|/foo) & (/bar|/blah) & ~ & /FOO", {"/bar", "/FOO"}),
    ("! | /ok", None),
    ("/ok & !", {"/ok"}),
    ("! & ! & !", None),
    ("~ | /ok | !", {"/ok"}),
]


@pytest.mark.parametrize(("text", "expected"), EVAL_CASES)
def test_eval_and_simplified(text: str, expected: set[str] | None) -> None:
    want = None if expected is None else frozenset(Path.read(p) for p in expected)
    tree = NameTree.read(text)
    assert tree.eval() == want
    assert tree.simplified.eval() == want
    assert tree.simplified.simplified == tree.simplified


def test_simplified_shapes() -> None:
    assert NameTree.read("~ | /a | /b").simplified == Alt.of(leaf("/a"), leaf("/b"))
    assert NameTree.read("/a | ! | /b").simplified == Alt.of(leaf("/a"), Fail)
    assert NameTree.read("/a & ~ & !").simplified == leaf("/a")
    assert NameTree.read("! & !").simplified == Neg
    assert NameTree.read("0.3*/a & 0.7*~ & $").simplified == u((0.3, leaf("/a")), (1.0, Empty))
    assert Alt.of().simplified == Neg and Union(()).simplified == Neg


def test_map_and_leaves() -> None:
    tree = NameTree.read("/a | 0.5*/b & /c")
    mapped = tree.map(lambda p: Path.of("x") + p)
    assert mapped == NameTree.read("/x/a | 0.5*/x/b & /x/c")
    assert list(tree.leaves()) == [Path.read("/a"), Path.read("/b"), Path.read("/c")]


def test_neg_because_is_neg() -> None:
    n = Neg.because("service default/hello not found")
    assert n == Neg and Neg == n and hash(n) == hash(Neg) and n.show == "~"
    assert n.reason == "service default/hello not found"
    assert Alt.of(n, leaf("/a")) == Alt.of(Neg, leaf("/a"))
    assert n != Fail and Fail != Empty and Empty != Neg
    assert len({Neg, Fail, Empty, n}) == 3
