"""The h2 keys of a Linkerd `protocol: h2` router's servers (reference §1.2), checked at load.

Linkerd's H2ServerConfig names: `maxConcurrentStreamsPerConnection` (1000),
`initialStreamWindowBytes` (64 KB), `maxFrameBytes` (16 KB),
`maxHeaderListBytes` (l5d-py: the router's `maxHeadersKB`, 8 KB, as HTTP/1),
`windowUpdateRatio` (.99; h2 sends WINDOW_UPDATE at half a window, so it is
kept for the config's sake and warned about), `headerTableBytes`. l5d-py adds
the abuse limits under `h2Limits` (per connection and second): `pingsPerSec`
(100), `settingsPerSec` (100), `resetsPerSec` (200), `stallTimeoutMs`
(60000: a stream that cannot send for that long on a zero window is reset).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from router.h2.peer import Limits

SERVER_KEYS = ("maxConcurrentStreamsPerConnection", "initialStreamWindowBytes",
               "maxFrameBytes", "maxHeaderListBytes", "windowUpdateRatio",
               "headerTableBytes", "h2Limits")
LIMIT_KEYS = ("pingsPerSec", "settingsPerSec", "resetsPerSec", "stallTimeoutMs")


def parse_server_h2(obj: Any) -> Mapping[str, Any]:
    """Read the h2 server keys from a positioned config object (router.config._Obj)."""
    out: dict[str, Any] = {}
    v = obj.int("maxConcurrentStreamsPerConnection", None, lo=1, hi=2**31 - 1)
    if v is not None:
        out["max_concurrent_streams"] = v
    v = obj.int("initialStreamWindowBytes", None, lo=1, hi=2**31 - 1)
    if v is not None:
        out["initial_window"] = v
    v = obj.int("maxFrameBytes", None, lo=16384, hi=2**24 - 1)
    if v is not None:
        out["max_frame"] = v
    v = obj.int("maxHeaderListBytes", None, lo=1024, hi=2**24)
    if v is not None:
        out["max_header_list"] = v
    obj.float("windowUpdateRatio", 0.99, lo=0.0, hi=1.0)
    obj.int("headerTableBytes", None, lo=0)
    obj.warn_unacted("windowUpdateRatio", "headerTableBytes")
    lim = obj.child("h2Limits")
    if lim is not None:
        out["pings_per_s"] = lim.int("pingsPerSec", 100, lo=1)
        out["settings_per_s"] = lim.int("settingsPerSec", 100, lo=1)
        out["resets_per_s"] = lim.int("resetsPerSec", 200, lo=1)
        out["stall_s"] = lim.int("stallTimeoutMs", 60000, lo=100) / 1000.0
        lim.finish()
    return MappingProxyType(out)


def server_limits(server_cfg: Any, router: Any) -> Limits:
    params = dict(getattr(server_cfg, "h2", None) or {})
    cfg = getattr(router, "config", None)
    kb = getattr(cfg, "max_headers_kb", None)
    params.setdefault("max_header_list", int(kb) * 1024 if kb else 8192)
    window = params.get("initial_window", 65535)
    params.setdefault("connection_window", max(1 << 20, window * 16))
    return Limits(**params)


def client_limits(router: Any) -> Limits:
    cfg = getattr(router, "config", None)
    kb = getattr(cfg, "max_headers_kb", None)
    return Limits(max_header_list=max(int(kb) * 1024 if kb else 8192, 16384))
