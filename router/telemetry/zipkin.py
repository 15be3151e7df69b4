"""`io.l5d.zipkin`: sampled spans to a Zipkin collector, in batches, off the request path.

The data path calls `record(span)`, which appends to a bounded deque (full: the
oldest span is dropped and counted) and returns. A flush task takes batches of
`batchSize` every `flushIntervalMs` (sooner when a batch is full) and sends them
with the configured transport, one batch at a time with `timeoutMs` each:

- `transport: scribe` (the default): Scribe on `port` 9410, what Linkerd 1 sent,
  so a Linkerd config works unchanged against a collector with Scribe enabled.
- `transport: http`: Zipkin v2 JSON, `POST <path>` (default `/api/v2/spans`) on
  `port` (default 9411), which Zipkin, Jaeger and OpenTelemetry collectors accept.

A collector that is down, slow or refusing costs a counter
(`telemetry/zipkin/spans_failed`) and a log line at most every 30 s.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

from dtab.bounded import LogLimiter
from dtab.errors import ParamError
from router.telemetry.params import Params
from router.telemetry.span import Span, encode_list

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 30.0)

KIND = "io.l5d.zipkin"
TRANSPORTS = ("scribe", "http")
DEFAULT_PORTS = {"scribe": 9410, "http": 9411}
DEFAULT_SAMPLE_RATE = 0.001  # Finagle's Sampler.DefaultSampleRate


def parse_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validated params with defaults filled in (ParamError names the key)."""
    p = Params(params)
    transport = p.str("transport", "scribe", TRANSPORTS)
    out = {
        "host": p.str("host", "localhost"),
        "port": p.int("port", DEFAULT_PORTS[transport], 1, 65535),
        "sampleRate": p.rate("sampleRate", DEFAULT_SAMPLE_RATE),
        "transport": transport,
        "path": p.str("path", "/api/v2/spans"),
        "batchSize": p.int("batchSize", 100, 1, 10_000),
        "flushIntervalMs": p.int("flushIntervalMs", 1000, 1, 60_000),
        "maxBufferedSpans": p.int("maxBufferedSpans", 10_000, 1, 1_000_000),
        "timeoutMs": p.int("timeoutMs", 1000, 1, 60_000),
    }
    if not out["path"].startswith("/"):
        raise ParamError("path", f"{out['path']!r} does not start with '/'")
    p.finish()
    return out


class Transport(Protocol):
    async def send(self, spans: list[Span]) -> None: ...
    async def aclose(self) -> None: ...
    def describe(self) -> str: ...


class HttpTransport:
    """Zipkin v2 JSON over HTTP through one aiohttp session (a control client, not the
    data path's pool)."""

    def __init__(self, host: str, port: int, path: str, timeout_s: float) -> None:
        self.url = f"http://{host}:{port}{path}"
        self.timeout_s = timeout_s
        self._session: Any = None

    def describe(self) -> str:
        return self.url

    async def send(self, spans: list[Span]) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Content-Type": "application/json"})
        async with self._session.post(self.url, data=encode_list(spans)) as resp:
            if resp.status >= 300:
                text = (await resp.text())[:200]
                raise RuntimeError(f"{self.url} answered {resp.status}: {text}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class ZipkinTelemeter:
    """One `io.l5d.zipkin` entry: its sample rate, buffer, flush task and transport."""

    kind = KIND

    def __init__(self, params: dict[str, Any], metrics: Any) -> None:
        p = parse_params(params)
        self.params = p
        self.sample_rate: float = p["sampleRate"]
        self.batch_size: int = p["batchSize"]
        self.interval_s = p["flushIntervalMs"] / 1000.0
        self.buffer: deque[Span] = deque(maxlen=p["maxBufferedSpans"])
        timeout_s = p["timeoutMs"] / 1000.0
        self.transport: Transport
        if p["transport"] == "http":
            self.transport = HttpTransport(p["host"], p["port"], p["path"], timeout_s)
        else:
            from router.telemetry.scribe import ScribeTransport

            self.transport = ScribeTransport(p["host"], p["port"], timeout_s)
        scope = metrics.scope("telemetry", "zipkin")
        self.recorded = scope.counter("spans_recorded")
        self.sent = scope.counter("spans_sent")
        self.dropped = scope.counter("spans_dropped")  # the buffer was full: oldest went
        self.failed = scope.counter("spans_failed")  # the collector did not take them
        scope.gauge(lambda: len(self.buffer), "spans_buffered")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def record(self, span: Span) -> None:
        """On the request path: append, never wait."""
        buf = self.buffer
        if len(buf) == buf.maxlen:
            self.dropped.value += 1
        buf.append(span)
        self.recorded.value += 1
        if len(buf) == self.batch_size and self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="zipkin flush")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Send what is buffered, batch by batch; a failed batch is counted and dropped."""
        buf = self.buffer
        while buf:
            n = min(self.batch_size, len(buf))
            batch = [buf.popleft() for _ in range(n)]
            try:
                await self.transport.send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # down, slow, refusing: counted, logged now and then
                self.failed.value += len(batch)
                _limited.warning(("send", type(e)), "zipkin: sending %d spans to %s failed: %s",
                                 len(batch), self.transport.describe(),
                                 str(e) or type(e).__name__)
                return  # try again at the next interval, not in a tight loop
            self.sent.value += len(batch)

    async def aclose(self) -> None:
        """Stop the flush task; one last flush gets up to one timeout."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            try:
                await self.flush()
            except Exception:
                log.exception("zipkin: final flush failed")
        await self.transport.aclose()
