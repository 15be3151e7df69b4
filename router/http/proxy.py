"""One request through the router: identify -> bind -> pick a leaf -> client -> forward.

`dispatch(ex)` routes synchronously when the binding is cached, the address
bound and a pooled connection idle (the steady state: no task, no extra loop
turn); only what must wait (binding, a Pending address, connecting) runs in a
task. Everything after the request head reaches the backend is callback-driven:
the upstream connection hands response head, body chunks and completion to the
`Exchange`, which writes them downstream as they arrive. Bodies are never held
whole. Before a backend is chosen, a request body is buffered up to
`BODY_BUFFER_LIMIT` and the client is paused beyond that.

Communications policy (router/policy/) is consulted at fixed points, through
the service's compiled `ServicePolicy` and the client's requeue budget and
failure accrual: before dispatch (budget deposit, deadline and total timeout),
on the response head (classification, `l5d-success-class`, maybe a retry), on
failure (retry or requeue) and on completion (accrual, stats by the classifier).
A retry replays the request from `Exchange.replay`, bounded by the service's
buffer limit; a chunked or larger body is never replayed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from time import monotonic
from typing import TYPE_CHECKING, Any

from dtab.addr import AddrBound, AddrFailed, AddrNeg, AddrPending, BoundName
from dtab.bounded import LogLimiter
from dtab.nametree import Alt, Leaf, Union
from router.client.pool import ConnectFailed, Endpoint, UpstreamConnection, UpstreamError
from router.http.dtab_headers import local_dtab
from router.http.errors import (
    ErrorResponse,
    RouteError,
    connection_failed_message,
    max_call_depth_message,
    no_route_message,
    tls_failed_message,
    unknown_destination_message,
)
from router.http.headers import L5D_PREFIX, route_headers
from router.policy import deadline as deadlines
from router.policy.classifiers import RETRYABLE, SUCCESS, success_class
from router.request import cache_get, head_bytes, request_head_bytes
from router.stats import record_all

if TYPE_CHECKING:
    from router.http.server import HttpServer, ServerConnection
    from router.stats import RequestStats

log = logging.getLogger(__name__)
# Per-request lines: clipped (targets are client text) and at most one per key per 10 s.
_limited = LogLimiter(log, 10.0)

BODY_BUFFER_LIMIT = 256 * 1024
ROUTE_CACHE_MAX = 10_000
ROUTE_CACHE_BYTES = 8 * 1024 * 1024  # route keys hold the raw dtab headers


def route_weight(key: Any, suffix: bytes) -> int:
    """Approximate bytes of one route decision: its name, its raw dtab headers, its headers."""
    labels, dtabs = key
    w = 400 + len(suffix) + sum(64 + len(x) for x in labels)
    if dtabs is not None:
        w += sum(64 + len(v) for vs in dtabs for v in vs)
    return w
_VIA = (b"Via", b"1.1 linkerd")
_VIA_LINE = b"Via: 1.1 linkerd\r\n"
_SC_OK = b"l5d-success-class: 1.0\r\n"
_SC_FAIL = b"l5d-success-class: 0.0\r\n"
# The response lines this hop adds, by classification and clearContext, pre-joined.
_SC_VIA_OK = _SC_OK + _VIA_LINE
_SC_VIA_FAIL = _SC_FAIL + _VIA_LINE
# Status line per status code, for the reason phrase it was last made with (a backend
# sends the same one every time); bounded: one per code, short reasons only.
_STATUS_LINES: dict[int, tuple[bytes, bytes]] = {}
_STATUS_REASON_MAX = 64
_rng = random.Random()
_REQID_PREFIX = os.urandom(4).hex().encode()
_reqid_counter = 0


_REQID_LINE = b"l5d-reqid: " + _REQID_PREFIX
_HEX2 = tuple(b"%02x" % i for i in range(256))


def _add_reqid(parts: list[bytes]) -> None:
    """`l5d-reqid: <prefix><counter>` (16 hex digits) as parts of a join: no formatting."""
    global _reqid_counter
    n = _reqid_counter = (_reqid_counter + 1) & 0xFFFFFFFF
    hex2 = _HEX2
    parts.append(_REQID_LINE)
    parts.append(hex2[n >> 24])
    parts.append(hex2[(n >> 16) & 255])
    parts.append(hex2[(n >> 8) & 255])
    parts.append(hex2[n & 255])


def _status_line(status: int, reason: bytes) -> bytes:
    hit = _STATUS_LINES.get(status)
    if hit is not None and hit[0] == reason:
        return hit[1]
    line = b"HTTP/1.1 %d %s\r\n" % (status, reason or b"OK")
    if len(reason) <= _STATUS_REASON_MAX:
        _STATUS_LINES[status] = (reason, line)
    return line


class Exchange:
    """One request/response pair on a downstream connection, and its upstream once chosen."""

    __slots__ = (
        "conn", "server", "head", "version", "keep_alive", "body_mode", "content_length",
        "body_chunks", "body_buffered", "request_done", "upstream", "endpoint", "client",
        "balancer", "head_sent", "chunked_down", "close_after", "discard_body", "finished",
        "start", "svc_stats", "client_stats", "client_svc_stats", "task", "expect_continue",
        "status", "upstream_paused", "pending_head", "plan", "requeued", "info",
        "total_timer", "attempt_timer", "body_seen", "policy", "ok", "retries", "replay",
        "delays", "requeues", "trace",
    )

    def __init__(self, conn: ServerConnection, head: Any, keep_alive: bool, body_mode: int,
                 content_length: bytes | None, expect_continue: bool) -> None:
        self.conn = conn
        self.server: HttpServer = self.conn.server  # read through the typed attribute
        self.head = head
        self.version = self.head.version
        self.keep_alive = keep_alive
        self.body_mode = body_mode  # 0 none, 1 content-length, 2 chunked
        self.content_length = content_length
        self.body_chunks: list[bytes] = []
        self.body_buffered = 0
        self.body_seen = 0  # request body bytes read so far
        self.request_done = body_mode == 0
        self.upstream: UpstreamConnection | None = None
        self.endpoint: Endpoint | None = None
        self.client: Any = None
        self.balancer: Any = None
        self.head_sent = False
        self.chunked_down = False
        self.close_after = False
        self.discard_body = False
        self.finished = False
        self.start = monotonic()
        self.svc_stats: RequestStats | None = None
        self.client_stats: RequestStats | None = None
        self.client_svc_stats: RequestStats | None = None
        self.task: asyncio.Task | None = None
        self.expect_continue = expect_continue
        self.status = 0
        self.upstream_paused = False
        self.pending_head = b""  # response head not yet written: goes out with the first bytes
        self.plan: _Plan | None = None
        self.requeued = False
        # service totalTimeoutMs and client requestAttemptTimeoutMs, until the response head
        self.total_timer: asyncio.TimerHandle | None = None
        self.attempt_timer: asyncio.TimerHandle | None = None  # or a retry's backoff
        self.policy: Any = None  # the service's ServicePolicy (router/policy/retries.py)
        self.ok = True  # this attempt's class, as the classifier (or the next hop) says
        self.retries = 0
        self.requeues = 0
        # request body as sent, for a retry; None: not replayable (chunked or too long)
        self.replay: list[bytes] | None = [] if body_mode == 1 else None
        self.delays: Any = None
        self.trace: Any = None  # router/telemetry RequestTrace, when the router has telemetry

    # --- request body, from the downstream parser ---------------------------
    def feed_body(self, chunk: bytes) -> None:
        self.body_seen += len(chunk)
        up = self.upstream
        if up is not None:
            replay = self.replay
            if replay is not None:
                replay.append(chunk)
            if self.body_mode == 2:
                up.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))  # type: ignore[union-attr]
            else:
                up.write(chunk)
            return
        if self.finished:
            return
        self.body_chunks.append(chunk)
        self.body_buffered += len(chunk)
        if self.body_buffered > BODY_BUFFER_LIMIT:
            self.conn.pause_reading(self.conn.PAUSE_BODY)

    def body_complete(self) -> None:
        self.request_done = True
        up = self.upstream
        if up is not None and self.body_mode == 2:
            up.write(b"0\r\n\r\n")

    # --- the routed part -----------------------------------------------------
    def attach(self, conn: UpstreamConnection, ep: Endpoint, plan: _Plan) -> None:
        """Send the request head and any buffered body to a chosen backend connection."""
        self.upstream = conn
        self.endpoint = ep
        self.plan = plan
        self.balancer.started(ep)
        if self.trace is not None:
            self.trace.attempt(ep)
        conn.start(self, plan.head_bytes, self.head.method == "HEAD")
        timeout_s = self.client.attempt_timeout_s
        if timeout_s is not None:
            if self.attempt_timer is not None:
                self.attempt_timer.cancel()
            self.attempt_timer = asyncio.get_running_loop().call_later(
                timeout_s, self.attempt_timed_out,
                f"exceeded {timeout_s * 1000:g}.milliseconds to {self.client.name} while "
                "waiting for a response for an individual request, excluding retries",
            )
        if self.conn.writing_paused and conn.transport is not None:
            # the client is still behind on an earlier response: do not read ahead for it
            conn.transport.pause_reading()
            self.upstream_paused = True
        if self.body_chunks:
            chunks, self.body_chunks = self.body_chunks, []
            self.body_buffered = 0
            self.body_seen -= sum(map(len, chunks))  # counted once, when read
            for c in chunks:
                self.feed_body(c)
            self.conn.resume_reading(self.conn.PAUSE_BODY)
        if self.request_done and self.body_mode == 2:
            conn.write(b"0\r\n\r\n")

    # --- response, from the upstream connection -------------------------------
    def on_response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                         has_body: bool, content_length: bytes | None,
                         conn_tokens: list[bytes] | None, has_l5d: bool, l5d_err: bool,
                         success_class: bytes | None, retryable: bool) -> None:
        self.status = status
        if self.trace is not None:
            self.trace.response_head(status, content_length)
        if self.attempt_timer is not None:  # the total timeout runs on, over the body
            self.attempt_timer.cancel()
            self.attempt_timer = None
        ok = True
        if status >= 500 or has_l5d:
            cls = self.policy.classify(self.head.method, status, retryable)
            if cls == RETRYABLE and self._retry(f"status {status}"):
                return
            # the next hop's verdict, which this hop honours
            ok = cls == SUCCESS if success_class is None else _verdict(success_class)
        self.ok = ok
        out = headers
        if conn_tokens:
            named = set(conn_tokens)
            out = [(k, v) for k, v in out if k.lower() not in named]
        clear = self.server.clear_context
        if has_l5d and clear:
            out = [(k, v) for k, v in out if k[:4].lower() != L5D_PREFIX]
        else:
            l5d_err = False
        # The status line, the backend's headers, then the ones this hop sets (already
        # serialised, in this order): one head_bytes.
        tail: list[bytes] = []
        if clear:
            sc, sc_via = b"", _VIA_LINE
        else:
            sc, sc_via = (_SC_OK, _SC_VIA_OK) if ok else (_SC_FAIL, _SC_VIA_FAIL)
        if has_body:
            tail.append(sc_via)
            if l5d_err:
                self.discard_body = True
                tail.append(b"Content-Length: 0\r\n")
            elif content_length is not None:
                tail.append(b"Content-Length: ")
                tail.append(content_length)
                tail.append(b"\r\n")
            elif self.version == "1.1":
                self.chunked_down = True
                tail.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.close_after = True
        elif content_length is not None:  # HEAD: the length not sent
            tail.append(sc)
            tail.append(b"Content-Length: ")
            tail.append(content_length)
            tail.append(b"\r\n" + _VIA_LINE)
        else:
            tail.append(sc_via)
        conn = self.conn
        if self.close_after or not self.keep_alive or conn.draining or not self.request_done:
            # A response that starts before its request body was all read (the backend
            # answered early) ends the connection: say so, never close a kept-alive one.
            self.keep_alive = self.keep_alive and not conn.draining and self.request_done
            tail.append(b"Connection: close\r\n\r\n")
        elif self.version == "1.0":
            tail.append(b"Connection: keep-alive\r\n\r\n")
        else:
            tail.append(b"\r\n")
        # Held back so head and body usually leave in one write (one syscall, one packet).
        self.pending_head = head_bytes(_status_line(status, reason), out, tail)
        self.head_sent = True

    def on_response_body(self, chunk: bytes) -> None:
        if self.discard_body:
            return
        head = self.pending_head
        if head:
            self.pending_head = b""
        if self.chunked_down:
            n = len(chunk)
            self.conn.writelines((head, b"%x\r\n" % n, chunk, b"\r\n"), len(head) + n + 8)
        elif head:
            if len(chunk) <= 16384:
                self.conn.write(head + chunk)
            else:
                self.conn.writelines((head, chunk), len(head) + len(chunk))
        else:
            self.conn.write(chunk)

    def on_response_complete(self, keep_alive: bool) -> None:
        tail = b"0\r\n\r\n" if self.chunked_down and not self.discard_body else b""
        if self.pending_head or tail:
            self.conn.write(self.pending_head + tail)
            self.pending_head = b""
        up = self.upstream
        ep = self.endpoint
        self.upstream = None
        now = monotonic()
        latency = (now - self.start) * 1000.0
        if up is not None and ep is not None:
            if self.upstream_paused:  # a pooled connection must not go back paused
                self.upstream_paused = False
                if up.transport is not None:
                    up.transport.resume_reading()
            ep.release(up, keep_alive and self.request_done)
            self.balancer.finished(ep, latency)
            acc = ep.accrual
            if acc is not None:
                if not self.ok:
                    acc.failure()
                elif acc.needs_success:  # False in the default policy's steady state
                    acc.success()
        if self.total_timer is not None:
            self.total_timer.cancel()
            self.total_timer = None
        self._record(self.status, latency, now)
        pol = self.policy
        if pol is not None:
            pol.completed(self.retries)
        self.finished = True
        self.conn.exchange_done(self, not self.close_after)

    # --- retries (service policy) and requeues (client policy) -----------------
    def _retry(self, why: str) -> bool:
        """Retry this request if the policy allows (budget, replayable body, nothing sent
        to the client yet). The failed attempt is dropped and counted against its endpoint."""
        if self.finished or (self.head_sent and not self.pending_head) or self.plan is None:
            return False
        pol = self.policy
        if self.body_mode != 0 and (self.replay is None or self.body_mode == 2):
            pol.too_long.value += 1
            return False
        if not pol.withdraw():
            return False
        up, ep = self.upstream, self.endpoint
        self.upstream = self.endpoint = None
        if ep is not None:
            self.balancer.finished(ep, (monotonic() - self.start) * 1000.0)
            if ep.accrual is not None:
                ep.accrual.failure()
        if up is not None:
            up.abort()  # the failed response is not read further
        self.retries += 1
        self.head_sent = self.chunked_down = self.discard_body = self.close_after = False
        self.pending_head = b""
        self.upstream_paused = False
        self.status = 0
        if self.replay:
            self.body_chunks = self.replay + self.body_chunks
            self.body_buffered = sum(map(len, self.body_chunks))
        if self.replay is not None:
            self.replay = []
        self.plan.ep = None
        delay_s, self.delays = pol.delay_s(self.delays)
        _limited.info((self.server.label, "retry", pol.name), "%s: retry %d of %s to %s after "
                      "%s (backoff %.0f ms)", self.server.label, self.retries,
                      self.head.method[:16], pol.name[:256], why[:256], delay_s * 1000)
        loop = asyncio.get_running_loop()
        if self.attempt_timer is not None:
            self.attempt_timer.cancel()
        if delay_s > 0:
            self.attempt_timer = loop.call_later(delay_s, self._redispatch)
        else:
            self.attempt_timer = None
            self._redispatch()
        return True

    def _redispatch(self) -> None:
        self.attempt_timer = None
        if not self.finished and self.plan is not None:
            self.task = asyncio.get_running_loop().create_task(_requeue(self, self.plan))

    def attempt_timed_out(self, message: str) -> None:
        """requestAttemptTimeoutMs: retried when the classifier allows, else a 503."""
        self.attempt_timer = None
        if self.finished or self.head_sent:
            return
        pol = self.policy
        if (pol is not None and pol.classify_error(self.head.method, True) == RETRYABLE
                and self._retry("attempt timeout")):
            return
        self.timed_out(503, message, "IndividualRequestTimeoutException")

    def on_upstream_error(self, error: UpstreamError) -> None:
        ep = self.endpoint
        up = self.upstream
        self.upstream = None
        now = monotonic()
        latency = (now - self.start) * 1000.0
        if ep is not None:
            self.balancer.finished(ep, latency)
        if up is not None:
            up.abort()
        if ep is not None and ep.accrual is not None:
            ep.accrual.failure()
        if (error.requeueable and not self.requeued and self.body_mode == 0
                and self.plan is not None and not self.finished
                and self.client.requeue.allow(self.requeues)):
            # The pooled connection had been closed by the backend: send it again, once.
            self.requeued = True
            self.requeues += 1
            self.upstream = self.endpoint = None
            _limited.info((self.server.label, "requeue", error.endpoint), "%s: requeue %s after %s",
                          self.server.label, self.head.target, error)
            self.task = asyncio.get_running_loop().create_task(_requeue(self, self.plan))
            return
        pol = self.policy
        if (pol is not None and (not self.head_sent or self.pending_head)
                and pol.classify_error(self.head.method, True) == RETRYABLE):
            self.endpoint = None  # accrual and load already accounted for above
            if self._retry(str(error)):
                return
        _limited.warning((self.server.label, "failed", error.endpoint, error.cause),
                         "%s %s: backend %s failed: %s", self.server.label, self.head.target,
                    error.endpoint, error)
        if self.pending_head:  # nothing reached the client yet: it can still get a clean 502
            self.pending_head = b""
            self.head_sent = False
        if self.head_sent:
            self._record_failure(error.cause, latency, None, now)
            self.finished = True
            self.conn.abort_exchange(self)
        else:
            self.respond_error(RouteError(502, str(error), error.cause))

    def backend_body_s(self) -> float:
        """The client's (`clientSession`) body-progress timeout, in seconds (1e18: none)."""
        client = self.client
        return (client.body_s or 1e18) if client is not None else 1e18

    def body_timed_out(self, ms: str) -> None:
        """The backend stopped reading the request body, or stopped sending the response
        body, for a whole body-progress timeout."""
        client = self.client
        if client is not None:
            client.stats.scope.counter("timeouts", "body_progress").value += 1
        side = "reading the request" if not self.request_done else "sending the response"
        endpoint = self.endpoint.hostport if self.endpoint is not None else "?"
        self.on_upstream_error(UpstreamError(
            endpoint, f"backend stopped {side} body: no progress for {ms} ms",
            "BodyProgressTimeout"))

    def upstream_pause_writing(self) -> None:
        self.conn.pause_reading(self.conn.PAUSE_UPSTREAM)

    def upstream_resume_writing(self) -> None:
        self.conn.resume_reading(self.conn.PAUSE_UPSTREAM)

    # --- outcomes -------------------------------------------------------------
    def _cancel_timers(self) -> None:
        if self.total_timer is not None:
            self.total_timer.cancel()
            self.total_timer = None
        if self.attempt_timer is not None:
            self.attempt_timer.cancel()
            self.attempt_timer = None

    def timed_out(self, status: int, message: str, cause: str, detail: str = "") -> None:
        """A timeout fired: a 503 (reference §1.13) if nothing reached the client yet, else
        the response is cut (the total timeout covers the body too); backend dropped."""
        self._cancel_timers()
        if self.finished:
            return
        _limited.info((self.server.label, "timeout", cause), "%s: %s", self.server.label,
                      message)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.head_sent:
            if not self.pending_head:  # mid-body: only a reset can say so
                now = monotonic()
                latency = (now - self.start) * 1000.0
                up, ep = self.upstream, self.endpoint
                self.upstream = None
                if up is not None:
                    up.abort()
                    if ep is not None:
                        self.balancer.finished(ep, latency)
                self._record_failure(cause, latency, None, now)
                self.finished = True
                self.conn.abort_exchange(self)
                return
            self.pending_head = b""
            self.head_sent = False
        self.respond_error(RouteError(status, message, cause, detail))

    def respond_error(self, err: RouteError) -> None:
        """A router-made response (§1.13), then on to the next request if the framing allows."""
        if self.finished:
            return
        if self.total_timer is not None or self.attempt_timer is not None:
            self._cancel_timers()
        now = monotonic()
        latency = (now - self.start) * 1000.0
        up, ep = self.upstream, self.endpoint
        if up is not None:  # e.g. the client's own request body turned out malformed
            self.upstream = None
            up.abort()
            if ep is not None:
                self.balancer.finished(ep, latency)
        clear = self.server.clear_context
        resp = ErrorResponse(err.status, err.message, err.detail)
        keep = self.keep_alive and self.request_done
        data = resp.encode(
            keep_alive=keep, with_body=self.head.method != "HEAD" and not clear,
            l5d_err=not clear, http10_keep_alive=keep and self.version == "1.0",
        )
        self.head_sent = True
        self.conn.write(data)
        if self.trace is not None:
            self.trace.error = err.message
        self._record_failure(err.cause, latency, err.status, now)
        self.finished = True
        self.conn.exchange_done(self, keep)

    def cancel(self) -> None:
        """The downstream connection went away mid-exchange."""
        if self.finished:
            return
        self.finished = True
        self._cancel_timers()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        up, ep = self.upstream, self.endpoint
        self.upstream = None
        now = monotonic()
        latency = (now - self.start) * 1000.0
        if up is not None:
            up.abort()
            if ep is not None:
                self.balancer.finished(ep, latency)
        self._record_failure("ChannelClosedException", latency, None, now)

    def _record(self, status: int, latency: float, now: float) -> None:
        if self.trace is not None:
            self.trace.end(self, status, None)
        srv, s, c, cs = self.server.stats, self.svc_stats, self.client_stats, self.client_svc_stats
        if c is not None:
            self.client.last_used = now
        if s is not None and c is not None and cs is not None:
            record_all((srv, s, c, cs), status, latency, now, self.ok)  # the steady state
        else:
            record_all(tuple([x for x in (srv, s, c) if x is not None]), status, latency, now,
                       self.ok)

    def _record_failure(self, cause: str, latency: float, status: int | None, now: float) -> None:
        if self.trace is not None:
            self.trace.end(self, status, cause)
        self.server.stats.record_failure(cause, latency, status)
        s = self.svc_stats
        if s is not None:
            s.record_failure(cause, latency, None)
            s.last_used = now
        c = self.client_stats
        if c is not None:
            c.record_failure(cause, latency, status)
            cs = self.client_svc_stats
            if cs is not None:
                cs.record_failure(cause, latency, None)
                cs.last_used = now


