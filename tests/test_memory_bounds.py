"""Issue 8: what clients send (l5d-dtab headers, Host values) costs bounded memory.

A real Linker (fs namer, header.token identifier) on a real port, driven with
the shapes that grew RSS without bound: hundreds of distinct 40 KB dtabs and
tens of thousands of distinct Host values. The per-request caches are bounded by
bytes, and `l5d-dtab` / `l5d-ctx-dtab` beyond `maxDtabHeaderKB` is a 400 naming it.
"""

from __future__ import annotations

import logging
import textwrap
from urllib.parse import unquote

import pytest

from router.config import parse
from router.http import dtab_headers
from router.router import Linker
from router.stats import SERVICE_STATS_BYTES
from tests.test_http_proxy import RawClient
from tests.util import free_port


def _dtab_of(size: int, tag: int) -> str:
    parts: list[str] = []
    n = 0
    while n < size:
        s = f"/svc/t{tag}x{len(parts)}=>/#/io.l5d.fs/b{len(parts)} | /$/inet/127.0.0.1/80"
        parts.append(s)
        n += len(s) + 1
    return ";".join(parts)


async def _linker(tmp_path, extra: str = "") -> Linker:
    (tmp_path / "hello").write_text("127.0.0.1 9\n")
    cfg = parse(textwrap.dedent(f"""\
        admin: {{port: {free_port()}}}
        namers:
        - kind: io.l5d.fs
          rootDir: {tmp_path}
        routers:
        - protocol: http
          dtab: /svc => /#/io.l5d.fs
          {extra}
          servers:
          - port: {free_port()}
        """), "bounds.yaml")
    linker = Linker(cfg)
    await linker.start(admin=False)
    return linker


def _port(linker: Linker) -> int:
    return linker.routers[0].handle.servers[0].port


async def test_l5d_dtab_over_the_limit_is_a_400_naming_it(tmp_path) -> None:
    linker = await _linker(tmp_path)
    try:
        async with RawClient(_port(linker)) as c:
            big = _dtab_of(9 * 1024, 1)
            r = await c.request(host="nope", headers=[("l5d-dtab", big)])
            assert r.status == 400
            err = unquote(dict((k.lower(), v) for k, v in r.headers)["l5d-err"])
            assert "over the limit of 8 KB (maxDtabHeaderKB)" in err
            # split over both headers: the limit is on their total
            half = _dtab_of(5 * 1024, 2)
            r = await c.request(host="nope",
                                headers=[("l5d-ctx-dtab", half), ("l5d-dtab", half)])
            assert r.status == 400
            r = await c.request(host="nope", headers=[("l5d-dtab", half)])
            assert r.status == 502  # within the limit: parsed and routed (no such file)
    finally:
        await linker.close()


async def test_many_distinct_40kb_dtabs_stay_within_the_cache_budgets(tmp_path) -> None:
    linker = await _linker(tmp_path, "maxDtabHeaderKB: 64")
    router = linker.routers[0]
    try:
        async with RawClient(_port(linker)) as c:
            for i in range(40):  # 40 x ~1.3 MB parsed: several times every budget
                r = await c.request(host="hello", headers=[("l5d-dtab", _dtab_of(40_000, i))])
                assert r.status in (200, 502), r.status  # the backend port is closed
        # each parsed 40 KB dtab weighs ~1.3 MB: the caches keep a bounded few
        assert dtab_headers._cache.weight <= dtab_headers.CACHE_BYTES
        assert len(dtab_headers._cache) < 20
        stats = router.bindings.stats()
        assert stats["weight"] <= stats["max_weight"]
        assert stats["entries"] < 40
        routes = router.handle.runtime.routes
        assert routes.weight <= routes.max_weight
    finally:
        await linker.close()


@pytest.mark.parametrize("hosts", [3000])
async def test_a_flood_of_distinct_hosts_stays_within_the_cache_budgets(tmp_path,
                                                                        hosts: int) -> None:
    linker = await _linker(tmp_path)
    router = linker.routers[0]
    fs = linker.namers[0][1]
    fs = getattr(fs, "namer", fs)
    try:
        async with RawClient(_port(linker)) as c:
            for i in range(hosts):
                r = await c.request(host=f"unknown-{i}-" + "x" * 200)
                assert r.status == 502
        runtime = router.handle.runtime
        assert runtime.services.weight <= SERVICE_STATS_BYTES
        assert len(router.bindings) <= 1000  # bindingCache.paths
        assert fs.stats()["weight"] <= fs.stats()["max_weight"]
        assert fs.stats()["entries"] < hosts
    finally:
        await linker.close()


async def test_repeated_failures_with_client_text_are_logged_clipped_and_rarely(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    linker = await _linker(tmp_path)
    try:
        with caplog.at_level(logging.DEBUG, "router"):
            async with RawClient(_port(linker)) as c:
                for i in range(50):  # hello's backend port is closed: a failure each time
                    r = await c.request(target="/" + "t" * 20_000 + str(i), host="hello")
                    assert r.status == 502
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("router")]
        assert len(lines) <= 6, lines
        assert all(len(m) < 2000 for m in lines)
    finally:
        await linker.close()


def test_inet_names_from_requests_are_bounded() -> None:
    from dtab.path import Path
    from namers.builtin import InetNamer

    inet = InetNamer()
    kept = inet.lookup_global(Path.read("/$/inet/10.0.0.1/80"))
    unsubscribe = kept.value.value.value.addr.observe(lambda _v: None)
    for i in range(60_000):
        inet.lookup_global(Path.of("$", "inet", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                                   "80"))
    assert inet._literal.weight <= inet._literal.max_weight
    assert len(inet._literal) < 60_000
    assert ("10.0.0.1", 80) in inet._literal  # observed: kept
    unsubscribe()
