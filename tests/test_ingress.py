"""io.l5d.ingress: Linkerd's IngressCacheTest and IngressIdentifierTest cases, over real
list/watch against the fake API server (kubernetes_asyncio over HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dtab.errors import ParamError
from dtab.path import Path
from namers.k8s.api import ApiTarget
from namers.k8s.collection import CollectionWatch
from namers.k8s.watch import Backoff
from router.identifiers import IdentificationError
from router.ingress import VERSIONS, IngressIdentifier, IngressPath, build, host_sans_port
from router.request import RequestHead
from tests.fake_apiserver import FakeApiServer, fake_k8s, ingress  # noqa: F401
from tests.util import async_wait_until

FAST = Backoff(base=0.02, max=0.2)


def head(host: str | None, target: str = "/") -> RequestHead:
    headers = [(b"Host", host.encode())] if host is not None else []
    return RequestHead("GET", target, "1.1", headers, ("127.0.0.1", 1234))


async def make(fake: FakeApiServer, *, ignore: bool = False, cls: str = "linkerd",
               namespace: str | None = None) -> IngressIdentifier:
    watch = CollectionWatch(ApiTarget("127.0.0.1", fake.port), "ingresses", VERSIONS,
                            namespace, FAST)
    ident = IngressIdentifier(Path.read("/svc"), watch, cls, ignore)
    await ident.start()
    return ident


def name(ident: IngressIdentifier, host: str | None, target: str = "/") -> str | None:
    try:
        return ident(head(host, target)).path.show
    except IdentificationError as e:
        assert e.reason == "no ingress rule matches", e.reason
        return None


@pytest.fixture
async def linkerd_fixture(fake_k8s: FakeApiServer) -> AsyncIterator[IngressIdentifier]:  # noqa: F811
    """IngressIdentifierTest's Ingress: a host rule with a path and a catch-all, and a
    default backend; named ports."""
    fake_k8s.upsert("ingresses", ingress(
        "test-ingress", [("foo.bar.com", "/fooPath/.*", "fooPathService", "fooPathPort"),
                         ("foo.bar.com", None, "fooHostService", "fooHostPort")],
        default=("defaultService", "defaultPort"), namespace="fooNamespace", v1beta1=True))
    ident = await make(fake_k8s)
    yield ident
    await ident.close()


async def test_identifier_cases_of_linkerd(linkerd_fixture: IngressIdentifier) -> None:
    ident = linkerd_fixture
    # "identifies requests by host, without path"
    assert name(ident, "foo.bar.com", "/penguins") == "/svc/fooNamespace/fooHostPort/fooHostService"
    # "identifies requests by host & path"
    assert name(ident, "foo.bar.com", "/fooPath/penguins?x=1") == \
        "/svc/fooNamespace/fooPathPort/fooPathService"
    # "falls back to the default backend"
    assert name(ident, "authority", "/fooPath/penguins") == \
        "/svc/fooNamespace/defaultPort/defaultService"
    # "ignores port in a request's hostname"
    assert name(ident, "foo.bar.com:80", "/x") == "/svc/fooNamespace/fooHostPort/fooHostService"


async def test_ignore_default_backends(fake_k8s: FakeApiServer) -> None:  # noqa: F811
    fake_k8s.upsert("ingresses", ingress(
        "test-ingress", [("foo.bar.com", "/fooPath/.*", "fooPathService", "fooPathPort")],
        default=("defaultService", "defaultPort"), namespace="fooNamespace"))
    ident = await make(fake_k8s, ignore=True)
    try:
        assert name(ident, "foo.bar.com", "/fooPath/penguins") == \
            "/svc/fooNamespace/fooPathPort/fooPathService"
        # "ignoreDefaultBackends ingress does not fall back": Linkerd's reason, exactly.
        with pytest.raises(IdentificationError) as e:
            ident(head("authority", "/fooPath/puffins"))
        assert e.value.reason == "no ingress rule matches"
    finally:
        await ident.close()


async def test_annotation_class_and_several_ingresses(fake_k8s: FakeApiServer) -> None:  # noqa: F811
    """IngressCacheTest: only the linkerd-class ones count; an unannotated one counts."""
    fake_k8s.upsert("ingresses", ingress("istio-ingress", [(None, "/istio-only", "httpbin", 6060),
                                                          (None, "/shared", "httpbin", 6061)],
                                         ingress_class="istio"))
    fake_k8s.upsert("ingresses", ingress("linkerd-ingress", [(None, "/linkerd-only", "echo", 7070),
                                                            (None, "/shared", "echo", 7071)],
                                         ingress_class="linkerd"))
    fake_k8s.upsert("ingresses", ingress("nginx-ingress", [(None, "/nginx-only", "nginx", 8080)],
                                         ingress_class="nginx"))
    fake_k8s.upsert("ingresses", ingress("plain", [(None, "/some-path", "plain", 1010)]))
    ident = await make(fake_k8s)
    try:
        assert name(ident, "myhost", "/istio-only") is None
        assert name(ident, "myhost", "/nginx-only") is None
        assert name(ident, "myhost", "/non-existing-path") is None
        assert name(ident, "myhost", "/linkerd-only") == "/svc/default/7070/echo"
        assert name(ident, "myhost", "/shared") == "/svc/default/7071/echo"
        assert name(ident, "myhost", "/some-path") == "/svc/default/1010/plain"
        # The watch follows: an Ingress deleted is gone, the others stay ("deleting an
        # ingress does not reset the ingress cache"); a new one is used at once.
        fake_k8s.delete("ingresses", "default", "linkerd-ingress")
        await async_wait_until(lambda: name(ident, "myhost", "/linkerd-only") is None, 5,
                               "the deleted Ingress to go")
        assert name(ident, "myhost", "/some-path") == "/svc/default/1010/plain"
        fake_k8s.upsert("ingresses", ingress("late", [("web", None, "web", "http")],
                                             namespace="prod"))
        await async_wait_until(lambda: name(ident, "web", "/") == "/svc/prod/http/web", 5,
                               "the new Ingress")
        # Another controller's class given to ours: `ingressClassAnnotation`.
        istio = await make(fake_k8s, cls="istio")
        try:
            assert name(istio, "myhost", "/istio-only") == "/svc/default/6060/httpbin"
            assert name(istio, "myhost", "/some-path") == "/svc/default/1010/plain"
        finally:
            await istio.close()
    finally:
        await ident.close()


async def test_order_and_default_backends_after_all_rules(fake_k8s: FakeApiServer) -> None:  # noqa: F811
    """"don't return default backend before checking all resources for matches", "on no
    host/path matches, return first default backend", "on multiple host matches, return
    first match"."""
    fake_k8s.upsert("ingresses", ingress("polar-bear1", [("other-host", None, "svc1", 80)],
                                         default=("fallback", 80), namespace="ns"))
    fake_k8s.upsert("ingresses", ingress("polar-bear2", [("myhost", None, "svc2", 80)],
                                         namespace="ns"))
    fake_k8s.upsert("ingresses", ingress("polar-bear3", [("myhost", None, "svc3", 80)],
                                         default=("fallback3", 80), namespace="ns"))
    ident = await make(fake_k8s)
    try:
        assert name(ident, "myhost", "/path") == "/svc/ns/80/svc2"
        assert name(ident, "unknown-host", "/path") == "/svc/ns/80/fallback"
    finally:
        await ident.close()


