"""The binding cache: one bind per (dtab, name), re-bound on namer updates, timeouts, expiry."""

from __future__ import annotations

import asyncio

import pytest

from dtab.dtab import Dtab
from dtab.nametree import Leaf, NegTree
from dtab.observable import Pending
from dtab.path import Path
from router.binding import BindingCache, BindingFailed, BindingTimeout, format_duration
from router.interpreter import Interpreter
from tests.test_interpreter import TableNamer
from tests.util import async_wait_until

DTAB = Dtab.read("/svc => /#/io.l5d.fs")
WEB = Path.read("/svc/web")


class CountingInterpreter(Interpreter):
    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.binds = 0

    def bind(self, dtab, path):
        self.binds += 1
        return super().bind(dtab, path)


def setup(timeout_ms: int = 10000, ttl: float = 600.0):
    namer = TableNamer("/io.l5d.fs")
    interp = CountingInterpreter([(Path.read("/io.l5d.fs"), namer)])
    return namer, interp, BindingCache(interp, timeout_ms=timeout_ms, idle_ttl_s=ttl)


def test_format_duration_like_twitter_util() -> None:
    assert format_duration(10000) == "10.seconds"
    assert format_duration(1500) == "1500.milliseconds"
    assert format_duration(120000) == "2.minutes"


async def test_hits_do_not_rebind_and_updates_do() -> None:
    namer, interp, cache = setup()
    try:
        tree = await cache.bind(DTAB, WEB)
        assert isinstance(tree, NegTree)
        for _ in range(100):
            assert await cache.bind(DTAB, WEB) is tree
            assert cache.get(DTAB, WEB) is tree
        assert interp.binds == 1
        # a namer update re-binds once, in the background of requests
        bn = namer.add("/web", ("127.0.0.1", 80))
        assert interp.binds == 2
        tree = cache.get(DTAB, WEB)
        assert tree == Leaf(bn)
        # a different dtab (e.g. an l5d-dtab override) is its own entry
        other = DTAB + Dtab.read("/svc/web => /$/inet/127.0.0.1/81")
        t2 = await cache.bind(other, WEB)
        assert t2.value.id == Path.read("/$/inet/127.0.0.1/81")
        assert len(cache) == 2
    finally:
        cache.close()


async def test_pending_waits_until_the_namer_answers() -> None:
    namer, interp, cache = setup()
    namer.activity("/web").set(Pending())
    try:
        task = asyncio.ensure_future(cache.bind(DTAB, WEB))
        await asyncio.sleep(0.05)
        assert not task.done()
        bn = namer.add("/web", ("127.0.0.1", 80))
        assert await asyncio.wait_for(task, 1) == Leaf(bn)
    finally:
        cache.close()


async def test_pending_past_the_timeout_raises_linkerds_text() -> None:
    namer, _, cache = setup(timeout_ms=100)
    namer.activity("/web").set(Pending())
    try:
        with pytest.raises(BindingTimeout) as info:
            await cache.bind(DTAB, WEB)
        assert str(info.value) == (
            "Exceeded 100.milliseconds binding timeout while resolving name: /svc/web")
        assert info.value.name == WEB and info.value.dtab == DTAB
    finally:
        cache.close()
    assert "Exceeded 10.seconds binding timeout while resolving name: /svc/x" == str(
        BindingTimeout(Path.read("/svc/x"), DTAB, 10000))


async def test_failed_names_the_path_and_dtab() -> None:
    namer, _, cache = setup()
    namer.activity("/web").set_failed(RuntimeError("k8s API unreachable"))
    try:
        with pytest.raises(BindingFailed) as info:
            await cache.bind(DTAB, WEB)
        msg = str(info.value)
        assert "/svc/web" in msg and "/svc=>/#/io.l5d.fs" in msg and "unreachable" in msg
        # recovery follows the namer
        namer.add("/web", ("127.0.0.1", 80))
        assert isinstance(await cache.bind(DTAB, WEB), Leaf)
    finally:
        cache.close()


async def test_a_dtab_loop_fails_the_name_not_the_cache() -> None:
    _, _, cache = setup()
    try:
        with pytest.raises(BindingFailed):
            await cache.bind(Dtab.read("/svc => /svc/x"), WEB)
        assert isinstance(await cache.bind(DTAB, WEB), NegTree)
    finally:
        cache.close()


async def test_idle_entries_expire_and_release_namer_subscriptions() -> None:
    namer, _, cache = setup(ttl=0.2)
    try:
        await cache.bind(DTAB, WEB)
        act = namer.activity("/web")
        assert act.observed
        await async_wait_until(lambda: len(cache) == 0, 3, "idle expiry")
        assert not act.observed
        assert cache.get(DTAB, WEB) is None
    finally:
        cache.close()


async def test_capacity_bounds_memory_under_a_flood_of_names() -> None:
    namer = TableNamer("/io.l5d.fs")
    interp = Interpreter([(Path.read("/io.l5d.fs"), namer)])
    cache = BindingCache(interp, capacity=50)
    try:
        first = Path.read("/svc/host-0")
        await cache.bind(DTAB, first)
        for i in range(1, 500):
            await cache.bind(DTAB, Path.read(f"/svc/host-{i}"))
            assert len(cache) <= 50
        assert cache.get(DTAB, first) is None  # the oldest went first
        assert not namer.activity("/host-0").observed  # and released its subscription
        assert cache.get(DTAB, Path.read("/svc/host-499")) is not None
    finally:
        cache.close()


async def test_only_the_bound_is_logged_as_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    """Idle expiry and close release entries too, but are not 'over its bound' (every
    worker's drain logged that)."""
    namer = TableNamer("/io.l5d.fs")
    interp = Interpreter([(Path.read("/io.l5d.fs"), namer)])
    caplog.set_level("INFO", logger="router.binding")
    cache = BindingCache(interp, capacity=5)
    for i in range(3):
        await cache.bind(DTAB, Path.read(f"/svc/host-{i}"))
    assert cache.sweep(now=1e12) == 3
    for i in range(3):
        await cache.bind(DTAB, Path.read(f"/svc/host-{i}"))
    cache.close()
    assert not namer.activity("/host-0").observed
    assert "over its bound" not in caplog.text
    flooded = BindingCache(interp, capacity=5)
    for i in range(6):
        await flooded.bind(DTAB, Path.read(f"/svc/host-{i}"))
    flooded.close()
    assert caplog.text.count("over its bound of 5 names") == 1


async def test_a_name_that_timed_out_still_expires() -> None:
    namer, _, cache = setup(timeout_ms=50, ttl=0.2)
    namer.activity("/web").set(Pending())
    try:
        with pytest.raises(BindingTimeout):
            await cache.bind(DTAB, WEB)
        await async_wait_until(lambda: len(cache) == 0, 3, "expiry after a timeout")
        assert not namer.activity("/web").observed
    finally:
        cache.close()