def _verdict(value: bytes) -> bool:
    """A response's `l5d-success-class`: what an l5d sends, else Linkerd's reading of any
    other value."""
    return True if value == b"1.0" else False if value == b"0.0" else success_class(value)


def pick_leaf(tree: Any, rng: random.Random = _rng) -> tuple[BoundName | None, str | None]:
    """A bound name from a bound tree: weighted choice in unions, first usable in alts."""
    while True:
        if isinstance(tree, Leaf):
            return tree.value, None
        if isinstance(tree, Union):
            branches = [w for w in tree.weighted if _usable(w.tree) and w.weight > 0]
            if not branches:
                return None, _reason(tree)
            if len(branches) == 1:
                tree = branches[0].tree
                continue
            total = sum(w.weight for w in branches)
            x = rng.random() * total
            for w in branches:
                x -= w.weight
                if x < 0:
                    tree = w.tree
                    break
            else:
                tree = branches[-1].tree
            continue
        if isinstance(tree, Alt):
            for t in tree.trees:
                if _usable(t):
                    tree = t
                    break
            else:
                return None, _reason(tree)
            continue
        return None, _reason(tree)


def _usable(tree: Any) -> bool:
    if isinstance(tree, Leaf):
        return True
    if isinstance(tree, Union):
        return any(_usable(w.tree) and w.weight > 0 for w in tree.weighted)
    if isinstance(tree, Alt):
        return any(_usable(t) for t in tree.trees)
    return False


