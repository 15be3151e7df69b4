"""The per-request dtab: `l5d-ctx-dtab` (from an upstream router) then `l5d-dtab` (from the user).

Both are appended after the router's base dtab, `l5d-dtab` last so a person's
override wins. A header that does not parse fails the request with 400 and the
parser's message (which names the line and column), never silently ignored.
Their total size is limited (`maxDtabHeaderKB`, 8 KB by default, like Linkerd's
`maxHeadersKB` for the whole head): a parsed dtab holds ~30 bytes per byte of
text, and every binding under it more. Parsed dtabs are memoised by header text
(callers repeat the same override) in a cache bounded by bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtab.bounded import WeightedLRU, dtab_weight
from dtab.dtab import Dtab
from dtab.errors import DtabParseError
from dtab.parser import parse_dtab
from router.http.errors import RouteError

DEFAULT_MAX_DTAB_HEADER_KB = 8
CACHE_BYTES = 8 * 1024 * 1024
_cache: WeightedLRU[bytes, Dtab] = WeightedLRU(CACHE_BYTES, max_entries=4096)


def max_dtab_header_bytes(router_config: Any) -> int:
    """The router's `maxDtabHeaderKB` in bytes (the default for test doubles without one)."""
    kb = getattr(router_config, "max_dtab_header_kb", None) or DEFAULT_MAX_DTAB_HEADER_KB
    return int(kb) * 1024


def parse_dtab_header(name: str, value: bytes) -> Dtab:
    """One header value as a Dtab, or RouteError(400) naming the header and the position."""
    hit = _cache.get(value)
    if hit is not None:
        return hit
    text = value.decode("latin-1")
    try:
        dtab = parse_dtab(text)
    except DtabParseError as e:
        raise RouteError(400, f"Invalid {name} header: {e}", "DtabParseError") from e
    except ValueError as e:
        raise RouteError(400, f"Invalid {name} header {text[:200]!r}: {e}",
                         "DtabParseError") from e
    _cache.put(value, dtab, len(value) + dtab_weight(dtab))
    return dtab


def local_dtab(ctx_values: Sequence[bytes], dtab_values: Sequence[bytes],
               max_bytes: int = DEFAULT_MAX_DTAB_HEADER_KB * 1024) -> Dtab:
    """`l5d-ctx-dtab` entries followed by `l5d-dtab` entries (later ones take priority).

    Past `max_bytes` in total the request is refused (400) before anything is parsed.
    """
    total = sum(map(len, ctx_values)) + sum(map(len, dtab_values))
    if total > max_bytes:
        raise RouteError(
            400,
            f"l5d-dtab and l5d-ctx-dtab headers are {total} bytes, over the limit of "
            f"{max_bytes // 1024} KB (maxDtabHeaderKB)",
            "DtabTooLarge",
        )
    out = Dtab.empty()
    for v in ctx_values:
        if v.strip():
            out = out + parse_dtab_header("l5d-ctx-dtab", v)
    for v in dtab_values:
        if v.strip():
            out = out + parse_dtab_header("l5d-dtab", v)
    return out
