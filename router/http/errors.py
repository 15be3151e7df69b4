"""Linkerd-generated error responses (reference §1.13).

Every error the router itself produces carries `l5d-err: <URL-encoded
message>` and a `text/plain` body with the message, so a caller (or the next
router, or a person with curl) can tell a router failure from an application
one. `clearContext` servers empty the body of such responses on the way out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

MAX_ERR_HEADER = 8 * 1024  # maxHeadersKB
MAX_ERR_BODY = 5120 * 1024  # maxErrResponseKB

REASONS = {
    400: b"Bad Request",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


class RouteError(Exception):
    """A request failed inside the router; `status` and the message become the response.

    `cause` is a short metric-friendly failure name (`failures/<cause>`), e.g.
    `ConnectionFailed`, `NoBrokersAvailable`.
    """

    def __init__(self, status: int, message: str, cause: str = "RouteError",
                 detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.cause = cause
        self.detail = detail  # more lines for the body only (l5d-err carries `message`)


def format_dtab(dtab: Iterable[object]) -> str:
    """Dentries one per line, indented, as Linkerd's RichNoBrokersAvailableException prints them."""
    lines = []
    for d in dtab:
        prefix = getattr(d, "prefix", None)
        dst = getattr(d, "dst", None)
        if prefix is not None and dst is not None:
            lines.append(f"  {prefix.show} => {dst.show}")
        else:
            lines.append(f"  {d}")
    return "\n".join(lines)


def no_route_message(service: str, base: object, local: object, reason: str | None = None) -> str:
    """The 502 text for a name that resolves to nothing."""
    full = list(base) + list(local)  # type: ignore[call-overload]
    text = (
        "Unable to route request!\n\n"
        f"service name: {service}\n"
        f"dtab:\n{format_dtab(full)}\n"
        f"base dtab:\n{format_dtab(base)}\n"  # type: ignore[arg-type]
        f"override dtab:\n{format_dtab(local)}\n"  # type: ignore[arg-type]
    )
    if reason:
        text += f"reason: {reason}\n"
    return text


def connection_failed_message(
    addr: str, service: str, client: str, addresses: Iterable[str], error: str = ""
) -> str:
    text = (
        f"Unable to establish connection to {addr}.\n\n"
        f"service name: {service}\n"
        f"client name: {client}\n"
        f"addresses: [{', '.join(sorted(addresses))}]\n"
        f"selected address: {addr}\n"
    )
    if error:
        text += f"error: {error}\n"
    return text


def tls_failed_message(failure: str, service: str, client: str, addresses: Iterable[str]
                       ) -> str:
    """The 502 text when the TLS handshake to a backend fails (no plaintext fallback)."""
    return (
        f"{failure}\n\n"
        f"service name: {service}\n"
        f"client name: {client}\n"
        f"addresses: [{', '.join(sorted(addresses))}]\n"
    )


def max_call_depth_message(n: int) -> str:
    return f"Maximum number of calls ({n}) has been exceeded. Please check for proxy loops."


def unknown_destination_message(described_request: str, reason: str) -> str:
    return f"Unknown destination: {described_request} / {reason}"


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    status: int
    message: str
    detail: str = ""  # body lines after the message (e.g. the service and endpoint)

    def encode(self, *, keep_alive: bool = True, with_body: bool = True, l5d_err: bool = True,
               http10_keep_alive: bool = False) -> bytes:
        """The full response bytes: status line, `l5d-err`, `text/plain` body.

        A `clearContext` server passes `l5d_err=False, with_body=False`: the
        status stays, the router's internals do not leave the mesh.
        """
        text = f"{self.message}\n{self.detail}" if self.detail else self.message
        body = text.encode("utf-8", "replace")[:MAX_ERR_BODY] if with_body else b""
        reason = REASONS.get(self.status, b"Error")
        lines = [b"HTTP/1.1 " + str(self.status).encode() + b" " + reason]
        if l5d_err:
            lines.append(b"l5d-err: " + quote(self.message, safe="")[:MAX_ERR_HEADER].encode())
            lines.append(b"l5d-success-class: 0.0")  # a router-made error is a failure
        lines += [
            b"Content-Type: text/plain",
            b"Content-Length: " + str(len(body)).encode(),
            b"Via: 1.1 linkerd",
        ]
        if not keep_alive:
            lines.append(b"Connection: close")
        elif http10_keep_alive:
            lines.append(b"Connection: keep-alive")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body