def _reason(tree: Any) -> str | None:
    r = getattr(tree, "reason", None)
    return r if isinstance(r, str) and r else None


async def _wait_addr(bound: BoundName, timeout_s: float) -> Any:
    """Wait while a bound name's address is Pending (a namer still listing)."""
    fut = asyncio.get_running_loop().create_future()

    def on_change(value: Any) -> None:
        if not isinstance(value, AddrPending) and not fut.done():
            fut.set_result(value)

    unsubscribe = bound.addr.observe(on_change)
    try:
        return await asyncio.wait_for(fut, timeout_s)
    except TimeoutError:
        return bound.addr.value
    finally:
        unsubscribe()


class _Route:
    """One route decision, remembered per (name, local dtab) while the binding cache keeps
    handing out the same tree: a steady stream of requests skips the service lookup, the
    binding cache (when `binding`, the cache's live entry, still holds `tree`), leaf
    picking, the client lookup and the route's header serialisation."""

    __slots__ = ("tree", "binding", "bound", "client", "client_svc", "suffix", "service",
                 "addr", "balancer", "client_stats", "requeue_budget")

    def __init__(self, tree: Any, binding: Any, bound: BoundName, client: Any, client_svc: Any,
                 suffix: bytes, service: tuple[str, Any, Any]) -> None:
        self.tree = tree
        self.binding = binding  # has `.tree` (None once evicted) and `.last_used`, or None
        self.bound = bound
        self.client = client
        self.client_svc = client_svc
        self.suffix = suffix
        self.service = service  # (name, ServiceStats, ServicePolicy), as service_for gives
        # what every request reads of the bound name and the client (fixed once the
        # client is handed out: router/client/cache.py)
        self.addr = bound.addr
        self.balancer = client.balancer
        self.client_stats = client.stats
        self.requeue_budget = client.requeue.budget


