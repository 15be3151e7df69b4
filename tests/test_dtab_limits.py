"""Hostile dtabs: deep nesting and huge weights are parse errors, never a crash.

Issue 8: a 3000-deep tree gave "maximum recursion depth exceeded" and a weight of
10^32 gave `[<class 'decimal.InvalidOperation'>]`, both as 502s with a traceback.
"""

from __future__ import annotations

import json

import pytest

from dtab import Dtab, NameTree, Path
from dtab.addr import Address, BoundName, bound
from dtab.binding import MAX_NESTING, bind
from dtab.delegation import delegate
from dtab.errors import DelegationLoopError, DtabParseError
from dtab.nametree import Leaf, format_weight
from dtab.observable import Activity, Failed, Var
from dtab.parser import MAX_NESTING as MAX_PARENS
from dtab.parser import MAX_WEIGHT


def nested_alt(n: int, inner: str = "/b") -> str:
    return "(/x | " * n + inner + ")" * n


def test_three_thousand_deep_tree_is_a_parse_error_naming_the_position() -> None:
    text = "/a=>" + nested_alt(3000)
    with pytest.raises(DtabParseError) as e:
        Dtab.read(text)
    msg = str(e.value)
    assert f"at most {MAX_PARENS} nested parentheses" in msg
    # the first parenthesis past the limit: column of the (MAX_PARENS+1)-th "("
    assert e.value.column == len("/a=>") + MAX_PARENS * len("(/x | ") + 1
    assert len(msg) < 1000  # the 18 KB input is quoted in part, not whole


def test_nesting_up_to_the_limit_still_parses_and_round_trips() -> None:
    tree = NameTree.read(nested_alt(MAX_PARENS))
    assert NameTree.read(tree.show) == tree
    with pytest.raises(DtabParseError):
        NameTree.read(nested_alt(MAX_PARENS + 1))


def test_parentheses_in_comments_and_paths_do_not_count() -> None:
    text = "/a => /#/io.l5d.fs/x # " + "(" * 500 + "\n; /b => ((/c))"
    assert Dtab.read(text).show == "/a=>/#/io.l5d.fs/x;/b=>/c"


@pytest.mark.parametrize("weight", ["1" + "0" * 32, "1000000000.5", "10000000000", "9" * 400])
def test_huge_weights_are_a_parse_error(weight: str) -> None:
    with pytest.raises(DtabParseError) as e:
        Dtab.read(f"/a=>{weight}*/b & /c")
    assert "finite weight of at most 1000000000" in str(e.value)
    assert e.value.column == 5


def test_largest_weight_is_accepted_and_shown() -> None:
    tree = NameTree.read(f"{MAX_WEIGHT:.0f}*/b & /c")
    assert tree.show == "1000000000.00*/b & /c"


def test_format_weight_is_total_over_finite_doubles() -> None:
    # Java's %.2f over BigDecimal: every finite double has a two-decimal form.
    assert format_weight(1e32) == "100000000000000000000000000000000.00"
    assert format_weight(1.7976931348623157e308).endswith(".00")
    assert format_weight(5e-324) == "0.00"


def _chain_dtab(steps: int, width: int) -> Dtab:
    """/p0 => (/p1 | (/p1 | ... /leaf)) and so on: nesting that grows per step."""
    return Dtab.read(";".join(
        f"/p{i}=>" + f"(/p{i + 1} | " * width + "/leaf" + ")" * width for i in range(steps)
    ))


def _union_chain() -> Dtab:
    """/p0 => (1*/leaf & (1*/leaf & ... /p1)): linear in lookups, deep in nesting."""
    return Dtab.read(";".join(
        f"/p{i}=>" + "(1*/leaf & " * 30 + f"/p{i + 1}" + ")" * 30 for i in range(90)
    ))


def _depth(tree: object) -> int:
    kids = getattr(tree, "trees", None) or [w.tree for w in getattr(tree, "weighted", ())]
    return 1 + max((_depth(t) for t in kids), default=0)


def _lookup(path: Path) -> Activity | None:
    if path.elems[:1] == ("leaf",):
        addr = Var(bound(Address("127.0.0.1", 1)))
        return Activity.ok(Leaf(BoundName(Path.read("/#/leaf"), addr, path.drop(1))))
    return None


def test_binding_bounds_its_nesting_with_a_readable_error() -> None:
    result = bind(_chain_dtab(90, 30), Path.read("/p0"), _lookup)
    assert isinstance(result.state, Failed)
    err = result.state.error
    assert isinstance(err, DelegationLoopError)
    assert f"nested name trees more than {MAX_NESTING} levels deep" in str(err)


def test_a_union_chain_keeps_its_shallow_members_and_stays_bounded() -> None:
    result = bind(_union_chain(), Path.read("/p0"), _lookup)
    tree = result.state.value
    assert _depth(tree) <= MAX_NESTING
    hash(tree)
    assert tree.show


def test_delegation_bounds_its_nesting_too() -> None:
    tree = delegate(_union_chain(), Path.read("/p0"), _lookup)
    text = json.dumps(tree.to_json())
    assert f"nested name trees more than {MAX_NESTING} levels deep" in text
