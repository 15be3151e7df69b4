"""Watches of single Kubernetes objects, shared and kept alive through API outages.

Each `ObjectWatch` follows one named object (an Endpoints or a Service):
list it (which gives a resourceVersion), then watch from that version. The
rules that keep routing right (reference §5 pain points 3 and 6):
- a `410 Gone` (the version was compacted away) means: list again, then watch
  from the new list's version; kubernetes_asyncio's own Watch only retries
  with the same stale version, so we do not use it;
- an unreachable API server or a dropped stream means: retry with jittered
  exponential backoff, resuming from the last version seen, and keep
  publishing the last known object meanwhile (never flip to "absent" just
  because we cannot see);
- a stream that ends cleanly (server-side timeout) is resumed at once.

`WatchHub` shares watches: one per (kind, namespace, name, labelSelector) no
matter how many names or transformers use it, reference-counted, and stopped
`linger` seconds after the last user lets go.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from dtab.bounded import clip
from dtab.observable import Var
from namers.k8s.api import ApiError, ApiTarget, K8sApi

log = logging.getLogger("l5d.k8s")


@dataclass(frozen=True, slots=True)
class Unknown:
    """Not listed yet (first list in flight or the API server unreachable since start)."""


@dataclass(frozen=True, slots=True)
class Present:
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Absent:
    """The API server says the object does not exist."""


ObjState = Unknown | Present | Absent
UNKNOWN = Unknown()
ABSENT = Absent()


@dataclass(frozen=True, slots=True)
class WatchKey:
    kind: str
    namespace: str
    name: str
    label_selector: str | None = None

    @property
    def show(self) -> str:
        sel = f" labelSelector={self.label_selector}" if self.label_selector else ""
        return f"{self.kind} {self.namespace}/{self.name}{sel}"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff: sleep uniform(base, min(max, base * 2**n))."""

    base: float = 0.2
    max: float = 10.0

    def delay(self, attempt: int) -> float:
        cap = min(self.max, self.base * (2 ** min(attempt, 30)))
        return random.uniform(self.base, max(self.base, cap))


class ObjectWatch:
    """Keeps `state` equal to the API server's view of one object, as well as it can."""

    def __init__(
        self, api: K8sApi, key: WatchKey, backoff: Backoff, watch_timeout: int = 300
    ) -> None:
        self.api = api
        self.key = key
        self.backoff = backoff
        self.watch_timeout = watch_timeout
        self.state: Var[ObjState] = Var(UNKNOWN)
        self.resource_version: str | None = None
        self.lists = 0
        self.failures = 0
        # The current outage's last error (None while healthy): /namer_state shows it
        # next to the last known state the namer keeps serving.
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._outage_failures = 0
        self._attempt = 0
        self._last_warning = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"k8s-watch {self.key.show}"
            )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    def _publish(self, obj: dict[str, Any] | None) -> None:
        self.state.set(ABSENT if obj is None else Present(obj))

    async def _list(self) -> None:
        k = self.key
        rv, obj = await self.api.list(k.kind, k.namespace, k.name, k.label_selector)
        self.lists += 1
        self.resource_version = rv
        self._publish(obj)

    async def _watch_once(self) -> int:
        """Stream events from the current version; returns how many arrived."""
        k = self.key
        assert self.resource_version is not None
        n = 0
        async for ev in self.api.watch(
            k.kind, k.namespace, k.name, self.resource_version, k.label_selector,
            timeout_seconds=self.watch_timeout, on_open=self._healthy,
        ):
            n += 1
            etype = ev.get("type")
            obj = ev.get("object") or {}
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if etype in ("ADDED", "MODIFIED"):
                self._publish(obj)
            elif etype == "DELETED":
                self._publish(None)
            elif etype != "BOOKMARK":
                log.warning("k8s: %s: ignoring watch event of type %r", k.show, etype)
            if rv:
                self.resource_version = str(rv)
        return n

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                    self._healthy()
                started = loop.time()
                events = await self._watch_once()
                if events or loop.time() - started > 1.0:
                    continue  # a normal end (the server's watch timeout): resume at once
                # A stream that ended at once with nothing in it: do not spin.
                self._attempt += 1
                await asyncio.sleep(self.backoff.delay(self._attempt))
            except ApiError as e:
                if e.status == 410:
                    log.info("k8s: %s: %s; listing again", self.key.show, e)
                    self.resource_version = None
                    continue
                await self._retry(e)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                await self._retry(e)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug, not an outage: log it loudly, keep trying
                log.exception("k8s: %s: unexpected error in watch", self.key.show)
                await self._retry(e)

    def _healthy(self) -> None:
        """The API server answered: reset the backoff, and say so if it had been failing."""
        self._attempt = 0
        self.last_error = self.last_error_at = None
        if self._outage_failures:
            log.info("k8s: %s: watching again after %d failed attempts",
                     self.key.show, self._outage_failures)
            self._outage_failures = 0

    async def _retry(self, error: BaseException) -> None:
        self.failures += 1
        self._outage_failures += 1
        self.last_error = clip(f"{type(error).__name__}: {error}")
        self.last_error_at = time.time()
        delay = self.backoff.delay(self._attempt)
        self._attempt += 1
        # One warning when an outage starts, then one a minute: the API server
        # being away is one event, not one log line per watch per retry.
        now = asyncio.get_running_loop().time()
        level = logging.DEBUG
        if self._outage_failures == 1 or now - self._last_warning >= 60.0:
            level = logging.WARNING
            self._last_warning = now
        log.log(
            level,
            "k8s: %s via %s failed (%d in a row): %s: %s; retrying in %.2fs, "
            "keeping the last known state",
            self.key.show, self.api.target.show, self._outage_failures,
            type(error).__name__, error, delay,
        )
        await asyncio.sleep(delay)


