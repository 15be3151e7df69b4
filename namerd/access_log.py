"""`h2AccessLog` on namerd's `io.l5d.mesh` interface: one line per gRPC call, Linkerd's
h2 AccessLogger format (finagle/h2 AccessLogger.scala):

    <authority> <remote host> - - [dd/MM/yyyy:HH:mm:ss Z] "POST /<service>/<method> HTTP/2"
    200 - "-" "<user-agent>"

written when the call ends (a stream when it closes), with the HTTP/2 status
(200: gRPC's own status travels in trailers, as in Linkerd's log). Keys, as Linkerd's
MeshIfaceConfig: `h2AccessLog` (the file), `h2AccessLogRollPolicy` (`never`,
`hourly`, `daily`, or a size such as `100.megabytes`; Linkerd falls back to never on a
policy it cannot read, we refuse it at its line), `h2AccessLogAppend` (true),
`h2AccessLogRotateCount` (-1: keep every rotated file).
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import time
from dataclasses import dataclass
from typing import Any

_SIZE = re.compile(r"(\d+)\.(bytes?|kilobytes?|megabytes?|gigabytes?)")
_UNITS = {"byte": 1, "kilobyte": 1 << 10, "megabyte": 1 << 20, "gigabyte": 1 << 30}
POLICY_EXPECTED = "never, hourly, daily, or a size such as 100.megabytes"


@dataclass(frozen=True)
class AccessLogConfig:
    path: str
    roll_policy: str = "never"
    append: bool = True
    rotate_count: int = -1


def parse_roll_policy(text: str) -> str:
    """The policy normalised; ValueError when it is not one Linkerd's Policy.parse reads."""
    policy = text.strip().lower()
    if policy in ("never", "hourly", "daily") or _SIZE.fullmatch(policy):
        return policy
    raise ValueError(f"roll policy {text!r} is not one of: {POLICY_EXPECTED}")


def parse(obj: Any) -> AccessLogConfig | None:
    """The interface's h2AccessLog* keys (`obj`: router.config's cursor); None when unset."""
    path = obj.str("h2AccessLog", None)
    policy = obj.str("h2AccessLogRollPolicy", "never")
    append = obj.bool("h2AccessLogAppend", True)
    count = obj.int("h2AccessLogRotateCount", -1, lo=-1)
    if not path:
        return None
    try:
        policy = parse_roll_policy(policy)
    except ValueError as e:
        raise obj.err("h2AccessLogRollPolicy", str(e), POLICY_EXPECTED) from None
    return AccessLogConfig(path, policy, append, count)


def open_logger(cfg: AccessLogConfig, name: str) -> logging.Logger:
    """A logger of its own (not propagated) writing bare lines to the file."""
    backups = cfg.rotate_count if cfg.rotate_count >= 0 else 1_000_000
    mode = "a" if cfg.append else "w"
    size = _SIZE.fullmatch(cfg.roll_policy)
    handler: logging.Handler
    if size:
        unit = size.group(2).rstrip("s")
        handler = logging.handlers.RotatingFileHandler(
            cfg.path, mode=mode, maxBytes=int(size.group(1)) * _UNITS[unit],
            backupCount=backups)
    elif cfg.roll_policy in ("hourly", "daily"):
        handler = logging.handlers.TimedRotatingFileHandler(
            cfg.path, when="H" if cfg.roll_policy == "hourly" else "midnight",
            backupCount=backups if cfg.rotate_count >= 0 else 0)
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
