"""io.l5d.k8s on EndpointSlices and at cluster scale, against the fake API server.

EndpointSlices as the default source (merged per service, conditions, node and
zone metadata), the Endpoints fallback (config and API discovery), bounded
watch connections (namespace-wide and cluster-wide multiplexing), watch hygiene
(bookmarks, 410, resource versions going backwards, a new cluster store, a
backoff an immediately failing stream does not reset) and incremental updates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from dtab.nametree import Leaf, NegTree
from dtab.observable import Ok
from dtab.path import Path
from namers.k8s.api import ApiTarget, K8sApi
from namers.k8s.namer import K8sNamer, build
from namers.k8s.watch import Backoff, WatchHub
from router.client.balancer import P2CLeastLoaded
from tests.fake_apiserver import (  # noqa: F401
    FakeApiServer,
    endpoint_slice,
    endpoints,
    fake_k8s,
    service,
)
from tests.test_k8s_namer import hostports
from tests.util import async_wait_until

FAST = Backoff(base=0.02, max=0.2)


def make_hub(api: FakeApiServer, **kw: object) -> WatchHub:
    return WatchHub(K8sApi(ApiTarget("127.0.0.1", api.port)), backoff=FAST, linger=0.05,
                    **kw)  # type: ignore[arg-type]


@pytest.fixture
async def hub(fake_k8s: FakeApiServer) -> AsyncIterator[WatchHub]:  # noqa: F811
    h = make_hub(fake_k8s)
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
async def namer(fake_k8s: FakeApiServer, hub: WatchHub) -> AsyncIterator[K8sNamer]:  # noqa: F811
    n = K8sNamer(ApiTarget("127.0.0.1", fake_k8s.port), hub=hub, idle_ttl=30)
    try:
        yield n
    finally:
        await n.close()


async def bound(namer: K8sNamer, path: str):  # type: ignore[no-untyped-def]
    """The lookup's bound name once it resolves, observed as a client would observe it."""
    act = namer.lookup(Path.read(path))
    await async_wait_until(lambda: isinstance(act.value, Ok), 10, f"{path} to resolve")
    act.observe(lambda _: None)
    tree = act.value.value
    if isinstance(tree, Leaf):
        tree.value.addr.observe(lambda _: None)
    return act, tree


