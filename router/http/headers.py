"""Header rules for a proxy hop: hop-by-hop removal, Via, l5d-* context.

Headers are raw `(name, value)` byte pairs in wire order, as httptools gives
them; names are compared lowercased. Every function here returns a new list
(or counts), so the caller decides when to copy.
"""

from __future__ import annotations

# RFC 7230 §6.1 hop-by-hop headers, plus the de-facto Proxy-Connection.
# Transfer-Encoding and Content-Length are framing: the proxy re-frames bodies
# itself (see `framing_headers`), so both are removed here too.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"content-length",
    }
)

VIA_VALUE_11 = b"1.1 linkerd"
VIA_VALUE_10 = b"1.0 linkerd"

L5D_PREFIX = b"l5d-"
L5D_CTX_PREFIX = b"l5d-ctx-"


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in `Connection:` (they are hop-by-hop for this hop only)."""
    tokens: set[bytes] = set()
    for k, v in headers:
        if k.lower() == b"connection":
            for tok in v.split(b","):
                tok = tok.strip().lower()
                if tok:
                    tokens.add(tok)
    return frozenset(tokens)


def drop_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers without hop-by-hop ones (the fixed set and those `Connection` names)."""
    named = connection_tokens(headers)
    if named:
        drop = HOP_BY_HOP | named
        return [(k, v) for k, v in headers if k.lower() not in drop]
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


def strip_l5d(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """clearContext: every `l5d-*` header removed."""
    return [(k, v) for k, v in headers if not k.lower().startswith(L5D_PREFIX)]


def has_l5d(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower().startswith(L5D_PREFIX) for k, _ in headers)


def count_via_hops(headers: list[tuple[bytes, bytes]]) -> int:
    """How many proxies the request went through: each comma-separated `Via` entry is one."""
    n = 0
    for k, v in headers:
        if k.lower() == b"via":
            n += sum(1 for part in v.split(b",") if part.strip())
    return n


def first(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of `name` (lowercase bytes)."""
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def all_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [v for k, v in headers if k.lower() == name]


def without(
    headers: list[tuple[bytes, bytes]], names: frozenset[bytes]
) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in names]


def serialize(start_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A message head on the wire: start line, headers, blank line."""
    return b"\r\n".join([start_line, *[b": ".join(h) for h in headers], b"\r\n"])
