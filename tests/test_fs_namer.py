"""io.l5d.fs: files of `ip port [* weight]`, watched, so an edit changes routing live."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from dtab.addr import AddrBound, Address, AddrNeg, BoundName
from dtab.errors import ParamError
from dtab.nametree import Leaf, NegTree
from dtab.observable import Ok
from dtab.path import Path
from namers.fs import build, parse_addresses
from tests.util import async_wait_until


def test_parse_lines_weights_comments_and_bad_lines(caplog) -> None:
    text = "127.0.0.1 8080\n\n# comment\n10.0.0.2 9090 * 2.5\nnonsense\n10.0.0.3 99999\n"
    assert parse_addresses(text, "f") == frozenset({
        Address("127.0.0.1", 8080), Address("10.0.0.2", 9090, 2.5)})
    assert "f:5" in caplog.text and "f:6" in caplog.text


def test_builder_params(tmp_path) -> None:
    with pytest.raises(ParamError) as info:
        build({"kind": "io.l5d.fs"})
    assert info.value.key == "rootDir"
    with pytest.raises(ParamError) as info:
        build({"kind": "io.l5d.fs", "rootDir": str(tmp_path / "missing")})
    assert info.value.key == "rootDir"
    with pytest.raises(ParamError) as info:
        build({"kind": "io.l5d.fs", "rootDir": str(tmp_path), "rootdir": "x"})
    assert info.value.key == "rootdir"
    n = build({"kind": "io.l5d.fs", "rootDir": str(tmp_path), "prefix": "/disco"})
    assert n.id_prefix == Path.read("/#/disco")


async def test_lookup_and_live_changes(tmp_path) -> None:
    (tmp_path / "web").write_text("127.0.0.1 8080\n")
    namer = build({"kind": "io.l5d.fs", "rootDir": str(tmp_path), "pollIntervalMs": 20})
    await namer.start()
    try:
        act = namer.lookup(Path.read("/web/extra"))
        tree = act.value.value
        assert isinstance(tree, Leaf) and isinstance(tree.value, BoundName)
        bn = tree.value
        assert (bn.id, bn.residual) == (Path.read("/#/io.l5d.fs/web"), Path.read("/extra"))
        assert bn.addr.value == AddrBound(frozenset({Address("127.0.0.1", 8080)}))
        assert namer.lookup(Path.read("/web/extra")) is act  # cached per name

        # an edit (same size, so only mtime tells) reaches the address Var
        (tmp_path / "web").write_text("127.0.0.1 8081\n")
        os.utime(tmp_path / "web", ns=(1, 10**18))
        await async_wait_until(
            lambda: bn.addr.value == AddrBound(frozenset({Address("127.0.0.1", 8081)})),
            5, "edit seen")
        # an editor-style replace (new inode) with two endpoints
        (tmp_path / "web.tmp").write_text("127.0.0.1 8081\n127.0.0.2 8082 * 3\n")
        os.replace(tmp_path / "web.tmp", tmp_path / "web")
        await async_wait_until(lambda: len(bn.addr.value.addresses) == 2, 5, "replace seen")

        # a missing file is Neg with a reason, and its creation turns it into a Leaf
        missing = namer.lookup(Path.read("/api"))
        assert isinstance(missing.value.value, NegTree)
        assert "no file" in missing.value.value.reason
        (tmp_path / "api").write_text("127.0.0.1 9000\n")
        await async_wait_until(lambda: isinstance(missing.value.value, Leaf), 5, "creation seen")
        # deletion: Neg again, and the address Var says so too
        os.remove(tmp_path / "api")
        await async_wait_until(lambda: isinstance(missing.value.value, NegTree), 5, "removal")
        api = namer._files["api"]
        assert isinstance(api.addr.value, AddrNeg)
        assert namer.bound_names() == ["/#/io.l5d.fs/web"]
    finally:
        await namer.close()


def test_lookup_of_nothing_is_neg(tmp_path) -> None:
    namer = build({"kind": "io.l5d.fs", "rootDir": str(tmp_path)})
    assert isinstance(namer.lookup(Path.empty()).value, Ok)
    assert isinstance(namer.lookup(Path.empty()).value.value, NegTree)
    assert isinstance(namer.lookup(Path.of("..")).value.value, NegTree)


async def test_unusable_reads_keep_the_last_good_state_and_report_it(tmp_path) -> None:
    """One rule (issue 8): garbage, a directory or an unreadable file keeps the last good
    addresses and the error shows on /namer_state; fixing the file clears it."""
    web = tmp_path / "web"
    web.write_text("127.0.0.1 8080\n")
    namer = build({"kind": "io.l5d.fs", "rootDir": str(tmp_path), "pollIntervalMs": 10_000})
    good = AddrBound(frozenset({Address("127.0.0.1", 8080)}))
    bn = namer.lookup(Path.read("/web")).value.value.value
    assert bn.addr.value == good

    web.write_text("this is not\nan address file\n")
    namer.poll_now()
    assert bn.addr.value == good
    state = namer.state_json()["/#/io.l5d.fs/web"]
    assert "no address" in state["error"] and state["errorAt"] > 0
    assert state["addrs"] == [{"ip": "127.0.0.1", "port": 8080, "meta": {}}]

    os.remove(web)
    os.mkdir(web)  # replaced by a directory: the same rule
    namer.poll_now()
    assert bn.addr.value == good
    assert "cannot read" in namer.state_json()["/#/io.l5d.fs/web"]["error"]

    os.rmdir(web)
    web.write_text("127.0.0.1 8081\n")
    namer.poll_now()
    assert bn.addr.value == AddrBound(frozenset({Address("127.0.0.1", 8081)}))
    assert "error" not in namer.state_json()["/#/io.l5d.fs/web"]


def test_a_garbage_file_with_no_last_good_state_is_a_failed_address(tmp_path) -> None:
    (tmp_path / "junk").write_text("garbage\n")
    namer = build({"kind": "io.l5d.fs", "rootDir": str(tmp_path)})
    tree = namer.lookup(Path.read("/junk")).value.value
    assert isinstance(tree, Leaf)
    assert "junk:1" in tree.value.addr.value.cause


def test_nan_and_huge_weights_are_bad_lines(tmp_path) -> None:
    addrs = parse_addresses("127.0.0.1 1 * nan\n127.0.0.1 2 * 1e400\n127.0.0.1 3 * 2\n", "f")
    assert addrs == frozenset({Address("127.0.0.1", 3, 2.0)})


async def test_a_huge_host_is_not_a_file_and_never_floods_the_log(tmp_path, caplog) -> None:
    """Issue 8: a 60,000-character Host made the fs namer log a 60 KB line every second."""
    namer = build({"kind": "io.l5d.fs", "rootDir": str(tmp_path), "pollIntervalMs": 5})
    await namer.start()
    try:
        with caplog.at_level(logging.DEBUG, "namers.fs"):
            tree = namer.lookup(Path.of("h" * 60_000)).value.value
            assert isinstance(tree, NegTree) and "is not a file name" in tree.reason
            assert len(tree.reason) < 300
            await asyncio.sleep(0.1)
        assert namer.stats()["entries"] == 0
        assert all(len(r.getMessage()) < 1000 for r in caplog.records)
    finally:
        await namer.close()


async def test_repeated_failures_are_logged_once_per_interval(tmp_path, caplog) -> None:
    (tmp_path / "web").write_text("127.0.0.1 8080\n")
    namer = build({"kind": "io.l5d.fs", "rootDir": str(tmp_path), "pollIntervalMs": 5})
    namer.lookup(Path.read("/web"))
    await namer.start()
    try:
        with caplog.at_level(logging.INFO, "namers.fs"):
            for i in range(20):  # a writer that keeps producing different garbage
                (tmp_path / "web").write_text(f"garbage {i} " + "x" * 5000 + "\n")
                await asyncio.sleep(0.01)
        lines = [m for m in (r.getMessage() for r in caplog.records)
                 if "keeping the last good" in m]
        assert 1 <= len(lines) <= 2, lines
        assert all(len(line) < 1000 for line in lines)
    finally:
        await namer.close()


def test_remembered_files_are_bounded_and_observed_ones_stay(tmp_path) -> None:
    (tmp_path / "web").write_text("127.0.0.1 8080\n")
    namer = build({"kind": "io.l5d.fs", "rootDir": str(tmp_path)})
    act = namer.lookup(Path.read("/web"))
    unsubscribe = act.observe(lambda _s: None)
    for i in range(30_000):
        namer.lookup(Path.of(f"unknown-{i}"))
    st = namer.stats()
    assert st["weight"] <= st["max_weight"] and st["entries"] < 30_000
    assert namer.lookup(Path.read("/web")) is act  # observed: never evicted
    unsubscribe()
