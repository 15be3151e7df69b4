"""Binding a path through a dtab and namer Activities (Finagle's Namer.bind rules).

Cases marked "Finagle" mirror NamerTest, DefaultInterpreterTest and NameTreeTest.
"""

from __future__ import annotations

from dtab import Alt, Dtab, Empty, Fail, Leaf, NameTree, Neg, Path, Union, Weighted
from dtab.addr import AddrBound, Address, BoundName, bound
from dtab.binding import BindResult, bind
from dtab.errors import DelegationLoopError
from dtab.observable import Activity, Failed, Ok, Pending, Var


class FakeNamers:
    """The interpreter's namer dispatch for tests.

    `/$/inet/[host/]port` binds at once (Finagle's global namer), `/$/fail` is
    Fail, `/$/nil` is Empty; `/test/...` paths are Activities the test sets.
    """

    def __init__(self) -> None:
        self.acts: dict[Path, Activity] = {}
        self.calls: list[Path] = []

    def act(self, path: str) -> Activity:
        return self.acts.setdefault(Path.read(path), Activity())

    def ok(self, path: str, tree: str | NameTree) -> None:
        self.act(path).set_ok(NameTree.read(tree) if isinstance(tree, str) else tree)

    def fail(self, path: str, error: Exception) -> None:
        self.act(path).set_failed(error)

    def __call__(self, path: Path) -> Activity | None:
        self.calls.append(path)
        e = path.elems
        if e[:1] == ("$",):
            if e[1:2] == ("fail",):
                return Activity.ok(Fail)
            if e[1:2] == ("nil",):
                return Activity.ok(Empty)
            if e[1:2] == ("inet",):
                if len(e) >= 4 and e[3].isdigit():
                    host, port, n = e[2], int(e[3]), 4
                elif len(e) >= 3 and e[2].isdigit():
                    host, port, n = "127.0.0.1", int(e[2]), 3
                else:
                    return Activity.ok(Neg)
                name = BoundName(path.take(n), Var(bound(Address(host, port))), path.drop(n))
                return Activity.ok(Leaf(name))
            if e[1:2] == ("testnamer",):
                return Activity.ok(NameTree.read("/rewritten/by/test/namer"))
            return Activity.ok(Neg)
        if e[:1] == ("test",):
            return self.acts.setdefault(path, Activity())
        return None


def ports(result: BindResult) -> set[int] | None:
    """The ports `eval` picks from the bound tree (None when Neg/Fail)."""
    assert isinstance(result.state, Ok), result.state
    names = result.state.value.eval()
    if names is None:
        return None
    out = set()
    for n in names:
        addr = n.addr.value
        assert isinstance(addr, AddrBound)
        out |= {a.port for a in addr.addresses}
    return out


def bind_tree(tree: str, namers: FakeNamers, dtab: str = "") -> BindResult:
    """Bind a tree the way Finagle's namer.bind(tree) does: via a root dentry."""
    return bind(Dtab.read(f"/root=>{tree};{dtab}"), Path.read("/root"), namers)


# -- Finagle NamerTest --------------------------------------------------------------


def test_union_states() -> None:
    n = FakeNamers()
    res = lambda: bind_tree("/test/0 & /test/1", n)  # noqa: E731
    assert isinstance(res().state, Pending)  # Pending & Pending
    n.ok("/test/0", "/test/2")
    assert isinstance(res().state, Pending)
    n.ok("/test/1", "/$/inet/1")  # Ok & Pending: the union is what is Ok
    assert ports(res()) == {1}
    err = RuntimeError("boom")
    n.fail("/test/1", err)  # Failed & Pending
    assert res().state == Failed(err)
    n.ok("/test/1", "/$/inet/1")
    n.ok("/test/2", "/$/inet/2")
    assert ports(res()) == {1, 2}
    n.ok("/test/2", Neg)
    assert ports(res()) == {1}
    n.fail("/test/2", err)  # Ok & Failed: the failure drops out
    assert ports(res()) == {1}
    n.fail("/test/1", err)
    assert res().state == Failed(err)
    n.ok("/test/1", Neg)
    n.ok("/test/2", Neg)
    assert ports(res()) is None
    n.ok("/test/1", Empty)
    assert ports(res()) == set()


