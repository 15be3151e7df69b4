"""Service retries: the compiled per-service policy the exchange consults.

Linkerd retries a request when the service's classifier calls an attempt a
retryable failure, the service's retry budget has a token, and the request
can be replayed: its body (Content-Length only; a chunked request is never
retried) fit the replay buffer, `streamAfterContentLengthKB` of the router
(Linkerd streams, and so cannot retry, anything larger). The backoff delays
each retry; `totalTimeoutMs` bounds all attempts together, body included.

Stats, on the service scope as Linkerd names them: `retries/total`,
`retries/budget_exhausted`, `retries/per_request` (histogram), `retries/budget`
(gauge), `retries/request_stream_too_long` (retryable, but the body was
chunked or outgrew the buffer).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from router.policy import backoff as backoffs
from router.policy import budget as budgets
from router.policy import classifiers
from router.policy.classifiers import ResponseClassifier

DEFAULT_BUFFER_BYTES = 5 * 1024  # Linkerd's streamAfterContentLengthKB default


def total_timeout_message(ms: float) -> str:
    """Finagle's GlobalRequestTimeoutException text, exactly (the seed's 503)."""
    return (f"exceeded {ms:g}.milliseconds to unspecified while waiting for a response for "
            "the request, including retries (if applicable). Remote Info: Not Available")


class ServicePolicy:
    """One service's classifier, timeout, retry budget and backoff, with their stats.

    A service with no `retries` block has Linkerd's defaults (reference §1.7): a
    budget of 20% over 10 s plus 10 retries/s, no backoff; under the default
    classifier (nonRetryable5XX) only responses marked `l5d-retryable: true` are
    retried, but every request still pays into the budget and lands in
    `retries/per_request`, as in Linkerd. Both are cheap (`begin`: two adds within a
    budget slice; `completed` with no retry: two adds on the histogram).
    `active` says whether the service configured retries or a retrying classifier.
    """

    __slots__ = ("name", "classifier", "total_timeout_s", "timeout_message", "budget",
                 "backoff", "constant_delay_s", "buffer_limit", "active", "retries_total",
                 "budget_exhausted", "per_request", "too_long", "fails_5xx", "retry_methods")

    def __init__(self, name: str, scope: Any | None, *,
                 classifier: ResponseClassifier = classifiers.DEFAULT,
                 total_timeout_ms: float | None = None, retries: Any = None,
                 buffer_limit: int = DEFAULT_BUFFER_BYTES) -> None:
        self.name = name
        self.classifier = classifier
        self.fails_5xx = classifier.fails_5xx
        self.retry_methods = classifier.retry_methods
        self.total_timeout_s = total_timeout_ms / 1000.0 if total_timeout_ms else None
        self.timeout_message = (total_timeout_message(total_timeout_ms)
                                if total_timeout_ms else "")
        self.budget = budgets.from_config(getattr(retries, "budget", None))
        self.backoff = backoffs.from_config(getattr(retries, "backoff", None))
        self.constant_delay_s = (self.backoff.min_ms / 1000.0
                                 if self.backoff.kind == "constant" else None)
        self.buffer_limit = buffer_limit
        self.active = retries is not None or bool(classifier.retry_methods)
        if scope is None:
            from router.metrics import Metrics
            scope = Metrics().scope("unused")
        self.retries_total = scope.counter("retries", "total")
        self.budget_exhausted = scope.counter("retries", "budget_exhausted")
        self.too_long = scope.counter("retries", "request_stream_too_long")
        self.per_request = scope.histogram("retries", "per_request")
        budget = self.budget
        scope.gauge(lambda: budget.balance, "retries", "budget")

    # -- the exchange's fixed points
    def begin(self, now: float | None = None) -> None:
        """Before dispatch: the request pays into the budget (`now`: time.monotonic())."""
        self.budget.deposit(now)

    def classify(self, method: str, status: int, retryable_header: bool = False) -> int:
        return self.classifier.classify(method, status, retryable_header)

    def classify_error(self, method: str, retryable_error: bool) -> int:
        return self.classifier.classify_error(method, retryable_error)

    def withdraw(self) -> bool:
        """A retry is about to happen: take a token (or count the refusal)."""
        if self.budget.try_withdraw():
            self.retries_total.value += 1
            return True
        self.budget_exhausted.value += 1
        return False

    def delay_s(self, delays: Iterator[float] | None) -> tuple[float, Iterator[float] | None]:
        """The next backoff delay, and the per-request delay iterator (made on first use)."""
        if self.constant_delay_s is not None:
            return self.constant_delay_s, None
        if delays is None:
            delays = self.backoff.delays()
        return next(delays) / 1000.0, delays

    def completed(self, retries: int) -> None:
        """The request is done: `retries/per_request` (Histogram.add, with the usual no-retry
        case spelled out: bucket 0)."""
        if retries:
            self.per_request.add(retries)
            return
        h = self.per_request
        h.counts[0] += 1
        h.count += 1
        if h.min > 0.0:
            h.min = 0.0
        if h.max < 0.0:
            h.max = 0.0


def compile_service(name: str, scope: Any, cfg: Any, buffer_limit: int) -> ServicePolicy:
    """A ServicePolicy from a ServiceConfig (or any object with the same attributes)."""
    kind = getattr(cfg, "response_classifier", None) or classifiers.DEFAULT_KIND
    classifier = kind if isinstance(kind, ResponseClassifier) else classifiers.build(
        getattr(kind, "kind", kind))
    retries = getattr(cfg, "retries", None) if getattr(cfg, "retries_set", True) else None
    own = getattr(cfg, "retry_buffer_request_bytes", None)  # h2's retryBufferSize
    if own is not None:
        buffer_limit = own
    return ServicePolicy(name, scope, classifier=classifier,
                         total_timeout_ms=getattr(cfg, "total_timeout_ms", None),
                         retries=retries, buffer_limit=buffer_limit)