def test_path_matching_as_linkerd() -> None:
    import re

    def p(path: str | None, ptype: str | None = None) -> IngressPath:
        rx = re.compile(path) if path and ptype is None else None
        return IngressPath("myhost", path, "ns", "svc1", "80", ptype, rx)

    assert p("/prefix/.*").matches("myhost", "/prefix/and-other-stuff")  # "match on path regex"
    assert p("/").matches("myhost", "/") and not p("/").matches("myhost", "/foo")
    assert p("").matches("myhost", "/") and p("").matches("myhost", "/foo")
    assert p(None).matches("myhost", "/") and p(None).matches("myhost", "/foo")
    assert not p("/testpath").matches("myhost", "/testpath/x")  # a whole-path regex
    assert not p(None).matches("otherhost", "/")
    # networking.k8s.io/v1 pathTypes, as Kubernetes defines them.
    assert p("/foo", "Prefix").matches("myhost", "/foo/bar")
    assert p("/foo/", "Prefix").matches("myhost", "/foo")
    assert not p("/foo", "Prefix").matches("myhost", "/foobar")
    assert p("/", "Prefix").matches("myhost", "/anything")
    assert p("/foo", "Exact").matches("myhost", "/foo")
    assert not p("/foo", "Exact").matches("myhost", "/foo/")
    wild = IngressPath("*.example.com", None, "ns", "s", "80")
    assert wild.matches("a.example.com", "/") and not wild.matches("a.b.example.com", "/")
    assert not wild.matches("example.com", "/")
    assert host_sans_port("Web:8080") == "web" and host_sans_port("[::1]:80") == "::1"
    assert host_sans_port(None) is None


