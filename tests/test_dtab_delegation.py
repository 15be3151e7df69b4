"""Delegation traces in the `/delegator.json` shapes (Linkerd's DelegateApiHandler)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dtab import (
    Alt,
    Dentry,
    Dtab,
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
from dtab.addr import ADDR_PENDING, Address, BoundName, bound
from dtab.binding import bind
from dtab.delegation import (
    AltNode,
    DelegateNode,
    LeafNode,
    delegate,
    delegate_with_dependencies,
)
from dtab.observable import Activity, Ok, Var
from tests.test_dtab_binding import FakeNamers


class LinkerdTestNamers(FakeNamers):
    """FakeNamers plus Linkerd's test `error` namer and DNS for `127.1`."""

    def __call__(self, path: Path) -> Activity | None:
        if path.elems[:2] == ("#", "error"):
            act = Activity()
            act.set_failed(RuntimeError(f"error naming {path.show}"))
            return act
        if path.elems[:3] == ("$", "inet", "127.1"):
            n = 4
            addr = Var(bound(Address("127.0.0.1", int(path.elems[3]))))
            return Activity.ok(Leaf(BoundName(path.take(n), addr, path.drop(n))))
        return super().__call__(path)


def j(text: str) -> dict[str, Any]:
    return json.loads(text)


def bound_json(ident: str, port: int, residual: str = "/", ip: str = "127.0.0.1") -> dict:
    return {
        "addr": {"type": "bound", "addrs": [{"ip": ip, "port": port, "meta": {}}], "meta": {}},
        "id": ident,
        "path": residual,
    }


def test_linkerd_delegate_api_handler_case() -> None:
    # linkerd/linkerd DelegateApiHandlerTest "/delegate response" (nulls left out, as the
    # reference says, and addresses carrying their `meta`).
    dtab = Dtab.read(
        """
        /beh => /#/error ;
        /bah/humbug => /$/inet/127.1/8080 ;
        /foo => /bah | /beh | /$/fail ;
        /foo => /bar ;
        /boo => /foo ;
        /meh => /heh ;
        """
    )
    tree = delegate(dtab, Path.read("/boo/humbug"), LinkerdTestNamers())
    d_foo = {"prefix": "/foo", "dst": "/bah | /beh | /$/fail"}
    assert tree.to_json() == {
        "type": "delegate",
        "path": "/boo/humbug",
        "delegate": {
            "type": "alt",
            "path": "/foo/humbug",
            "dentry": {"prefix": "/boo", "dst": "/foo"},
            "alt": [
                {"type": "neg", "path": "/bar/humbug", "dentry": {"prefix": "/foo", "dst": "/bar"}},
                {
                    "type": "delegate",
                    "path": "/bah/humbug",
                    "dentry": d_foo,
                    "delegate": {
                        "type": "leaf",
                        "path": "/$/inet/127.1/8080",
                        "dentry": {"prefix": "/bah/humbug", "dst": "/$/inet/127.1/8080"},
                        "bound": bound_json("/$/inet/127.1/8080", 8080),
                    },
                },
                {
                    "type": "delegate",
                    "path": "/beh/humbug",
                    "dentry": d_foo,
                    "delegate": {
                        "type": "exception",
                        "path": "/#/error/humbug",
                        "dentry": {"prefix": "/beh", "dst": "/#/error"},
                        "message": "error naming /#/error/humbug",
                    },
                },
                {"type": "fail", "path": "/$/fail/humbug", "dentry": d_foo},
            ],
        },
    }
    # byte shape: compact like Jackson, keys in Linkerd's order
    assert tree.dumps().startswith(
        '{"type":"delegate","path":"/boo/humbug","delegate":{"type":"alt","path":"/foo/humbug",'
        '"dentry":{"prefix":"/boo","dst":"/foo"},"alt":[{"type":"neg","path":"/bar/humbug",'
    )
    assert not tree.pending


def test_reference_example_leaf() -> None:
    n = FakeNamers()
    fs = Activity.ok(
        Leaf(BoundName(Path.read("/#/io.l5d.fs/default"), Var(bound(Address("127.0.0.1", 9990)))))
    )

    def lookup(path: Path) -> Activity | None:
        return fs if path == Path.read("/#/io.l5d.fs/default") else n(path)

    tree = delegate(Dtab.read("/svc=>/#/io.l5d.fs"), Path.read("/svc/default"), lookup)
    assert tree.dumps() == json.dumps(
        {
            "type": "delegate",
            "path": "/svc/default",
            "delegate": {
                "type": "leaf",
                "path": "/#/io.l5d.fs/default",
                "dentry": {"prefix": "/svc", "dst": "/#/io.l5d.fs"},
                "bound": bound_json("/#/io.l5d.fs/default", 9990),
            },
        },
        separators=(",", ":"),
    )