async def test_a_service_split_over_slices_is_merged(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert("endpointslices", endpoint_slice(
        "hello-a", "hello", [("10.0.1.5", "node-a"), ("10.0.1.6", "node-a")], {"http": 7777}))
    fake_k8s.upsert("endpointslices", endpoint_slice(
        "hello-b", "hello", [{"ip": "10.0.2.7", "node": "node-b", "zone": "z2",
                              "hints": ["z2"]}], {"http": 7777}))
    fake_k8s.upsert("endpointslices", endpoint_slice(  # another service's slice
        "world-a", "world", [("10.9.9.9", "node-c")], {"http": 80}))
    act, tree = await bound(namer, "/default/http/hello")
    addr = tree.value.addr
    assert hostports(addr.value) == {("10.0.1.5", 7777), ("10.0.1.6", 7777), ("10.0.2.7", 7777)}
    metas = {a.host: dict(a.meta) for a in addr.value.addresses}
    assert metas["10.0.1.5"] == {"nodeName": "node-a"}
    assert metas["10.0.2.7"] == {"nodeName": "node-b", "zone": "z2",
                                 "hints": {"forZones": ["z2"]}}
    # One slice changes: the merge follows, the other slice's addresses are the same objects.
    before = {a for a in addr.value.addresses if a.host.startswith("10.0.1.")}
    fake_k8s.upsert("endpointslices", endpoint_slice(
        "hello-b", "hello", [("10.0.2.8", "node-b")], {"http": 7777}))
    await async_wait_until(lambda: ("10.0.2.8", 7777) in hostports(addr.value), 5, "slice b")
    assert hostports(addr.value) == {("10.0.1.5", 7777), ("10.0.1.6", 7777), ("10.0.2.8", 7777)}
    after = {a for a in addr.value.addresses if a.host.startswith("10.0.1.")}
    assert all(any(x is y for y in before) for x in after)
    # A slice deleted: its addresses go; the last slice deleted: the service is gone.
    fake_k8s.delete("endpointslices", "default", "hello-a")
    await async_wait_until(lambda: hostports(addr.value) == {("10.0.2.8", 7777)}, 5, "delete")
    fake_k8s.delete("endpointslices", "default", "hello-b")
    await async_wait_until(lambda: isinstance(act.value.value, NegTree), 5, "no slices")
    assert "default/hello not found" in act.value.value.reason


async def test_conditions_ready_serving_terminating(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert("endpointslices", endpoint_slice("web-1", "web", [
        {"ip": "10.0.0.1", "node": "n1"},  # ready
        {"ip": "10.0.0.2", "node": "n1", "ready": False, "serving": True, "terminating": True},
        {"ip": "10.0.0.3", "node": "n2", "ready": False, "serving": False,
         "terminating": False},  # starting, not ready
        {"ip": "10.0.0.4", "node": "n2", "ready": None},  # unknown: ready, as the API says
    ], {"http": 8080}))
    act, tree = await bound(namer, "/default/http/web")
    addr = tree.value.addr
    assert hostports(addr.value) == {("10.0.0.1", 8080), ("10.0.0.4", 8080)}
    # The ready ones go away: the terminating-but-serving one drains the traffic.
    fake_k8s.upsert("endpointslices", endpoint_slice("web-1", "web", [
        {"ip": "10.0.0.2", "node": "n1", "ready": False, "serving": True, "terminating": True},
        {"ip": "10.0.0.3", "node": "n2", "ready": False, "serving": False, "terminating": False},
    ], {"http": 8080}))
    await async_wait_until(lambda: hostports(addr.value) == {("10.0.0.2", 8080)}, 5, "drain")
    (a,) = addr.value.addresses
    assert a.meta["terminating"] is True
    # Nothing serving: Neg, saying how many are not ready.
    fake_k8s.upsert("endpointslices", endpoint_slice("web-1", "web", [
        {"ip": "10.0.0.2", "ready": False, "serving": False, "terminating": True},
    ], {"http": 8080}))
    await async_wait_until(lambda: isinstance(act.value.value, NegTree), 5, "neg")
    assert "no ready endpoints for port http (1 not ready)" in act.value.value.reason


async def test_numbered_ports_and_missing_port_names(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert("services", service("api", [("http", 80, "web")]))
    fake_k8s.upsert("endpointslices", endpoint_slice("api-1", "api", [("10.0.1.5", "a")],
                                                     {"web": 8080}))
    _, numbered = await bound(namer, "/default/80/api")
    assert hostports(numbered.value.addr.value) == {("10.0.1.5", 8080)}
    _, missing = await bound(namer, "/default/grpc/api")
    assert isinstance(missing, NegTree)
    assert missing.reason == "k8s service default/api has no port named 'grpc' (ports: web)"


async def test_old_cluster_without_slices_uses_endpoints(
    fake_k8s: FakeApiServer, hub: WatchHub, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.INFO, logger="l5d.k8s")
    fake_k8s.serves_endpointslices = False
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80}))
    n = K8sNamer(ApiTarget("127.0.0.1", fake_k8s.port), hub=hub)
    try:
        _, tree = await bound(n, "/default/http/hello")
        assert hostports(tree.value.addr.value) == {("10.0.1.5", 80)}
        assert "using Endpoints" in caplog.text
        assert fake_k8s.slice_watch_requests == []
    finally:
        await n.close()


async def test_endpoint_source_config_key(
    fake_k8s: FakeApiServer, hub: WatchHub  # noqa: F811
) -> None:
    """endpointSource: endpoints watches Endpoints even where slices are served."""
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80}))
    n = build({"kind": "io.l5d.k8s", "host": "127.0.0.1", "port": fake_k8s.port,
               "endpointSource": "endpoints"})
    n._hub = hub
    try:
        _, tree = await bound(n, "/default/http/hello")
        assert hostports(tree.value.addr.value) == {("10.0.1.5", 80)}
        assert fake_k8s.slice_watch_requests == []
    finally:
        await n.close()
    assert build({"endpointSource": "EndpointSlices"}).endpoint_source == "endpointslices"
    from dtab.errors import ParamError
    with pytest.raises(ParamError) as e:
        build({"endpointSource": "dns"})
    assert e.value.key == "endpointSource" and "endpointSlices" in str(e.value)


