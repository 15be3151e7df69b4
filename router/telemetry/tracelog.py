"""`io.l5d.tracelog`: each recorded span's annotations as one log line, at `level`.

As Linkerd's TracelogTracer: a trace whose sampling was decided (by the zipkin
telemeter, `l5d-sample` or the caller) is logged when sampled; an undecided
one by this telemeter's own `sampleRate` (default 1.0) on the trace id. Lines
go to the `io.l5d.tracelog` logger; client text in them is clipped.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from dtab.bounded import clip
from dtab.errors import ParamError
from router.telemetry.params import Params
from router.telemetry.span import Span

KIND = "io.l5d.tracelog"
# Linkerd's (twitter-util) level names -> Python's
LEVELS = {"ALL": logging.NOTSET, "TRACE": 5, "DEBUG": logging.DEBUG, "INFO": logging.INFO,
          "WARNING": logging.WARNING, "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL,
          "FATAL": logging.CRITICAL, "OFF": logging.CRITICAL + 10}
logger = logging.getLogger("io.l5d.tracelog")


def parse_params(params: dict[str, Any]) -> dict[str, Any]:
    p = Params(params)
    level = p.str("level", "INFO")
    if level.upper() not in LEVELS:
        raise ParamError("level", f"unknown level {level!r}, expected one of: "
                         + ", ".join(LEVELS))
    out = {"sampleRate": p.rate("sampleRate", 1.0), "level": level.upper(),
           "host": p.str("host", None)}
    p.finish()
    return out


class TracelogTelemeter:
    kind = KIND

    def __init__(self, params: dict[str, Any], metrics: Any) -> None:
        from router.telemetry.tracer import Sampler

        p = parse_params(params)
        self.level = LEVELS[p["level"]]
        self.sampler = Sampler(p["sampleRate"])

    def wants(self, trace: Any) -> bool:
        if not logger.isEnabledFor(self.level):
            return False
        sampled = trace.sampled
        return sampled if sampled is not None else self.sampler(trace.trace_id)

    def log_spans(self, spans: list[Span]) -> None:
        for s in spans:
            first, last = ("sr", "ss") if s.kind == "SERVER" else ("cs", "cr")
            start = datetime.datetime.fromtimestamp(s.timestamp_us / 1e6, datetime.UTC)
            tags = " ".join(f"{k}={clip(v, 200)}" for k, v in s.tags.items())
            parent = "-" if s.parent_id is None else f"{s.parent_id:016x}"
            logger.log(self.level, "%s %s.%016x<:%s %s %s %s %s +%dus %s [%s]",
                       start.isoformat(timespec="microseconds"), s.trace_hex, s.span_id, parent,
                       s.local.service, s.kind, s.name, first, s.duration_us, last, tags)