def test_neg_nodes() -> None:
    n = FakeNamers()
    assert delegate(Dtab.empty(), Path.read("/nothing"), n).to_json() == {
        "type": "neg",
        "path": "/nothing",
    }
    d = {"prefix": "/a", "dst": "~ | /b"}
    assert delegate(Dtab.read("/a=>~ | /b"), Path.read("/a"), n).to_json() == {
        "type": "alt",
        "path": "/a",
        "alt": [
            {"type": "neg", "path": "~", "dentry": d},
            {"type": "neg", "path": "/b", "dentry": d},
        ],
    }


def test_neg_reason_only_when_given() -> None:
    n = FakeNamers()
    n.ok("/test/k8s/hello", Neg.because("service default/hello not found"))
    n.ok("/test/k8s/plain", Neg)
    dtab = Dtab.read("/svc=>/test/k8s")
    assert delegate(dtab, Path.read("/svc/hello"), n).to_json()["delegate"] == {
        "type": "neg",
        "path": "/test/k8s/hello",
        "dentry": {"prefix": "/svc", "dst": "/test/k8s"},
        "reason": "service default/hello not found",
    }
    assert "reason" not in delegate(dtab, Path.read("/svc/plain"), n).to_json()["delegate"]


def test_fail_and_empty_nodes() -> None:
    n = FakeNamers()
    assert delegate(Dtab.read("/a=>!"), Path.read("/a/b"), n).to_json() == {
        "type": "delegate",
        "path": "/a/b",
        "delegate": {"type": "fail", "path": "!", "dentry": {"prefix": "/a", "dst": "!"}},
    }
    assert delegate(Dtab.read("/a=>/$/fail"), Path.read("/a/b"), n).to_json()["delegate"] == {
        "type": "fail",
        "path": "/$/fail/b",
        "dentry": {"prefix": "/a", "dst": "/$/fail"},
    }
    assert delegate(Dtab.read("/a=>$"), Path.read("/a"), n).to_json() == {
        "type": "delegate",
        "path": "/a",
        "delegate": {"type": "empty", "path": "/a", "dentry": {"prefix": "/a", "dst": "$"}},
    }


def test_union_node() -> None:
    n = FakeNamers()
    dtab = Dtab.read("/a=>0.3*/$/inet/1 & 0.7*/$/inet/2")
    d = {"prefix": "/a", "dst": "0.30*/$/inet/1 & 0.70*/$/inet/2"}
    assert delegate(dtab, Path.read("/a"), n).to_json() == {
        "type": "union",
        "path": "/a",
        "union": [
            {
                "weight": 0.3,
                "tree": {
                    "type": "leaf",
                    "path": "/$/inet/1",
                    "dentry": d,
                    "bound": bound_json("/$/inet/1", 1),
                },
            },
            {
                "weight": 0.7,
                "tree": {
                    "type": "leaf",
                    "path": "/$/inet/2",
                    "dentry": d,
                    "bound": bound_json("/$/inet/2", 2),
                },
            },
        ],
    }


def test_alt_follows_every_branch_and_keeps_residuals() -> None:
    n = FakeNamers()
    tree = delegate(Dtab.read("/s=>/$/inet/1 | /$/inet/2"), Path.read("/s/x"), n)
    assert isinstance(tree, AltNode)
    assert [t.to_json()["bound"] for t in tree.trees] == [
        bound_json("/$/inet/1", 1, "/x"),
        bound_json("/$/inet/2", 2, "/x"),
    ]


def test_rewriting_namer_goes_back_through_the_dtab() -> None:
    n = FakeNamers()
    d = Dtab.read("/foo=>/$/testnamer;/rewritten/by/test/namer=>/$/inet/7070")
    out = delegate(d, Path.read("/foo"), n).to_json()
    assert out["type"] == "delegate" and out["path"] == "/foo"
    inner = out["delegate"]
    assert inner == {
        "type": "delegate",
        "path": "/rewritten/by/test/namer",
        "dentry": {"prefix": "/foo", "dst": "/$/testnamer"},
        "delegate": {
            "type": "leaf",
            "path": "/$/inet/7070",
            "dentry": {"prefix": "/rewritten/by/test/namer", "dst": "/$/inet/7070"},
            "bound": bound_json("/$/inet/7070", 7070),
        },
    }


