"""The per-request dtab: `l5d-ctx-dtab` (from an upstream router) then `l5d-dtab` (from the user).

Both are appended after the router's base dtab, `l5d-dtab` last so a person's
override wins. A header that does not parse fails the request with 400 and the
parser's message (which names the line and column), never silently ignored.
Parsed dtabs are memoised by header text: callers repeat the same override.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from dtab.dtab import Dtab
from dtab.errors import DtabParseError
from router.http.errors import RouteError

_CACHE_MAX = 256
_cache: OrderedDict[bytes, Dtab] = OrderedDict()


def parse_dtab_header(name: str, value: bytes) -> Dtab:
    """One header value as a Dtab, or RouteError(400) naming the header and the position."""
    hit = _cache.get(value)
    if hit is not None:
        return hit
    text = value.decode("latin-1")
    try:
        dtab = Dtab.read(text)
    except DtabParseError as e:
        raise RouteError(400, f"Invalid {name} header: {e}", "DtabParseError") from e
    except ValueError as e:
        raise RouteError(400, f"Invalid {name} header {text!r}: {e}", "DtabParseError") from e
    _cache[value] = dtab
    if len(_cache) > _CACHE_MAX:
        _cache.popitem(last=False)
    return dtab


def local_dtab(ctx_values: Sequence[bytes], dtab_values: Sequence[bytes]) -> Dtab:
    """`l5d-ctx-dtab` entries followed by `l5d-dtab` entries (later ones take priority)."""
    out = Dtab.empty()
    for v in ctx_values:
        if v.strip():
            out = out + parse_dtab_header("l5d-ctx-dtab", v)
    for v in dtab_values:
        if v.strip():
            out = out + parse_dtab_header("l5d-dtab", v)
    return out
