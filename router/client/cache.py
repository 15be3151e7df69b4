"""One client per bound id: a balancer over its endpoints, their pools, and its stats.

Clients appear when traffic first reaches a bound name and expire after
`idle_s` without requests, taking their metrics with them (Linkerd's
bindingCache `idleTtlSecs`). `snapshot()` is what `/client_state.json` shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from dtab.addr import AddrBound, AddrFailed, AddrNeg, AddrPending, BoundName
from router.client.balancer import Balancer, build_balancer
from router.client.pool import Endpoint
from router.metrics import Scope
from router.policy import accrual as accruals
from router.policy import backoff as backoffs
from router.policy.requeues import RequeuePolicy
from router.session import DEFAULT_CLIENT_SESSION, ClientSession
from router.stats import ClientStats

log = logging.getLogger(__name__)

_KNOWN_KINDS = {"p2c", "roundRobin", "ewma", "heap", "aperture"}


class Client:
    """The traffic side of a bound name."""

    __slots__ = ("id", "name", "name_bytes", "bound", "balancer", "stats", "last_used",
                 "requeues", "attempt_timeout_s", "session", "body_s", "tls", "requeue",
                 "accrual", "_on_connect")

    def __init__(self, bound: BoundName, balancer: Balancer, stats: ClientStats,
                 tls: Any = None) -> None:
        self.id = bound.id
        self.name = bound.id.show
        self.name_bytes = self.name.encode("latin-1")
        self.bound = bound
        self.balancer = balancer
        self.stats = stats
        self.last_used = time.monotonic()
        # client policy (router/policy): requeue budget, failure accrual; see set_policy
        self.requeue = RequeuePolicy(stats.scope)
        self.requeues = self.requeue.requeues
        self.accrual: accruals.FailureAccrual | None = None
        self.attempt_timeout_s: float | None = None  # client requestAttemptTimeoutMs
        self.session: ClientSession = DEFAULT_CLIENT_SESSION  # clientSession
        self.body_s = self.session.body_s
        self.tls = tls  # router.tls.runtime.ClientTlsState when the client's params set tls
        balancer.on_new_endpoint = self._new_endpoint
        for ep in balancer.endpoints:
            self._new_endpoint(ep)
        stats.scope.gauge(lambda: balancer.size, "loadbalancer", "size")
        stats.scope.gauge(lambda: balancer.available, "loadbalancer", "available")
        stats.scope.gauge(
            lambda: sum(e.open_connections for e in balancer.endpoints), "connections"
        )

    def _connected(self, ms: float) -> None:
        self.stats.connect_latency.add(ms)
        self.stats.connects.value += 1

    def _new_endpoint(self, ep: Endpoint) -> None:
        # One bound method per client, not a closure per endpoint (~290 bytes each: a
        # 10,000-endpoint client paid 2.9 MB for them).
        if getattr(self, "_on_connect", None) is None:
            self._on_connect = self._connected
        ep.on_connect = self._on_connect
        if self.accrual is not None:
            self.accrual.attach(ep)
        ep.idle_s, ep.life_s = self.session.idle_s, self.session.life_s
        ep.tls = self.tls

    def set_policy(self, cfg: Any) -> None:
        """`requeueBudget` and `failureAccrual` from the client config (Linkerd's defaults
        when unset: 20% requeues, 5 consecutive failures with jittered 5 s-300 s backoff)."""
        rb = getattr(cfg, "requeue_budget", None)
        if rb is not None:
            self.requeue = RequeuePolicy(self.stats.scope, rb)
            self.requeues = self.requeue.requeues
        fa = getattr(cfg, "failure_accrual", None)
        spec = accruals.DEFAULT
        if fa is not None:
            bo = getattr(fa, "backoff", None)
            backoff = (accruals.DEFAULT_BACKOFF if bo is None or (
                bo.kind == "jittered" and (bo.min_ms, bo.max_ms) == (5000, 300000))
                else backoffs.from_config(bo))
            spec = accruals.build(fa.kind, dict(getattr(fa, "params", {}) or {}), backoff)
        if spec.make is None:
            self.accrual = None
            return
        self.accrual = accruals.FailureAccrual(spec, self.balancer, self.stats.scope, self.name)
        for ep in self.balancer.all:
            self.accrual.attach(ep)

    def state(self) -> dict[str, Any]:
        addr = self.bound.addr.value
        if isinstance(addr, AddrBound):
            st = "bound"
        elif isinstance(addr, AddrNeg):
            st = "neg"
        elif isinstance(addr, AddrPending):
            st = "pending"
        elif isinstance(addr, AddrFailed):
            st = "failed"
        else:
            st = type(addr).__name__.lower()
        out: dict[str, Any] = {"state": st,
                               "addresses": [e.hostport for e in self.balancer.endpoints]}

        if self.tls is not None:
            out["tls"] = self.tls.snapshot()
        return out

    def endpoints_state(self) -> list[dict[str, Any]]:
        """The balancer's view of each endpoint (the dashboard's expanded client row)."""
        return [{"address": e.hostport, "weight": e.weight, "pending": e.pending,
                 "connections": e.open_connections, "idle": len(e.idle),
                 "available": not (e.down or e.dead), "down": e.down,
                 "removedByFailureAccrual": e.dead, "loadEstimateMs": round(e.cost, 3)}
                for e in self.balancer.all]

    def close(self) -> None:
        self.balancer.close()
        self.stats.remove()


class ClientCache:
    """Clients by bound id. `config_for(id)` gives the client params (`.load_balancer`)."""

    def __init__(self, router_scope: Scope, config_for: Callable[[Any], Any] | None = None,
                 idle_s: float = 600.0) -> None:
        self.scope = router_scope
        self.config_for = config_for
        self.idle_s = idle_s
        self.clients: dict[Any, Client] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.on_expire: Callable[[], None] | None = None  # the data path drops its route cache
        self.alpn: tuple[str, ...] = ("http/1.1",)  # what client TLS offers (h2 routers: h2)

    def get(self, bound: BoundName) -> Client:
        client = self.clients.get(bound.id)
        if client is None:
            client = self.clients[bound.id] = self._build(bound)
        elif client.bound.addr is not bound.addr:
            client.bound = bound
            client.balancer.follow(bound.addr)
        return client

    def _build(self, bound: BoundName) -> Client:
        kind, params, cfg = "p2c", None, None
        if self.config_for is not None:
            cfg = self.config_for(bound.id)
            lb = getattr(cfg, "load_balancer", None) if cfg is not None else None
            if isinstance(cfg, dict):
                lb = cfg.get("loadBalancer")
            if lb is not None:
                kind = (lb.get("kind") if isinstance(lb, dict) else getattr(lb, "kind", None)) \
                    or "p2c"
                params = lb
        if kind not in _KNOWN_KINDS:
            log.warning("loadBalancer kind %r for %s is served by p2c", kind, bound.id.show)
        balancer = build_balancer(kind, bound.addr, params)
        stats = ClientStats(self.scope, bound.id.show, self.idle_s)
        stats.services.on_evict = self._evicted
        self._ensure_sweeper()
        tls_cfg = getattr(cfg, "tls", None)
        tls = None
        if tls_cfg is not None:
            from router.tls.runtime import ClientTlsState

            tls = ClientTlsState(tls_cfg, stats.scope, self.alpn)
        client = Client(bound, balancer, stats, tls)
        client.set_policy(cfg)
        ms = getattr(cfg, "request_attempt_timeout_ms", None)
        if ms:
            client.attempt_timeout_s = ms / 1000.0
        session = getattr(cfg, "client_session", None)
        if isinstance(session, ClientSession) and session != client.session:
            client.session, client.body_s = session, session.body_s
            for ep in balancer.endpoints:
                ep.idle_s, ep.life_s = session.idle_s, session.life_s
        return client

    def _evicted(self) -> None:
        if self.on_expire is not None:
            self.on_expire()

    def _ensure_sweeper(self) -> None:
        if self._sweeper is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        interval = max(min(self.idle_s / 2, 60.0), 0.05)

        def sweep() -> None:
            self._sweeper = None
            try:
                self.expire()
            except Exception:  # a bug here must not stop future sweeps silently
                log.exception("client cache sweep failed")
            if self.clients:
                self._sweeper = loop.call_later(interval, sweep)

        self._sweeper = loop.call_later(interval, sweep)

    def expire(self, now: float | None = None) -> list[str]:
        """Close clients idle for longer than `idle_s` (none with requests in flight)."""
        now = time.monotonic() if now is None else now
        dead = [
            cid for cid, c in self.clients.items()
            if now - c.last_used > self.idle_s and not any(e.pending for e in c.balancer.endpoints)
        ]
        names = []
        for cid in dead:
            client = self.clients.pop(cid)
            names.append(client.name)
            client.close()
        expired_services = 0
        for c in self.clients.values():
            expired_services += c.stats.services.expire(now)
        if (names or expired_services) and self.on_expire is not None:
            self.on_expire()
        return names

    def snapshot(self, *, endpoints: bool = False) -> dict[str, dict[str, Any]]:
        """`/client_state.json`; with `endpoints`, each endpoint's balancer state too."""
        if endpoints:
            return {c.name: {**c.state(), "endpoints": c.endpoints_state()}
                    for c in self.clients.values()}
        return {c.name: c.state() for c in self.clients.values()}

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for c in list(self.clients.values()):
            c.close()
        self.clients.clear()