class _Plan:
    """What routing decided so far for one request (filled in step by step)."""

    __slots__ = ("fwd", "name", "service", "base", "local", "full", "tree", "bound", "reason",
                 "client", "head_bytes", "ep", "route_key", "suffix", "deadline", "route")

    def __init__(self) -> None:
        self.route: _Route | None = None
        self.tree: Any = None
        self.bound: BoundName | None = None
        self.reason: str | None = None
        self.client: Any = None
        self.local: Any = None
        self.head_bytes = b""
        self.route_key: Any = None
        self.suffix = b""  # the route's own headers (Via, l5d-dst-*), serialised
        self.deadline = b""  # this request's l5d-ctx-deadline line, if it has one
        self.ep: Endpoint | None = None  # picked on the fast path, connected on the slow one


def dispatch(ex: Exchange) -> None:
    """Route one exchange. Synchronous when everything is at hand (binding cached, address
    bound, an idle pooled connection): no task, no extra loop turn. Otherwise the rest runs
    in a task (`_route_slow`). Every failure becomes the matching §1.13 response."""
    try:
        rt = ex.server.runtime
        if rt.telemetry is not None:
            rt.telemetry.begin(ex)
        plan = _prepare(ex)
        if ex.trace is not None:
            ex.trace.plan = plan  # filled in as routing goes: service, then client
        if rt.cached_bind is not None:
            route = plan.route
            binding = route.binding if route is not None else None
            if binding is not None and binding.tree is route.tree:  # type: ignore[union-attr]
                binding.last_used = ex.start  # what the binding cache's cached_bind does
                plan.tree = route.tree  # type: ignore[union-attr]
            else:
                plan.tree = rt.cached_bind(plan.full, plan.name)
            if plan.tree is not None and _choose(ex, plan):
                ep = plan.ep = ex.balancer.pick()
                if ep is not None and not ep.down:
                    idle = ep.idle
                    if ex.body_mode:  # cannot be re-sent once written: no dead connection
                        conn = ep.take_idle(checked=True)
                        if conn is not None:
                            ex.attach(conn, ep, plan)
                            return
                    while idle:
                        conn = idle.pop()
                        if not conn.closed:
                            ex.attach(conn, ep, plan)
                            return
    except RouteError as e:
        ex.respond_error(e)
        return
    except Exception as e:  # a bug or an unexpected failure: fail this request, log it
        _limited.exception((ex.server.label, "routing", type(e)), "%s: routing %s failed",
                           ex.server.label, ex.head.describe())
        ex.respond_error(RouteError(502, str(e) or type(e).__name__, type(e).__name__))
        return
    ex.task = asyncio.get_running_loop().create_task(_route_slow(ex, plan))


