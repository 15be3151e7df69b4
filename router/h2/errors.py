"""Router-made responses on h2 streams: plain HTTP/2, or a gRPC status.

An HTTP/2 caller gets the status of reference §1.13 with `l5d-err` and a
`text/plain` body, as HTTP/1 callers do. A gRPC caller (`content-type:
application/grpc...`) would read that as a protocol error, so it gets a
Trailers-Only response instead: `:status 200`, `grpc-status` mapped from the
router's status (gRPC's http-grpc-status-mapping: UNAVAILABLE for 502/503,
DEADLINE_EXCEEDED for timeouts, INTERNAL for a request the router refused),
`grpc-message` (percent-encoded, as gRPC requires) and `l5d-err`.
"""

from __future__ import annotations

from urllib.parse import quote

from router.http.errors import MAX_ERR_BODY, MAX_ERR_HEADER, RouteError

GRPC_OK, GRPC_CANCELLED, GRPC_UNKNOWN, GRPC_DEADLINE_EXCEEDED = 0, 1, 2, 4
GRPC_INTERNAL, GRPC_UNAVAILABLE = 13, 14

Headers = list[tuple[bytes, bytes]]
VIA = b"h2 linkerd"  # Linkerd's h2 ViaHeaderFilter, on requests and responses (router's too)


def grpc_code(err: RouteError) -> int:
    if "Timeout" in err.cause or "Deadline" in err.cause:
        return GRPC_DEADLINE_EXCEEDED
    if err.status in (502, 503, 504, 429):
        return GRPC_UNAVAILABLE
    return GRPC_INTERNAL


def grpc_message(text: str) -> bytes:
    """gRPC's percent-encoding of grpc-message (printable ASCII except % kept)."""
    return quote(text, safe=" !\"#$&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~")[:MAX_ERR_HEADER].encode()


def l5d_err(text: str) -> bytes:
    return quote(text, safe="")[:MAX_ERR_HEADER].encode()


def error_response(err: RouteError, *, grpc: bool, clear_context: bool
                   ) -> tuple[Headers, bytes]:
    """(headers, body) of the router's answer; for gRPC the headers end the stream."""
    if grpc:
        headers: Headers = [(b":status", b"200"), (b"content-type", b"application/grpc"),
                            (b"grpc-status", str(grpc_code(err)).encode()), (b"via", VIA)]
        if not clear_context:
            headers.append((b"grpc-message", grpc_message(err.message)))
            headers.append((b"l5d-err", l5d_err(err.message)))
            headers.append((b"l5d-success-class", b"0.0"))
        return headers, b""
    text = f"{err.message}\n{err.detail}" if err.detail else err.message
    body = b"" if clear_context else text.encode("utf-8", "replace")[:MAX_ERR_BODY]
    headers = [(b":status", str(err.status).encode()), (b"content-type", b"text/plain"),
               (b"content-length", str(len(body)).encode()), (b"via", VIA)]
    if not clear_context:
        headers.append((b"l5d-err", l5d_err(err.message)))
        headers.append((b"l5d-success-class", b"0.0"))
    return headers, body


def grpc_failure_trailers(message: str, *, clear_context: bool,
                          code: int = GRPC_UNAVAILABLE) -> Headers:
    """Trailers that end a gRPC response the backend broke off mid-stream."""
    trailers: Headers = [(b"grpc-status", str(code).encode())]
    if not clear_context:
        trailers.append((b"grpc-message", grpc_message(message)))
        trailers.append((b"l5d-err", l5d_err(message)))
        trailers.append((b"l5d-success-class", b"0.0"))
    return trailers
