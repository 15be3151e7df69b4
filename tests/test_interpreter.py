"""The default interpreter: namer dispatch in config order, built-ins, transformers, delegation."""

from __future__ import annotations

import asyncio

import pytest

from dtab.addr import AddrBound, Address, BoundName, bound
from dtab.dtab import Dtab
from dtab.nametree import Leaf, Neg, NegTree
from dtab.observable import Activity, Failed, Ok, Pending, Var
from dtab.path import Path
from router.interpreter import Interpreter, TransformedNamer
from transformers.registry import build_transformer


class TableNamer:
    """A namer whose answers the test sets: name -> Activity (Neg when unknown)."""

    def __init__(self, prefix: str) -> None:
        self.id_prefix = Path.read("/#" + prefix)
        self.acts: dict[Path, Activity] = {}
        self.lookups = 0

    def add(self, name: str, *addrs: tuple[str, int]) -> BoundName:
        bn = BoundName(self.id_prefix + Path.read(name),
                       Var(bound(*(Address(h, p) for h, p in addrs))))
        self.activity(name).set_ok(Leaf(bn))
        return bn

    def activity(self, name: str) -> Activity:
        return self.acts.setdefault(Path.read(name), Activity(Ok(Neg.because(f"no {name}"))))

    def lookup(self, path: Path) -> Activity:
        self.lookups += 1
        return self.acts.get(path.take(1)) or self.activity(path.take(1).show)


def ok_tree(result):
    assert isinstance(result.state, Ok), result.state
    return result.state.value


def test_first_non_neg_namer_in_config_order_wins() -> None:
    # two namers on overlapping prefixes (their ids differ, as their prefixes do)
    a, b = TableNamer("/disco"), TableNamer("/disco/b")
    interp = Interpreter([(Path.read("/disco"), a), (Path.read("/disco"), b)])
    assert interp.lookup(Path.read("/#/disco/web")) is interp.lookup(Path.read("/#/disco/web"))
    dtab = Dtab.read("/svc => /#/disco")
    b.add("/web", ("10.0.0.2", 80))
    tree = ok_tree(interp.bind(dtab, Path.read("/svc/web")))
    assert tree.value.addr.value == AddrBound(frozenset({Address("10.0.0.2", 80)}))
    a.add("/web", ("10.0.0.1", 80))  # the earlier namer now answers: it wins
    tree = ok_tree(interp.bind(dtab, Path.read("/svc/web")))
    assert Address("10.0.0.1", 80) in tree.value.addr.value.addresses
    assert isinstance(ok_tree(interp.bind(dtab, Path.read("/svc/none"))), NegTree)


def test_lookup_dispatch() -> None:
    n = TableNamer("/io.l5d.fs")
    interp = Interpreter([(Path.read("/io.l5d.fs"), n)])
    assert interp.lookup(Path.read("/#/other/x")) is None
    assert interp.lookup(Path.read("/plain/x")) is None
    # Finagle's Namer.global: an unknown /$/ kind is a failed lookup (ClassNotFoundException)
    nosuch = interp.lookup(Path.read("/$/nosuch/x"))
    assert isinstance(nosuch.value, Failed) and "unknown namer 'nosuch'" in str(nosuch.value.error)
    assert isinstance(interp.lookup(Path.read("/$/inet/127.0.0.1/1")).value, Ok)
    n.add("/a", ("127.0.0.1", 1))
    assert interp.lookup(Path.read("/#/io.l5d.fs/a")).value.value.value.id == Path.read(
        "/#/io.l5d.fs/a")


def test_rewriting_builtin_is_evaluated_against_the_dtab_again() -> None:
    n = TableNamer("/io.l5d.fs")
    n.add("/hello", ("127.0.0.1", 7777))
    interp = Interpreter([(Path.read("/io.l5d.fs"), n)])
    dtab = Dtab.read(
        "/host => /$/io.buoyant.http.domainToPathPfx/domain;"
        "/domain/world/hello/www => /#/io.l5d.fs/hello")
    tree = ok_tree(interp.bind(dtab, Path.read("/host/www.hello.world")))
    assert tree.value.id == Path.read("/#/io.l5d.fs/hello")