async def _route_slow(ex: Exchange, plan: _Plan) -> None:
    try:
        if plan.tree is None:
            plan.tree = await _bind(ex.server.runtime.router, plan)
        if not plan.head_bytes and not _choose(ex, plan):
            await _wait_pending(ex, plan)
        await _connect(ex, plan)
    except RouteError as e:
        ex.respond_error(e)
    except asyncio.CancelledError:
        raise
    except Exception as e:  # a bug or an unexpected failure: fail this request, log it
        _limited.exception((ex.server.label, "routing", type(e)), "%s: routing %s failed",
                           ex.server.label, ex.head.describe())
        ex.respond_error(RouteError(502, str(e) or type(e).__name__, type(e).__name__))


def _prepare(ex: Exchange) -> _Plan:
    """Headers, call depth, local dtab, identification: everything before binding."""
    srv = ex.server
    rt = srv.runtime
    router = rt.router
    head = ex.head
    plan = _Plan()
    plan.fwd = head.headers
    info = ex.info
    if info.bad_target:
        raise RouteError(400, f"Invalid request target: {head.target}", "BadRequest")
    if info.hops > srv.max_call_depth:
        raise RouteError(400, max_call_depth_message(srv.max_call_depth), "MaxCallDepthExceeded")

    local = (local_dtab(info.ctx_dtabs, info.user_dtabs, rt.max_dtab_bytes)
             if (info.ctx_dtabs or info.user_dtabs) else None)
    if local is not None and not len(local):
        local = None
    plan.local = local

    try:
        ident = rt.identify(head)
    except rt.identification_error as e:
        reason = getattr(e, "reason", None) or str(e)
        raise RouteError(400, unknown_destination_message(head.describe(), reason),
                         "UnknownDestination") from e
    plan.name = name = ident.path
    target = ident.target
    if target is not None:
        head.target = target
    plan.route_key = (name.elems, None if local is None else (info.ctx_dtabs, info.user_dtabs))
    route = plan.route = cache_get(rt.routes, plan.route_key)
    plan.service, ex.svc_stats, pol = (route.service if route is not None
                                       else rt.service_for(name))
    ex.policy = pol
    pol.begin(ex.start)  # the retry budget (every service has one, as in Linkerd)
    if ex.replay is not None and int(ex.content_length or 0) > pol.buffer_limit:
        ex.replay = None  # too long to replay: this request is not retried
    if info.deadlines or pol.total_timeout_s is not None:
        _arm_deadline(ex, plan, pol, info.deadlines)
    plan.base = base = router.base_dtab
    plan.full = base if local is None else base + local
    return plan