def test_failover() -> None:
    n = FakeNamers()
    res = lambda: bind_tree("/test/0 | /test/1 & /test/2", n)  # noqa: E731
    assert isinstance(res().state, Pending)
    n.ok("/test/0", Empty)
    n.ok("/test/1", Neg)
    n.ok("/test/2", Neg)
    assert ports(res()) == set()
    n.ok("/test/0", "/$/inet/1")
    assert ports(res()) == {1}
    n.ok("/test/0", Neg)
    assert ports(res()) is None
    n.ok("/test/2", "/$/inet/2")
    assert ports(res()) == {2}
    n.ok("/test/0", "/$/inet/3")
    assert ports(res()) == {3}


def test_alt_with_fail_and_empty() -> None:
    n = FakeNamers()
    assert bind_tree("(! | /test/1 | /test/2)", n).state == Ok(Fail)
    assert bind_tree("(~ | /$/fail | /test/1)", n).state == Ok(Fail)
    assert bind_tree("(/$/nil | /$/fail | /test/1)", n).state == Ok(Empty)
    assert Path.read("/test/1") not in n.calls  # never consulted: the search stopped


# -- Finagle DefaultInterpreterTest -------------------------------------------------


def test_basic_and_indirections() -> None:
    n = FakeNamers()
    assert ports(bind(Dtab.read("/foo=>/$/inet/8080"), Path.read("/foo"), n)) == {8080}
    assert ports(bind(Dtab.read("/foo=>/bar;/bar=>/$/inet/8080"), Path.read("/foo"), n)) == {8080}


def test_order_of_dtab_evaluation() -> None:
    n = FakeNamers()
    d1 = Dtab.read("/foo=>/bar")
    d2 = Dtab.read("/foo=>/biz;/biz=>/$/inet/8080;/bar=>/$/inet/9090")
    assert ports(bind(d1 + d2, Path.read("/foo"), n)) == {8080}
    assert ports(bind(d2 + d1, Path.read("/foo"), n)) == {9090}


def test_namer_result_goes_back_through_the_dtab() -> None:
    n = FakeNamers()
    d = Dtab.read("/foo=>/$/testnamer;/rewritten/by/test/namer=>/$/inet/7070")
    assert ports(bind(d, Path.read("/foo"), n)) == {7070}


def test_full_example() -> None:
    n = FakeNamers()
    d = Dtab.read(
        """
        /foo => /bar;
        /foo => 3 * /baz & 2 * /booz & /$/testnamer;
        /rewritten/by/test/namer => /$/inet/7070;
        /baz => 3 * /$/inet/8080 & 2 * /$/inet/9090;
        /booz => ~
        """
    )
    res = bind(d, Path.read("/foo"), n)
    assert ports(res) == {8080, 9090, 7070}
    tree = res.tree
    assert isinstance(tree, Union)
    assert [w.weight for w in tree.weighted] == [3.0, 1.0]
    inner = tree.weighted[0].tree
    assert isinstance(inner, Union) and [w.weight for w in inner.weighted] == [3.0, 2.0]


# -- the rules the issue names -------------------------------------------------------


def test_dtab_is_consulted_before_namers_for_system_paths() -> None:
    n = FakeNamers()
    assert ports(bind(Dtab.read("/$/inet/1=>/$/inet/2"), Path.read("/$/inet/1"), n)) == {2}
    n.ok("/test/x", "/$/inet/5")
    d = Dtab.read("/test/x=>/$/nil")
    assert bind(d, Path.read("/test/x"), n).state == Ok(Empty)
    assert Path.read("/test/x") not in n.calls