async def test_many_services_share_one_namespace_watch(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    """Past the threshold the namespace's services are one watch, filtered locally; a
    service joining it later is listed on its own once, then followed by that watch."""
    for i in range(40):
        fake_k8s.upsert("endpointslices", endpoint_slice(f"s{i}-x", f"s{i}",
                                                         [(f"10.1.0.{i}", "a")], {"http": 80}))
    addrs = []
    for i in range(30):
        _, tree = await bound(namer, f"/default/http/s{i}")
        addrs.append(tree.value.addr)
    await async_wait_until(lambda: fake_k8s.live_slice_watches(None, "default") == 1, 5,
                           "one namespace watch")
    assert fake_k8s.live_slice_watches() == 1  # no per-service watches left
    assert len(namer.hub.feeds()) == 1 and namer.hub.feeds()[0].scope == "namespace"
    # Updates of watched services arrive through it; other services' are dropped here.
    fake_k8s.upsert("endpointslices", endpoint_slice("s7-x", "s7", [("10.2.0.7", "a")],
                                                     {"http": 80}))
    fake_k8s.upsert("endpointslices", endpoint_slice("s35-x", "s35", [("10.2.0.35", "a")],
                                                     {"http": 80}))
    await async_wait_until(lambda: hostports(addrs[7].value) == {("10.2.0.7", 80)}, 5, "s7")
    # A service joining the shared watch gets its current state, then its updates.
    _, late = await bound(namer, "/default/http/s35")
    assert hostports(late.value.addr.value) == {("10.2.0.35", 80)}
    fake_k8s.upsert("endpointslices", endpoint_slice("s35-x", "s35", [("10.3.0.35", "a")],
                                                     {"http": 80}))
    await async_wait_until(lambda: hostports(late.value.addr.value) == {("10.3.0.35", 80)},
                           5, "s35 update")
    assert fake_k8s.live_slice_watches(None, "default") == 1


async def test_many_namespaces_share_one_cluster_watch(
    fake_k8s: FakeApiServer,  # noqa: F811
) -> None:
    hub = make_hub(fake_k8s, namespace_threshold=2, max_watches=6)
    n = K8sNamer(ApiTarget("127.0.0.1", fake_k8s.port), hub=hub)
    try:
        for i in range(12):
            fake_k8s.upsert("endpointslices", endpoint_slice(
                "a-x", "a", [(f"10.4.0.{i}", "n")], {"http": 80}, namespace=f"ns{i}"))
        trees = [(await bound(n, f"/ns{i}/http/a"))[1] for i in range(12)]
        await async_wait_until(lambda: [f.scope for f in hub.feeds()] == ["cluster"], 5,
                               "one cluster-wide watch")
        assert fake_k8s.live_slice_watches() == 1
        fake_k8s.upsert("endpointslices", endpoint_slice(
            "a-x", "a", [("10.5.0.3", "n")], {"http": 80}, namespace="ns3"))
        await async_wait_until(
            lambda: hostports(trees[3].value.addr.value) == {("10.5.0.3", 80)}, 5, "ns3")
        assert hostports(trees[4].value.addr.value) == {("10.4.0.4", 80)}
    finally:
        await n.close()
        await hub.close()


async def test_bookmarks_keep_a_resume_inside_the_history(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert("endpointslices", endpoint_slice("b-1", "b", [("10.0.0.1", "a")],
                                                     {"http": 80}))
    _, tree = await bound(namer, "/default/http/b")
    await async_wait_until(lambda: fake_k8s.live_slice_watches("b") == 1, 5, "watch")
    # Other objects move the store's version on; a bookmark tells the watch.
    for i in range(5):
        fake_k8s.upsert("services", service(f"other{i}", [("http", 80, 80)]))
    assert fake_k8s.send_bookmarks() == 1
    (feed,) = namer.hub.feeds()
    await async_wait_until(lambda: feed.resource_version == str(fake_k8s._rv), 5, "bookmark")
    lists = len(fake_k8s.list_requests)
    # History before the bookmark is compacted, the stream drops: it resumes, no 410.
    fake_k8s._oldest_rv = fake_k8s._rv
    fake_k8s.drop_watches()
    await async_wait_until(lambda: len(fake_k8s.slice_watch_requests) >= 2, 5, "resumed")
    assert fake_k8s.gone_sent == 0
    assert fake_k8s.slice_watch_requests[-1][2] == str(fake_k8s._rv)
    # (the resume after a broken stream checks the server with one limit=1 list)
    assert len(fake_k8s.list_requests) <= lists + 1
    fake_k8s.upsert("endpointslices", endpoint_slice("b-1", "b", [("10.0.0.2", "a")],
                                                     {"http": 80}))
    await async_wait_until(lambda: hostports(tree.value.addr.value) == {("10.0.0.2", 80)})


async def test_410_on_slices_lists_again(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert("endpointslices", endpoint_slice("g-1", "g", [("10.0.0.1", "a")],
                                                     {"http": 80}))
    _, tree = await bound(namer, "/default/http/g")
    await async_wait_until(lambda: fake_k8s.live_slice_watches("g") == 1, 5, "watch")
    fake_k8s.expire_history()
    fake_k8s.drop_watches()
    fake_k8s.upsert("endpointslices", endpoint_slice("g-1", "g", [("10.0.0.9", "a")],
                                                     {"http": 80}))
    fake_k8s.expire_history()
    await async_wait_until(lambda: hostports(tree.value.addr.value) == {("10.0.0.9", 80)}, 5)
    assert fake_k8s.gone_sent >= 1


@pytest.mark.parametrize("too_large_as_error", [False, True], ids=["stale-stream", "504"])
@pytest.mark.parametrize("identity", [True, False], ids=["identity", "no-identity"])
async def test_api_server_restart_with_lower_versions_relists(
    fake_k8s: FakeApiServer, namer: K8sNamer,  # noqa: F811
    too_large_as_error: bool, identity: bool,
) -> None:
    """A fresh store behind the API server: versions restart lower. Resuming from our old
    version would stay stale (or get a 504); the router lists again instead, and follows
    the new state within a second of that list."""
    fake_k8s.too_large_as_error = too_large_as_error
    fake_k8s.identity_headers = identity
    for i in range(30):  # push the version well above where the new store starts
        fake_k8s.upsert("services", service(f"pad{i}", [("http", 80, 80)]))
    fake_k8s.upsert("endpointslices", endpoint_slice("r-1", "r", [("10.0.0.1", "a")],
                                                     {"http": 80}))
    _, tree = await bound(namer, "/default/http/r")
    addr = tree.value.addr
    await async_wait_until(lambda: fake_k8s.live_slice_watches("r") == 1, 5, "watch")
    relisted_at: list[float] = []
    orig = fake_k8s._list_response

    def spy(request: web.Request, kind: str, *a: object) -> web.Response:
        if kind == "endpointslices" and request.query.get("limit") != "1":
            relisted_at.append(time.monotonic())
        return orig(request, kind, *a)  # type: ignore[arg-type]

    fake_k8s._list_response = spy  # type: ignore[method-assign]
    # The new store has the service elsewhere.
    fake_k8s._objects[("endpointslices", "default", "r-1")]["endpoints"][0]["addresses"] = [
        "10.0.0.2"]
    await fake_k8s.restart(lower_to=5)
    await async_wait_until(lambda: hostports(addr.value) == {("10.0.0.2", 80)}, 10,
                           "the new store's state")
    followed = time.monotonic()
    assert relisted_at, "no relist"
    assert followed - relisted_at[-1] < 1.0
    # ... and it watches the new store from the new versions.
    fake_k8s.upsert("endpointslices", endpoint_slice("r-1", "r", [("10.0.0.3", "a")],
                                                     {"http": 80}))
    await async_wait_until(lambda: hostports(addr.value) == {("10.0.0.3", 80)}, 5, "watch")


async def test_a_stream_failing_at_once_does_not_reset_the_backoff(
    fake_k8s: FakeApiServer, hub: WatchHub, namer: K8sNamer  # noqa: F811
) -> None:
    """The server accepts each watch and cuts it at once: retries must slow down (the
    backoff grows) instead of reconnecting as fast as the loop can."""
    fake_k8s.upsert("endpointslices", endpoint_slice("f-1", "f", [("10.0.0.1", "a")],
                                                     {"http": 80}))
    await bound(namer, "/default/http/f")
    await async_wait_until(lambda: fake_k8s.live_slice_watches("f") == 1, 5, "watch")
    orig = fake_k8s._stream

    async def accept_then_cut(request, resp, *a):  # type: ignore[no-untyped-def]
        await resp.prepare(request)
        assert request.transport is not None
        request.transport.abort()
        return resp

    fake_k8s._stream = accept_then_cut  # type: ignore[method-assign]
    fake_k8s.drop_watches()
    before = len(fake_k8s.slice_watch_requests)
    await asyncio.sleep(2.0)
    attempts = len(fake_k8s.slice_watch_requests) - before
    fake_k8s._stream = orig  # type: ignore[method-assign]
    (feed,) = hub.feeds()
    # With a backoff of 0.02 s reset at every accepted stream this would be ~100 attempts;
    # growing towards its 0.2 s cap it is about a dozen.
    assert 2 <= attempts <= 30, attempts
    assert feed._attempt >= 3


async def test_updates_coalesce_and_the_balancer_changes_only_what_changed(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    """A 2,000-address service in 20 slices: a burst of updates to one slice is applied
    as its latest state, and a client's balancer keeps every unchanged endpoint object."""
    for s in range(20):
        fake_k8s.upsert("endpointslices", endpoint_slice(
            f"big-{s}", "big", [(f"10.{s}.0.{i}", "n") for i in range(100)], {"http": 80}))
    _, tree = await bound(namer, "/default/http/big")
    addr = tree.value.addr
    assert len(addr.value.addresses) == 2000
    balancer = P2CLeastLoaded(addr)
    kept = {e.hostport: e for e in balancer.all}
    seen: list[int] = []
    addr.observe(lambda a: seen.append(len(a.addresses)))
    (feed,) = namer.hub.feeds()
    events = feed.events
    # 50 updates of one slice written at once (one burst on the stream).
    for k in range(50):
        fake_k8s.upsert("endpointslices", endpoint_slice(
            "big-3", "big", [(f"10.3.{k + 1}.{i}", "n") for i in range(100)], {"http": 80}))
    await async_wait_until(lambda: feed.events >= events + 50, 10, "the burst")
    await async_wait_until(lambda: ("10.3.50.0", 80) in hostports(addr.value), 5, "latest")
    assert len(addr.value.addresses) == 2000
    assert len(seen) < 50  # coalesced: fewer publishes than events
    now = {e.hostport: e for e in balancer.all}
    unchanged = [hp for hp in now if not hp.startswith("10.3.")]
    assert len(unchanged) == 1900 and all(now[hp] is kept[hp] for hp in unchanged)
    assert sorted(now) == sorted(e.hostport for e in balancer.all)
    assert [(e.host, e.port) for e in balancer.all] == sorted((e.host, e.port)
                                                               for e in balancer.all)
    balancer.close()


async def test_more_label_selectors_than_max_watches_all_resolve_over_bounded_connections(
    fake_k8s: FakeApiServer, hub: WatchHub  # noqa: F811
) -> None:
    """Each label value is its own (kind, labelSelector) watch group, which the hub cannot
    fold into another group's watch. Was: 9+ groups held every connection of the client's
    pool of 10 (8 + 2), so the next group's first list waited for a connection a watch
    held for its whole timeout (300 s): Pending, then a binding timeout. Now each watch
    has its own connection and lists their own two."""
    groups = 14  # > max_watches (8) + the old pool's 2 spare
    n = K8sNamer(ApiTarget("127.0.0.1", fake_k8s.port), hub=hub, label_selector="version",
                 endpoint_source="endpointslices")
    try:
        for v in range(groups):
            fake_k8s.upsert("endpointslices", endpoint_slice(
                f"hello-v{v}", "hello", [(f"10.9.0.{v}", "n")], {"http": 80},
                labels={"version": f"v{v}"}))
        trees = []
        for v in range(groups):
            act = n.lookup(Path.read(f"/default/http/hello/v{v}"))
            act.observe(lambda _: None)
            await async_wait_until(lambda a=act: isinstance(a.value, Ok), 10, f"v{v}")
            tree = act.value.value
            assert isinstance(tree, Leaf), tree
            tree.value.addr.observe(lambda _: None)
            assert hostports(tree.value.addr.value) == {(f"10.9.0.{v}", 80)}
            trees.append(tree)
        await async_wait_until(lambda: len(hub.feeds()) == groups, 5, "a watch per group")
        # Bounded by the groups (label values), not the services: groups + 2 list conns.
        assert fake_k8s.open_connections() <= groups + 2
        assert fake_k8s.peak_connections <= groups + 2, fake_k8s.peak_connections
        # Every group is still followed, and a service joining a group is listed even
        # though every watch is streaming.
        fake_k8s.upsert("endpointslices", endpoint_slice(
            "hello-v13", "hello", [("10.9.1.13", "n")], {"http": 80},
            labels={"version": "v13"}))
        await async_wait_until(
            lambda: hostports(trees[13].value.addr.value) == {("10.9.1.13", 80)}, 5, "v13")
        fake_k8s.upsert("endpointslices", endpoint_slice(
            "world-v2", "world", [("10.9.2.2", "n")], {"http": 80}, labels={"version": "v2"}))
        _, world = await bound(n, "/default/http/world/v2")
        assert hostports(world.value.addr.value) == {("10.9.2.2", 80)}
        assert len(hub.feeds()) == groups
    finally:
        await n.close()
