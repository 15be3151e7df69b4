"""One h2 stream through the router: identify -> bind -> pick -> one backend stream.

The downstream half (on the accepting connection) and the upstream half (on
the endpoint's one connection) forward to each other frame by frame: headers,
data under both windows (router.h2.peer), trailers, END_STREAM. A RST_STREAM on
either side resets the other side's stream only. The request body received
before a backend is chosen waits unacknowledged (the client's window bounds it);
a copy is kept for a retry while it fits the service's retry buffer.

Classification (router/policy/h2_classifiers.py) needs the gRPC status, which
arrives in the trailers: the stats are recorded when the response ends. When
the service may retry, the response head and up to the response retry buffer
are held until the trailers say whether to retry (Linkerd's
`retryBufferSize.responseBytes`, 16 KB), for at most `classificationTimeoutMs`
(100 ms); a response that outgrows the buffer or outlasts the timeout is sent
on and can no longer be retried (`retries/response_stream_too_long`,
`retries/classification_timeout`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import h2.errors

from dtab.addr import AddrBound, AddrFailed, AddrNeg, AddrPending
from dtab.bounded import LogLimiter
from router.client.pool import ConnectFailed, Endpoint
from router.h2.client import StreamRefused, code_name
from router.h2.errors import (
    GRPC_DEADLINE_EXCEEDED,
    VIA,
    error_response,
    grpc_code,
    grpc_failure_trailers,
)
from router.h2.peer import Half, Headers
from router.http.dtab_headers import local_dtab
from router.http.errors import (
    RouteError,
    connection_failed_message,
    max_call_depth_message,
    no_route_message,
    tls_failed_message,
    unknown_destination_message,
)
from router.http.headers import REQUEST_OWNED, route_headers
from router.http.proxy import _wait_addr, pick_leaf
from router.policy import deadline as deadlines
from router.policy.classifiers import RETRYABLE, SUCCESS
from router.request import RequestHead
from router.stats import record_all

if TYPE_CHECKING:
    from router.h2.server import H2Server, H2ServerConnection

log = logging.getLogger(__name__)
_limited = LogLimiter(log, 10.0)

# Connection-specific headers (RFC 9113 §8.2.2) never cross a hop; h2 refuses most inbound.
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                  b"transfer-encoding", b"upgrade", b"http2-settings"})
RESPONSE_BUFFER_BYTES = 16383  # Linkerd's retryBufferSize.responseBytes default
CLASSIFICATION_TIMEOUT_MS = 100  # Linkerd's classificationTimeoutMs default
MAX_DEADLINES = 16  # l5d-ctx-deadline values read per request (a client cannot make more)
MAX_RETRIES = 25
_REQID_PREFIX = os.urandom(4).hex().encode()
_reqid = 0


def _next_reqid() -> bytes:
    global _reqid
    _reqid = (_reqid + 1) & 0xFFFFFFFF
    return b"%s%08x" % (_REQID_PREFIX, _reqid)


def _grpc_status(headers: Headers) -> int | None:
    for k, v in headers:
        if k == b"grpc-status":
            try:
                return int(v)
            except ValueError:
                return 2  # UNKNOWN
    return None


class H2Exchange:
    """A request stream and the backend stream it was forwarded to."""

    def __init__(self, sconn: H2ServerConnection, sid: int, headers: Headers,
                 ended: bool) -> None:
        self.sconn = sconn
        self.conn = sconn  # router/telemetry reads the peer as `ex.conn.peer`
        self.server: H2Server = sconn.server
        self.down = Half(sconn, sid, self)
        sconn.halves[sid] = self.down
        self.up: Half | None = None
        self.start = time.monotonic()
        self.req_ended = ended
        self.req_trailers: Headers | None = None
        self.body: list[bytes] = []  # received before a backend stream exists
        self.replay: list[bytes] | None = []  # for a retry; None once it outgrew the buffer
        self.replay_bytes = 0
        self.replay_limit = sconn.server.runtime.retry_buffer_bytes
        self.resp_limit = RESPONSE_BUFFER_BYTES
        self.class_timeout_s = CLASSIFICATION_TIMEOUT_MS / 1000.0
        self.class_timer: asyncio.TimerHandle | None = None  # holding the response head
        self.resp_status = 0
        self.resp_head: Headers | None = None  # held (may retry) or None once sent
        self.resp_held: list[bytes] = []
        self.resp_held_bytes = 0
        self.head_sent = False
        self.class_sent = False  # l5d-success-class went out in the response head
        self.resp_ended = False
        self.finished = False
        self.grpc_status: int | None = None
        self.ok = True
        self.retries = 0
        self.requeues = 0  # sent again after a connection the backend never spoke on
        self.task: asyncio.Task[None] | None = None
        self.total_timer: asyncio.TimerHandle | None = None
        self.attempt_timer: asyncio.TimerHandle | None = None
        self.client: Any = None
        self.balancer: Any = None
        self.endpoint: Endpoint | None = None
        self.policy: Any = None
        self.service = ""
        self.svc_stats: Any = None
        self.client_stats: Any = None
        self.client_svc_stats: Any = None
        self.may_retry = False
        self.fwd: Headers = []
        self.suffix: Headers = []
        self.deadline: tuple[bytes, bytes] | None = None  # the l5d-ctx-deadline passed on
        self._tree: Any = None  # the bound tree, once known
        self._bound: Any = None  # the leaf picked from it
        self.trace: Any = None  # router/telemetry's RequestTrace, when the router has telemetry
        self._parse(headers)

    # --- request head ------------------------------------------------------------
    def _parse(self, headers: Headers) -> None:
        clear = self.server.clear_context
        pseudo: dict[bytes, bytes] = {}
        fwd: Headers = []
        ctx_dtabs: list[bytes] = []
        user_dtabs: list[bytes] = []
        grpc = False
        hops = 0
        vias: list[bytes] = []
        deadline_values: list[bytes] = []
        for k, v in headers:
            if k[:1] == b":":
                pseudo[k] = v
                continue
            if k in _CONNECTION_SPECIFIC:
                continue
            if k == b"te" and v.strip().lower() != b"trailers":
                continue
            if k[:4] == b"l5d-":
                if clear or k in REQUEST_OWNED:
                    continue
                if k == b"l5d-dtab":
                    user_dtabs.append(v)
                    continue
                if k == b"l5d-ctx-dtab":
                    ctx_dtabs.append(v)
                    continue
                if k == b"l5d-ctx-deadline":  # read, tightened and passed on (_prepare)
                    if len(deadline_values) < MAX_DEADLINES:
                        deadline_values.append(v)
                    continue
            elif k == b"content-type" and v[:16] == b"application/grpc":
                grpc = True
            elif k == b"via":  # merged into one, this hop's appended (_attach)
                hops += sum(1 for p in v.split(b",") if p.strip())
                vias.append(v)
                continue
            fwd.append((k, v))
        self.via = b"%s, %s" % (b", ".join(vias), VIA) if vias else VIA
        self.deadline_values = deadline_values
        self.grpc = grpc
        self.hops = hops
        self.pseudo = pseudo
        self.fwd = fwd
        self.ctx_dtabs = ctx_dtabs
        self.user_dtabs = user_dtabs
        method = pseudo.get(b":method", b"GET").decode("latin-1")
        target = pseudo.get(b":path", b"/").decode("latin-1")
        # identifiers see the pseudo-headers too (io.l5d.header.token's `:authority`)
        ident_headers = [(k, v) for k, v in pseudo.items()] + fwd
        if b":authority" in pseudo and not any(k == b"host" for k, _ in fwd):
            ident_headers.append((b"host", pseudo[b":authority"]))
        self.head = RequestHead(method, target, "2.0", ident_headers, self.sconn.peer_addr)

    # --- routing -----------------------------------------------------------------
    @property
    def bound(self) -> Any:
        """The bound name routed to (telemetry reads the exchange as its plan)."""
        return self._bound

    def begin(self) -> None:
        """Route the stream: at once when the binding is cached, the address bound and the
        endpoint's connection up (no task, no extra loop turn); else in a task."""
        tel = self.server.runtime.telemetry
        try:
            if tel is not None:
                self._begin_trace(tel)
            if self._route_now():
                return
        except RouteError as e:
            self.respond_error(e)
            return
        except Exception as e:  # a bug or an unexpected failure: fail this stream, log it
            self._route_bug(e)
            return
        self.task = asyncio.get_running_loop().create_task(self._route())

    def _begin_trace(self, tel: Any) -> None:
        """Server span start: the trace context (l5d-ctx-trace or B3, l5d-sample) is taken
        out of the forwarded headers; the access log's host is the `:authority`."""
        tel.begin(self, self.fwd)
        trace = self.trace
        trace.plan = self  # service, client and bound name as routing fills them in
        log_headers = getattr(trace, "log_headers", None)
        if log_headers is not None and b":authority" in self.pseudo:
            trace.log_headers = (self.pseudo[b":authority"], *log_headers[1:])

    def _route_bug(self, e: Exception) -> None:
        _limited.exception((self.server.label, "routing", type(e)), "%s: routing %s failed",
                           self.server.label, self.head.describe()[:300])
        self.respond_error(RouteError(502, str(e) or type(e).__name__, type(e).__name__))

    async def _route(self) -> None:
        try:
            await self._route_slow()
        except RouteError as e:
            self.respond_error(e)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._route_bug(e)

    def _route_now(self) -> bool:
        """identify -> service policy -> cached binding -> leaf -> a live connection."""
        self._prepare()
        rt = self.server.runtime
        self._tree = rt.cached_bind(self._full, self._name) if rt.cached_bind else None
        if self._tree is None or not self._choose():
            return False
        ep = self.balancer.pick()
        conn = rt.h2_endpoints.live(ep) if ep is not None and not ep.down else None
        if conn is None or not conn.has_capacity():
            return False
        self.client.requeue.budget.deposit()
        try:
            self._attach(conn, ep)  # type: ignore[arg-type]
        except StreamRefused:
            return False
        return True

    async def _route_slow(self) -> None:
        router = self.server.runtime.router
        if self._tree is None:
            try:
                self._tree = await router.bind(self._full, self._name)
            except RouteError:
                raise
            except Exception as e:
                raise RouteError(502, str(e) or type(e).__name__, type(e).__name__) from e
        if not self._choose():
            rt = self.server.runtime
            await _wait_addr(self._bound, rt.binding_timeout_s)
            if not self._choose():
                raise RouteError(502, f"Exceeded {rt.binding_timeout_s:g}.seconds binding "
                                 f"timeout while connecting to {self.client.name} for name: "
                                 f"{self.service}", "BindingTimeoutException")
        await self._dispatch()

    def _prepare(self) -> None:
        """Call depth, local dtab, identification, the service's policy and timers."""
        srv = self.server
        rt = srv.runtime
        router = rt.router
        if self.hops > srv.max_call_depth:
            raise RouteError(400, max_call_depth_message(srv.max_call_depth),
                             "MaxCallDepthExceeded")
        local = (local_dtab(self.ctx_dtabs, self.user_dtabs, rt.max_dtab_bytes)
                 if (self.ctx_dtabs or self.user_dtabs) else None)
        if local is not None and not len(local):
            local = None
        try:
            ident = router.identify(self.head)
        except rt.identification_error as e:
            reason = getattr(e, "reason", None) or str(e)
            raise RouteError(400, unknown_destination_message(self.head.describe(), reason),
                             "UnknownDestination") from e
        self._name = ident.path
        if ident.target is not None:
            self.pseudo[b":path"] = ident.target.encode("latin-1")
        self.service, self.svc_stats, pol = rt.service_for(ident.path)
        self.policy = pol
        self.may_retry = pol.active
        self.replay_limit = pol.buffer_limit  # retryBufferSize.requestBytes
        if pol.active:
            pol.begin()
            self.resp_limit, self.class_timeout_s = self._response_buffer(rt, ident.path)
        if self.deadline_values or pol.total_timeout_s is not None:
            self._arm_deadline(pol)
        self._local = local
        self._base = base = router.base_dtab
        self._full = base if local is None else base + local

    def _arm_deadline(self, pol: Any) -> None:
        """The stream's deadline, as HTTP/1's (router/policy/deadline.py): the strictest
        incoming `l5d-ctx-deadline`, tightened by the service's totalTimeoutMs (all attempts
        and the body), passed on; an expired one fails at once (gRPC: DEADLINE_EXCEEDED)."""
        incoming = deadlines.parse(tuple(self.deadline_values)) if self.deadline_values else None
        now_ns = time.time_ns()
        dl = deadlines.combine(incoming, pol.total_timeout_s, now_ns)
        if dl is None:
            return
        self.deadline = (deadlines.KEY, b"%d %d" % dl)
        remaining = deadlines.remaining_s(dl, now_ns)
        if remaining <= 0:
            raise RouteError(503, deadlines.expired_message(-remaining * 1000),
                             "DeadlineExceeded", f"service name: {self.service}")
        message = deadlines.timer_message(remaining, pol.total_timeout_s, pol.timeout_message)
        self.total_timer = asyncio.get_running_loop().call_later(
            remaining, self._timed_out, message, "GlobalRequestTimeoutException")

    def _response_buffer(self, rt: Any, name: Any) -> tuple[int, float]:
        """The service's retryBufferSize.responseBytes and classificationTimeoutMs (in s),
        remembered per service (bounded)."""
        cache: dict[str, tuple[int, float]] = rt.h2_response_buffers
        n = cache.get(self.service)
        if n is None:
            service_config = getattr(rt.router, "service_config", None)
            cfg = service_config(name) if service_config is not None else None
            size = getattr(cfg, "retry_buffer_response_bytes", None)
            ms = getattr(cfg, "classification_timeout_ms", None)
            n = (RESPONSE_BUFFER_BYTES if size is None else size,
                 (CLASSIFICATION_TIMEOUT_MS if ms is None else ms) / 1000.0)
            if len(cache) >= 10_000:
                cache.clear()
            cache[self.service] = n
        return n

    def _choose(self) -> bool:
        """Leaf and client of the bound tree; False while its address is Pending."""
        rt = self.server.runtime
        if self.client is None:
            bound, reason = pick_leaf(self._tree)
            if bound is None:
                raise RouteError(502, no_route_message(self.service, self._base,
                                                       self._local or (), reason),
                                 "NoBrokersAvailableException")
            self._bound = bound
            client = rt.clients.get(bound)
            self.client = client
            self.balancer = client.balancer
            self.client_stats = client.stats
            self.client_svc_stats = client.stats.services.get(self.service)
            self.suffix = route_headers(self._local, self.service, client.name_bytes,
                                        bound.residual)
        client = self.client
        addr = self._bound.addr.value
        if isinstance(addr, AddrPending):
            return False
        if isinstance(addr, AddrFailed):
            raise RouteError(502, f"{client.name}: {addr.cause}", "AddrFailed")
        if not isinstance(addr, AddrBound) or not self.balancer.endpoints:
            why = addr.reason if isinstance(addr, AddrNeg) and addr.reason else (
                f"{client.name} has no endpoints")
            raise RouteError(502, no_route_message(self.service, self._base,
                                                   self._local or (), why),
                             "NoBrokersAvailableException")
        return True

    async def _dispatch(self) -> None:
        """Pick an endpoint and open the backend stream; a refused connect or stream goes to
        another endpoint within the client's requeue budget."""
        balancer = self.balancer
        requeue = self.client.requeue
        requeue.budget.deposit()
        tried: set[Endpoint] = set()
        last: Exception | None = None
        last_ep: Endpoint | None = None
        requeues = 0
        endpoints = self.server.runtime.h2_endpoints
        while True:
            if last is not None:
                if not requeue.allow(requeues):
                    break
                requeues += 1
            ep = balancer.pick()
            if ep is None or ep in tried:
                ep = next((e for e in balancer.all if e not in tried), None)
                if ep is None:
                    break
            tried.add(ep)
            last_ep = ep
            conn: Any = None
            try:
                conn = endpoints.live(ep) or await endpoints.connection(ep)
                # `while`: a woken waiter holds no reservation; a stream arriving meanwhile
                # may have taken the slot (then h2 refuses the open: TooManyStreamsError)
                while not conn.has_capacity():
                    await conn.wait_capacity()
            except (ConnectFailed, StreamRefused) as e:
                last = e
                if conn is not None and not conn.usable:
                    tried.discard(ep)  # lost before this stream was written: a new one may
                if ep.accrual is not None:
                    ep.accrual.failure()
                _limited.info((self.server.label, "connect", ep.hostport), "%s: %s",
                              self.server.label, e)
                continue
            if self.finished:
                return
            try:
                self._attach(conn, ep)
            except StreamRefused as e:
                last = e
                if not conn.usable:  # lost or told to go away before the stream opened
                    tried.discard(ep)
                continue
            return
        if isinstance(last, ConnectFailed) and last.tls_failure:
            raise RouteError(502, tls_failed_message(
                last.tls_failure, self.service, self.client.name,
                [e.hostport for e in balancer.endpoints]), "SslHandshakeException")
        addr_text = (last.endpoint if isinstance(last, ConnectFailed)
                     else last_ep.hostport if last_ep is not None else "(none)")
        raise RouteError(502, connection_failed_message(
            addr_text, self.service, self.client.name, [e.hostport for e in balancer.endpoints],
            str(last.error if isinstance(last, ConnectFailed) else last or "")),
            "ConnectionFailedException")

    def _attach(self, conn: Any, ep: Endpoint) -> None:
        p = self.pseudo
        headers: Headers = [(b":method", p.get(b":method", b"GET")),
                            (b":scheme", p.get(b":scheme", b"http")),
                            (b":authority", p.get(b":authority", b"")),
                            (b":path", p.get(b":path", b"/"))]
        if not headers[2][1]:
            del headers[2]
        headers += self.fwd
        headers.append((b"via", self.via))
        headers += self.suffix
        if self.deadline is not None:
            headers.append(self.deadline)
        trace = self.trace
        if trace is None:
            headers.append((b"l5d-reqid", _next_reqid()))
        else:  # the client span's context and the trace id as l5d-reqid
            headers += _header_pairs(trace.client_headers(self))
            trace.attempt(ep)
        body = (self.body if self.replay is None or not (self.retries or self.requeues)
                else list(self.replay))
        end_now = self.req_ended and not body and self.req_trailers is None
        up = conn.open_stream(self, headers, end_now)
        self.up = up
        self.endpoint = ep
        up.source = self.down
        self.down.source = up
        self.balancer.started(ep)
        timeout_s = self.client.attempt_timeout_s  # requestAttemptTimeoutMs: until the head
        if timeout_s is not None:
            if self.attempt_timer is not None:
                self.attempt_timer.cancel()
            self.attempt_timer = asyncio.get_running_loop().call_later(
                timeout_s, self._attempt_timed_out,
                f"exceeded {timeout_s * 1000:g}.milliseconds to {self.client.name} while "
                "waiting for a response for an individual request, excluding retries")
        self.body = []
        for chunk in body:
            up.send_data(chunk)
        if self.req_ended and not end_now:
            up.send_end(self.req_trailers)

    # --- events from either half (router.h2.peer) ---------------------------------
    def on_data(self, half: Half, data: bytes) -> None:
        if half is self.down:
            if self.replay is not None:
                self.replay_bytes += len(data)
                if self.replay_bytes > self.replay_limit:
                    self.replay = None
                else:
                    self.replay.append(data)
            up = self.up
            if up is not None:
                up.send_data(data)
            else:
                self.body.append(data)  # unacknowledged: the client's window bounds it
            return
        if half is not self.up:
            return
        if self.resp_head is not None:  # held while the response may still be retried
            self.resp_held.append(data)
            self.resp_held_bytes += len(data)
            half.consumed(len(data))
            if self.resp_held_bytes > self.resp_limit:  # Linkerd: response_stream_too_long
                self._count("response_stream_too_long")
                self._release_head()
            return
        self.down.send_data(data)

    def on_headers(self, half: Half, headers: Headers, ended: bool = False) -> None:
        """The response head (from the backend)."""
        if half is not self.up:
            return
        status = 0
        out: Headers = []
        clear = self.server.clear_context
        via: bytes | None = None
        for k, v in headers:
            if k == b":status":
                try:
                    status = int(v)
                except ValueError:
                    status = 502
                continue
            if k in _CONNECTION_SPECIFIC or (clear and k[:4] == b"l5d-"):
                continue
            elif k == b"l5d-success-class":
                continue  # this hop sets its own
            elif k == b"via":  # merged into one, this hop's appended
                via = v if via is None else b"%s, %s" % (via, v)
                continue
            out.append((k, v))
        out.append((b"via", VIA if via is None else b"%s, %s" % (via, VIA)))
        self.resp_status = status
        if self.trace is not None:
            self.trace.response_head(status, None)  # h2: the length is the stream's
        if self.attempt_timer is not None:
            self.attempt_timer.cancel()
            self.attempt_timer = None
        out.insert(0, (b":status", str(status).encode()))
        if ended:  # Trailers-Only: the whole response, judged as such
            self._finish_response(out, self._classify_final(status, headers),
                                  trailers_only=True)
            return
        cls = self._classify_head(status)
        if cls is not None and cls == RETRYABLE and self._retry(f"status {status}"):
            return
        if cls is not None:
            self.ok = cls == SUCCESS
            if not clear:  # known from the head: said there (else in the trailers)
                out.append((b"l5d-success-class", b"1.0" if self.ok else b"0.0"))
                self.class_sent = True
        if self.may_retry and cls is None and self.replay is not None:
            # wait for the trailers, for the buffer to fill or for classificationTimeoutMs
            self.resp_head = out
            self.class_timer = asyncio.get_running_loop().call_later(
                self.class_timeout_s, self._classification_timed_out)
            return
        self._send_head(out)

    def _classification_timed_out(self) -> None:
        """classificationTimeoutMs passed before the response ended (Linkerd's
        ClassifiedRetryFilter): it goes on to the caller as it is, no longer retryable."""
        self.class_timer = None
        if self.resp_head is not None and not self.finished:
            self._count("classification_timeout")
            self._release_head()

    def _count(self, name: str) -> None:
        """`rt/<router>/service/<svc>/retries/<name>`, as Linkerd's h2 retry filter counts."""
        if self.svc_stats is not None:
            self.svc_stats.scope.counter("retries", name).value += 1

    def _classify_head(self, status: int) -> int | None:
        """The class from the response head alone, or None: the trailers decide (gRPC)."""
        pol = self.policy
        classifier = pol.classifier if pol is not None else None
        early = getattr(classifier, "early", None)
        if early is not None:
            return early(self.head.method, status)  # type: ignore[no-any-return]
        if classifier is None:
            return SUCCESS if status < 500 else 1
        return classifier.classify(self.head.method, status)  # type: ignore[no-any-return]

    def _classify_final(self, status: int, trailers: Headers | None) -> int:
        pol = self.policy
        classifier = pol.classifier if pol is not None else None
        grpc = _grpc_status(trailers) if trailers else None
        self.grpc_status = grpc
        final = getattr(classifier, "final", None)
        if final is not None:
            return final(self.head.method, status, grpc)  # type: ignore[no-any-return]
        if classifier is None:
            return SUCCESS if status < 500 else 1
        return classifier.classify(self.head.method, status)  # type: ignore[no-any-return]

    def _send_head(self, out: Headers) -> None:
        self.head_sent = True
        self.sconn.send_headers(self.down, out, False)

    def _release_head(self) -> None:
        """Stop holding the response for a retry: send what is held, stream the rest."""
        if self.class_timer is not None:
            self.class_timer.cancel()
            self.class_timer = None
        head, self.resp_head = self.resp_head, None
        if head is None:
            return
        self._send_head(head)
        held, self.resp_held = self.resp_held, []
        self.resp_held_bytes = 0
        for chunk in held:
            self.down.send_data(chunk)

    def on_trailers(self, half: Half, trailers: Headers) -> None:
        if half is self.down:
            self.req_trailers = [(k, v) for k, v in trailers if k[:4] != b"l5d-"
                                 or not self.server.clear_context]
            return
        if half is not self.up:
            return
        cls = self._classify_final(self.resp_status, trailers)
        clear = self.server.clear_context
        out = [(k, v) for k, v in trailers
               if not (clear and k[:4] == b"l5d-") and k != b"l5d-success-class"]
        self._finish_response(out, cls, trailers_only=False)

    def _finish_response(self, last: Headers, cls: int, *, trailers_only: bool) -> None:
        """The backend's response is complete (trailers, or a Trailers-Only head)."""
        if cls == RETRYABLE and (self.resp_head is not None or
                                 (trailers_only and not self.head_sent)):
            if self._retry(f"grpc-status {self.grpc_status}" if self.grpc_status is not None
                           else f"status {self.resp_status}"):
                return
        self.ok = cls == SUCCESS
        if not self.ok and self.trace is not None and self.grpc_status:
            self.trace.error = f"grpc-status {self.grpc_status}"
        if not self.server.clear_context and not self.class_sent:
            last.append((b"l5d-success-class", b"1.0" if self.ok else b"0.0"))
        self.resp_ended = True
        if trailers_only:
            self.head_sent = True
            self.sconn.send_headers(self.down, last, True)
        else:
            self._release_head()
            self.down.send_end(last)
        self._completed()

    def on_end(self, half: Half) -> None:
        if half is self.down:
            if self.req_ended:  # END_STREAM on the request HEADERS: known since they came
                return
            self.req_ended = True
            up = self.up
            if up is not None:
                up.send_end(self.req_trailers)
            return
        if half is not self.up or self.resp_ended:
            return
        # END_STREAM on DATA, no trailers: classified by status alone
        cls = self._classify_final(self.resp_status, None)
        if cls == RETRYABLE and self.resp_head is not None and self._retry(
                f"status {self.resp_status}"):
            return
        self.ok = cls == SUCCESS
        self.resp_ended = True
        self._release_head()
        self.down.send_end()
        self._completed()

    def on_drained(self, half: Half) -> None:
        """Everything queued on `half`, END_STREAM included, went out."""
        if half is self.down and self.finished:
            self._close_halves()

    def on_reset(self, half: Half, code: int) -> None:
        if half is self.down:  # the caller cancelled: cancel the backend's stream only
            if self.up is not None:
                self.up.reset(code if code else h2.errors.ErrorCodes.CANCEL)
            if not self.finished:
                self._fail_record("Reset" if code else "ChannelClosedException")
            self.down.closed = True
            self._close_halves()
            return
        if half is not self.up:
            return
        if self.resp_ended:  # e.g. RST_STREAM(NO_ERROR) after a complete response
            if code == h2.errors.ErrorCodes.NO_ERROR:
                return
        if code == h2.errors.ErrorCodes.REFUSED_STREAM and not self.head_sent and not (
                self.resp_status) and self._requeue_refused():
            return
        self._upstream_failed(f"backend reset the stream ({code_name(code)})", code)

    def on_lost(self, half: Half, exc: Exception | None) -> None:
        if half is self.down:
            if self.up is not None:
                self.up.reset(h2.errors.ErrorCodes.CANCEL)
            if not self.finished:
                self._fail_record("ChannelClosedException")
            self._close_halves()
            return
        if half is self.up and not self.resp_ended:
            conn: Any = half.peer  # an H2ClientConnection
            ep = self.endpoint.hostport if self.endpoint is not None else "?"
            why = (f"connection to {ep} closed mid-stream{conn.lost_detail()}"
                   + (f": {exc}" if exc else ""))
            if not conn.heard and self._requeue_unheard(why):
                return
            self._upstream_failed(why, None)

    # --- outcomes ---------------------------------------------------------------
    def _attempt_timed_out(self, message: str) -> None:
        self.attempt_timer = None
        if self.finished or self.head_sent or self.resp_status:
            return
        pol = self.policy
        if (pol is not None and pol.classify_error(self.head.method, True) == RETRYABLE
                and self._retry("attempt timeout")):
            return
        self._timed_out(message, "IndividualRequestTimeoutException")

    def _timed_out(self, message: str, cause: str) -> None:
        """A timeout: 503 (gRPC: DEADLINE_EXCEEDED) if nothing went out yet, else the
        response is cut: a gRPC status in the trailers, or a reset."""
        self.total_timer = None
        if self.finished:
            return
        if not self.head_sent:
            self.resp_head = None
            self.respond_error(RouteError(503, message, cause,
                                          f"service name: {self.service}"))
            return
        self._drop_up(failed=True)
        self._fail_record(cause)
        if self.grpc:
            self.down.send_end(grpc_failure_trailers(
                message, clear_context=self.server.clear_context, code=GRPC_DEADLINE_EXCEEDED))
        else:
            self.down.reset(h2.errors.ErrorCodes.CANCEL)
            self._close_halves()

    def _requeue_refused(self) -> bool:
        """The backend refused the stream (GOAWAY, REFUSED_STREAM): nothing was processed,
        so it goes out again, to any endpoint, while the request can be replayed."""
        if self.retries >= MAX_RETRIES or (
                self.replay is None and not (self.req_ended and not self.replay_bytes)):
            return False  # the failure names the endpoint that refused it
        self._drop_up()
        self.retries += 1
        self.task = asyncio.get_running_loop().create_task(self._redispatch())
        return True

    def _requeue_unheard(self, why: str) -> bool:
        """The connection was lost before the backend sent a byte on it, not even the
        SETTINGS an HTTP/2 server must send first (RFC 9113 §3.4): it never took the stream.
        Like HTTP/1's requeue of a connection closed before responding, the request goes
        out again, within the client's requeueBudget, while it can be replayed."""
        if self.finished or self.head_sent or self.resp_status or (
                self.replay is None and not (self.req_ended and not self.replay_bytes)):
            return False
        if not self.client.requeue.allow(self.requeues):
            return False
        self.requeues += 1
        self._drop_up(failed=True)
        _limited.info((self.server.label, "requeue"), "%s: requeue %s after %s",
                      self.server.label, self.head.target[:200], why[:256])
        self.task = asyncio.get_running_loop().create_task(self._redispatch())
        return True

    def _retry(self, why: str) -> bool:
        pol = self.policy
        if (pol is None or self.finished or self.head_sent or self.retries >= MAX_RETRIES
                or not self.req_ended or self.replay is None):
            if pol is not None and self.replay is None and not self.finished:
                pol.too_long.value += 1
            return False
        if not pol.withdraw():
            return False
        if self.resp_status:  # the failed attempt counts in the client's stats (Linkerd's
            now = time.monotonic()  # client stack sits below its retries)
            group = tuple(x for x in (self.client_stats, self.client_svc_stats)
                          if x is not None)
            record_all(group, self.resp_status, (now - self.start) * 1000.0, now, False)
        self._drop_up(failed=True)
        self.retries += 1
        if self.class_timer is not None:
            self.class_timer.cancel()
            self.class_timer = None
        self.resp_head = None
        self.resp_held = []
        self.resp_held_bytes = 0
        self.resp_status = 0
        self.grpc_status = None
        self.class_sent = False
        delay_s, _ = pol.delay_s(None)
        _limited.info((self.server.label, "retry", pol.name), "%s: retry %d of %s after %s",
                      self.server.label, self.retries, pol.name[:256], why[:256])
        loop = asyncio.get_running_loop()
        if delay_s > 0:
            loop.call_later(delay_s, lambda: setattr(
                self, "task", loop.create_task(self._redispatch())))
        else:
            self.task = loop.create_task(self._redispatch())
        return True

    async def _redispatch(self) -> None:
        if self.finished:
            return
        try:
            await self._dispatch()
        except RouteError as e:
            self.respond_error(e)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            _limited.exception((self.server.label, "retry", type(e)), "%s: retry failed",
                               self.server.label)
            self.respond_error(RouteError(502, str(e) or type(e).__name__, type(e).__name__))

    def _drop_up(self, failed: bool = False) -> None:
        up, ep = self.up, self.endpoint
        self.up = self.endpoint = None
        self.down.source = None
        if up is not None:
            up.reset(h2.errors.ErrorCodes.CANCEL)
        if ep is not None:
            self.balancer.finished(ep, (time.monotonic() - self.start) * 1000.0)
            if failed and ep.accrual is not None:
                ep.accrual.failure()

    def _upstream_failed(self, message: str, code: int | None) -> None:
        if self.finished:
            return
        ep = self.endpoint
        self._drop_up(failed=True)
        detail = f"{message} (endpoint {ep.hostport if ep else '?'})"
        pol = self.policy
        if (not self.head_sent and pol is not None
                and pol.classify_error(self.head.method, True) == RETRYABLE
                and self._retry(message)):
            return
        if not self.head_sent:
            self.resp_head = None
            self.respond_error(RouteError(502, detail, "ChannelClosedException"))
            return
        _limited.warning((self.server.label, "failed", message[:64]), "%s %s: %s",
                         self.server.label, self.head.target[:200], detail)
        self.finished = True
        if self.trace is not None:
            self.trace.error = detail
        self._fail_record("ChannelClosedException")
        if self.grpc:  # a gRPC caller learns it from a status, not a broken stream
            self.down.send_end(grpc_failure_trailers(detail,
                                                     clear_context=self.server.clear_context))
        else:
            self.down.reset(code if code is not None else h2.errors.ErrorCodes.INTERNAL_ERROR)
            self._close_halves()

    def respond_error(self, err: RouteError) -> None:
        """A router-made answer (reference §1.13; a gRPC status for gRPC callers)."""
        if self.finished:
            return
        if self.up is not None:
            self._drop_up()
        self.finished = True
        if self.head_sent:
            self._fail_record(err.cause)
            self.down.reset(h2.errors.ErrorCodes.INTERNAL_ERROR)
            self._close_halves()
            return
        _limited.info((self.server.label, "error", err.cause), "%s: %s: %s", self.server.label,
                      self.head.describe()[:300], err.message[:300])
        headers, body = error_response(err, grpc=self.grpc,
                                       clear_context=self.server.clear_context)
        self.head_sent = True
        if self.trace is not None:
            self.trace.error = err.message
            if self.grpc:  # what the caller got: 200 and the gRPC status in the head
                self.grpc_status = grpc_code(err)
        self._fail_record(err.cause, err.status, 200 if self.grpc else err.status)
        if self.grpc:
            self.sconn.send_headers(self.down, headers, True)
        else:
            self.sconn.send_headers(self.down, headers, not body)
            if body:
                self.down.send_data(body)
                self.down.send_end()
        if not self.down.out:
            self._close_halves()

    def _completed(self) -> None:
        self.finished = True
        self._cancel_timers()
        now = time.monotonic()
        latency = (now - self.start) * 1000.0
        ep = self.endpoint
        if ep is not None:
            self.balancer.finished(ep, latency)
            if ep.accrual is not None:
                if self.ok:
                    ep.accrual.success()
                else:
                    ep.accrual.failure()
        if self.client is not None:
            self.client.last_used = now
        group = tuple(s for s in (self.server.stats, self.svc_stats, self.client_stats,
                                  self.client_svc_stats) if s is not None)
        record_all(group, self.resp_status, latency, now, self.ok)
        trace, self.trace = self.trace, None
        if trace is not None:  # server span end
            trace.end(self, self.resp_status, None)
        pol = self.policy
        if pol is not None and (pol.active or self.retries):
            pol.completed(self.retries)
        if not self.down.out:
            self._close_halves()

    def _fail_record(self, cause: str, status: int | None = None,
                     sent: int | None = None) -> None:
        """A failed or cut stream in the stats (`status`: the router's error status) and its
        trace (`sent`: the :status the caller saw, if any)."""
        self.finished = True
        self._cancel_timers()
        now = time.monotonic()
        latency = (now - self.start) * 1000.0
        self.server.stats.record_failure(cause, latency, status)
        trace, self.trace = self.trace, None
        if trace is not None:  # server span end: failed, or reset (no status)
            if sent is None and self.head_sent:  # cut after the response head went out
                sent = self.resp_status or None
            trace.end(self, sent, cause)
        for s in (self.svc_stats, self.client_stats, self.client_svc_stats):
            if s is not None:
                s.record_failure(cause, latency, status if s is self.client_stats else None)
                s.last_used = now
        pol = self.policy
        if pol is not None and (pol.active or self.retries):
            pol.completed(self.retries)

    def _cancel_timers(self) -> None:
        for timer in (self.total_timer, self.attempt_timer, self.class_timer):
            if timer is not None:
                timer.cancel()
        self.total_timer = self.attempt_timer = self.class_timer = None

    def _close_halves(self) -> None:
        self._cancel_timers()
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        up = self.up
        if up is not None and not up.closed:
            if self.req_ended and self.resp_ended:
                up.close()
            else:
                up.reset(h2.errors.ErrorCodes.CANCEL)
        down = self.down
        if not down.closed:
            if down.out:
                return  # still sending; on_drained comes back
            if self.req_ended:
                down.close()
            else:  # the answer is complete: the caller need not send the rest (RFC 9113 8.1)
                down.reset(h2.errors.ErrorCodes.NO_ERROR)
        self.sconn.exchange_done(self)


def _header_pairs(block: bytes) -> Headers:
    """router/telemetry's forwarded context (`name: value` lines, as HTTP/1 writes them)
    as h2 header pairs (lower-case names)."""
    out: Headers = []
    for line in block.split(b"\r\n"):
        if line:
            k, _, v = line.partition(b": ")
            out.append((k.lower(), v))
    return out


