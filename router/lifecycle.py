"""Shutting a process down once: what the `Linker` (one process) and the `Supervisor`
(`workers:` above 1) share.

SIGTERM, SIGINT and the admin's `/admin/shutdown` may all ask at once; the first asker
runs the owner's `_stop` (drain for the grace, then stop in reverse order), every later
one waits until it has finished, and `wait()` returns once it has. A failed start stops
through the same door, so nothing is closed twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any


class ShutdownOnce:
    """Mixin: the owner sets `config` (its `admin.shutdownGraceMs` is the default grace)
    and implements `_stop(grace_ms)` and `_shutdown_note(grace_ms)`."""

    config: Any
    admin: Any  # the admin server (router.admin.server), None when not started
    _log: logging.Logger

    def _init_shutdown(self) -> None:
        self.shutting_down = False
        self.stopped = asyncio.Event()  # binds to a loop only when first waited on

    async def wait(self) -> None:
        """Until `shutdown` (or a failed start) has finished."""
        await self.stopped.wait()

    async def shutdown(self, grace_ms: int | None = None, *, quiet: bool = False) -> None:
        """Stop accepting, drain in-flight requests up to `grace_ms` (default the admin's
        `shutdownGraceMs`), stop everything; once, whoever asks first."""
        if grace_ms is None:
            grace_ms = int(self.config.admin.shutdown_grace_ms)
        if not quiet and not self.shutting_down:
            self._log.info("%s", self._shutdown_note(grace_ms))
        await self._stop_once(grace_ms)

    async def close(self) -> None:
        """Stop everything at once, no drain (also what was never started)."""
        await self.shutdown(0, quiet=True)

    async def _stop_once(self, grace_ms: int) -> None:
        if self.shutting_down:
            await self.stopped.wait()
            return
        self.shutting_down = True
        try:
            await self._stop(grace_ms)
        finally:
            self.stopped.set()

    async def _stop(self, grace_ms: int) -> None:
        raise NotImplementedError

    async def _close_admin(self) -> None:
        if self.admin is None:
            return
        try:
            await self.admin.close()
        except Exception:
            self._log.exception("closing the admin server failed")
        self.admin = None

    def _shutdown_note(self, grace_ms: int) -> str:
        return f"shutting down (grace {grace_ms} ms)"
