"""HTTP response classifiers (reference §1.8; Linkerd's `ResponseClassifiers.scala`).

A classifier answers, for one attempt, whether it succeeded, failed, or failed
in a way that may be retried. Every kind is wrapped as Linkerd wraps it: a
response carrying `l5d-retryable: true` (the next hop knows the request never
reached its target) is retryable whatever the method, and a chunked request is
never retried (the exchange enforces that, it owns the body). Linkerd counts as
retryable exceptions only timeouts, write failures, closed channels and framing
errors; the exchange passes `retryable_error` for those.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtab.errors import ParamError

SUCCESS, FAILURE, RETRYABLE = 0, 1, 2
CLASS_NAMES = ("success", "failure", "retryable failure")

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
IDEMPOTENT_METHODS = READ_METHODS | {"PUT", "DELETE"}
ALL_METHODS = IDEMPOTENT_METHODS | {"POST", "PATCH"}


@dataclass(frozen=True, slots=True)
class ResponseClassifier:
    """`retry_methods`: methods whose 5XX responses and retryable errors may be retried."""

    kind: str
    retry_methods: frozenset[str] = frozenset()
    all_successful: bool = False

    def classify(self, method: str, status: int, retryable_header: bool = False) -> int:
        """One response head: SUCCESS, FAILURE or RETRYABLE."""
        if self.all_successful:
            return SUCCESS
        if status >= 500:
            if retryable_header or method in self.retry_methods:
                return RETRYABLE
            return FAILURE
        return SUCCESS

    def classify_error(self, method: str, retryable_error: bool) -> int:
        """An attempt that ended without a response (refused, reset, timed out)."""
        if retryable_error and not self.all_successful and method in self.retry_methods:
            return RETRYABLE
        return FAILURE

    @property
    def fails_5xx(self) -> bool:
        return not self.all_successful


DEFAULT_KIND = "io.l5d.http.nonRetryable5XX"

_KINDS: dict[str, ResponseClassifier] = {
    "io.l5d.http.nonRetryable5XX": ResponseClassifier("io.l5d.http.nonRetryable5XX"),
    "io.l5d.http.retryableRead5XX": ResponseClassifier(
        "io.l5d.http.retryableRead5XX", READ_METHODS),
    "io.l5d.http.retryableIdempotent5XX": ResponseClassifier(
        "io.l5d.http.retryableIdempotent5XX", IDEMPOTENT_METHODS),
    "io.l5d.http.retryableAll5XX": ResponseClassifier(
        "io.l5d.http.retryableAll5XX", ALL_METHODS),
    "io.l5d.http.allSuccessful": ResponseClassifier("io.l5d.http.allSuccessful",
                                                    all_successful=True),
}
# Linkerd 0.9's names, still in many example configs.
_ALIASES = {
    "io.l5d.nonRetryable5XX": "io.l5d.http.nonRetryable5XX",
    "io.l5d.retryableRead5XX": "io.l5d.http.retryableRead5XX",
    "io.l5d.retryableIdempotent5XX": "io.l5d.http.retryableIdempotent5XX",
}
KINDS: tuple[str, ...] = tuple(_KINDS) + tuple(_ALIASES)
DEFAULT = _KINDS[DEFAULT_KIND]


def build(kind: str, params: dict | None = None) -> ResponseClassifier:
    """The classifier for a `responseClassifier` block; none of the HTTP kinds has params
    (the io.l5d.h2.* ones are h2_classifiers')."""
    if kind in h2_classifiers.KINDS:
        return h2_classifiers.build(kind, params)
    if params:
        key = next(iter(params))
        raise ParamError(key, f"unknown key '{key}' for classifier {kind} (it has no params)")
    found = _KINDS.get(_ALIASES.get(kind, kind))
    if found is None:
        raise ParamError("kind", f"unknown response classifier {kind!r} "
                         f"(expected one of: {', '.join(KINDS)})")
    return found


def success_class(header_value: bytes) -> bool:
    """An `l5d-success-class` value from the next hop: > 0 is success (Linkerd's reading)."""
    try:
        return float(header_value) > 0.0
    except ValueError:
        return False


# HTTP/2 and gRPC kinds (io.l5d.h2.*) live beside this module and register here.
from router.policy import h2_classifiers  # noqa: E402

KINDS = KINDS + h2_classifiers.KINDS
HTTP_KINDS: tuple[str, ...] = tuple(k for k in KINDS if k not in h2_classifiers.KINDS)
