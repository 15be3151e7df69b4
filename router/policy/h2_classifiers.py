"""HTTP/2 and gRPC response classifiers (`io.l5d.h2.*`, reference §1.8).

Linkerd's H2Classifiers and GrpcClassifiers (linkerd/protocol/h2/.../grpc/
GrpcClassifier.scala): the `io.l5d.h2.<x>5XX` kinds judge the `:status` as the
HTTP kinds do. The gRPC kinds judge the `grpc-status` of the trailers (or of
a Trailers-Only head), so they can only decide when the response ends
(`early` returns None): a code in `successStatusCodes` (default [0]) is a
success; a retryable code (`default` and `compliant`: 14 UNAVAILABLE;
`alwaysRetryable`: every failure; `neverRetryable`: none;
`retryableStatusCodes`: the listed ones) a retryable failure; anything else a
failure. A response without a grpc-status is judged by its `:status`: an
error status is a failure (`compliant` retries 429, 502, 503 and 504), and a
non-error one without a status is a failure too (Linkerd's "otherwise").
`compliant` also retries a stream the backend refused (RST_STREAM
REFUSED_STREAM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dtab.errors import ParamError
from router.policy.classifiers import (
    ALL_METHODS,
    FAILURE,
    IDEMPOTENT_METHODS,
    READ_METHODS,
    RETRYABLE,
    SUCCESS,
    ResponseClassifier,
)

UNAVAILABLE = 14


@dataclass(frozen=True, slots=True)
class H2Classifier(ResponseClassifier):
    grpc: bool = False
    success_codes: frozenset[int] = frozenset({0})
    retryable_codes: frozenset[int] = frozenset()
    retry_all_codes: bool = False
    retryable_statuses: frozenset[int] = frozenset()  # HTTP statuses (compliant)
    retry_refused: bool = False

    def early(self, method: str, status: int) -> int | None:
        """A class from the response head alone, or None: the trailers decide."""
        if self.grpc:
            return None
        return self.classify(method, status)

    def final(self, method: str, status: int, grpc_status: int | None) -> int:
        """The class of a complete response (`grpc_status` from its trailers, or None)."""
        if not self.grpc:
            return self.classify(method, status)
        if grpc_status is not None:
            if grpc_status in self.success_codes:
                return SUCCESS
            if self.retry_all_codes or grpc_status in self.retryable_codes:
                return RETRYABLE
            return FAILURE
        if status in self.retryable_statuses:
            return RETRYABLE
        return FAILURE

    def classify_error(self, method: str, retryable_error: bool) -> int:
        if self.grpc:
            return FAILURE  # only a refused stream (see `refused`) is retryable
        return ResponseClassifier.classify_error(self, method, retryable_error)

    def refused(self) -> int:
        """RST_STREAM REFUSED_STREAM from the backend."""
        return RETRYABLE if self.retry_refused else FAILURE


_HTTP = {
    "io.l5d.h2.nonRetryable5XX": frozenset(),
    "io.l5d.h2.retryableRead5XX": READ_METHODS,
    "io.l5d.h2.retryableIdempotent5XX": IDEMPOTENT_METHODS,
    "io.l5d.h2.retryableAll5XX": ALL_METHODS,
}
_GRPC = ("io.l5d.h2.grpc.default", "io.l5d.h2.grpc.compliant", "io.l5d.h2.grpc.alwaysRetryable",
         "io.l5d.h2.grpc.neverRetryable", "io.l5d.h2.grpc.retryableStatusCodes")
KINDS: tuple[str, ...] = (*_HTTP, "io.l5d.h2.allSuccessful", *_GRPC)
DEFAULT_KIND = "io.l5d.h2.nonRetryable5XX"


def _codes(params: dict[str, Any], key: str) -> frozenset[int]:
    value = params[key]
    if (not isinstance(value, list) or not value
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 16
                       for c in value)):
        raise ParamError(key, f"expected a list of gRPC status codes (0-16), got {value!r}")
    return frozenset(value)


def build(kind: str, params: dict[str, Any] | None = None) -> H2Classifier:
    params = dict(params or {})
    if kind in _HTTP or kind == "io.l5d.h2.allSuccessful":
        if params:
            key = next(iter(params))
            raise ParamError(key, f"unknown key '{key}' for classifier {kind} (it has no params)")
        if kind == "io.l5d.h2.allSuccessful":
            return H2Classifier(kind, all_successful=True)
        return H2Classifier(kind, _HTTP[kind])
    if kind not in _GRPC:
        raise ParamError("kind", f"unknown response classifier {kind!r} "
                         f"(expected one of: {', '.join(KINDS)})")
    known = {"successStatusCodes"} | (
        {"retryableStatusCodes"} if kind.endswith("retryableStatusCodes") else set())
    for key in params:
        if key not in known:
            raise ParamError(key, f"unknown key '{key}' for classifier {kind} (known: "
                             f"{', '.join(sorted(known))})")
    success = _codes(params, "successStatusCodes") if "successStatusCodes" in params \
        else frozenset({0})
    retryable: frozenset[int] = frozenset()
    retry_all = False
    statuses: frozenset[int] = frozenset()
    refused = False
    if kind in ("io.l5d.h2.grpc.default", "io.l5d.h2.grpc.compliant"):
        retryable = frozenset({UNAVAILABLE})
    if kind == "io.l5d.h2.grpc.compliant":
        statuses, refused = frozenset({429, 502, 503, 504}), True
    elif kind == "io.l5d.h2.grpc.alwaysRetryable":
        retry_all = True
    elif kind == "io.l5d.h2.grpc.retryableStatusCodes":
        if "retryableStatusCodes" not in params:
            raise ParamError("retryableStatusCodes", f"{kind} needs retryableStatusCodes, "
                             "e.g. [14, 4]")
        retryable = _codes(params, "retryableStatusCodes")
    # retry_methods makes the service policy active (budget, buffers) when it can retry
    methods = ALL_METHODS if (retryable or retry_all or statuses) else frozenset()
    return H2Classifier(kind, methods, grpc=True, success_codes=success,
                        retryable_codes=retryable, retry_all_codes=retry_all,
                        retryable_statuses=statuses, retry_refused=refused)
