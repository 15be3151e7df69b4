"""The upstream connection's response-head handling, driven directly (no sockets): the
status line's version read from the first bytes, and interim (1xx) responses however the
backend's writes are cut. Runs compiled and, with L5D_PURE_PYTHON=1, from source."""

from __future__ import annotations

import pytest

from dtab.addr import Address
from router.client.pool import Endpoint, UpstreamConnection


class Transport:
    def __init__(self) -> None:
        self.sent = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.sent += data

    def get_extra_info(self, name: str, default=None):  # noqa: ANN001, ANN201
        return default

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Sink:
    def __init__(self) -> None:
        self.head: tuple | None = None
        self.body = b""
        self.done: bool | None = None
        self.error: Exception | None = None
        self.l5d: tuple | None = None

    def on_response_head(self, status, reason, headers, has_body, length, tokens,  # noqa: ANN001
                         has_l5d, l5d_err, success_class, retryable) -> None:
        self.head = (status, headers, length)
        self.l5d = (has_l5d, l5d_err, success_class, retryable)

    def on_response_body(self, chunk: bytes) -> None:
        self.body += chunk

    def on_response_complete(self, keep_alive: bool) -> None:
        self.done = keep_alive

    def on_upstream_error(self, error: Exception) -> None:
        self.error = error


def exchange(*reads: bytes) -> Sink:
    conn = UpstreamConnection(Endpoint(Address("127.0.0.1", 9)))
    conn.connection_made(Transport())
    sink = Sink()
    conn.start(sink, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", no_body=False)
    for r in reads:
        conn.data_received(r)
    return sink


FINAL = b"HTTP/1.1 200 OK\r\nLink: </s>\r\nContent-Length: 2\r\n\r\nok"
EARLY = b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"


@pytest.mark.parametrize("cut", [len(EARLY) - 3, len(EARLY), len(EARLY) + 4, len(EARLY) + 30])
def test_interim_response_then_final_cut_anywhere(cut: int) -> None:
    data = EARLY + FINAL
    sink = exchange(data[:cut], data[cut:])
    assert sink.error is None
    assert sink.head == (200, [(b"Link", b"</s>")], b"2")
    assert sink.body == b"ok" and sink.done is True


@pytest.mark.parametrize("version, ok", [(b"1.1", True), (b"1.0", True), (b"1.2", False),
                                          (b"2.0", False), (b"0.9", False)])
def test_status_line_version(version: bytes, ok: bool) -> None:
    sink = exchange(b"HTTP/" + version + FINAL[8:])
    if ok:
        assert sink.error is None and sink.head is not None and sink.body == b"ok"
    else:
        assert sink.head is None and "HTTP version" in str(sink.error)


@pytest.mark.parametrize("cut", [1, 4, 5, 7, 8, 9])
@pytest.mark.parametrize("version, ok", [(b"1.1", True), (b"1.0", True), (b"2.0", False)])
def test_status_line_cut_before_its_version(cut: int, version: bytes, ok: bool) -> None:
    """A first read too short to show the version: the parser's version decides."""
    data = b"HTTP/" + version + FINAL[8:]
    sink = exchange(data[:cut], data[cut:])
    if ok:
        assert sink.error is None and sink.head is not None and sink.body == b"ok"
    else:
        assert sink.head is None and "HTTP version" in str(sink.error)


@pytest.mark.parametrize("line", [b"RTSP/1.0 200 OK", b"ICE/1.0 200 OK", b"HTTP1.1 200 OK",
                                  b"http/1.1 200 OK"])
@pytest.mark.parametrize("cut", [None, 1, 3])
def test_a_status_line_not_http_fails(line: bytes, cut: int | None) -> None:
    data = line + b"\r\nContent-Length: 2\r\n\r\nok"
    sink = exchange(data) if cut is None else exchange(data[:cut], data[cut:])
    assert sink.head is None and sink.error is not None


def test_final_response_after_interim_in_one_read_is_version_checked() -> None:
    """The version read from the first bytes is the interim response's: the final one's
    comes from the parser."""
    sink = exchange(EARLY + b"HTTP/2.0" + FINAL[8:])  # llhttp takes 2.0; the router does not
    assert sink.head is None and "HTTP version 2.0 in the status line" in str(sink.error)


def test_next_hops_verdict_comes_apart_from_the_headers() -> None:
    """The last `l5d-success-class` is handed over and taken out (this hop sets its own);
    `l5d-retryable: true` is noted and forwarded; other l5d-* headers are kept."""
    sink = exchange(b"HTTP/1.1 503 Service Unavailable\r\nL5d-Success-Class: 0.0\r\n"
                    b"l5d-retryable:  TRUE \r\nl5d-success-class: 0.5\r\nl5d-x: y\r\n"
                    b"Content-Length: 2\r\n\r\nno")
    assert sink.error is None
    assert sink.head == (503, [(b"l5d-retryable", b"TRUE "), (b"l5d-x", b"y")], b"2")
    assert sink.l5d == (True, False, b"0.5", True)


@pytest.mark.parametrize("head, expected", [
    (b"Server: nginx\r\n", (False, False, None, False)),
    (b"l5d-retryable: false\r\n", (True, False, None, False)),
    (b"l5d-err: boom\r\n", (True, True, None, False)),
])
def test_l5d_headers_noted(head: bytes, expected: tuple) -> None:
    sink = exchange(b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 2\r\n\r\nok")
    assert sink.error is None and sink.l5d == expected
