"""The parsed head of an HTTP request, as identifiers and the proxy see it.

Headers stay a list of raw byte pairs in wire order (that is what httptools
hands us and what we write back out); lookups are by lowercased name.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dtab.bounded import WeightedLRU

try:  # Cython's pure-Python mode: `compiled` is True only in the built extension
    import cython  # type: ignore[import-untyped]

    _COMPILED: bool = cython.compiled
except ImportError:  # installed from a wheel, run as source: no Cython here
    _COMPILED = False


def head_bytes(first: bytes, headers: list[tuple[bytes, bytes]], tail: list[bytes]) -> bytes:
    """`first`, each header as `name: value\\r\\n`, then the parts of `tail`, as one bytes:
    how the proxy writes every request and response head.

    Compiled, it sizes the head and copies each part once in C (`_c_head_bytes` in
    request.pxd): about 500 instructions a head, where a list of parts and `b"".join`
    cost about 3,600 (bench/README, session 7). Any part that is not exactly bytes takes
    the join below instead.
    """
    if _COMPILED:
        out = _c_head_bytes(first, headers, tail)  # type: ignore[name-defined]  # noqa: F821
        if out is not None:
            return out  # type: ignore[no-any-return]
    parts = [first]
    for k, v in headers:
        parts += (k, b": ", v, b"\r\n")
    parts += tail
    return b"".join(parts)


def request_head_bytes(method: str, target: str, headers: list[tuple[bytes, bytes]],
                       tail: list[bytes]) -> bytes:
    """`head_bytes` with the request line `<method> <target> HTTP/1.1\r\n` first, encoded
    as latin-1. Compiled, the two str are copied in with the rest (`_c_request_head_bytes`):
    no f-string, no encode; a str beyond latin-1 takes the encode (and its error) below."""
    if _COMPILED:
        out = _c_request_head_bytes(method, target, headers, tail)  # type: ignore[name-defined]  # noqa: F821
        if out is not None:
            return out  # type: ignore[no-any-return]
    return head_bytes(f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), headers, tail)


def cache_get(cache: WeightedLRU[Any, Any], key: Any) -> Any:
    """`cache.get(key)` for the compiled hot path: the same read as `WeightedLRU.get`
    (look up, mark referenced), done on its table in C instead of a Python call."""
    table = cache._data
    hit = table.get(key)
    if hit is None:
        return None
    hit[2] = True
    return hit[0]


NAME_CODES_SLOTS = 1024  # a power of two, twice the most names a NameCodes holds
NAME_MAX = 64  # bytes: a longer name is never remembered (peers choose the names)


class NameCodes:
    """Raw header name, as the peer spelled it -> the code a module gives it: a bounded
    cache in front of the lower() and lookups that decide the code (server and pool).

    From source it is the dict it stands for. Compiled, the table is C (`_c_names_get` in
    request.pxd): a seeded FNV-1a hash and a memcmp in place of bytes' SipHash and a rich
    compare, about 300 instructions less per header (bench/README, session 7). Probing
    stops after 8 slots, so no set of names a peer picks can make a lookup cost more.
    """

    __slots__ = ("limit", "_dict", "_keys", "_codes", "_used", "_seed")

    def __init__(self, limit: int = 512) -> None:
        if not 0 <= limit <= NAME_CODES_SLOTS // 2:
            raise ValueError(f"NameCodes holds at most {NAME_CODES_SLOTS // 2} names, not {limit}")
        self.limit = limit
        self._used = 0
        self._dict: dict[bytes, int] = {}  # from source; compiled, the C table below
        slots = NAME_CODES_SLOTS if _COMPILED else 0
        self._keys: list[bytes | None] = [None] * slots
        self._codes = bytearray(slots)
        self._seed = int.from_bytes(os.urandom(8), "little")

    def get(self, name: bytes) -> int:
        """The code remembered for `name`, or -1."""
        if _COMPILED:  # (request.pxd; only the extension has it)
            return _c_names_get(  # type: ignore[no-any-return,name-defined]  # noqa: F821
                self._keys, self._codes, name, self._seed)
        return self._dict.get(name, -1)

    def put(self, name: bytes, code: int) -> None:
        """Remember `code` (0-255) for `name`, unless full or the name is too long."""
        if not 0 <= code <= 255:
            raise ValueError(f"header code {code} is not 0-255")
        if self._used >= self.limit or len(name) > NAME_MAX:
            return
        if _COMPILED:
            self._used += _c_names_put(  # type: ignore[name-defined]  # noqa: F821
                self._keys, self._codes, name, code, self._seed)
            return
        self._dict[name] = code
        self._used = len(self._dict)

    def names(self) -> list[bytes]:
        if _COMPILED:
            return [k for k in self._keys if k is not None]
        return list(self._dict)

    def __len__(self) -> int:
        return self._used


class RequestHead:
    """A plain class, not a dataclass, so that it compiles to a native one
    (router/request.pxd): the proxy reads its fields on every request."""

    __slots__ = ("method", "target", "version", "headers", "peer")

    def __init__(self, method: str, target: str, version: str,
                 headers: list[tuple[bytes, bytes]] | None = None,
                 peer: tuple[str, int] = ("", 0)) -> None:
        self.method = method
        self.target = target  # origin-form after proxy rewrite: "/path?query"
        self.version = version  # "1.1" or "1.0"
        self.headers: list[tuple[bytes, bytes]] = [] if headers is None else headers
        self.peer = peer

    def __repr__(self) -> str:
        return (f"RequestHead(method={self.method!r}, target={self.target!r}, "
                f"version={self.version!r}, headers={self.headers!r}, peer={self.peer!r})")

    def __eq__(self, other: object) -> bool:  # (so unhashable, as the dataclass was)
        if type(other) is not type(self):
            return NotImplemented
        return ((self.method, self.target, self.version, self.headers, self.peer)
                == (other.method, other.target, other.version,  # type: ignore[attr-defined]
                    other.headers, other.peer))  # type: ignore[attr-defined]

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), decoded as latin-1."""
        key = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k.lower() == key:
                return v.decode("latin-1")
        return None

    def header_all(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.headers if k.lower() == key]

    def set_header(self, name: str, value: str) -> None:
        self.remove_header(name)
        self.headers.append((name.encode("latin-1"), value.encode("latin-1")))

    def remove_header(self, name: str) -> None:
        key = name.lower().encode("latin-1")
        self.headers = [(k, v) for k, v in self.headers if k.lower() != key]

    @property
    def host(self) -> str | None:
        return self.header("host")

    def describe(self) -> str:
        """Linkerd's `Request("GET /", from /ip:port)` form, used in error texts."""
        return f'Request("{self.method} {self.target}", from /{self.peer[0]}:{self.peer[1]})'


class HeadInfo:
    """What the header callbacks learned about one request head (the server fills it in,
    the proxy routes by it). A native class too (router/request.pxd)."""

    __slots__ = ("hops", "body_mode", "length", "expect", "conn_tokens", "ctx_dtabs",
                 "user_dtabs", "bad_target", "deadlines")

    def __init__(self) -> None:
        self.hops = 0
        self.body_mode = 0  # 0 none, 1 content-length, 2 chunked
        self.length: bytes | None = None
        self.expect = False
        self.conn_tokens: list[bytes] | None = None
        self.ctx_dtabs: tuple[bytes, ...] = ()  # tuples: no allocation in the common case
        self.user_dtabs: tuple[bytes, ...] = ()
        self.bad_target = False
        self.deadlines: tuple[bytes, ...] = ()  # l5d-ctx-deadline values