def _arm_deadline(ex: Exchange, plan: _Plan, pol: Any, incoming_values: tuple[bytes, ...]
                  ) -> None:
    """The request's deadline: the strictest incoming `l5d-ctx-deadline`, tightened by the
    service's totalTimeoutMs; enforced here (expired: 503 at once) and passed on."""
    incoming = deadlines.parse(incoming_values) if incoming_values else None
    now_ns = time.time_ns()
    dl = deadlines.combine(incoming, pol.total_timeout_s, now_ns)
    if dl is None:
        return
    plan.deadline = deadlines.header_line(dl)
    remaining = deadlines.remaining_s(dl, now_ns)
    if remaining <= 0:
        raise RouteError(503, deadlines.expired_message(-remaining * 1000), "DeadlineExceeded",
                         f"service name: {plan.service}")
    total = pol.total_timeout_s
    if total is not None and remaining >= total - 1e-6:
        message = pol.timeout_message  # Finagle's sentence, exactly
    else:  # the caller's deadline is the stricter one
        message = (f"exceeded {remaining * 1000:.0f}.milliseconds left of the request deadline "
                   "(l5d-ctx-deadline) while waiting for a response for the request, "
                   "including retries (if applicable)")
    ex.total_timer = asyncio.get_running_loop().call_later(
        remaining, ex.timed_out, 503, message, "GlobalRequestTimeoutException",
        f"service name: {plan.service}")


