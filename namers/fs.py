"""`io.l5d.fs`: service discovery from a directory of files, watched.

`/#/io.l5d.fs/<file>[/residual]` binds to the addresses listed in
`<rootDir>/<file>`, one `ip port [* weight]` per line (blank lines and `#`
comments are skipped; a bad line is logged and skipped). A missing file is
`Neg` with the reason, so the dtab can fall back. The files that have been
looked up are polled (stat every `pollIntervalMs`, 1 s by default; re-read
when mtime, size or inode change, which also catches editors that replace the
file) and their Vars updated, so an edit changes routing without a restart.
Polling keeps this portable and cheap: only names in use are checked.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from dtab.addr import Addr, AddrBound, Address, AddrNeg, BoundName
from dtab.errors import ParamError
from dtab.nametree import Leaf, Neg
from dtab.observable import Activity, Var
from dtab.path import Path

log = logging.getLogger(__name__)

KIND = "io.l5d.fs"


def parse_addresses(text: str, source: str) -> frozenset[Address]:
    """`ip port [* weight]` lines; bad lines are logged (with their number) and skipped."""
    out = set()
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
                if weight < 0:
                    raise ValueError("negative weight")
            else:
                raise ValueError("expected 'ip port' or 'ip port * weight'")
            port = int(parts[1])
            if not 0 < port < 65536:
                raise ValueError(f"port {port} out of range")
        except ValueError as e:
            log.warning("%s:%d: skipping %r: %s", source, n, raw, e)
            continue
        out.add(Address(parts[0], port, weight))
    return frozenset(out)


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
        self._files: dict[str, _File] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- the Namer protocol
    def lookup(self, path: Path) -> Activity:
        if not path.elems:
            return Activity.ok(Neg.because(f"{KIND} needs /<file name>, got /"))
        name = path.elems[0]
        residual = path.drop(1)
        if name in (".", "..") or os.sep in name:
            return Activity.ok(Neg.because(f"{KIND}: {name!r} is not a file name"))
        f = self._files.get(name)
        if f is None:
            f = _File(name, self.id_prefix + Path.of(name), os.path.join(self.root_dir, name),
                      Var(AddrNeg()))
            self._refresh(f)
            self._files[name] = f
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
            log.warning("%s: cannot list %s: %s", KIND, self.root_dir, e)
            return []
        return [(self.id_prefix + Path.of(n)).show for n in names if not n.startswith(".")]

    def state_json(self) -> dict[str, Any]:
        return {f.id.show: f.addr.value.to_json() for f in self._files.values()}

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
                    log.exception("%s: refreshing %s failed", KIND, f.path)

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
            log.warning("%s: cannot stat %s: %s", KIND, f.path, e)
            return
        if sig == f.sig and (sig is not None) == f.exists:
            return
        f.sig = sig
        if sig is None:
            if f.exists:
                log.info("%s: %s removed", KIND, f.path)
            f.exists = False
            f.addr.set(AddrNeg(f"{KIND}: no file {f.path}"))
        else:
            try:
                with open(f.path, encoding="utf-8", errors="replace") as fh:
                    text = fh.read()
            except OSError as e:
                log.warning("%s: cannot read %s: %s", KIND, f.path, e)
                return
            addrs = parse_addresses(text, f.path)
            if not f.exists or AddrBound(addrs) != f.addr.value:
                log.info("%s: %s -> %s", KIND, f.id.show,
                         ", ".join(sorted(a.hostport for a in addrs)) or "(no addresses)")
            f.exists = True
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
    if not os.path.isdir(root):
        raise ParamError("rootDir", f"{root!r} is not a directory (relative paths are from "
                         f"the working directory {os.getcwd()})")
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
    return FsNamer(root, prefix_path, poll / 1000.0)
