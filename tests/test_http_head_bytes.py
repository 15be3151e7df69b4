"""`router.request.head_bytes` and `request_head_bytes`, which write every request and
response head: compiled, a C copy (router/request.pxd); from source (L5D_PURE_PYTHON=1), the
join and the latin-1 encode they must equal."""

from __future__ import annotations

import random

import pytest

from router import _native, request
from router.request import head_bytes, request_head_bytes


def joined(first: bytes, headers: list[tuple[bytes, bytes]], tail: list[bytes]) -> bytes:
    return first + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"".join(tail)


def test_the_build_takes_the_c_copy() -> None:
    """The compiled module knows it is compiled (else every head silently takes the join)."""
    assert request._COMPILED == (_native.STATUS["router.request"] == "compiled")


def test_a_request_head() -> None:
    got = head_bytes(b"GET /a?b HTTP/1.1\r\n", [(b"Host", b"web"), (b"Accept", b"*/*")],
                     [b"l5d-dst-service: /svc/web\r\n", b"\r\n"])
    assert got == (b"GET /a?b HTTP/1.1\r\nHost: web\r\nAccept: */*\r\n"
                   b"l5d-dst-service: /svc/web\r\n\r\n")


def test_nothing_but_the_first_line() -> None:
    assert head_bytes(b"HTTP/1.1 204 No Content\r\n", [], []) == b"HTTP/1.1 204 No Content\r\n"


def test_empty_names_values_and_parts() -> None:
    assert head_bytes(b"", [(b"", b"")], [b"", b"x"]) == b": \r\nx"


def test_random_heads_match_the_join() -> None:
    rng = random.Random(7)

    def blob() -> bytes:
        return bytes(rng.randrange(256) for _ in range(rng.choice((0, 1, 3, 40, 700))))

    for _ in range(300):
        first = blob()
        headers = [(blob(), blob()) for _ in range(rng.randrange(12))]
        tail = [blob() for _ in range(rng.randrange(8))]
        assert head_bytes(first, headers, tail) == joined(first, headers, tail)


def test_a_large_head() -> None:
    headers = [(b"X-%d" % i, b"v" * 1000) for i in range(200)]
    got = head_bytes(b"GET / HTTP/1.1\r\n", headers, [b"\r\n"])
    assert got == joined(b"GET / HTTP/1.1\r\n", headers, [b"\r\n"])
    assert len(got) == 16 + sum(len(k) + 1004 for k, _ in headers) + 2


class Subclass(bytes):
    pass


@pytest.mark.parametrize("where", ["first", "name", "value", "tail"])
@pytest.mark.parametrize("kind", [bytearray, memoryview, Subclass])
def test_other_byte_types_take_the_join(where: str, kind: type) -> None:
    """Not exactly bytes: the C copy steps aside and the join gives the same bytes."""
    first, name, value, part = b"GET / HTTP/1.1\r\n", b"Host", b"web", b"\r\n"
    if where == "first":
        first = kind(first)
    elif where == "name":
        name = kind(name)
    elif where == "value":
        value = kind(value)
    else:
        part = kind(part)
    got = head_bytes(first, [(b"Accept", b"*/*"), (name, value)], [part])
    assert got == b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: web\r\n\r\n"


def test_a_list_of_headers_not_pairs_takes_the_join() -> None:
    """A row that is a list, not a tuple, still unpacks."""
    assert head_bytes(b"A\r\n", [[b"k", b"v"]], []) == b"A\r\nk: v\r\n"  # type: ignore[list-item]


@pytest.mark.parametrize("bad", [
    (b"A", [(b"k", "v")], []),
    (b"A", [(b"k", b"v")], ["x"]),
    (b"A", [(b"k", b"v", b"w")], []),
    ("A", [], []),
    (b"A", None, []),
])
def test_a_wrong_type_is_a_type_error(bad: tuple) -> None:
    """As the join reports it: never a crash, never a head with a hole in it."""
    with pytest.raises((TypeError, ValueError)):
        head_bytes(*bad)


def reference_request_head(method: str, target: str, headers: list[tuple[bytes, bytes]],
                           tail: list[bytes]) -> bytes:
    return joined(f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), headers, tail)


def test_a_request_line_from_method_and_target() -> None:
    got = request_head_bytes("GET", "/a?b", [(b"Host", b"web")], [b"\r\n"])
    assert got == b"GET /a?b HTTP/1.1\r\nHost: web\r\n\r\n"


@pytest.mark.parametrize("target", ["/", "*", "", "/caf\xe9?q=\xff", "/" + "x" * 5000,
                                    "/\x00\x7f\x80"])
def test_request_lines_are_latin_1(target: str) -> None:
    """Targets come from `url.decode("latin-1")`: every byte 0-255 comes back as it was."""
    headers = [(b"Accept", b"*/*")]
    assert (request_head_bytes("OPTIONS", target, headers, [b"\r\n"])
            == reference_request_head("OPTIONS", target, headers, [b"\r\n"]))


def test_a_target_beyond_latin_1_fails_as_the_encode_does() -> None:
    """An identifier's rewritten target with a character latin-1 cannot hold: the same
    UnicodeEncodeError as the encode, never bytes of another encoding."""
    with pytest.raises(UnicodeEncodeError):
        request_head_bytes("GET", "/\u20ac", [], [b"\r\n"])
    with pytest.raises(UnicodeEncodeError):
        request_head_bytes("G\u0101T", "/", [], [b"\r\n"])


class StrSubclass(str):
    pass


def test_str_subclasses_take_the_encode() -> None:
    got = request_head_bytes(StrSubclass("GET"), StrSubclass("/x"), [], [b"\r\n"])
    assert got == b"GET /x HTTP/1.1\r\n\r\n"


def test_random_request_heads_match_the_reference() -> None:
    rng = random.Random(11)
    for _ in range(200):
        method = rng.choice(["GET", "POST", "PROPFIND", "M" * rng.randrange(1, 40)])
        target = "".join(chr(rng.randrange(256)) for _ in range(rng.choice((0, 1, 30, 900))))
        headers = [(bytes(rng.randrange(256) for _ in range(rng.randrange(20))),
                    bytes(rng.randrange(256) for _ in range(rng.randrange(60))))
                   for _ in range(rng.randrange(10))]
        tail = [bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
                for _ in range(rng.randrange(5))]
        assert (request_head_bytes(method, target, headers, tail)
                == reference_request_head(method, target, headers, tail))
