"""io.l5d.fs: files of `ip port [* weight]`, watched, so an edit changes routing live."""

from __future__ import annotations

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
