"""The parsed head of an HTTP request, as identifiers and the proxy see it.

Headers stay a list of raw byte pairs in wire order (that is what httptools
hands us and what we write back out); lookups are by lowercased name.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestHead:
    method: str
    target: str  # origin-form after proxy rewrite: "/path?query"
    version: str  # "1.1" or "1.0"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    peer: tuple[str, int] = ("", 0)

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