class WatchLease:
    """One user's hold on a shared watch; `release()` once when done."""

    def __init__(self, hub: WatchHub, watch: ObjectWatch) -> None:
        self._hub = hub
        self.watch = watch
        self._released = False

    @property
    def state(self) -> Var[ObjState]:
        return self.watch.state

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._hub._release(self.watch.key)


class WatchHub:
    """The shared watches of one API server."""

    def __init__(
        self,
        api: K8sApi,
        *,
        backoff: Backoff | None = None,
        linger: float = 5.0,
        watch_timeout: int = 300,
    ) -> None:
        self.api = api
        self.backoff = backoff or Backoff()
        self.linger = linger
        self.watch_timeout = watch_timeout
        self._watches: dict[WatchKey, ObjectWatch] = {}
        self._refs: dict[WatchKey, int] = {}
        self._stops: dict[WatchKey, asyncio.TimerHandle] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def acquire(self, key: WatchKey) -> WatchLease:
        timer = self._stops.pop(key, None)
        if timer is not None:
            timer.cancel()
        watch = self._watches.get(key)
        if watch is None:
            watch = self._watches[key] = ObjectWatch(
                self.api, key, self.backoff, self.watch_timeout
            )
            watch.start()
        self._refs[key] = self._refs.get(key, 0) + 1
        return WatchLease(self, watch)

    def _release(self, key: WatchKey) -> None:
        refs = self._refs.get(key)
        if refs is None:  # the hub closed first (shutdown): nothing left to stop
            return
        self._refs[key] = refs - 1
        if refs > 1:
            return
        del self._refs[key]
        loop = asyncio.get_running_loop()
        self._stops[key] = loop.call_later(self.linger, self._stop_idle, key)

    def _stop_idle(self, key: WatchKey) -> None:
        self._stops.pop(key, None)
        if key in self._refs:
            return
        watch = self._watches.pop(key, None)
        if watch is not None:
            log.info("k8s: stopping idle watch of %s", key.show)
            task = asyncio.get_running_loop().create_task(watch.stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def watching(self) -> list[WatchKey]:
        return [k for k, w in self._watches.items() if w.running]

    async def close(self) -> None:
        for timer in self._stops.values():
            timer.cancel()
        self._stops.clear()
        watches, self._watches = list(self._watches.values()), {}
        self._refs.clear()
        for w in watches:
            await w.stop()
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await self.api.close()


_hubs: dict[tuple[int, ApiTarget], WatchHub] = {}


def shared_hub(target: ApiTarget, **kwargs: Any) -> WatchHub:
    """The process's hub for `target` on the running loop (namer and transformers share it)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), target)
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = WatchHub(K8sApi(target), **kwargs)
    return hub


async def close_shared_hubs() -> None:
    """Stop every shared watch on the running loop (process shutdown, test teardown)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _hubs if k[0] == loop_id]:
        await _hubs.pop(key).close()