def test_alternatives() -> None:
    n = FakeNamers()

    def b(dtab: str) -> BindResult:
        return bind(Dtab.read(dtab), Path.read("/a"), n)

    assert b("/a=>$ | /$/inet/1").state == Ok(Empty)  # Empty counts as success
    assert b("/a=>! | /$/inet/1").state == Ok(Fail)  # Fail stops
    assert ports(b("/a=>~ | /$/inet/1")) == {1}  # Neg falls through
    assert ports(b("/a=>/nowhere | /$/inet/1")) == {1}  # unbound path is Neg
    assert b("/a=>~ | ~").state == Ok(Neg)
    assert b("/zzz=>/q").state == Ok(Neg)  # nothing anywhere


def test_earlier_dentries_are_fallbacks() -> None:
    n = FakeNamers()
    d = Dtab.read("/s=>/$/inet/1;/s=>/nowhere")
    assert ports(bind(d, Path.read("/s"), n)) == {1}
    d = Dtab.read("/s=>/$/inet/1;/s=>/$/fail")
    assert bind(d, Path.read("/s"), n).state == Ok(Fail)


def test_unions_drop_neg_and_fail() -> None:
    n = FakeNamers()

    def b(dtab: str) -> BindResult:
        return bind(Dtab.read(dtab), Path.read("/a"), n)

    assert b("/a=>! & !").state == Ok(Neg)
    assert b("/a=>~ & ! & /nowhere").state == Ok(Neg)
    assert ports(b("/a=>/$/inet/1 & !")) == {1}
    assert b("/a=>~ & $").state == Ok(Empty)
    res = b("/a=>0.3*/$/inet/1 & 0.7*/$/inet/2 & ~")
    assert isinstance(res.tree, Union) and [w.weight for w in res.tree.weighted] == [0.3, 0.7]


def test_bound_trees_have_no_alt_and_keep_residuals() -> None:
    n = FakeNamers()
    d = Dtab.read("/svc=>/nowhere | /$/inet/127.0.0.1/8080 | /$/inet/9")
    res = bind(d, Path.read("/svc/x/y"), n)
    tree = res.tree
    assert isinstance(tree, Leaf)
    assert tree.value.id == Path.read("/$/inet/127.0.0.1/8080")
    assert tree.value.residual == Path.read("/x/y")
    d = Dtab.read("/u=>(~ | /$/inet/1 | /$/inet/2) & (/nowhere | /$/inet/3)")
    union = bind(d, Path.read("/u"), n).tree
    assert union == Union.of(Leaf(name_of(union, 0)), Leaf(name_of(union, 1)))
    assert not any(isinstance(t, Alt) for t in all_nodes(union))
    assert ports(bind(d, Path.read("/u"), n)) == {1, 3}


def name_of(tree: object, i: int) -> BoundName:
    assert isinstance(tree, Union)
    member = tree.weighted[i].tree
    assert isinstance(member, Leaf)
    return member.value


def all_nodes(tree: NameTree) -> list[NameTree]:
    out = [tree]
    if isinstance(tree, Alt):
        for t in tree.trees:
            out += all_nodes(t)
    elif isinstance(tree, Union):
        for w in tree.weighted:
            out += all_nodes(w.tree)
    return out


def test_pending_that_matters_makes_the_result_pending() -> None:
    n = FakeNamers()
    assert isinstance(bind_tree("/test/p | /$/inet/1", n).state, Pending)
    # a pending alternative after a success does not matter and is not consulted
    n.calls.clear()
    assert ports(bind_tree("/$/inet/1 | /test/q", n)) == {1}
    assert Path.read("/test/q") not in n.calls


def test_failures() -> None:
    n = FakeNamers()
    err = ValueError("zk down")
    n.fail("/test/f", err)
    assert bind_tree("/test/f | /$/inet/1", n).state == Failed(err)

    def broken(path: Path) -> Activity | None:
        raise RuntimeError(f"namer crashed on {path.show}")

    res = bind(Dtab.read("/a=>/b"), Path.read("/a"), broken)
    assert isinstance(res.state, Failed) and "namer crashed on /b" in str(res.state.error)

    n.ok("/test/weird", Leaf(42))  # type: ignore[arg-type]
    res = bind_tree("/test/weird", n)
    assert isinstance(res.state, Failed) and isinstance(res.state.error, TypeError)


