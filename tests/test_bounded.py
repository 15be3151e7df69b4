"""dtab.bounded: the weighted LRU every per-request cache uses, and the log limiter."""

from __future__ import annotations

import logging
import tracemalloc

import pytest

from dtab import Dtab, NameTree, Path
from dtab.bounded import LogLimiter, WeightedLRU, approx_size, clip, dtab_weight
from dtab.parser import parse_dtab


def test_bounded_by_weight_least_recently_used_first() -> None:
    evicted: list[str] = []
    c: WeightedLRU[str, int] = WeightedLRU(100, on_evict=lambda k, v: evicted.append(k))
    for k in "abcd":
        assert c.put(k, 1, 30)
    assert evicted == ["a"] and c.weight == 90 and len(c) == 3
    assert c.get("b") == 1  # b is now the most recent
    c.put("e", 1, 30)
    assert evicted == ["a", "c"]
    assert set(c.keys()) == {"b", "d", "e"}


def test_bounded_by_count_too() -> None:
    c: WeightedLRU[int, int] = WeightedLRU(10**9, max_entries=3)
    for i in range(10):
        c.put(i, i, 1)
    assert c.keys() == [7, 8, 9]
    assert c.evictions == 7


def test_an_entry_heavier_than_the_budget_is_not_stored_and_flushes_nothing() -> None:
    c: WeightedLRU[str, int] = WeightedLRU(100)
    c.put("a", 1, 50)
    assert not c.put("huge", 2, 101)
    assert "huge" not in c and c.get("a") == 1


def test_replacing_reweighs() -> None:
    c: WeightedLRU[str, int] = WeightedLRU(100)
    c.put("a", 1, 50)
    c.put("a", 2, 10)
    assert c.weight == 10 and c.get("a") == 2
    assert c.pop("a") == 2 and c.weight == 0


def test_pinned_entries_are_skipped() -> None:
    pinned = {"a"}
    c: WeightedLRU[str, int] = WeightedLRU(60, pinned=lambda k, v: k in pinned)
    c.put("a", 1, 30)
    c.put("b", 1, 30)
    c.put("c", 1, 30)
    assert set(c.keys()) == {"a", "c"}


def test_approx_size_tracks_real_memory_of_a_parsed_dtab() -> None:
    text = ";".join(f"/svc/s{i}=>/#/io.l5d.fs/backend{i} | /$/inet/127.0.0.1/80{i % 10}"
                    for i in range(600))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        d = parse_dtab(text)
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    est = dtab_weight(d)
    assert real / 3 < est < real * 3, (real, est)
    assert dtab_weight(d) == est  # cached on the dtab
    assert approx_size(Path.read("/a/bc")) < approx_size(NameTree.read("/a/bc | /d"))
    assert approx_size(Dtab.read("/a=>/b")) == dtab_weight(Dtab.read("/a=>/b"))


def test_clip() -> None:
    assert clip("abc") == "abc"
    out = clip("x" * 60_000)
    assert len(out) < 300 and out.endswith("(59800 more chars)")


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_log_limiter_rate_limits_per_key_and_counts_suppressed(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    lim = LogLimiter(logging.getLogger("t.limiter"), 10.0, clock=clock)
    with caplog.at_level(logging.INFO, "t.limiter"):
        for _ in range(5):
            lim.warning(("fs", "a"), "cannot read %s: %s", "x" * 60_000, "boom")
            clock.t += 1
        lim.warning(("fs", "b"), "cannot read %s", "b")
        clock.t += 10
        lim.warning(("fs", "a"), "cannot read %s: %s", "a", "boom")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert len(lines[0]) < 400 and "more chars" in lines[0]
    assert lines[1] == "cannot read b"
    assert lines[2] == "cannot read a: boom (4 similar lines suppressed in the last 10s)"


def test_log_limiter_remembers_a_bounded_number_of_keys() -> None:
    lim = LogLimiter(logging.getLogger("t.limiter2"), 10.0, max_keys=8)
    for i in range(1000):
        lim.warning(("host", "h" * 1000 + str(i)), "x")
    assert len(lim._seen) == 8
