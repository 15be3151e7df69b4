"""Each identifier kind: the name it produces and Linkerd's reason when it cannot."""

from __future__ import annotations

import pytest

from dtab.errors import ParamError
from dtab.path import Path
from router.config import PluginConfig
from router.identifiers import (
    IdentificationError,
    IdentificationFailure,
    Identified,
    build_identifier,
    build_identifiers,
)
from router.request import RequestHead

SVC = Path.read("/svc")


def head(target: str = "/", host: str | None = "web", version: str = "1.1", method: str = "GET",
         **headers: str) -> RequestHead:
    hs = [(b"Host", host.encode())] if host is not None else []
    hs += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return RequestHead(method, target, version, hs, ("127.0.0.1", 5555))


def ident(kind: str, prefix: Path = SVC, **params: object):
    return build_identifier(kind, params, prefix)


def reason(identify, h: RequestHead) -> str:
    with pytest.raises(IdentificationError) as info:
        identify(h)
    return info.value.reason


def test_header_token_keeps_case_and_port() -> None:
    i = ident("io.l5d.header.token")
    assert i(head(host="Web:8080")) == Identified(Path.read("/svc/Web:8080"))
    assert reason(i, head(host=None)) == "Host header is absent"
    assert reason(i, head(host="")) == "Host header is absent"
    custom = ident("io.l5d.header.token", header="X-Svc")
    assert custom(head(X_Svc="a/b")).path == SVC + Path.of("a/b")  # one label, as Finagle
    assert reason(custom, head()) == "X-Svc header is absent"


@pytest.mark.parametrize("spelled", [b"Host", b"host", b"HOST", b"hOsT"])
def test_header_token_finds_the_header_however_it_is_spelled(spelled: bytes) -> None:
    """The configured spelling is compared first (what clients mostly send), any other
    by its lowercase; the first such header wins."""
    i = ident("io.l5d.header.token")
    h = RequestHead("GET", "/", "1.1", [(b"Accept", b"*/*"), (spelled, b"a"), (b"Host", b"b")])
    assert i(h).path == Path.read("/svc/a")


@pytest.mark.parametrize("spelled", [b"X-Svc", b"x-svc", b"X-SVC"])
def test_header_token_custom_header_however_it_is_spelled(spelled: bytes) -> None:
    custom = ident("io.l5d.header.token", header="X-Svc")
    h = RequestHead("GET", "/", "1.1", [(b"Host", b"web"), (spelled, b"c"), (b"X-Svc", b"d")])
    assert custom(h).path == Path.read("/svc/c")


def test_method_and_host() -> None:
    i = ident("io.l5d.methodAndHost", Path.read("/http"))
    assert i(head("/a/b?x=1", host="World:80")).path == Path.read("/http/1.1/GET/world:80")
    assert i(head("/a", host=None, version="1.0", method="POST")).path == Path.read(
        "/http/1.0/POST")
    assert reason(i, head(host=None)) == "HTTP/1.1 request missing hostname"
    assert reason(i, head(version="2.0")) == "Unknown HTTP version"
    uri = ident("io.l5d.methodAndHost", httpUriInDst=True)
    assert uri(head("/a/b?x=1", host="w")).path == Path.read("/svc/1.1/GET/w/a/b")


def test_method_and_host_uri_is_read_strictly() -> None:
    """Linkerd's MethodAndHostIdentifier suffix is `Path.read(req.path)`
    (router/http/src/main/scala/io/buoyant/router/http/MethodAndHostIdentifier.scala;
    MethodAndHostIdentifierTest "http/1.1 with URIs"): `/` adds nothing, an empty
    segment is a parse error, which RoutingFactory makes a 400 without trying the
    next identifier."""
    uri = ident("io.l5d.methodAndHost", httpUriInDst=True)
    assert uri(head("/", host="w")).path == Path.read("/svc/1.1/GET/w")
    assert uri(head("/drum/bass", version="1.0", method="POST")).path == Path.read(
        "/svc/1.0/POST/drum/bass")
    for bad in ("/a//b", "/a/", "/a b"):
        assert "request path is not a path" in reason(uri, head(bad, host="w"))
    both = build_identifiers([PluginConfig("io.l5d.methodAndHost", {"httpUriInDst": True}),
                              PluginConfig("io.l5d.header.token", {})], SVC)
    with pytest.raises(IdentificationFailure):
        both(head("/a//b"))


def test_header_path_value_that_is_not_a_path_fails_identification() -> None:
    """Linkerd's HeaderIdentifier reads the value with `Path.read` inside a Try; the
    exception is the 400 (UnknownDst with its message) and stops the identifier list
    (router/http/.../HeaderIdentifier.scala, router/core/.../RoutingFactory.scala)."""
    both = build_identifiers(
        [PluginConfig("io.l5d.header", {"header": "x-name"}),
         PluginConfig("io.l5d.header.token", {})], SVC)
    with pytest.raises(IdentificationFailure) as e:
        both(head(x_name="hello"))
    assert e.value.reason.startswith("x-name header is not a path")
    assert both(head()).path == Path.read("/svc/web")  # absent: the next one is tried


def test_path_with_and_without_consume() -> None:
    i = ident("io.l5d.path", segments=2)
    assert i(head("/users/42/profile?x=1")) == Identified(Path.read("/svc/users/42"))
    assert reason(i, head("/users")) == "not enough segments in path"
    c = ident("io.l5d.path", segments=1, consume=True)
    assert c(head("/users/42/profile?x=1")) == Identified(Path.read("/svc/users"),
                                                          "/42/profile?x=1")
    assert c(head("/users/42/")).target == "/42/"
    assert c(head("/users")).target == "/"
    assert c(head("/users?q")).target == "/?q"


def test_header_path_and_static() -> None:
    i = ident("io.l5d.header")
    assert i(head(l5d_name="/hello/v2")).path == Path.read("/svc/hello/v2")
    assert reason(i, head()) == "l5d-name header is absent"
    assert "not a path" in reason(i, head(l5d_name="not a path"))
    s = ident("io.l5d.static", path="/fixed/name")
    assert s(head(host=None)).path == Path.read("/svc/fixed/name")


def test_list_is_tried_in_order() -> None:
    both = build_identifiers(
        [PluginConfig("io.l5d.header", {}), PluginConfig("io.l5d.header.token", {})], SVC)
    assert both(head(l5d_name="/a")).path == Path.read("/svc/a")
    assert both(head()).path == Path.read("/svc/web")
    r = reason(both, head(host=None))
    assert "l5d-name header is absent" in r and "Host header is absent" in r


def test_bad_params() -> None:
    with pytest.raises(ParamError) as info:
        ident("io.l5d.path", segments="two")
    assert info.value.key == "segments"
    with pytest.raises(ParamError) as info:
        ident("io.l5d.static")
    assert info.value.key == "path"
    with pytest.raises(ParamError) as info:
        ident("io.l5d.header.token", headr="x")
    assert info.value.key == "headr"