def test_neg_reasons_survive_binding() -> None:
    n = FakeNamers()
    n.ok("/test/k8s", Neg.because("service default/hello not found"))
    res = bind_tree("/test/k8s | ~", n)
    assert res.state == Ok(Neg)
    assert res.tree is not None and res.tree.reason == "service default/hello not found"  # type: ignore[attr-defined]
    res = bind_tree("/test/k8s & !", n)
    assert res.tree.reason == "service default/hello not found"  # type: ignore[union-attr]


def test_loops_are_errors_that_name_the_loop() -> None:
    n = FakeNamers()
    # Finagle NameTreeTest "NameTree.bind: infinite loop"
    d = Dtab.read("/foo/bar => /bar/foo;\n/bar/foo => /foo/bar")
    res = bind(d, Path.read("/foo/bar"), n)
    assert isinstance(res.state, Failed)
    err = res.state.error
    assert isinstance(err, DelegationLoopError)
    assert "loop /foo/bar -> /bar/foo -> /foo/bar" in str(err)
    assert "/foo/bar=>/bar/foo;/bar/foo=>/foo/bar" in str(err)
    assert err.max_depth == 100 and len(err.chain) == 101

    # Finagle NamerTest "max recursion level reached": a chain that only grows
    res = bind(Dtab.read("/s => /s/srv"), Path.read("/s/foo/bar"), n, max_depth=2)
    assert isinstance(res.state, Failed)
    assert "limit of 2 delegation steps" in str(res.state.error)
    assert "/s/foo/bar -> /s/srv/foo/bar -> /s/srv/srv/foo/bar" in str(res.state.error)


def test_a_loop_in_a_union_branch_does_not_hang() -> None:
    n = FakeNamers()
    d = Dtab.read("/a=>/loop & /$/inet/1;/loop=>/loop/x")
    assert ports(bind(d, Path.read("/a"), n)) == {1}


def test_dependencies_are_the_activities_consulted() -> None:
    n = FakeNamers()
    n.ok("/test/0", "/test/1")
    res = bind_tree("/test/0 | /test/2", n)
    assert isinstance(res.state, Pending)
    want = [n.acts[Path.read("/test/0")], n.acts[Path.read("/test/1")]]
    assert len(res.dependencies) == 2
    assert all(d is w for d, w in zip(res.dependencies, want, strict=True))
    # a change to a dependency is what tells a cache to bind again
    changed: list[object] = []
    for dep in res.dependencies:
        dep.observe(changed.append)
    n.ok("/test/1", "/$/inet/4")
    assert changed and ports(bind_tree("/test/0 | /test/2", n)) == {4}
    # the same Activity consulted twice is listed once
    res = bind_tree("/test/0 & /test/0", n)
    assert len([d for d in res.dependencies if d is n.acts[Path.read("/test/0")]]) == 1


def test_weighted_constructor_and_bind_union_of_one() -> None:
    n = FakeNamers()
    tree = Union((Weighted(0.5, Leaf(Path.read("/$/inet/1"))),))
    res = bind(Dtab.read(f"/a=>{tree.show}"), Path.read("/a"), n)
    assert ports(res) == {1}


def test_exponential_expansion_is_an_error_not_a_hang() -> None:
    # Every chain here reaches the depth limit, but a union doubles at each step: a
    # total lookup budget turns it into an error naming what kept expanding.
    n = FakeNamers()
    res = bind(Dtab.read("/a=>/a/x & /a/y"), Path.read("/a"), n, max_lookups=500)
    assert isinstance(res.state, Failed)
    assert isinstance(res.state.error, DelegationLoopError)
    assert "needed more than 500 lookups" in str(res.state.error)
    assert "/a -> /a/x -> /a/x/x" in str(res.state.error)
    # the default budget is plenty for real dtabs
    d = Dtab.read("/s=>/$/inet/1 & /$/inet/2 & /$/inet/3;/t=>/s | /s")
    assert ports(bind(d, Path.read("/t"), n)) == {1, 2, 3}
