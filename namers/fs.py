"""`io.l5d.fs`: service discovery from a directory of files, watched.

`/#/io.l5d.fs/<file>[/residual]` binds to the addresses listed in
`<rootDir>/<file>`, one `ip port [* weight]` per line (blank lines and `#`
comments are skipped; a bad line is logged and skipped). A missing file is
`Neg` with the reason, so the dtab can fall back. A read that yields nothing
usable (the file became a directory or unreadable, or every line is garbage)
keeps the last good addresses and reports the error on `/namer_state`, as
Linkerd does: a half-written file must not take a service down. The files that have been
looked up are polled (stat every `pollIntervalMs`, 1 s by default; re-read
when mtime, size or inode change, which also catches editors that replace the
file) and their Vars updated, so an edit changes routing without a restart.
Polling keeps this portable and cheap: only names in use are checked, and names
come from requests, so the files remembered are bounded by bytes (unobserved ones
go first) and a name that cannot be a file name is never tracked. Log lines are
clipped and rate-limited per file.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from dtab.addr import Addr, AddrBound, Address, AddrFailed, AddrNeg, BoundName
from dtab.bounded import LogLimiter, WeightedLRU, approx_size, clip
from dtab.errors import ParamError
from dtab.nametree import Leaf, Neg
from dtab.observable import Activity, Var
from dtab.path import Path

log = logging.getLogger(__name__)
limited = LogLimiter(log, 60.0)

KIND = "io.l5d.fs"
NAME_MAX = 255  # bytes in one file name (Linux NAME_MAX): longer is never a file
FILES_BYTES = 4 * 1024 * 1024  # remembered files (missing ones too), unobserved first out
FILE_BYTES = 1024
MAX_WEIGHT = 1e9
MAX_FILE_CHARS = 4 * 1024 * 1024  # a disco file, not a data set


def parse_addresses(text: str, source: str) -> frozenset[Address]:
    """`ip port [* weight]` lines; bad lines are logged (with their number) and skipped."""
    addrs, bad = parse_lines(text)
    for n, raw, why in bad[:20]:
        limited.warning((KIND, source, n), "%s:%d: skipping %r: %s", source, n, raw, why)
    return addrs


def parse_lines(text: str) -> tuple[frozenset[Address], list[tuple[int, str, str]]]:
    """The addresses, and the bad lines as (number, line, why)."""
    out = set()
    bad: list[tuple[int, str, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            if len(parts) == 2:
                weight = 1.0
            elif len(parts) == 4 and parts[2] == "*":
                weight = float(parts[3])
                if not (math.isfinite(weight) and 0 <= weight <= MAX_WEIGHT):
                    raise ValueError(f"weight must be a number from 0 to {MAX_WEIGHT:.0f}")
            else:
                raise ValueError("expected 'ip port' or 'ip port * weight'")
            port = int(parts[1])
            if not 0 < port < 65536:
                raise ValueError(f"port {port} out of range")
        except ValueError as e:
            bad.append((n, clip(raw, 100), str(e)))
            continue
        out.add(Address(parts[0], port, weight))
    return frozenset(out), bad


@dataclass
class _File:
    """One watched file: its addresses and every Activity handed out for it."""

    name: str
    id: Path
    path: str
    addr: Var[Addr]
    exists: bool = False
    sig: tuple[int, int, int] | None = None
    activities: dict[Path, Activity] = field(default_factory=dict)
    error: str | None = None  # the last read's problem; the addresses are the last good
    error_at: float | None = None

    @property
    def observed(self) -> bool:
        return self.addr.observed or any(a.observed for a in self.activities.values())

    def fail(self, message: str) -> None:
        """An unusable read: keep the last good state, say why (log and /namer_state)."""
        if message != self.error:
            limited.warning((KIND, self.path), "%s: %s (keeping the last good state)", KIND,
                            message)
        self.error, self.error_at = message, time.time()
        if isinstance(self.addr.value, AddrNeg) and not self.exists:
            self.exists = True  # there is something there, just nothing usable yet
            self.addr.set(AddrFailed(message))
            for residual, act in self.activities.items():
                act.set_ok(self.tree(residual))

    def tree(self, residual: Path) -> Any:
        if not self.exists:
            return Neg.because(f"{KIND}: no file {self.path}")
        return Leaf(BoundName(self.id, self.addr, residual))


class FsNamer:
    def __init__(self, root_dir: str, prefix: Path, poll_interval_s: float = 1.0) -> None:
        self.root_dir = root_dir
        self.prefix = prefix
        self.id_prefix = Path.of("#") + prefix
        self.poll_interval_s = poll_interval_s
        self._files: WeightedLRU[str, _File] = WeightedLRU(
            FILES_BYTES, pinned=lambda _n, f: f.observed)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- the Namer protocol
    def lookup(self, path: Path) -> Activity:
        if not path.elems:
            return Activity.ok(Neg.because(f"{KIND} needs /<file name>, got /"))
        name = path.elems[0]
        residual = path.drop(1)
        if (name in (".", "..") or os.sep in name or "\0" in name
                or len(name.encode("utf-8", "surrogateescape")) > NAME_MAX):
            return Activity.ok(Neg.because(f"{KIND}: {clip(repr(name), 100)} is not a file "
                                           "name"))
        f = self._files.get(name)
        if f is None:
            f = _File(name, self.id_prefix + Path.of(name), os.path.join(self.root_dir, name),
                      Var(AddrNeg()))
            self._refresh(f)
            self._files.put(name, f, FILE_BYTES + 3 * approx_size(name))
            self._ensure_polling()
        act = f.activities.get(residual)
        if act is None:
            act = f.activities[residual] = Activity.ok(f.tree(residual))
        return act

    # -- background work
    async def start(self) -> None:
        self._closed = False
        self._ensure_polling()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def bound_names(self) -> list[str]:
        """Every file in the directory as a bound id (`/bound-names.json`)."""
        try:
            names = sorted(n for n in os.listdir(self.root_dir)
                           if os.path.isfile(os.path.join(self.root_dir, n)))
        except OSError as e:
            limited.warning((KIND, "list"), "%s: cannot list %s: %s", KIND, self.root_dir, e)
            return []
        return [(self.id_prefix + Path.of(n)).show for n in names if not n.startswith(".")]

    def state_json(self) -> dict[str, Any]:
        """Each watched file's addresses; with `error` (and `errorAt`, epoch seconds) when
        its last read was unusable and the addresses shown are the last good ones."""
        out: dict[str, Any] = {}
        for f in self._files.values():
            j = f.addr.value.to_json()
            if f.error is not None:
                j = {**j, "error": f.error, "errorAt": f.error_at}
            out[f.id.show] = j
        return out

    def stats(self) -> dict[str, int]:
        return self._files.stats()

    def _ensure_polling(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet; start() begins polling
        self._task = loop.create_task(self._poll_forever(), name=f"{KIND} poll {self.root_dir}")

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            for f in list(self._files.values()):
                try:
                    self._refresh(f)
                except Exception:  # one bad file must not stop the watch of the others
                    limited.exception((KIND, "refresh", f.path), "%s: refreshing %s failed",
                                      KIND, f.path)

    def poll_now(self) -> None:
        """Check every watched file once (tests and the admin can force a refresh)."""
        for f in list(self._files.values()):
            self._refresh(f)

    def _refresh(self, f: _File) -> None:
        try:
            st = os.stat(f.path)
            sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        except OSError as e:
            f.sig = None
            f.fail(f"cannot stat {f.path}: {e.strerror or e}")
            return
        if sig == f.sig and (sig is not None) == f.exists:
            return
        f.sig = sig
        if sig is None:
            if f.exists:
                limited.info((KIND, f.path), "%s: %s removed", KIND, f.path)
            f.exists = False
            f.error = f.error_at = None
            f.addr.set(AddrNeg(f"{KIND}: no file {f.path}"))
        else:
            try:
                with open(f.path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read(MAX_FILE_CHARS + 1)
            except OSError as e:  # e.g. replaced by a directory, or unreadable
                f.fail(f"cannot read {f.path}: {e.strerror or e}")
                return
            if len(text) > MAX_FILE_CHARS:
                f.fail(f"{f.path} is larger than {MAX_FILE_CHARS} characters")
                return
            addrs, bad = parse_lines(text)
            if bad and not addrs:  # garbage: nothing usable in it
                n, raw, why = bad[0]
                f.fail(f"{f.path}:{n}: {why} (in {raw!r}; {len(bad)} bad lines, no address)")
                return
            for n, raw, why in bad[:20]:
                limited.warning((KIND, f.path, n), "%s:%d: skipping %r: %s", f.path, n, raw, why)
            if not f.exists or AddrBound(addrs) != f.addr.value:
                limited.info((KIND, f.path, "addrs"), "%s: %s -> %s", KIND, f.id.show,
                             ", ".join(sorted(a.hostport for a in addrs)) or "(no addresses)")
            f.exists = True
            f.error = f.error_at = None
            f.addr.set(AddrBound(addrs))
        for residual, act in f.activities.items():
            act.set_ok(f.tree(residual))


def build(params: dict[str, Any]) -> FsNamer:
    """The registry's builder for `kind: io.l5d.fs` (`rootDir` required)."""
    known = {"kind", "prefix", "experimental", "rootDir", "pollIntervalMs"}
    for key in params:
        if key not in known:
            raise ParamError(key, f"unknown parameter for {KIND}; known: "
                             + ", ".join(sorted(known - {"kind"})))
    root = params.get("rootDir")
    if not isinstance(root, str) or not root:
        raise ParamError("rootDir", f"{KIND} needs rootDir, a directory path; got {root!r}")
    poll = params.get("pollIntervalMs", 1000)
    if isinstance(poll, bool) or not isinstance(poll, int) or poll <= 0:
        raise ParamError("pollIntervalMs", f"expected a positive integer, got {poll!r}")
    prefix = params.get("prefix", "/" + KIND)
    try:
        prefix_path = Path.read(prefix) if isinstance(prefix, str) else None
    except ValueError:
        prefix_path = None
    if prefix_path is None or not prefix_path.elems:
        raise ParamError("prefix", f"expected a path such as /{KIND}, got {prefix!r}")
    namer = FsNamer(root, prefix_path, poll / 1000.0)
    if not os.path.isdir(root):
        from namers.registry import HostCheckError

        raise HostCheckError("rootDir", f"{root!r} is not a directory on this machine "
                             f"(relative paths are from the working directory {os.getcwd()})",
                             namer)
    return namer
