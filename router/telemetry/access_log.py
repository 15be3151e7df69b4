"""`httpAccessLog` (`h2AccessLog` on h2 routers): one line per request in Linkerd's format,
written off the loop.

    host remote - - [dd/MM/yyyy:HH:mm:ss z] "METHOD uri HTTP/1.1" status bytes "referer" "ua"

An h2 router's line is Linkerd's h2 AccessLogger's: the `:authority` as host, a numeric
zone (`+0000`), `HTTP/2`, and `-` for the bytes (a stream's length is not known at its
head); gRPC's own status travels in the trailers, so the status is the HTTP one (200).

The request path formats the line and appends it to a bounded deque; a writer
thread drains it every 100 ms with `os.write`. Nothing on the loop touches the
file, so a slow or full disk never blocks a request: a failed write drops those
lines, counts them (`rt/<router>/access_log/write_failures`), logs at most once
a minute, and the file is reopened on the next round. A full deque drops the
line (`access_log/dropped`).

Rotation keys as Linkerd's (twitter-util's FileHandler): `httpAccessLogRollPolicy`
`never` (default), `hourly`, `daily`, a weekday (`sunday`..`saturday`: weekly) or
a size (`100.megabytes`, `512.kilobytes`, `1.gigabyte`); a rolled file is renamed
`<file>.<yyyyMMdd-HHmmss>`, and `httpAccessLogRotateCount` (default -1: all) keeps
that many. `httpAccessLogAppend` (default true) appends to an existing file.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from dtab.bounded import LogLimiter
from dtab.errors import ParamError

log = logging.getLogger(__name__)

KEYS = ("httpAccessLog", "httpAccessLogRollPolicy", "httpAccessLogAppend",
        "httpAccessLogRotateCount")
H2_KEYS = tuple("h2" + k[4:] for k in KEYS)  # Linkerd's H2Config: h2AccessLog, ...
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SIZE = re.compile(r"(\d+)\.(byte|bytes|kilobyte|kilobytes|megabyte|megabytes|gigabyte|gigabytes)")
_UNITS = {"byte": 1, "kilobyte": 1 << 10, "megabyte": 1 << 20, "gigabyte": 1 << 30}
MAX_PENDING = 10_000  # lines waiting for the writer
FLUSH_S = 0.1
_CLIP = 1024


@dataclass(frozen=True)
class AccessLogConfig:
    path: str
    roll_policy: str = "never"
    append: bool = True
    rotate_count: int = -1
    max_bytes: int | None = None  # a size roll policy


def keys(protocol: str) -> tuple[str, ...]:
    """The access-log keys of a router of `protocol` (Linkerd's names differ for h2)."""
    return H2_KEYS if protocol == "h2" else KEYS


def parse(values: dict[str, Any], protocol: str = "http") -> AccessLogConfig | None:
    """The router's `httpAccessLog*` (h2: `h2AccessLog*`) keys (present ones only);
    ParamError names the key."""
    file_key, policy_key, append_key, count_key = keys(protocol)
    path = values.get(file_key)
    others = [k for k in (policy_key, append_key, count_key) if values.get(k) is not None]
    if path is None:
        if others:
            raise ParamError(others[0], f"set without {file_key} (the file to write)")
        return None
    if not isinstance(path, str) or not path:
        raise ParamError(file_key, f"got {path!r}, expected a file path")
    policy = values.get(policy_key) or "never"
    if not isinstance(policy, str):
        raise ParamError(policy_key, f"got {policy!r}, expected a roll policy")
    try:
        policy, max_bytes = parse_roll_policy(policy)
    except ValueError as e:
        raise ParamError(policy_key, str(e)) from None
    append = values.get(append_key, True)
    if append is None:
        append = True
    if not isinstance(append, bool):
        raise ParamError(append_key, f"got {append!r}, expected true or false")
    count = values.get(count_key, -1)
    if count is None:
        count = -1
    if isinstance(count, bool) or not isinstance(count, int) or count < -1:
        raise ParamError(count_key, f"got {count!r}, expected -1 (keep all) "
                         "or the number of rolled files to keep")
    return AccessLogConfig(path, policy, append, count, max_bytes)


def parse_roll_policy(text: str) -> tuple[str, int | None]:
    """(policy, size in bytes or None) of twitter-util's Policy.parse names; ValueError
    names what is expected. Shared with namerd's `h2AccessLogRollPolicy`."""
    policy = text.strip().lower()
    if policy in ("never", "hourly", "daily", *WEEKDAYS):
        return policy, None
    m = _SIZE.fullmatch(policy)
    if m is None:
        raise ValueError(f"unknown policy {text!r}, expected " + POLICY_EXPECTED)
    max_bytes = int(m.group(1)) * _UNITS[m.group(2).rstrip("s")]
    if max_bytes <= 0:
        raise ValueError("a size roll policy must be above 0")
    return policy, max_bytes


POLICY_EXPECTED = ("never, hourly, daily, a weekday (weekly) or a size such as "
                   "100.megabytes")


def _text(value: bytes | str | None) -> str:
    """Client text for the line: clipped, quotes and control characters escaped."""
    if value is None:
        return "-"
    s = value.decode("latin-1") if isinstance(value, bytes) else value
    s = s[:_CLIP]
    if s.isprintable() and '"' not in s and "\\" not in s:
        return s
    return "".join(c if c.isprintable() and c not in '"\\' else
                   "\\" + c if c in '"\\' else f"\\x{ord(c):02x}" for c in s)


class AccessLog:
    """One router's access log: format on the loop, write in a thread."""

    def __init__(self, cfg: AccessLogConfig, scope: Any) -> None:
        self.cfg = cfg
        self.pending: deque[str] = deque()
        self.lines = scope.counter("lines")
        self.dropped = scope.counter("dropped")
        self.failures = scope.counter("write_failures")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._size = 0
        self._period: int | None = None
        self._first_open = True
        self._limited = LogLimiter(log, 60.0)  # used by the writer thread only
        self._stamp_s = -1
        self._stamp = ""

    # --- the loop side ------------------------------------------------------------
    def request(self, trace: Any, status: int, end_us: int) -> None:
        now_s = end_us // 1_000_000
        version = trace.tel.version
        if now_s != self._stamp_s:
            self._stamp_s = now_s
            # Linkerd: "z" (UTC) in the HTTP/1 line, "Z" (+0000) in the h2 one
            self._stamp = datetime.datetime.fromtimestamp(now_s, datetime.UTC).strftime(
                "%d/%m/%Y:%H:%M:%S +0000" if version == "HTTP/2" else "%d/%m/%Y:%H:%M:%S UTC")
        length = trace.length
        host, referer, agent = trace.log_headers or (None, None, None)
        line = (f'{_text(host)} {trace.peer[0] or "-"} - - [{self._stamp}] '
                f'"{_text(trace.method)} {_text(trace.uri)} {version}" {status} '
                f'{length.decode("latin-1") if length else "-"} "{_text(referer)}" '
                f'"{_text(agent)}"\n')
        if len(self.pending) >= MAX_PENDING:
            self.dropped.value += 1
            return
        self.pending.append(line)
        self.lines.value += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"access log {self.cfg.path}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        self._drain()
        self._close_fd()

    # --- the writer thread -----------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self._drain()

    def _drain(self) -> None:
        pending = self.pending
        if not pending:
            return
        lines = []
        while pending:
            try:
                lines.append(pending.popleft())
            except IndexError:
                break
        data = "".join(lines).encode("utf-8", "replace")
        try:
            self._roll_if_due(len(data))
            fd = self._open()
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            self._size += len(data)
        except OSError as e:
            self.failures.value += len(lines)
            self._limited.warning(("write", e.errno), "access log %s: writing %d lines failed "
                                  "(dropped): %s", self.cfg.path, len(lines), e)
            self._close_fd()
        except Exception:  # a bug: never let the writer thread die silently
            self.failures.value += len(lines)
            self._limited.exception("bug", "access log %s: writer failed", self.cfg.path)

    def _open(self) -> int:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_CREAT
            flags |= os.O_APPEND if (self.cfg.append or not self._first_open) else os.O_TRUNC
            self._fd = os.open(self.cfg.path, flags, 0o644)
            self._first_open = False
            try:
                self._size = os.fstat(self._fd).st_size
            except OSError:
                self._size = 0
            self._period = self._current_period()
        return self._fd

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def _current_period(self) -> int | None:
        policy = self.cfg.roll_policy
        now = time.time()
        if policy == "hourly":
            return int(now // 3600)
        if policy == "daily":
            return int(now // 86400)
        if policy in WEEKDAYS:  # weeks that start on that day (UTC)
            day = int(now // 86400)
            weekday = (day + 3) % 7  # 1970-01-01 was a Thursday (monday == 0)
            return (day - (weekday - WEEKDAYS.index(policy)) % 7) // 7 * 7
        return None

    def _roll_if_due(self, incoming: int) -> None:
        if self._fd is None:
            if self.cfg.max_bytes is None and self.cfg.roll_policy == "never":
                return
            self._open()
        due = False
        if self.cfg.max_bytes is not None:
            due = self._size > 0 and self._size + incoming > self.cfg.max_bytes
        elif self.cfg.roll_policy != "never":
            due = self._current_period() != self._period
        if due:
            self._roll()

    def _roll(self) -> None:
        self._close_fd()
        path = self.cfg.path
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        target = f"{path}.{stamp}"
        n = 1
        while os.path.exists(target):
            target = f"{path}.{stamp}.{n}"
            n += 1
        os.rename(path, target)
        keep = self.cfg.rotate_count
        if keep >= 0:
            directory = os.path.dirname(path) or "."
            base = os.path.basename(path) + "."
            rolled = sorted(f for f in os.listdir(directory)
                            if f.startswith(base) and f[len(base):len(base) + 1].isdigit())
            for old in rolled[:max(len(rolled) - keep, 0)]:
                os.unlink(os.path.join(directory, old))
        self._open()
