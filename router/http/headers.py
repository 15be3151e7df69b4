"""Header rules for a proxy hop, shared by both directions.

Requests and responses keep headers as raw `(name, value)` byte pairs in wire
order, as httptools gives them. Classification (what is hop-by-hop, what is
`l5d-*`, what frames the body) happens once per header, in the parser
callbacks (`server.ServerConnection.on_header`, `pool.UpstreamConnection.on_header`),
against the sets defined here; the proxy then re-frames bodies itself.
"""

from __future__ import annotations

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

