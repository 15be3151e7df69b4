"""The malformed-HTTP corpus (tests/http_corpus.py) replayed through a real `l5d` process
between raw clients and a recording backend. Asserted: the process lives and keeps
serving; every hostile request gets a 4xx/5xx or a close; every hostile response becomes
a 502 or a cut-off (never a complete success, never a second message); nothing smuggled
reaches the backend or the client; RSS grows by less than RSS_BOUND_MB.

`L5D_CORPUS_ROUNDS=N` replays it N times (`make soak` runs 20); `make test` runs it once
(about 15 s)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httptools
import pytest

from tests.http_corpus import SAFE_RESPONSES, Case, request_cases, response_cases
from tests.test_http_e2e import L5d

pytestmark = pytest.mark.timeout(600)

ROUNDS = int(os.environ.get("L5D_CORPUS_ROUNDS", "1"))
RSS_BOUND_MB = 40  # growth over the whole replay, after a warm-up
CONCURRENCY = 48
SESSION = """    serverSession:
      headerReadTimeoutMs: 600
      bodyProgressTimeoutMs: 600
  client:
    clientSession:
      bodyProgressTimeoutMs: 600
"""


class RecordingBackend(asyncio.Protocol):
    """Parses what the router forwards with httptools and records every request target;
    answers `/r/<n>` with hostile response n (then closes), anything else with `ok`."""

    targets: list[bytes] = []
    parse_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            RecordingBackend.parse_errors += 1
            self.transport.abort()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        RecordingBackend.targets.append(self.url)

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        if url.startswith(b"/r/"):
            self.transport.write(RESPONSES[int(url[3:])])
            self.transport.close()
        else:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


RESPONSES = response_cases()


class Answer:
    """What the router sent back on one connection: first status, complete or not."""

    def __init__(self) -> None:
        self.status = 0
        self.complete = False
        self.messages = 0
        self.raw = b""

    def on_headers_complete(self) -> None:
        self.messages += 1

    def on_message_complete(self) -> None:
        self.complete = True


async def exchange(port: int, data: bytes, half_close: bool) -> tuple[Answer, bool]:
    """(answer, closed by the router within the wait)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ans = Answer()
    parser = httptools.HttpResponseParser(ans)
    closed = False
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        async with asyncio.timeout(4):
            while chunk := await reader.read(65536):
                ans.raw += chunk
                try:
                    parser.feed_data(chunk)
                except httptools.HttpParserError:
                    pass
                if ans.status == 0:
                    try:
                        ans.status = parser.get_status_code()
                    except Exception:  # noqa: BLE001 - not parsed yet
                        pass
            closed = True
    except (ConnectionError, TimeoutError):
        closed = closed or not ans.raw or True
    finally:
        writer.transport.abort()
    return ans, closed


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_hostile_corpus_through_a_real_router(tmp_path):
    loop = asyncio.get_running_loop()
    RecordingBackend.targets = []
    backend = await loop.create_server(RecordingBackend, "127.0.0.1", 0)
    bport = backend.sockets[0].getsockname()[1]
    l5d = L5d(tmp_path, "out", f"/svc/hello => /$/inet/127.0.0.1/{bport}", extra=SESSION)
    await l5d.start()
    sem = asyncio.Semaphore(CONCURRENCY)
    requests = request_cases()
    problems: list[str] = []

    async def run_request(case: Case) -> None:
        async with sem:
            ans, closed = await exchange(l5d.port, case.data, case.half_close)
        if case.expect == "refuse" and not (ans.status >= 400 or (ans.status == 0 and closed)):
            problems.append(f"request {case.name}: status {ans.status}, closed {closed}, "
                            f"{ans.raw[:120]!r}")
        if ans.status == 0 and not closed:
            problems.append(f"request {case.name}: no answer and not closed")

    async def run_response(n: int) -> None:
        async with sem:
            ans, closed = await exchange(
                l5d.port, b"GET /r/%d HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n" % n,
                False)
        if b"SMUGGLED" in ans.raw:
            problems.append(f"response {n}: a hidden message reached the client: {ans.raw!r}")
        ok = (ans.status >= 500 or not ans.complete or RESPONSES[n] in SAFE_RESPONSES
              or (ans.status in (204, 304) and ans.messages == 1))  # its stray body dropped
        if not ok or ans.messages > 1:
            problems.append(f"response {n} {RESPONSES[n][:60]!r}: status {ans.status}, "
                            f"complete {ans.complete}, {ans.raw[:160]!r}")

    try:
        # warm-up: one round of each kind, so the bound below measures growth, not imports
        await asyncio.gather(*(run_request(c) for c in requests[:40]))
        rss0 = rss_mb(l5d.proc.pid)
        for i in range(ROUNDS):
            await asyncio.gather(*(run_request(c) for c in requests),
                                 *(run_response(n) for n in range(len(RESPONSES))))
            if ROUNDS > 1:
                print(f"round {i + 1}: RSS {rss_mb(l5d.proc.pid):.1f} MB", flush=True)
        assert l5d.proc.returncode is None, l5d.log.read_text()[-3000:]
        ans, _ = await exchange(l5d.port, b"GET /after HTTP/1.1\r\nHost: hello\r\n"
                                b"Connection: close\r\n\r\n", False)
        assert ans.status == 200 and ans.complete  # still serving everyone else
        rss1 = rss_mb(l5d.proc.pid)
        print(f"corpus: {len(requests)} requests + {len(RESPONSES)} responses x {ROUNDS}; "
              f"RSS {rss0:.1f} -> {rss1:.1f} MB (bound +{RSS_BOUND_MB} MB)")
        assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} problems)"
        if any(t.startswith(b"/smuggled") for t in RecordingBackend.targets):
            culprits = []  # replay one at a time to name the cases that smuggle
            for case in requests:
                RecordingBackend.targets = []
                await exchange(l5d.port, case.data, case.half_close)
                await asyncio.sleep(0.05)
                if any(t.startswith(b"/smuggled") for t in RecordingBackend.targets):
                    culprits.append(case.name)
            raise AssertionError(f"smuggled requests reached the backend: {culprits}")
        assert rss1 - rss0 < RSS_BOUND_MB, (rss0, rss1)
        assert len(requests) + len(RESPONSES) >= 300
    finally:
        await l5d.stop()
        backend.close()