def test_exception_nodes() -> None:
    n = FakeNamers()
    n.fail("/test/zk", RuntimeError("zk session expired"))
    out = delegate(Dtab.read("/a=>/test/zk"), Path.read("/a"), n).to_json()
    assert out["delegate"] == {
        "type": "exception",
        "path": "/test/zk",
        "dentry": {"prefix": "/a", "dst": "/test/zk"},
        "message": "zk session expired",
    }
    # a loop at the root: one node naming the loop, never a hang
    out = delegate(Dtab.read("/a=>/b;/b=>/a"), Path.read("/a"), n).to_json()
    assert out["type"] == "exception" and out["path"] == "/a"
    assert "loop /a -> /b -> /a" in out["message"]
    # a loop in one alternative: that branch is an exception, the others still show
    out = delegate(Dtab.read("/a=>/loop | /$/inet/1;/loop=>/loop/x"), Path.read("/a"), n).to_json()
    assert out["type"] == "alt"
    assert out["alt"][0]["type"] == "exception"
    assert out["alt"][0]["dentry"] == {"prefix": "/a", "dst": "/loop | /$/inet/1"}
    assert "/a -> /loop -> /loop/x -> ..." in out["alt"][0]["message"]
    assert out["alt"][1]["type"] == "leaf"


def _prefixing(prefix: str) -> Any:
    def step(b: BoundName) -> NameTree[BoundName]:
        return Leaf(BoundName(Path.read(prefix) + b.id, b.addr, b.residual))

    return step


def test_transformation_nodes() -> None:
    n = FakeNamers()
    dtab = Dtab.read("/svc=>/$/inet/1")
    steps = [
        ("SubnetLocalTransformer", _prefixing("/%/io.l5d.k8s.localnode/10.0.0.1")),
        ("PortTransformer", _prefixing("/%/io.l5d.port/4141")),
    ]
    out = delegate(dtab, Path.read("/svc/x"), n, transform=steps[:1]).to_json()
    assert out["delegate"] == {
        "type": "transformation",
        "path": "/$/inet/1/x",
        "name": "SubnetLocalTransformer",
        "bound": bound_json("/$/inet/1", 1, "/x"),
        "tree": {
            "type": "leaf",
            "path": "/%/io.l5d.k8s.localnode/10.0.0.1/$/inet/1",
            "dentry": {"prefix": "/svc", "dst": "/$/inet/1"},
            "bound": bound_json("/%/io.l5d.k8s.localnode/10.0.0.1/$/inet/1", 1, "/x"),
        },
    }
    two = delegate(dtab, Path.read("/svc/x"), n, transform=steps).to_json()["delegate"]
    assert two["name"] == "SubnetLocalTransformer"
    assert two["tree"]["type"] == "transformation"
    assert two["tree"]["name"] == "PortTransformer"
    assert two["tree"]["path"] == "/%/io.l5d.k8s.localnode/10.0.0.1/$/inet/1"
    assert two["tree"]["tree"]["bound"]["id"] == (
        "/%/io.l5d.port/4141/%/io.l5d.k8s.localnode/10.0.0.1/$/inet/1"
    )


def test_transformer_to_a_tree_and_a_broken_transformer() -> None:
    n = FakeNamers()
    dtab = Dtab.read("/svc=>/$/inet/1")

    def split(b: BoundName) -> NameTree[BoundName]:
        return Union.of(Leaf(b), Neg)

    out = delegate(dtab, Path.read("/svc"), n, transform=[("Split", split)]).to_json()
    assert out["delegate"]["tree"]["type"] == "union"
    assert [w["tree"]["type"] for w in out["delegate"]["tree"]["union"]] == ["leaf", "neg"]

    def broken(b: BoundName) -> NameTree[BoundName]:
        raise ValueError("no daemonset pod on 10.0.0.0/24")

    out = delegate(dtab, Path.read("/svc"), n, transform=[("Daemonset", broken)]).to_json()
    assert out["delegate"]["type"] == "transformation"
    assert out["delegate"]["tree"]["type"] == "exception"
    assert "no daemonset pod" in out["delegate"]["tree"]["message"]


def test_pending_namer_and_pending_addresses() -> None:
    n = FakeNamers()
    dtab = Dtab.read("/svc=>/test/slow")
    tree, deps = delegate_with_dependencies(dtab, Path.read("/svc/a"), n)
    assert tree.pending
    assert tree.to_json()["delegate"]["bound"]["addr"] == {"type": "pending"}
    assert deps == (n.acts[Path.read("/test/slow/a")],)
    # transformers never see the placeholder
    tree = delegate(dtab, Path.read("/svc/a"), n, transform=[("T", _prefixing("/%/t"))])
    assert tree.to_json()["delegate"]["type"] == "leaf"

    addr: Var[Any] = Var(ADDR_PENDING)
    n.ok("/test/slow/a", Leaf(BoundName(Path.read("/test/slow/a"), addr)))
    tree, deps = delegate_with_dependencies(dtab, Path.read("/svc/a"), n)
    assert tree.pending and deps[-1] is addr
    addr.set(bound(Address("10.0.0.7", 80)))
    tree = delegate(dtab, Path.read("/svc/a"), n)
    assert not tree.pending
    assert tree.to_json()["delegate"]["bound"] == bound_json("/test/slow/a", 80, ip="10.0.0.7")


