"""Client requeues: a connection-level failure is sent again to another endpoint.

A request that provably never reached a backend — the connection was refused,
or a pooled connection turned out dead before any response byte — is safe to
send again whatever its method. Linkerd (Finagle's `RequeueFilter`) does so
within the client's `requeueBudget` (deposit per request, withdraw per
requeue) and at most `MAX_REQUEUES` times per request, with no backoff.
Stats on the client scope: `retries/requeues`, `retries/budget_exhausted`,
`retries/request_limit`, `retries/budget`.
"""

from __future__ import annotations

from typing import Any

from router.policy import budget as budgets

MAX_REQUEUES = 25  # Finagle's per-request requeue cap


class RequeuePolicy:
    __slots__ = ("budget", "requeues", "budget_exhausted", "request_limit")

    def __init__(self, scope: Any, cfg: Any = None) -> None:
        self.budget = budgets.from_config(cfg)
        self.requeues = scope.counter("retries", "requeues")
        self.budget_exhausted = scope.counter("retries", "budget_exhausted")
        self.request_limit = scope.counter("retries", "request_limit")
        budget = self.budget
        scope.gauge(lambda: budget.balance, "retries", "budget")

    def begin(self, now: float | None = None) -> None:
        self.budget.deposit(now)

    def allow(self, done: int) -> bool:
        """May this request be requeued once more (`done` requeues so far)?"""
        if done >= MAX_REQUEUES:
            self.request_limit.value += 1
            return False
        if not self.budget.try_withdraw():
            self.budget_exhausted.value += 1
            return False
        self.requeues.value += 1
        return True