async def _bind(router: Any, plan: _Plan) -> Any:
    try:
        return await router.bind(plan.full, plan.name)
    except RouteError:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as e:
        raise RouteError(502, str(e) or type(e).__name__, type(e).__name__) from e


def _no_route(plan: _Plan, reason: str | None) -> RouteError:
    return RouteError(502, no_route_message(plan.service, plan.base, plan.local or (), reason),
                      "NoBrokersAvailableException")


def _new_route(ex: Exchange, plan: _Plan, tree: Any) -> _Route:
    """A route decision for `tree`: leaf, client, the route's own headers; remembered for
    the next requests when the tree is a single leaf (the binding cache's object)."""
    rt = ex.server.runtime
    bound, reason = pick_leaf(tree)
    if bound is None:
        raise _no_route(plan, reason)
    plan.reason = reason
    client = rt.clients.get(bound)
    client_svc = client.stats.services.get(plan.service)
    added = [_VIA, *route_headers(plan.local, plan.service, client.name_bytes, bound.residual)]
    # the same for every request on this route: serialised once, with the route
    suffix = b"".join([b"%s: %s\r\n" % h for h in added])
    binding = None
    if type(tree) is Leaf:
        handle = getattr(rt.router.bindings, "handle", None)
        binding = handle(plan.full, plan.name) if handle is not None else None
    route = _Route(tree, binding, bound, client, client_svc, suffix,
                   (plan.service, ex.svc_stats, ex.policy))
    if type(tree) is Leaf:
        rt.routes.put(plan.route_key, route, route_weight(plan.route_key, suffix))
    return route


