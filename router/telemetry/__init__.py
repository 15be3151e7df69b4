"""Telemetry that watches requests: tracing, recent requests, access logs.

`Telemetry(config, metrics)` builds the process's telemeters from `telemetry:`
(`io.l5d.zipkin`, `io.l5d.tracelog`, `io.l5d.recentRequests`; prometheus is the
admin's) and, per router, `for_router(router_config)` compiles what that router
feeds into one `tracer.RouterTelemetry`, or None when there is nothing: the
exchange then runs no per-request telemetry code. Each kind validates its own
params (`parse_params`, ParamError -> file:line in the loader).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from router.telemetry import access_log, recent, tracelog, zipkin

if TYPE_CHECKING:  # imported by a router that feeds a telemeter: it imports the data path
    from router.telemetry.tracer import RouterTelemetry

log = logging.getLogger(__name__)

PARSERS = {
    zipkin.KIND: zipkin.parse_params,
    tracelog.KIND: tracelog.parse_params,
    recent.KIND: recent.parse_params,
}
KINDS = tuple(PARSERS)
PROPAGATORS = ("io.l5d.default", "io.l5d.zipkin")


def parse_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """A telemeter's params validated, defaults filled (ParamError names the key)."""
    return PARSERS[kind](params)


class Telemetry:
    """The process's request telemeters and, per router, what its exchanges call."""

    def __init__(self, config: Any, metrics: Any) -> None:
        self.metrics = metrics
        self.zipkins: list[zipkin.ZipkinTelemeter] = []
        self.tracelogs: list[tracelog.TracelogTelemeter] = []
        self.recents: list[recent.RecentRequests] = []
        for t in getattr(config, "telemetry", ()) or ():
            if t.kind == zipkin.KIND:
                self.zipkins.append(zipkin.ZipkinTelemeter(dict(t.params), metrics))
            elif t.kind == tracelog.KIND:
                self.tracelogs.append(tracelog.TracelogTelemeter(dict(t.params), metrics))
            elif t.kind == recent.KIND:
                self.recents.append(recent.RecentRequests(dict(t.params), metrics))
        self.access_logs: list[access_log.AccessLog] = []
        self._started = False

    def for_router(self, rcfg: Any) -> RouterTelemetry | None:
        """What one router's exchanges call, or None when it feeds nothing."""
        alog = None
        alog_cfg = getattr(rcfg, "access_log", None)
        if alog_cfg is not None:
            alog = access_log.AccessLog(alog_cfg,
                                        self.metrics.scope("rt", rcfg.label, "access_log"))
            self.access_logs.append(alog)
            if self._started:
                alog.start()
        if not (self.zipkins or self.tracelogs or self.recents or alog is not None):
            return None
        from router.telemetry.tracer import RouterTelemetry

        version = "HTTP/2" if getattr(rcfg, "protocol", "http") == "h2" else "HTTP/1.1"
        return RouterTelemetry(rcfg.label, getattr(rcfg, "trace_propagator", "io.l5d.default"),
                               self.zipkins, self.tracelogs, self.recents, alog, version)

    async def start(self) -> None:
        self._started = True
        for z in self.zipkins:
            z.start()
        for a in self.access_logs:
            a.start()

    async def aclose(self) -> None:
        for z in self.zipkins:
            try:
                await z.aclose()
            except Exception:
                log.exception("closing the zipkin telemeter failed")
        for a in self.access_logs:
            a.close()


__all__ = ["KINDS", "PROPAGATORS", "Telemetry", "parse_params"]
