"""`h2AccessLog` on namerd's `io.l5d.mesh` interface: one line per gRPC call, Linkerd's
h2 AccessLogger format (finagle/h2 AccessLogger.scala):

    <authority> <remote host> - - [dd/MM/yyyy:HH:mm:ss Z] "POST /<service>/<method> HTTP/2"
    200 - "-" "<user-agent>"

written when the call ends (a stream when it closes), with the HTTP/2 status
(200: gRPC's own status travels in trailers, as in Linkerd's log). Keys, as Linkerd's
MeshIfaceConfig: `h2AccessLog` (the file), `h2AccessLogRollPolicy` (`never`,
`hourly`, `daily`, a weekday (weekly), or a size such as `100.megabytes`: the
policies of the routers' access logs, read by the same
`router.telemetry.access_log.parse_roll_policy`; Linkerd falls back to never on a
policy it cannot read, we refuse it at its line), `h2AccessLogAppend` (true),
`h2AccessLogRotateCount` (-1: keep every rotated file).
"""

from __future__ import annotations

import logging
import logging.handlers
import time
from dataclasses import dataclass
from typing import Any

from router.telemetry.access_log import POLICY_EXPECTED, WEEKDAYS, parse_roll_policy


@dataclass(frozen=True)
class AccessLogConfig:
    path: str
    roll_policy: str = "never"
    append: bool = True
    rotate_count: int = -1
    max_bytes: int | None = None  # a size roll policy


def parse(obj: Any) -> AccessLogConfig | None:
    """The interface's h2AccessLog* keys (`obj`: router.config's cursor); None when unset."""
    path = obj.str("h2AccessLog", None)
    policy = obj.str("h2AccessLogRollPolicy", "never")
    append = obj.bool("h2AccessLogAppend", True)
    count = obj.int("h2AccessLogRotateCount", -1, lo=-1)
    if not path:
        return None
    try:
        policy, max_bytes = parse_roll_policy(policy)
    except ValueError as e:
        raise obj.err("h2AccessLogRollPolicy", str(e), POLICY_EXPECTED) from None
    return AccessLogConfig(path, policy, append, count, max_bytes)


def open_logger(cfg: AccessLogConfig, name: str) -> logging.Logger:
    """A logger of its own (not propagated) writing bare lines to the file."""
    backups = cfg.rotate_count if cfg.rotate_count >= 0 else 1_000_000
    mode = "a" if cfg.append else "w"
    handler: logging.Handler
    policy = cfg.roll_policy
    if cfg.max_bytes is not None:
        handler = logging.handlers.RotatingFileHandler(
            cfg.path, mode=mode, maxBytes=cfg.max_bytes, backupCount=backups)
    elif policy in ("hourly", "daily", *WEEKDAYS):
        when = ("H" if policy == "hourly" else "midnight" if policy == "daily"
                else f"W{WEEKDAYS.index(policy)}")  # logging's W0 is Monday, as WEEKDAYS
        handler = logging.handlers.TimedRotatingFileHandler(
            cfg.path, when=when, backupCount=backups if cfg.rotate_count >= 0 else 0)
        if not cfg.append:
            open(cfg.path, "w").close()  # noqa: SIM115 - truncate, as append: false asks
    else:
        handler = logging.FileHandler(cfg.path, mode=mode)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"access_{name}.{id(handler)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def line(authority: str, peer: str, method: str, user_agent: str, status: int = 200) -> str:
    """One access-log line in Linkerd's format (clipped fields: client text is bounded)."""
    stamp = time.strftime("%d/%m/%Y:%H:%M:%S %z")
    return (f'{authority[:200] or "-"} {peer[:100] or "-"} - - [{stamp}] '
            f'"POST {method[:200]} HTTP/2" {status} - "-" "{user_agent[:200] or "-"}"')


def close(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)