def test_interpreter_transformers_apply_in_order() -> None:
    n = TableNamer("/io.l5d.fs")
    n.add("/web", ("127.0.0.1", 80))
    port = build_transformer("io.l5d.port", {"kind": "io.l5d.port", "port": 4141})
    interp = Interpreter([(Path.read("/io.l5d.fs"), n)], [port])
    tree = ok_tree(interp.bind(Dtab.read("/svc => /#/io.l5d.fs"), Path.read("/svc/web")))
    bn = tree.value
    assert bn.id.show.startswith("/%/io.l5d.port/4141")
    assert bn.addr.value.addresses == frozenset({Address("127.0.0.1", 4141)})


def test_namer_level_transformers() -> None:
    n = TableNamer("/io.l5d.fs")
    bn0 = n.add("/web", ("127.0.0.1", 80))
    port = build_transformer("io.l5d.port", {"kind": "io.l5d.port", "port": 9})
    interp = Interpreter([(Path.read("/io.l5d.fs"), TransformedNamer(n, [port]))])
    tree = ok_tree(interp.bind(Dtab.read("/svc => /#/io.l5d.fs"), Path.read("/svc/web")))
    assert tree.value.addr.value.addresses == frozenset({Address("127.0.0.1", 9)})
    bn0.addr.set(bound(Address("127.0.0.2", 80)))  # follows the namer's addresses
    assert tree.value.addr.value.addresses == frozenset({Address("127.0.0.2", 9)})


async def test_delegate_waits_for_pending_then_answers() -> None:
    n = TableNamer("/io.l5d.fs")
    act = n.activity("/web")
    act.set(Pending())
    interp = Interpreter([(Path.read("/io.l5d.fs"), n)])
    dtab = Dtab.read("/svc => /#/io.l5d.fs")
    task = asyncio.ensure_future(interp.delegate(dtab, Path.read("/svc/web")))
    await asyncio.sleep(0.05)
    assert not task.done()
    n.add("/web", ("127.0.0.1", 80))
    doc = await asyncio.wait_for(task, 2)
    assert doc["type"] == "delegate" and doc["path"] == "/svc/web"
    assert doc["delegate"]["bound"]["id"] == "/#/io.l5d.fs/web"
    assert doc["delegate"]["dentry"] == {"prefix": "/svc", "dst": "/#/io.l5d.fs"}


async def test_delegate_times_out_while_pending() -> None:
    n = TableNamer("/io.l5d.fs")
    n.activity("/web").set(Pending())
    interp = Interpreter([(Path.read("/io.l5d.fs"), n)])
    with pytest.raises(TimeoutError):
        await interp.delegate(Dtab.read("/svc => /#/io.l5d.fs"), Path.read("/svc/web"), 0.1)


async def test_delegate_records_interpreter_transformers() -> None:
    n = TableNamer("/io.l5d.fs")
    n.add("/web", ("127.0.0.1", 80))
    port = build_transformer("io.l5d.port", {"kind": "io.l5d.port", "port": 4141})
    interp = Interpreter([(Path.read("/io.l5d.fs"), n)], [port])
    doc = await interp.delegate(Dtab.read("/svc => /#/io.l5d.fs"), Path.read("/svc/web"))
    text = str(doc)
    assert "'transformation'" in text and "/%/io.l5d.port/4141/#/io.l5d.fs/web" in text


def test_derived_views_hold_namer_activities_only_while_observed() -> None:
    a, b = TableNamer("/disco"), TableNamer("/disco/b")
    a.add("/web", ("10.0.0.1", 80))
    port = build_transformer("io.l5d.port", {"kind": "io.l5d.port", "port": 9})
    interp = Interpreter([(Path.read("/disco"), TransformedNamer(a, [port])),
                          (Path.read("/disco"), b)])
    act = interp.lookup(Path.read("/#/disco/web"))
    src = a.activity("/web")
    assert not src.observed  # looking up does not subscribe
    assert act.value.value.value.addr.value.addresses == frozenset({Address("10.0.0.1", 9)})
    seen = []
    unsub = act.observe(seen.append)
    assert src.observed and b.activity("/web").observed
    src.set_ok(Neg.because("gone"))  # a first namer going Neg falls through to the next
    assert seen and isinstance(seen[-1].value, NegTree)
    b.add("/web", ("10.0.0.2", 80))
    assert seen[-1].value.value.id == Path.read("/#/disco/b/web")
    unsub()
    assert not src.observed and not b.activity("/web").observed
