"""Property tests: `X.read(x.show) == x` for generated values, lookup vs a naive model."""

from __future__ import annotations

from hypothesis import given, settings
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

plain_labels = st.text(alphabet=sorted(SHOWABLE), min_size=1, max_size=8)
byte_labels = st.binary(min_size=1, max_size=6).map(label_from_bytes)
unicode_labels = st.text(min_size=1, max_size=4).filter(
    lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF for c in s)
)
labels = st.one_of(plain_labels, plain_labels, byte_labels, unicode_labels)
paths = st.lists(labels, max_size=5).map(lambda xs: Path(tuple(xs)))

# Weights Finagle prints exactly: two decimals, and 1 means "no weight".
weights = st.integers(min_value=0, max_value=100_000).map(lambda n: n / 100)

leaves = st.one_of(
    st.sampled_from([Neg, Fail, Empty]), paths.map(Leaf), paths.map(Leaf), paths.map(Leaf)
)


def _extend(children: st.SearchStrategy[NameTree[Path]]) -> st.SearchStrategy[NameTree[Path]]:
    # The parser never builds one-member Alts or Unions, so neither do we.
    alts = st.lists(children, min_size=2, max_size=4).map(lambda ts: Alt(tuple(ts)))
    unions = st.lists(st.builds(Weighted, weights, children), min_size=2, max_size=4).map(
        lambda ws: Union(tuple(ws))
    )
    return st.one_of(alts, unions)


trees = st.recursive(leaves, _extend, max_leaves=12)
prefixes = st.lists(st.one_of(labels, st.just(ANY)), max_size=4).map(lambda xs: Prefix(tuple(xs)))
dentries = st.builds(Dentry, prefixes, trees)
dtabs = st.lists(dentries, max_size=6).map(lambda ds: Dtab(tuple(ds)))


@given(paths)
def test_path_round_trip(p: Path) -> None:
    assert Path.read(p.show) == p
    assert Path.read(p.show).show == p.show


@given(prefixes)
def test_prefix_round_trip(p: Prefix) -> None:
    assert Prefix.read(p.show) == p


@given(trees)
def test_tree_round_trip(t: NameTree[Path]) -> None:
    assert NameTree.read(t.show) == t


@given(dentries)
def test_dentry_round_trip(d: Dentry) -> None:
    assert Dentry.read(d.show) == d


@settings(max_examples=60)
@given(dtabs)
def test_dtab_round_trip(d: Dtab) -> None:
    assert Dtab.read(d.show) == d
    assert hash(Dtab.read(d.show)) == hash(d)


@given(trees)
def test_simplified_is_a_fixpoint_with_the_same_eval(t: NameTree[Path]) -> None:
    s = t.simplified
    assert s.simplified == s
    assert s.eval() == t.eval()


def _naive_lookup(dtab: Dtab, path: Path) -> NameTree[Path]:
    """Finagle's DtabBase.lookup transcribed directly (no precomputation)."""
    matches = []
    for d in reversed(dtab.dentries):
        if d.prefix.matches(path):
            rest = path.drop(len(d.prefix))
            matches.append(d.dst.map(lambda p, rest=rest: p + rest))
    if not matches:
        return Neg
    return matches[0] if len(matches) == 1 else Alt(tuple(matches))


# Small alphabets so that generated prefixes actually match generated paths.
small_labels = st.sampled_from(["a", "b", "c"])
small_paths = st.lists(small_labels, max_size=4).map(lambda xs: Path(tuple(xs)))
small_prefixes = st.lists(st.one_of(small_labels, st.just(ANY)), max_size=3).map(
    lambda xs: Prefix(tuple(xs))
)
small_dtabs = st.lists(st.builds(Dentry, small_prefixes, trees), max_size=6).map(
    lambda ds: Dtab(tuple(ds))
)


@given(small_dtabs, small_paths)
def test_lookup_matches_finagle_model(d: Dtab, p: Path) -> None:
    assert d.lookup(p) == _naive_lookup(d, p)


@given(st.text(alphabet=st.sampled_from(list("/ab*&|!~$()=>;#.0123\\x \n")), max_size=30))
def test_parsing_never_raises_anything_else(text: str) -> None:
    for read in (Dtab.read, NameTree.read, Path.read, Dentry.read):
        try:
            value = read(text)
        except DtabParseError as e:
            assert e.line >= 1 and e.column >= 1
        else:
            # Weights print rounded to two decimals, so compare printed forms; a
            # weight that rounds to exactly 1.00 is the one case that prints differently.
            if "1.00*" not in value.show:
                assert read(value.show).show == value.show