async def test_old_cluster_v1beta1_and_namespace_param(fake_k8s: FakeApiServer) -> None:  # noqa: F811
    """Linkerd read extensions/v1beta1: an API server serving only that still works."""
    fake_k8s.ingress_versions = {"extensions/v1beta1"}
    fake_k8s.upsert("ingresses", ingress("hello-world", [("world.v2", None, "world-v2", "http")],
                                         default=("world-v1", "http"), v1beta1=True,
                                         ingress_class="linkerd"))
    fake_k8s.upsert("ingresses", ingress("elsewhere", [("other", None, "o", 80)],
                                         namespace="other"))
    ident = await make(fake_k8s, namespace="default")
    try:
        assert name(ident, "world.v2", "/") == "/svc/default/http/world-v2"
        assert name(ident, "anything", "/") == "/svc/default/http/world-v1"
        assert ident.watch.version == "extensions/v1beta1"
        tried = [(v, ns) for v, ns, _ in fake_k8s.ingress_requests]
        assert tried[:3] == [("networking.k8s.io/v1", "default"),
                             ("networking.k8s.io/v1beta1", "default"),
                             ("extensions/v1beta1", "default")]
        assert name(ident, "other", "/") == "/svc/default/http/world-v1"  # not watched
    finally:
        await ident.close()


async def test_watch_survives_410_and_outage(fake_k8s: FakeApiServer) -> None:  # noqa: F811
    fake_k8s.upsert("ingresses", ingress("a", [("a", None, "a", 80)]))
    ident = await make(fake_k8s)
    try:
        assert name(ident, "a") == "/svc/default/80/a"
        fake_k8s.expire_history()
        fake_k8s.drop_watches()
        fake_k8s.upsert("ingresses", ingress("b", [("b", None, "b", 80)]))
        await async_wait_until(lambda: name(ident, "b") == "/svc/default/80/b", 10,
                               "a relist after 410 to bring b")
        await fake_k8s.go_down()
        await async_wait_until(lambda: ident.watch.last_error is not None, 10, "the outage")
        assert name(ident, "a") == "/svc/default/80/a"  # last known rules kept
        await fake_k8s.come_up()
        fake_k8s.upsert("ingresses", ingress("c", [("c", None, "c", 80)]))
        await async_wait_until(lambda: name(ident, "c") == "/svc/default/80/c", 15,
                               "the watch to come back")
    finally:
        await ident.close()


async def test_not_listed_yet_is_a_clear_400_reason(fake_k8s: FakeApiServer) -> None:  # noqa: F811
    await fake_k8s.go_down()
    watch = CollectionWatch(ApiTarget("127.0.0.1", fake_k8s.port), "ingresses", VERSIONS,
                            None, FAST)
    ident = IngressIdentifier(Path.read("/svc"), watch)
    with pytest.raises(IdentificationError, match="ingress resources not listed yet from "
                       f"http://127.0.0.1:{fake_k8s.port}"):
        ident(head("a"))
    await watch.close()


def test_params() -> None:
    ident = build({"kind": "io.l5d.ingress"}, Path.read("/svc"))
    assert ident.annotation_class == "linkerd" and not ident.ignore_default_backends
    assert ident.watch.namespace is None
    ident = build({"ingressClassAnnotation": "l5d", "ignoreDefaultBackends": True,
                   "namespace": "web", "host": "localhost", "port": 8001}, Path.read("/svc"))
    assert (ident.annotation_class, ident.ignore_default_backends) == ("l5d", True)
    assert ident.watch.target.show == "http://localhost:8001"
    with pytest.raises(ParamError) as e:
        build({"ignoreDefaultBackends": "yes"}, Path.read("/svc"))
    assert e.value.key == "ignoreDefaultBackends"
    with pytest.raises(ParamError) as e:
        build({"ingressClass": "x"}, Path.read("/svc"))
    assert e.value.key == "ingressClass"
