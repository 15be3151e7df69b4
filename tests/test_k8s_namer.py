"""io.l5d.k8s against a fake API server speaking the real wire protocol.

These run on Endpoints objects (`endpointSource: endpoints`, the old-cluster
fallback); tests/test_k8s_slices.py runs the EndpointSlice source and the scale cases.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from dtab.addr import AddrBound, AddrNeg, AddrPending
from dtab.errors import ParamError
from dtab.nametree import Leaf, NegTree
from dtab.observable import Ok
from dtab.path import Path
from namers.k8s.api import ApiTarget, K8sApi
from namers.k8s.namer import K8sNamer, build
from namers.k8s.watch import Backoff, WatchHub, WatchKey
from tests.fake_apiserver import FakeApiServer, endpoints, fake_k8s, service  # noqa: F401
from tests.util import async_wait_until

FAST = Backoff(base=0.02, max=0.2)


@pytest.fixture
async def hub(fake_k8s: FakeApiServer) -> AsyncIterator[WatchHub]:  # noqa: F811
    h = WatchHub(K8sApi(ApiTarget("127.0.0.1", fake_k8s.port)), backoff=FAST, linger=0.05)
    try:
        yield h
    finally:
        await h.close()


@pytest.fixture
async def namer(fake_k8s: FakeApiServer, hub: WatchHub) -> AsyncIterator[K8sNamer]:  # noqa: F811
    n = K8sNamer(ApiTarget("127.0.0.1", fake_k8s.port), hub=hub, idle_ttl=0.2,
                 endpoint_source="endpoints")
    try:
        yield n
    finally:
        await n.close()


def hostports(addr: object) -> set[tuple[str, int]]:
    assert isinstance(addr, AddrBound), addr
    return {(a.host, a.port) for a in addr.addresses}


async def settled(act, what: str = "lookup to resolve"):  # type: ignore[no-untyped-def]
    await async_wait_until(lambda: isinstance(act.value, Ok), 5, what)
    return act.value.value


async def test_ready_endpoints_resolve_with_node_names(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert(
        "endpoints",
        endpoints(
            "hello",
            [("10.0.1.5", "node-a"), ("10.0.2.7", "node-b")],
            {"http": 7777, "admin": 9000},
            not_ready=[("10.0.1.9", "node-a")],
        ),
    )
    act = namer.lookup(Path.read("/Default/HTTP/Hello/extra/bits"))
    tree = await settled(act)
    assert isinstance(tree, Leaf)
    bound = tree.value
    assert bound.id == Path.read("/#/io.l5d.k8s/default/http/hello")
    assert bound.residual == Path.read("/extra/bits")
    assert hostports(bound.addr.value) == {("10.0.1.5", 7777), ("10.0.2.7", 7777)}
    nodes = {a.host: a.meta["nodeName"] for a in bound.addr.value.addresses}
    assert nodes == {"10.0.1.5": "node-a", "10.0.2.7": "node-b"}
    # The same name again is the same Activity (cheap to repeat, one watch).
    assert namer.lookup(Path.read("/default/http/hello/extra/bits")) is act


async def test_endpoints_appear_move_and_vanish(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    act = namer.lookup(Path.read("/default/http/world"))
    act.observe(lambda _: None)  # bound, as the binding cache would: not released while idle
    tree = await settled(act)
    assert isinstance(tree, NegTree)
    assert "default/world not found" in tree.reason

    fake_k8s.upsert("endpoints", endpoints("world", [("10.0.1.5", "a")], {"http": 80}))
    await async_wait_until(lambda: isinstance(act.value.value, Leaf), 5, "service to appear")
    addr = act.value.value.value.addr
    assert hostports(addr.value) == {("10.0.1.5", 80)}

    fake_k8s.upsert("endpoints", endpoints("world", [("10.0.2.6", "b")], {"http": 80}))
    await async_wait_until(lambda: hostports(addr.value) == {("10.0.2.6", 80)}, 5, "move")
    assert act.value.value.value.addr is addr  # same Var: clients follow without re-binding

    fake_k8s.upsert("endpoints", endpoints("world", [], {"http": 80},
                                           not_ready=[("10.0.2.6", "b")]))
    await async_wait_until(lambda: isinstance(act.value.value, NegTree), 5, "no ready endpoints")
    assert "no ready endpoints" in act.value.value.reason
    assert "1 not ready" in act.value.value.reason
    assert isinstance(addr.value, AddrNeg)

    fake_k8s.delete("endpoints", "default", "world")
    await async_wait_until(
        lambda: "not found" in act.value.value.reason, 5, "deleted service to be Neg"
    )


async def test_missing_port_name_is_neg_with_reason(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80}))
    tree = await settled(namer.lookup(Path.read("/default/grpc/hello")))
    assert isinstance(tree, NegTree)
    assert tree.reason == "k8s service default/hello has no port named 'grpc' (ports: http)"


async def test_port_number_maps_through_the_service(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert("services", service("hello", [("http", 80, "web"), ("raw", 81, 9191)]))
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"web": 8080}))
    named = await settled(namer.lookup(Path.read("/default/80/hello")))
    assert hostports(named.value.addr.value) == {("10.0.1.5", 8080)}
    numbered = await settled(namer.lookup(Path.read("/default/81/hello")))
    assert hostports(numbered.value.addr.value) == {("10.0.1.5", 9191)}
    unmapped = await settled(namer.lookup(Path.read("/default/5000/hello")))
    assert hostports(unmapped.value.addr.value) == {("10.0.1.5", 5000)}


async def test_label_selector_takes_a_fourth_segment(
    fake_k8s: FakeApiServer, hub: WatchHub  # noqa: F811
) -> None:
    n = K8sNamer(ApiTarget("127.0.0.1", fake_k8s.port), hub=hub, label_selector="version",
                 endpoint_source="endpoints")
    try:
        fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80},
                                               labels={"version": "v2"}))
        v2 = await settled(n.lookup(Path.read("/default/http/hello/V2/rest")))
        assert v2.value.id == Path.read("/#/io.l5d.k8s/default/http/hello/v2")
        assert v2.value.residual == Path.read("/rest")
        v1 = await settled(n.lookup(Path.read("/default/http/hello/v1")))
        assert isinstance(v1, NegTree) and "version=v1" in v1.reason
        short = await settled(n.lookup(Path.read("/default/http/hello")))
        assert isinstance(short, NegTree) and "<label value>" in short.reason
    finally:
        await n.close()


@pytest.mark.parametrize("as_status", [False, True], ids=["error-event", "http-410"])
async def test_410_gone_lists_again(
    fake_k8s: FakeApiServer, namer: K8sNamer, as_status: bool  # noqa: F811
) -> None:
    fake_k8s.gone_as_http_status = as_status
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80}))
    tree = await settled(namer.lookup(Path.read("/default/http/hello")))
    addr = tree.value.addr
    addr.observe(lambda _: None)  # bound, as a client would: not released while idle
    await async_wait_until(lambda: fake_k8s.live_watches("endpoints", name="hello") == 1)
    lists_before = len(fake_k8s.list_requests)
    # History is compacted and the stream drops; meanwhile the pod moved.
    fake_k8s.expire_history()
    fake_k8s.drop_watches()
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.3.3", "c")], {"http": 80}))
    fake_k8s.expire_history()
    await async_wait_until(lambda: hostports(addr.value) == {("10.0.3.3", 80)}, 5, "relist")
    assert fake_k8s.gone_sent >= 1
    assert len(fake_k8s.list_requests) > lists_before
    # And it watches again from the new list's version.
    await async_wait_until(lambda: fake_k8s.live_watches("endpoints", name="hello") == 1)
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.4.4", "d")], {"http": 80}))
    await async_wait_until(lambda: hostports(addr.value) == {("10.0.4.4", 80)}, 5, "watch")


async def test_api_server_down_keeps_last_endpoints_then_catches_up(
    fake_k8s: FakeApiServer, namer: K8sNamer, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level(logging.DEBUG, logger="l5d.k8s")
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80}))
    act = namer.lookup(Path.read("/default/http/hello"))
    tree = await settled(act)
    addr = tree.value.addr
    seen: list[object] = []
    act.observe(seen.append)
    addr.observe(seen.append)
    await async_wait_until(lambda: fake_k8s.live_watches("endpoints", name="hello") == 1)

    await fake_k8s.go_down()
    (watch,) = namer.hub.feeds()
    failures = watch.failures
    await async_wait_until(lambda: watch.failures >= failures + 3, 5, "reconnect attempts")
    # Routing unbroken: nothing changed while the API server was away.
    assert seen == []
    assert act.value == Ok(tree)
    assert hostports(addr.value) == {("10.0.1.5", 80)}
    # ...and /namer_state says why, next to the last known addresses (issue 8's one rule)
    state = namer.state_json()["/#/io.l5d.k8s/default/http/hello"]
    assert state["error"] and state["errorAt"] > 0 and len(state["addrs"]) == 1

    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.2.2", "b")], {"http": 80}))
    await fake_k8s.come_up()
    await async_wait_until(lambda: hostports(addr.value) == {("10.0.2.2", 80)}, 5, "catch up")
    assert "error" not in namer.state_json()["/#/io.l5d.k8s/default/http/hello"]
    # The outage is logged once as a warning (the retries at debug), the recovery once.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeping the last known state" in warnings[0].getMessage()
    assert sum("watching again after" in r.getMessage() for r in caplog.records) == 1


async def test_first_list_failing_stays_pending(fake_k8s: FakeApiServer, namer: K8sNamer) -> None:  # noqa: F811
    await fake_k8s.go_down()
    act = namer.lookup(Path.read("/default/http/hello"))
    # Observed, as the binding cache observes what it binds: an unobserved entry is
    # released after idle_ttl (0.2 s here), which a slow outage can outlast.
    unobserve = act.observe(lambda _: None)
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80}))
    (watch,) = namer.hub.feeds()
    await async_wait_until(lambda: watch.failures >= 2, 5, "failures")
    assert not isinstance(act.value, Ok)
    await fake_k8s.come_up()
    tree = await settled(act)
    assert hostports(tree.value.addr.value) == {("10.0.1.5", 80)}
    unobserve()


async def test_one_watch_for_many_names_and_idle_watches_stop(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80,
                                                                            "admin": 90}))
    acts = [
        namer.lookup(Path.read(p))
        for p in ("/default/http/hello", "/default/admin/hello", "/DEFAULT/HTTP/hello/x",
                  "/default/http/hello/y/z")
    ]
    unsubs = [a.observe(lambda _: None) for a in acts]
    for a in acts:
        await settled(a)
    await async_wait_until(lambda: fake_k8s.live_watches("endpoints", name="hello") == 1)
    assert [w[:3] for w in fake_k8s.watch_requests] == [("endpoints", "default", "hello")]
    # Still observed: kept even well past the idle time.
    namer.sweep()
    assert fake_k8s.live_watches("endpoints", name="hello") == 1
    for u in unsubs:
        u()
    await async_wait_until(
        lambda: fake_k8s.live_watches("endpoints", name="hello") == 0, 5, "idle watch to stop"
    )
    assert namer.hub.watching() == []
    # A later lookup starts watching again.
    again = namer.lookup(Path.read("/default/http/hello"))
    assert isinstance((await settled(again)), Leaf)


async def test_pending_until_listed(fake_k8s: FakeApiServer, namer: K8sNamer) -> None:  # noqa: F811
    fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80}))
    act = namer.lookup(Path.read("/default/http/hello"))
    assert not isinstance(act.value, Ok)  # the list has not happened yet
    tree = await settled(act)
    assert not isinstance(tree.value.addr.value, AddrPending)


def test_build_params() -> None:
    n = build({"kind": "io.l5d.k8s", "host": "localhost", "port": 8001, "labelSelector": "v"})
    assert n.target == ApiTarget("localhost", 8001) and n.segments == 4
    with pytest.raises(ParamError) as e:
        build({"port": "eighty"})
    assert e.value.key == "port"
    with pytest.raises(ParamError) as e:
        build({"labelSelector": "a=b"})
    assert e.value.key == "labelSelector"
    with pytest.raises(ParamError) as e:
        build({"hots": "localhost"})
    assert e.value.key == "hots" and "known" in str(e.value)


async def test_server_side_watch_timeout_resumes_without_relisting(
    fake_k8s: FakeApiServer,  # noqa: F811
) -> None:
    hub = WatchHub(K8sApi(ApiTarget("127.0.0.1", fake_k8s.port)), backoff=FAST, linger=0.05,
                   watch_timeout=1)
    namer = K8sNamer(ApiTarget("127.0.0.1", fake_k8s.port), hub=hub, endpoint_source="endpoints")
    try:
        fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.5", "a")], {"http": 80}))
        tree = await settled(namer.lookup(Path.read("/default/http/hello")))
        addr = tree.value.addr
        fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.6", "a")], {"http": 80}))
        await async_wait_until(lambda: hostports(addr.value) == {("10.0.1.6", 80)})
        # The server ends each stream after 1 s; the client resumes from its version.
        await async_wait_until(lambda: len(fake_k8s.watch_requests) >= 3, 5, "re-watches")
        assert len(fake_k8s.list_requests) == 1
        versions = [w[3] for w in fake_k8s.watch_requests]
        assert versions[-1] == versions[-2] and int(versions[-1]) > int(versions[0])
        fake_k8s.upsert("endpoints", endpoints("hello", [("10.0.1.7", "a")], {"http": 80}))
        await async_wait_until(lambda: hostports(addr.value) == {("10.0.1.7", 80)})
    finally:
        await namer.close()
        await hub.close()


async def test_names_that_cannot_exist_are_neg_without_a_watch(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    for path, why in [
        ("/default/http/www.hello.world", "'www.hello.world' is not a valid Kubernetes service"),
        ("/default/http/-x", "'-x' is not a valid Kubernetes service name"),
        ("/my_ns/http/hello", "'my_ns' is not a valid Kubernetes namespace"),
        ("/default/99999/hello", "'99999' is not a valid port number"),
        ("/default/a-very-long-port-name/hello", "is not a valid Kubernetes port name"),
        ("/default/http/" + "h" * 60_000, "is not a valid Kubernetes service name"),
    ]:
        act = namer.lookup(Path.read(path))
        assert isinstance(act.value, Ok) and isinstance(act.value.value, NegTree), path
        assert why in act.value.value.reason
        assert len(act.value.value.reason) < 300
    assert namer.hub.watching() == [] and fake_k8s.list_requests == []


async def test_a_lease_released_after_the_hub_closed_is_harmless(
    fake_k8s: FakeApiServer,  # noqa: F811
) -> None:
    """Shutdown closes the hub before transformers drop their leases; that must not raise."""
    hub = WatchHub(K8sApi(ApiTarget("127.0.0.1", fake_k8s.port)), backoff=FAST, linger=0.05)
    lease = hub.acquire(WatchKey("endpoints", "default", "hello"))
    await hub.close()
    lease.release()
    assert hub.watching() == []


async def test_a_flood_of_valid_names_holds_a_bounded_number_of_watches(
    fake_k8s: FakeApiServer, namer: K8sNamer  # noqa: F811
) -> None:
    """Issue 8: names come from requests and each is a watch; unobserved ones are released."""
    from namers.k8s.namer import MAX_ENTRIES

    kept = namer.lookup(Path.read("/default/http/hello"))
    unsubscribe = kept.observe(lambda _s: None)
    for i in range(MAX_ENTRIES + 500):
        namer.lookup(Path.of("default", "http", f"svc-{i}"))
    assert len(namer._entries) <= MAX_ENTRIES
    # released watches stop once the hub's linger has passed
    await async_wait_until(lambda: len(namer.hub.watching()) <= MAX_ENTRIES + 1,
                           namer.hub.linger + 10, "evicted watches stopped")
    assert namer.lookup(Path.read("/default/http/hello")) is kept
    unsubscribe()
