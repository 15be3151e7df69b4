"""`router.request.NameCodes`, the raw header name -> code cache in front of the server's
and the pool's header classification: compiled, a C table (router/request.pxd); from source
(L5D_PURE_PYTHON=1), a dict. Both must answer alike."""

from __future__ import annotations

import random

import pytest

from router.client import pool
from router.http import server
from router.request import NAME_MAX, NameCodes


def test_remembers_what_it_was_told() -> None:
    c = NameCodes()
    assert c.get(b"Host") == -1
    c.put(b"Host", 10)
    c.put(b"host", 3)  # raw spellings are distinct names
    assert (c.get(b"Host"), c.get(b"host"), c.get(b"HOST")) == (10, 3, -1)
    c.put(b"Host", 0)  # a new code for a known name
    assert c.get(b"Host") == 0
    assert len(c) == 2 and sorted(c.names()) == [b"Host", b"host"]


def test_the_empty_name_and_every_byte() -> None:
    c = NameCodes()
    c.put(b"", 255)
    c.put(bytes(range(64)), 7)
    assert (c.get(b""), c.get(bytes(range(64))), c.get(bytes(range(1, 65)))) == (255, 7, -1)


def test_a_long_name_is_never_remembered() -> None:
    c = NameCodes()
    c.put(b"x" * NAME_MAX, 1)
    c.put(b"x" * (NAME_MAX + 1), 2)
    assert (c.get(b"x" * NAME_MAX), c.get(b"x" * (NAME_MAX + 1))) == (1, -1)
    assert len(c) == 1


def test_bounded_in_names() -> None:
    c = NameCodes(limit=16)
    for i in range(100):
        c.put(b"X-%d" % i, i % 256)
    assert len(c) == 16 == len(c.names())
    remembered = [i for i in range(100) if c.get(b"X-%d" % i) != -1]
    assert len(remembered) == 16
    assert all(c.get(b"X-%d" % i) == i % 256 for i in remembered)


def test_random_names_never_get_a_wrong_code() -> None:
    """Up to the limit, every name put is either found with its code or (compiled, past
    the 8-slot probe) not found; never another name's code."""
    rng = random.Random(11)
    c = NameCodes(limit=512)
    want: dict[bytes, int] = {}
    while len(want) < 600:
        name = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        want[name] = rng.randrange(256)
        c.put(name, want[name])
    found = {n: c.get(n) for n in want}
    assert all(got in (-1, want[n]) for n, got in found.items())
    hits = sum(got != -1 for got in found.values())
    assert hits == len(c) == 512  # full: the first 512 that found a slot
    assert set(c.names()) == {n for n, got in found.items() if got != -1}


class Subclass(bytes):
    pass


@pytest.mark.parametrize("name", [Subclass(b"Host"), memoryview(b"Host")])
def test_other_byte_types_are_not_confused_with_bytes(name: object) -> None:
    c = NameCodes()
    c.put(b"Host", 4)
    assert c.get(name) in (-1, 4)  # a miss sends the caller to classify it afresh


def test_limits_and_codes_are_checked() -> None:
    with pytest.raises(ValueError, match="at most 512"):
        NameCodes(limit=513)
    with pytest.raises(ValueError, match="0-255"):
        NameCodes().put(b"Host", 256)


def test_the_modules_classify_through_it() -> None:
    """Classification remembers the raw spelling and answers it as the lowercase one."""
    for raw in (b"Content-Length", b"CONTENT-LENGTH", b"l5d-Dtab", b"X-Plain-Request"):
        code = server._request_code(raw)
        assert raw in server.name_codes()
        assert code == server._request_code(raw.lower()) == server._request_code(raw)
    assert server._request_code(b"X-Plain-Request") != server._request_code(b"Content-Length")
    for raw in (b"L5D-Success-Class", b"Transfer-Encoding", b"X-Plain-Response"):
        code = pool._response_code(raw)
        assert raw in pool.name_codes()
        assert code == pool._response_code(raw.lower()) == pool._response_code(raw)
