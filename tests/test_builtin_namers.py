"""The `/$/` namers: inet (literal and DNS), rinet, the io.buoyant rewriters, fail and nil."""

from __future__ import annotations

from dtab.addr import AddrBound, Address, AddrPending, BoundName
from dtab.globalnames import UnknownNamerError
from dtab.nametree import Empty, Fail, Leaf, NegTree
from dtab.observable import Failed, Ok
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



def failure(b: BuiltinNamers, path: str) -> str:
    act = b.lookup(Path.read(path))
    assert isinstance(act.value, Failed), (path, act.value)
    assert isinstance(act.value.error, UnknownNamerError)
    return str(act.value.error)


def test_inet_port_only_is_localhost() -> None:
    """Finagle's NamerTest "Namer.global: /$/inet": `/$/inet/1234` is bound (no host:
    localhost), `/$/inet/1234/foobar` has id `/$/inet/1234` and residual `/foobar`
    (finagle-core/src/test/scala/com/twitter/finagle/NamerTest.scala)."""
    b = BuiltinNamers()
    bn = look(b, "/inet/1234/foobar").value
    assert bn.id == Path.read("/$/inet/1234")
    assert bn.residual == Path.read("/foobar")
    assert bn.addr.value == AddrBound(frozenset({Address("127.0.0.1", 1234)}))
    # host/port is tried first: /$/inet/1234/5678 is host "1234", port 5678
    assert look(b, "/inet/10.0.0.1/5678/x").value.id == Path.read("/$/inet/10.0.0.1/5678")


def test_malformed_and_unknown_global_names_are_errors() -> None:
    """Finagle: `intercept[ClassNotFoundException] { Namer.global.lookup("/$/inet") }`;
    any `/$/<kind>` that is not a namer is a failed lookup, not ~ (NamerTest.scala,
    Namer.scala `namerOfKind` -> FailingNamer)."""
    b = BuiltinNamers()
    assert "unknown namer 'inet'" in failure(b, "/inet")
    assert "ClassNotFoundException" in failure(b, "/inet/127.0.0.1")  # host without a port
    assert "unknown namer 'inet'" in failure(b, "/inet/127.0.0.1/notaport")
    assert "unknown namer 'fixedinet'" in failure(b, "/fixedinet")
    assert "unknown namer 'nosuch'" in failure(b, "/nosuch/x")
    assert "out of range" in failure(b, "/inet/127.0.0.1/70000")


def test_fixedinet() -> None:
    """Finagle's NamerTest "Namer.global: /$/fixedinet": host/port and port-only, id
    `/$/fixedinet/1234`, residual kept."""
    b = BuiltinNamers()
    bn = look(b, "/fixedinet/1234/foobar").value
    assert bn.id == Path.read("/$/fixedinet/1234") and bn.residual == Path.read("/foobar")
    assert bn.addr.value == AddrBound(frozenset({Address("127.0.0.1", 1234)}))
    bn = look(b, "/fixedinet/127.0.0.1/1234").value
    assert bn.id == Path.read("/$/fixedinet/127.0.0.1/1234")
    assert bn.addr.value == AddrBound(frozenset({Address("127.0.0.1", 1234)}))


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
    """Linkerd's RinetTest "rinet binds": `/$/io.buoyant.rinet/12345/localhost/residual`
    has id `/$/io.buoyant.rinet/12345/localhost` and residual `/residual`
    (namer/core/src/test/scala/io/buoyant/RinetTest.scala)."""
    tree = look(BuiltinNamers(), "/io.buoyant.rinet/8080/127.0.0.1/residual")
    assert tree.value.id == Path.read("/$/io.buoyant.rinet/8080/127.0.0.1")
    assert tree.value.residual == Path.read("/residual")
    assert tree.value.addr.value == AddrBound(frozenset({Address("127.0.0.1", 8080)}))
    assert "needs /<port>/<host>" in failure(BuiltinNamers(), "/io.buoyant.rinet/8080")


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
