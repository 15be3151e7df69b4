"""The `/$/` namers: inet (literal and DNS), rinet, the io.buoyant rewriters, fail and nil."""

from __future__ import annotations

from dtab.addr import AddrBound, Address, AddrPending, BoundName
from dtab.nametree import Empty, Fail, Leaf, Neg, NegTree
from dtab.observable import Ok
from dtab.path import Path
from namers.builtin import BuiltinNamers
from tests.util import async_wait_until


def look(b: BuiltinNamers, path: str):
    act = b.lookup(Path.read(path))
    assert act is not None, path
    assert isinstance(act.value, Ok)
    return act.value.value


def rewrite(path: str) -> str | None:
    tree = look(BuiltinNamers(), path)
    if isinstance(tree, NegTree):
        return None
    assert isinstance(tree, Leaf) and isinstance(tree.value, Path)
    return tree.value.show


def test_inet_literal_binds_at_once_with_residual() -> None:
    b = BuiltinNamers()
    tree = look(b, "/inet/127.0.0.1/8080/extra/bits")
    assert isinstance(tree, Leaf) and isinstance(tree.value, BoundName)
    bn = tree.value
    assert bn.id == Path.read("/$/inet/127.0.0.1/8080")
    assert bn.residual == Path.read("/extra/bits")
    assert bn.addr.value == AddrBound(frozenset({Address("127.0.0.1", 8080)}))
    assert look(b, "/inet/127.0.0.1/notaport") == Neg
    assert look(b, "/inet/127.0.0.1") == Neg
    assert b.lookup(Path.read("/nosuch/x")) is None


async def test_inet_hostname_resolves_asynchronously() -> None:
    b = BuiltinNamers(dns_refresh_s=0.1)
    try:
        tree = look(b, "/inet/localhost/4321")
        bn = tree.value
        assert bn.id == Path.read("/$/inet/localhost/4321")
        seen = []
        bn.addr.observe(seen.append)
        await async_wait_until(lambda: not isinstance(bn.addr.value, AddrPending), 5, "DNS")
        assert Address("127.0.0.1", 4321) in bn.addr.value.addresses
        # a second lookup shares the same address Var (one DNS entry per host:port)
        assert look(b, "/inet/localhost/4321").value.addr is bn.addr
    finally:
        b.close()


def test_rinet_reverses_the_arguments() -> None:
    tree = look(BuiltinNamers(), "/io.buoyant.rinet/8080/127.0.0.1")
    assert tree.value.id == Path.read("/$/inet/127.0.0.1/8080")


def test_rewriters() -> None:
    assert rewrite("/io.buoyant.http.domainToPathPfx/pfx/foo.buoyant.io/x") == (
        "/pfx/io/buoyant/foo/x")
    assert rewrite("/io.buoyant.http.domainToPathPfx/pfx/www.hello.world:80") == (
        "/pfx/world:80/hello/www")  # the port is not removed
    assert rewrite("/io.buoyant.http.domainToPathPfx/pfx/bad\\x2fhost") is None
    assert rewrite("/io.buoyant.http.domainToPath/foo.buoyant.io") == "/io/buoyant/foo"
    assert rewrite("/io.buoyant.http.subdomainOfPfx/buoyant.io/pfx/foo.buoyant.io:8080/r") == (
        "/pfx/foo/r")
    assert rewrite("/io.buoyant.http.subdomainOfPfx/buoyant.io/pfx/foo.example.com") is None
    assert rewrite("/io.buoyant.http.subdomainOf/buoyant.io/a.buoyant.io") == "/a"
    assert rewrite("/io.buoyant.hostportPfx/pfx/web:8080/r") == "/pfx/web/8080/r"
    assert rewrite("/io.buoyant.porthostPfx/pfx/web:8080/r") == "/pfx/8080/web/r"
    assert rewrite("/io.buoyant.hostportPfx/pfx/web") is None
    assert rewrite("/io.buoyant.http.anyMethodPfx/pfx/GET/svc") == "/pfx/svc"
    assert rewrite("/io.buoyant.http.anyMethod/get/svc") is None
    assert rewrite("/io.buoyant.http.anyHostPfx/pfx/h.com/svc") == "/pfx/svc"


def test_neg_carries_a_reason() -> None:
    tree = look(BuiltinNamers(), "/io.buoyant.hostportPfx/pfx/web")
    assert isinstance(tree, NegTree) and "hostportPfx" in tree.reason


def test_fail_and_nil() -> None:
    assert look(BuiltinNamers(), "/fail/x") == Fail
    assert look(BuiltinNamers(), "/nil") == Empty