def test_delegation_agrees_with_binding_on_a_neg_dentry() -> None:
    # Finagle's lookup: one dentry rewriting to `~` is Neg, so the namers get the path.
    n = FakeNamers()
    n.ok("/test/x", "/$/inet/5")
    tree = delegate(Dtab.read("/test/x=>~"), Path.read("/test/x"), n)
    assert isinstance(tree, LeafNode) and tree.to_json()["bound"] == bound_json("/$/inet/5", 5)
    tree = delegate(Dtab.read("/q/y=>~"), Path.read("/q/y"), FakeNamers())
    assert isinstance(tree, DelegateNode)
    assert tree.to_json()["delegate"] == {
        "type": "neg",
        "path": "~",
        "dentry": {"prefix": "/q/y", "dst": "~"},
    }


def test_exponential_expansion_is_one_exception_node() -> None:
    out = delegate(Dtab.read("/a=>/a/x | /a/y"), Path.read("/a"), FakeNamers(), max_lookups=300)
    assert out.to_json()["type"] == "exception"
    assert "needed more than 300 lookups" in out.to_json()["message"]


# -- delegation and binding agree -----------------------------------------------------

_labels = st.sampled_from(["a", "b", "n"])
_paths = st.lists(_labels, min_size=1, max_size=3).map(lambda xs: Path(tuple(xs)))
_leaves = st.one_of(st.sampled_from([Neg, Fail, Empty]), _paths.map(Leaf), _paths.map(Leaf))
_trees = st.recursive(
    _leaves,
    lambda kids: st.one_of(
        st.lists(kids, min_size=2, max_size=3).map(lambda ts: Alt(tuple(ts))),
        st.lists(kids, min_size=2, max_size=3).map(lambda ts: Union.of(*ts)),
    ),
    max_leaves=6,
)
_dtabs = st.lists(st.builds(Dentry, _paths.map(lambda p: Prefix(p.elems)), _trees), max_size=4)


def _model_namer(path: Path) -> Activity | None:
    """A deterministic namer for `/n/...`: bound, neg, fail or empty by the next label."""
    if path.elems[:1] != ("n",):
        return None
    kind = path.elems[1] if len(path.elems) > 1 else "a"
    if kind == "a":
        return Activity.ok(Leaf(BoundName(path.take(2), Var(bound()), path.drop(2))))
    return Activity.ok({"b": Neg, "n": Fail}.get(kind, Empty))


def _to_name_tree(node: Any) -> NameTree[Any] | None:
    """Linkerd's DelegateTree.toNameTree (None where it would throw)."""
    from dtab.delegation import (
        EmptyNode,
        ExceptionNode,
        FailNode,
        NegNode,
        TransformationNode,
        UnionNode,
    )

    if isinstance(node, ExceptionNode):
        return None
    if isinstance(node, NegNode):
        return Neg
    if isinstance(node, FailNode):
        return Fail
    if isinstance(node, EmptyNode):
        return Empty
    if isinstance(node, DelegateNode | TransformationNode):
        return _to_name_tree(node.tree)
    if isinstance(node, LeafNode):
        return Leaf(node.value)
    kids = [_to_name_tree(t.tree if isinstance(node, UnionNode) else t) for t in node.trees]
    if any(k is None for k in kids):
        return None
    if isinstance(node, UnionNode):
        return Union(tuple(Weighted(w.weight, k) for w, k in zip(node.trees, kids, strict=True)))
    return Alt(tuple(kids))


@settings(max_examples=150, deadline=None)
@given(_dtabs, _paths)
def test_delegation_evaluates_to_what_binding_binds(dentries: list[Dentry], path: Path) -> None:
    dtab = Dtab(tuple(dentries))
    result = bind(dtab, path, _model_namer, max_depth=12, max_lookups=400)
    tree = delegate(dtab, path, _model_namer, max_depth=12, max_lookups=400)
    as_tree = _to_name_tree(tree)
    assume(isinstance(result.state, Ok) and as_tree is not None)
    assert as_tree.eval() == result.state.value.eval()
