"""The transformers: daemonset and localnode against the fake API server, and the simple ones."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from dtab.addr import AddrBound, Address, AddrNeg, AddrPending, BoundName, bound
from dtab.errors import ParamError
from dtab.nametree import Alt, Leaf, Neg, NegTree
from dtab.observable import Var
from dtab.path import Path
from namers.k8s.api import ApiTarget, K8sApi
from namers.k8s.watch import Backoff, WatchHub
from tests.fake_apiserver import FakeApiServer, endpoints, fake_k8s  # noqa: F401
from tests.util import async_wait_until
from transformers.k8s import DaemonSetTransformer, build_localnode
from transformers.registry import build_transformer


@pytest.fixture
async def hub(fake_k8s: FakeApiServer) -> AsyncIterator[WatchHub]:  # noqa: F811
    fake_k8s.mirror_endpoints = True  # the daemonset's endpoints as EndpointSlices too
    h = WatchHub(K8sApi(ApiTarget("127.0.0.1", fake_k8s.port)),
                 backoff=Backoff(0.02, 0.2), linger=0.05)
    try:
        yield h
    finally:
        await h.close()


def pod(ip: str, node: str, port: int = 7777) -> Address:
    return Address(ip, port, meta={"nodeName": node})


def hello(*addrs: Address) -> BoundName:
    return BoundName(Path.read("/#/io.l5d.k8s/default/http/hello"), Var(bound(*addrs)))


def hostports(addr: object) -> set[tuple[str, int]]:
    assert isinstance(addr, AddrBound), addr
    return {(a.host, a.port) for a in addr.addresses}


ROUTERS = [("10.0.1.10", "node-a"), ("10.0.2.10", "node-b")]


async def test_daemonset_maps_each_pod_to_the_router_on_its_subnet(
    fake_k8s: FakeApiServer, hub: WatchHub  # noqa: F811
) -> None:
    fake_k8s.upsert("endpoints", endpoints("l5d", ROUTERS, {"incoming": 4141, "outgoing": 4140}))
    t = DaemonSetTransformer("default", "l5d", "incoming", hub=hub)
    name = hello(pod("10.0.2.5", "node-b"), pod("10.0.2.6", "node-b"))
    out = t.transform(Leaf(name))
    assert isinstance(out, Leaf)
    bn = out.value
    assert bn.id.show == (
        "/%/io.l5d.k8s.daemonset/default/incoming/l5d/#/io.l5d.k8s/default/http/hello"
    )
    assert isinstance(bn.addr.value, AddrPending)  # the daemonset is not listed yet
    await async_wait_until(lambda: isinstance(bn.addr.value, AddrBound), 5, "daemonset listed")
    assert hostports(bn.addr.value) == {("10.0.2.10", 4141)}

    # The pods move to node A: the same Var follows.
    name.addr.set(bound(pod("10.0.1.7", "node-a"), pod("10.0.2.5", "node-b")))
    assert hostports(bn.addr.value) == {("10.0.1.10", 4141), ("10.0.2.10", 4141)}
    # A router pod goes away: its pods are unreachable, the rest stay.
    fake_k8s.upsert("endpoints", endpoints("l5d", ROUTERS[:1], {"incoming": 4141}))
    await async_wait_until(lambda: hostports(bn.addr.value) == {("10.0.1.10", 4141)}, 5, "drop")
    name.addr.set(bound(pod("10.0.2.5", "node-b")))
    assert isinstance(bn.addr.value, AddrNeg)
    assert "no default/l5d router pod (port incoming) on the same /24" in bn.addr.value.reason
    assert "10.0.2.5 (node-b)" in bn.addr.value.reason
    t.close()


async def test_daemonset_host_network_matches_node_names(
    fake_k8s: FakeApiServer, hub: WatchHub  # noqa: F811
) -> None:
    # hostNetwork: routers have node IPs unrelated to pod subnets (CNI overlay).
    fake_k8s.upsert("endpoints", endpoints("l5d", [("192.168.0.1", "node-a"),
                                                   ("192.168.0.2", "node-b")], {"incoming": 4141}))
    t = DaemonSetTransformer("default", "l5d", "incoming", host_network=True, hub=hub)
    bn = t.transform(Leaf(hello(pod("10.244.7.3", "node-b")))).value
    await async_wait_until(lambda: isinstance(bn.addr.value, AddrBound), 5, "daemonset listed")
    assert hostports(bn.addr.value) == {("192.168.0.2", 4141)}
    t.close()


async def test_daemonset_keeps_every_matching_router_pod(
    fake_k8s: FakeApiServer, hub: WatchHub  # noqa: F811
) -> None:
    """Linkerd's GatewayTransformer selects *all* gateways the predicate accepts
    (`gatewayAddrs.filter(gatewayPredicate(addr, _))`), and MetadataGatewayTransformer
    compares `a.get(nodeName) == b.get(nodeName)` as Options, so a pod without a node
    name matches every router pod without one
    (interpreter/subnet/.../SubnetGatewayTransformer.scala; DaemonSetTransformerTest
    "daemonset transformer with hostNetwork")."""
    eps = endpoints("l5d", [("192.168.0.1", "node-a"), ("192.168.0.11", "node-a"),
                            ("192.168.0.2", "node-b"), ("192.168.0.3", "x")], {"incoming": 4141})
    del eps["subsets"][0]["addresses"][3]["nodeName"]  # a router pod not yet scheduled
    fake_k8s.upsert("endpoints", eps)
    t = DaemonSetTransformer("default", "l5d", "incoming", host_network=True, hub=hub)
    bn = t.transform(Leaf(hello(pod("10.244.7.3", "node-a")))).value
    await async_wait_until(lambda: isinstance(bn.addr.value, AddrBound), 5, "daemonset listed")
    assert hostports(bn.addr.value) == {("192.168.0.1", 4141), ("192.168.0.11", 4141)}
    nameless = BoundName(Path.read("/#/io.l5d.k8s/default/http/w"),
                         Var(bound(Address("10.244.9.9", 7777))))
    assert hostports(t.transform(Leaf(nameless)).value.addr.value) == {("192.168.0.3", 4141)}
    t.close()
    # by subnet: both router pods of a /24 are kept, and the netmask is configurable
    fake_k8s.upsert("endpoints", endpoints("l5d", [("10.0.1.10", "a"), ("10.0.1.11", "a"),
                                                   ("10.0.2.10", "b")], {"incoming": 4141}))
    t = DaemonSetTransformer("default", "l5d", "incoming", hub=hub)
    bn = t.transform(Leaf(hello(pod("10.0.1.5", "a")))).value
    await async_wait_until(lambda: isinstance(bn.addr.value, AddrBound), 5, "daemonset listed")
    assert hostports(bn.addr.value) == {("10.0.1.10", 4141), ("10.0.1.11", 4141)}
    t.close()
    t = DaemonSetTransformer("default", "l5d", "incoming", hub=hub, netmask=16)
    bn = t.transform(Leaf(hello(pod("10.0.1.5", "a")))).value
    await async_wait_until(lambda: isinstance(bn.addr.value, AddrBound), 5, "daemonset listed")
    assert len(hostports(bn.addr.value)) == 3
    t.close()


def test_netmask_param() -> None:
    """Linkerd fixes Netmask("255.255.255.0") for daemonset and localnode
    (interpreter/k8s/.../DaemonSetTransformerInitializer.scala, LocalNodeTransformerInitializer);
    l5d-py keeps that default and lets `netmask` change it."""
    t = build_localnode({"netmask": "255.255.0.0"}, env={"POD_IP": "10.0.2.10"})
    bn = t.transform(Leaf(hello(pod("10.0.1.5", "a"), pod("10.1.0.1", "b")))).value
    assert hostports(bn.addr.value) == {("10.0.1.5", 7777)}
    assert build_localnode({"netmask": 20}, env={"POD_IP": "10.0.2.10"}).netmask == 20
    assert build_localnode({}, env={"POD_IP": "10.0.2.10"}).netmask == 24
    for bad in ("255.0.255.0", 33, "wide"):
        with pytest.raises(ParamError) as e:
            build_localnode({"netmask": bad}, env={"POD_IP": "10.0.2.10"})
        assert e.value.key == "netmask"


async def test_transform_reuses_derived_vars_and_closes_idle_ones(
    fake_k8s: FakeApiServer, hub: WatchHub  # noqa: F811
) -> None:
    fake_k8s.upsert("endpoints", endpoints("l5d", ROUTERS, {"incoming": 4141}))
    t = DaemonSetTransformer("default", "l5d", "incoming", hub=hub)
    t.idle_ttl = 0.1
    name = hello(pod("10.0.1.5", "node-a"))
    a = t.transform(Alt.of(Leaf(name), Neg))
    b = t.transform(Alt.of(Leaf(name), Neg))
    assert a == b and a.trees[0].value.addr is b.trees[0].value.addr
    assert t.live == 1
    derived = a.trees[0].value.addr
    unsub = derived.observe(lambda _: None)
    t.sweep()
    assert t.live == 1  # observed: kept
    unsub()
    await async_wait_until(lambda: t.live == 0, 5, "idle derived Var to be closed")
    assert not name.addr.observed  # the closed Var let go of the namer's Var
    # The one daemonset watch is shared by every name the transformer sees.
    t.transform(Leaf(hello(pod("10.0.1.5", "node-a"))))
    t.transform(Leaf(BoundName(Path.read("/#/io.l5d.k8s/default/http/world"),
                               Var(bound(pod("10.0.2.5", "node-b"))))))
    await async_wait_until(lambda: fake_k8s.live_slice_watches("l5d") == 1)
    assert len([w for w in fake_k8s.slice_watch_requests if w[1] == "l5d"]) == 1
    t.close()


def test_localnode_by_pod_subnet_and_by_node_name() -> None:
    t = build_localnode({"kind": "io.l5d.k8s.localnode"}, env={"POD_IP": "10.0.2.10"})
    assert t.prefix.show == "/io.l5d.k8s.localnode/10.0.2.10"
    name = hello(pod("10.0.1.5", "node-a"), pod("10.0.2.5", "node-b"))
    bn = t.transform(Leaf(name)).value
    assert bn.id.show == "/%/io.l5d.k8s.localnode/10.0.2.10/#/io.l5d.k8s/default/http/hello"
    assert hostports(bn.addr.value) == {("10.0.2.5", 7777)}
    name.addr.set(bound(pod("10.0.1.5", "node-a")))
    assert isinstance(bn.addr.value, AddrNeg)
    assert "none of the 1 addresses is on subnet 10.0.2.0/24" in bn.addr.value.reason

    h = build_localnode({"hostNetwork": True}, env={"NODE_NAME": "node-a"})
    bn = h.transform(Leaf(hello(pod("10.0.1.5", "node-a"), pod("10.0.1.6", "node-b")))).value
    assert hostports(bn.addr.value) == {("10.0.1.5", 7777)}
    t.close()
    h.close()


def test_localnode_needs_its_environment() -> None:
    with pytest.raises(ParamError, match="POD_IP"):
        build_localnode({}, env={})
    with pytest.raises(ParamError, match="NODE_NAME") as e:
        build_localnode({"hostNetwork": True}, env={"POD_IP": "10.0.0.1"})
    assert e.value.key == "hostNetwork"


def test_port_transformer() -> None:
    t = build_transformer("io.l5d.port", {"kind": "io.l5d.port", "port": 4141})
    bn = t.transform(Leaf(hello(pod("10.0.1.5", "a"), pod("10.0.1.6", "a")))).value
    assert bn.id.show == "/%/io.l5d.port/4141/#/io.l5d.k8s/default/http/hello"
    assert hostports(bn.addr.value) == {("10.0.1.5", 4141), ("10.0.1.6", 4141)}


def test_specific_host_and_localhost() -> None:
    """specificHost's default prefix is /io.l5d.specificHost (no host): Linkerd's
    interpreter/per-host/.../SpecificHostTransformerInitializer.scala."""
    t = build_transformer("io.l5d.specificHost", {"host": "10.0.1.6"})
    bn = t.transform(Leaf(hello(pod("10.0.1.5", "a"), pod("10.0.1.6", "a")))).value
    assert bn.id.show == "/%/io.l5d.specificHost/#/io.l5d.k8s/default/http/hello"
    assert hostports(bn.addr.value) == {("10.0.1.6", 7777)}
    local_ip = socket.gethostbyname(socket.gethostname())
    lt = build_transformer("io.l5d.localhost", {})
    bn = lt.transform(Leaf(hello(pod(local_ip, "a"), pod("10.9.9.9", "a")))).value
    assert hostports(bn.addr.value) == {(local_ip, 7777)}


def test_replace_and_const() -> None:
    """Linkerd's ConstTransformer/ReplaceTransformer bind `path` with the global namers and
    name the result `prefix ++ path` (prefix /%/io.l5d.const, /%/io.l5d.replace):
    namer/core/src/main/scala/io/buoyant/namer/{Const,Replace}Transformer.scala."""
    r = build_transformer("io.l5d.replace", {"path": "/$/inet/127.0.0.1/8080"})
    out = r.transform(Alt.of(Leaf(hello(pod("10.0.1.5", "a"))), Neg))
    rid = Path.read("/%/io.l5d.replace/$/inet/127.0.0.1/8080")
    assert out == Alt.of(Leaf(BoundName(rid, Var(None))), Neg)
    assert hostports(out.trees[0].value.addr.value) == {("127.0.0.1", 8080)}
    assert isinstance(r.transform(Neg), NegTree)  # replace keeps Neg
    c = build_transformer("io.l5d.const", {"path": "/$/io.buoyant.rinet/9000/127.0.0.2"})
    out = c.transform(Neg)
    assert isinstance(out, Leaf)
    assert out.value.id.show == "/%/io.l5d.const/$/io.buoyant.rinet/9000/127.0.0.2"
    assert hostports(out.value.addr.value) == {("127.0.0.2", 9000)}
    # the port-only form and a residual, as Finagle's global namer binds them
    c = build_transformer("io.l5d.const", {"path": "/$/inet/9001/extra"})
    out = c.transform(Neg).value
    assert out.id.show == "/%/io.l5d.const/$/inet/9001/extra"
    assert out.residual.show == "/extra" and hostports(out.addr.value) == {("127.0.0.1", 9001)}


@pytest.mark.parametrize(
    ("kind", "params", "key"),
    [
        ("io.l5d.port", {}, "port"),
        ("io.l5d.port", {"port": "http"}, "port"),
        ("io.l5d.port", {"port": 4141, "bogus": 1}, "bogus"),
        ("io.l5d.replace", {"path": "/svc/hello"}, "path"),
        ("io.l5d.const", {"path": 12}, "path"),
        ("io.l5d.k8s.daemonset", {"namespace": "default", "service": "l5d"}, "port"),
        ("io.l5d.k8s.daemonset", {"namespace": "default", "service": "l5d", "port": 4141},
         "port"),
        ("io.l5d.k8s.daemonset",
         {"namespace": "default", "service": "l5d", "port": "incoming", "hostNetwork": "yes"},
         "hostNetwork"),
        ("io.l5d.k8s.daemonset",
         {"namespace": "default", "service": "l5d", "port": "incoming", "k8sPort": 0}, "k8sPort"),
        ("io.l5d.nope", {}, "kind"),
    ],
)
def test_bad_params_name_the_key(kind: str, params: dict, key: str) -> None:
    with pytest.raises(ParamError) as e:
        build_transformer(kind, params)
    assert e.value.key == key


def test_daemonset_builder_defaults() -> None:
    t = build_transformer("io.l5d.k8s.daemonset", {
        "kind": "io.l5d.k8s.daemonset", "namespace": "Default", "service": "l5d",
        "port": "incoming", "k8sHost": "localhost", "k8sPort": 8001})
    assert t.prefix.show == "/io.l5d.k8s.daemonset/default/incoming/l5d"
    assert t.target == ApiTarget("localhost", 8001)
    assert not t.host_network