def _choose(ex: Exchange, plan: _Plan) -> bool:
    """Leaf, client, and the backend request head. False while the address is Pending.

    For a tree that is a single leaf, the decision (bound name, client, stats, the
    l5d-dst-* headers) is remembered per (name, local dtab) while the binding cache
    hands back the same tree object, so a steady stream of requests skips it.
    """
    route = plan.route
    if plan.client is None:
        tree = plan.tree
        if route is None or route.tree is not tree:
            route = plan.route = _new_route(ex, plan, tree)
        plan.bound = route.bound
        plan.client = route.client
        plan.suffix = route.suffix
        ex.client = route.client
        ex.client_stats = route.client_stats
        ex.client_svc_stats = route.client_svc
        ex.balancer = route.balancer
    client = plan.client
    # The balancer's copy of the address, unless the client was rebound since this route
    # was made (the balancer then follows the new binding's Var, this route the old one).
    bal = route.balancer  # type: ignore[union-attr]
    addr = bal.state if bal._addr is route.addr else route.addr.value  # type: ignore[union-attr]
    if type(addr) is not AddrBound:
        if isinstance(addr, AddrPending):
            return False
        if isinstance(addr, AddrFailed):
            raise RouteError(502, f"{client.name}: {addr.cause}", "AddrFailed")
        if isinstance(addr, AddrNeg):
            raise _no_route(plan, addr.reason or plan.reason)
        raise _no_route(plan, f"{client.name} has no endpoints")
    if not ex.balancer.endpoints:
        raise _no_route(plan, f"{client.name} has no endpoints")

    route.requeue_budget.deposit(ex.start)  # RequeuePolicy.begin, one call less
    # The request line, the caller's headers, the route's (pre-serialised), the deadline,
    # the request id and the framing: one head_bytes.
    head = ex.head
    tail = [plan.suffix]
    if plan.deadline:
        tail.append(plan.deadline)
    if ex.trace is None:
        _add_reqid(tail)
    else:  # the client span's trace context, and the trace id as l5d-reqid
        tail.append(ex.trace.client_headers(plan))
    if ex.body_mode == 0:
        tail.append(b"\r\n\r\n")
    elif ex.body_mode == 1:
        tail.append(b"\r\nContent-Length: ")
        tail.append(ex.content_length)
        tail.append(b"\r\n\r\n")
    else:
        tail.append(b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    plan.head_bytes = request_head_bytes(head.method, head.target, plan.fwd, tail)
    return True


async def _requeue(ex: Exchange, plan: _Plan) -> None:
    try:
        await _connect(ex, plan)
    except RouteError as e:
        ex.respond_error(e)
    except asyncio.CancelledError:
        raise
    except Exception as e:
        _limited.exception((ex.server.label, "requeue", type(e)), "%s: requeue of %s failed",
                           ex.server.label, ex.head.describe())
        ex.respond_error(RouteError(502, str(e) or type(e).__name__, type(e).__name__))


async def _wait_pending(ex: Exchange, plan: _Plan) -> None:
    rt = ex.server.runtime
    addr = await _wait_addr(plan.bound, rt.binding_timeout_s)
    if isinstance(addr, AddrPending):
        raise RouteError(
            502,
            f"Exceeded {rt.binding_timeout_s:g}.seconds binding timeout while connecting "
            f"to {plan.client.name} for name: {plan.service}",
            "BindingTimeoutException",
        )
    if not _choose(ex, plan):
        raise RouteError(502, f"{plan.client.name} is still pending", "BindingTimeoutException")


async def _connect(ex: Exchange, plan: _Plan) -> None:
    """Pick an endpoint and a connection; a refused connection is requeued elsewhere."""
    balancer = ex.balancer
    tried: set[Endpoint] = set()
    last_err: ConnectFailed | None = None
    requeue = plan.client.requeue
    while True:
        if last_err is not None and not requeue.allow(ex.requeues):
            break  # connection failures are requeued elsewhere within the budget only
        if last_err is not None:
            ex.requeues += 1
        ep, plan.ep = plan.ep or balancer.pick(), None
        if ep is None or ep in tried:
            # the balancer keeps choosing a failed one: any other not tried yet
            ep = next((e for e in balancer.all if e not in tried), None)
            if ep is None:
                break
        tried.add(ep)
        conn = ep.take_idle(checked=ex.body_mode != 0)
        if conn is None:
            try:
                conn = await ep.connect()
            except ConnectFailed as e:
                last_err = e
                _limited.info((ex.server.label, "connect", e.endpoint), "%s: %s",
                              ex.server.label, e)
                if ep.accrual is not None:
                    ep.accrual.failure()
                continue
        if ex.finished:  # the client went away while we connected
            ep.release(conn, True)
            return
        ex.attach(conn, ep, plan)
        return
    addr_text = last_err.endpoint if last_err else "(none)"
    if last_err is not None and last_err.tls_failure:
        raise RouteError(502, tls_failed_message(
            last_err.tls_failure, plan.service, plan.client.name,
            [e.hostport for e in balancer.endpoints]), "SslHandshakeException")
    raise RouteError(
        502,
        connection_failed_message(
            addr_text, plan.service, plan.client.name,
            [e.hostport for e in balancer.endpoints],
            str(last_err.error) if last_err else "",
        ),
        "ConnectionFailedException",
    )
