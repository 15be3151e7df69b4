"""Header rules for a proxy hop, shared by both directions.

Requests and responses keep headers as raw `(name, value)` byte pairs in wire
order, as httptools gives them. Classification (what is hop-by-hop, what is
`l5d-*`, what frames the body) happens once per header, in the parser
callbacks (`server.ServerConnection.on_header`, `pool.UpstreamConnection.on_header`),
against the sets defined here; the proxy then re-frames bodies itself.
"""

from __future__ import annotations

from typing import Any

# RFC 7230 §6.1 hop-by-hop headers, plus the de-facto Proxy-Connection, plus the framing
# headers (Transfer-Encoding, Content-Length) that each hop sets for itself. Any header a
# `Connection:` header names is hop-by-hop too, for that message.
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

L5D_PREFIX = b"l5d-"

# Set by the router on every forwarded request; never passed through from the caller.
REQUEST_OWNED: frozenset[bytes] = frozenset(
    {b"l5d-dst-service", b"l5d-dst-client", b"l5d-dst-residual", b"l5d-reqid"}
)


def route_headers(local: Any, service: str, client_name: bytes, residual: Any
                  ) -> list[tuple[bytes, bytes]]:
    """What a hop adds to a request it routes (HTTP/1.1 and h2 alike), in Linkerd's order:
    the local dtab it carried on (`l5d-ctx-dtab`), then `l5d-dst-service`, `l5d-dst-client`
    and, when the bound name has one, `l5d-dst-residual`. The same for every request on a
    route: callers compute it once per route decision."""
    out = []
    if local is not None:
        out.append((b"l5d-ctx-dtab", local.show.encode("latin-1")))
    out.append((b"l5d-dst-service", service.encode("latin-1")))
    out.append((b"l5d-dst-client", client_name))
    if len(residual):
        out.append((b"l5d-dst-residual", residual.show.encode("latin-1")))
    return out
