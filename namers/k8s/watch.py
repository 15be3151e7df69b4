"""Shared, multiplexed watches of Kubernetes objects, kept right through API outages.

Users ask for one object by `WatchKey` (kind, namespace, name, labelSelector):
an Endpoints or a Service by name, or a service's EndpointSlices (kind
`endpointslices`, `name` = the service: its slices carry the
`kubernetes.io/service-name` label). Each key is a `Channel`: a `Var[ObjState]`
that every user of the key shares.

Channels are fed by `Feed`s — one list+watch stream each — at three scopes:
- one object (a field or label selector for that one name), while a namespace
  has at most `namespace_threshold` watched keys of that kind;
- one namespace, filtered locally, once it has more;
- the whole cluster, filtered locally, once the streams would exceed
  `max_watches` (8: many namespaces with a few services each).
So the API server sees at most `max_watches` watch connections (or, past that,
one per distinct (kind, labelSelector): label values, never services) and two
more for lists from a router whatever the number of services. Each watch has a
connection of its own and lists have their pool (api.py), so a list never waits
behind watches (issue 15: the client's 100 pooled connections were a hard cliff
at 100 watched services, and a pool of 10 one at 9 label selectors). A channel joining a
wide feed that is already streaming gets its first state from a short list of
just its objects; events older than that list are ignored.

The rules that keep routing right (reference §5 pain points 3 and 6):
- a `410 Gone` (the version was compacted away), an API server whose
  resourceVersion went backwards, or a different cluster store behind it
  (`X-Kubernetes-PF-*-UID` headers changed) means: list again. After every
  broken stream a one-item list (`limit=1`) checks the latter two before resuming;
- `allowWatchBookmarks`: bookmarks move the version forward, so a resume after a
  quiet period does not fall off the compacted history;
- an unreachable API server or a dropped stream means: retry with jittered
  exponential backoff, resuming from the last version seen, and keep
  publishing the last known state meanwhile. The backoff resets only after a
  stream stayed up `HEALTHY_AFTER` seconds, so a server that accepts and drops
  at once is not hammered; warnings go through one rate limiter per hub;
- a stream that ends cleanly (server-side timeout) is resumed at once.

Updates are applied in batches: events change the channels' objects, and one
callback `COALESCE_S` (10 ms) later publishes each changed channel once (a burst
of updates to one service coalesces into its latest state; publishing a long
list of changed channels is itself sliced into 5 ms turns). Event handling yields to the
loop every couple of milliseconds. A large object (a list page or watch line over 128 KB,
an Endpoints object of more than `PIECE_STEPS` addresses) is decoded and converted in
pieces, one per loop turn (pieces.py), reusing the records and Addresses of its
unchanged endpoints. The stream is read ahead while that runs (api.py), and a big event
whose object already has a later event read is not decoded at all (`superseded`): when
updates of a big object come faster than they can be applied, the latest state wins
without the work of the ones in between.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import aiohttp

from dtab.bounded import LogLimiter, clip
from dtab.observable import Var
from namers.k8s import pieces
from namers.k8s.api import ApiError, ApiTarget, K8sApi
from namers.k8s.endpoints import (
    SERVICE_NAME_LABEL,
    EndpointGroup,
    EndpointSet,
    endpoints_groups,
    endpoints_groups_pieces,
    endpoints_size,
    slice_group,
)
from namers.k8s.pieces import PIECE_STEPS

log = logging.getLogger("l5d.k8s")

HEALTHY_AFTER = 2.0  # seconds a stream must stay up before the backoff resets
YIELD_EVERY = 0.002  # seconds of event handling before yielding to the loop
FLUSH_SLICE = 0.005  # seconds of publishing per loop turn
COALESCE_S = 0.01  # changes within this window are published together (latest state wins)
FILL_ONE_BY_ONE = 4  # keys joining a streaming feed at once: more may be one list of its scope
FILL_PARALLEL = 2  # first lists of joining keys in flight at once (the pool's two spare)
ENDPOINT_KINDS = ("endpointslices", "endpoints")
SOURCES = ("auto", "endpointslices", "endpoints")


@dataclass(frozen=True, slots=True)
class Unknown:
    """Not listed yet (first list in flight or the API server unreachable since start)."""


@dataclass(frozen=True, slots=True)
class Present:
    """The object. For endpoint kinds an `EndpointSet`; otherwise the object's dict."""

    obj: Any


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


def _rv_int(rv: Any) -> int | None:
    """resourceVersions are opaque to the API; every server today uses etcd revisions."""
    try:
        return int(rv)
    except (TypeError, ValueError):
        return None


def route_name(kind: str, obj: dict[str, Any]) -> str | None:
    """The key name an object belongs to: a slice's service, else the object's name."""
    meta = obj.get("metadata") or {}
    if kind == "endpointslices":
        return (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return meta.get("name")


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop what no namer reads and can be large (managedFields, last-applied)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        ann = meta.get("annotations")
        if isinstance(ann, dict):
            ann.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    return obj


def is_big(kind: str, obj: dict[str, Any]) -> bool:
    """An object whose decode is done in pieces (`decode_object_pieces`): an Endpoints
    object of more than a piece of addresses. (A slice holds at most 1,000, 100 by
    default: one slice is one piece of work.)"""
    return kind == "endpoints" and endpoints_size(obj) > PIECE_STEPS


def decode_object_pieces(kind: str, obj: dict[str, Any], previous: Any
                         ) -> Generator[None, None, Any]:
    """`decode_object` of a big object, a bounded piece of work per step; `previous` is
    what the channel held for this object (its unchanged endpoints are reused)."""
    assert kind == "endpoints"
    return endpoints_groups_pieces(obj, previous if isinstance(previous, dict) else None)


def decode_object(kind: str, obj: dict[str, Any]) -> Any:
    """What a channel keeps of one object (for endpoint kinds, a dict of groups)."""
    if kind == "endpointslices":
        if obj.get("addressType") == "FQDN":
            return {}  # names, not IPs: nothing to dial
        return {(obj.get("metadata") or {}).get("name", ""): slice_group(obj)}
    if kind == "endpoints":
        return endpoints_groups(obj)
    return _slim(obj)


class Channel:
    """The API server's view of one WatchKey, whichever feed serves it."""

    def __init__(self, hub: WatchHub, key: WatchKey) -> None:
        self.hub = hub
        self.key = key
        self.state: Var[ObjState] = Var(UNKNOWN)
        self.feed: Feed | None = None
        self.objects: dict[str, tuple[int | None, Any]] = {}  # object name -> (rv, decoded)
        self.tombstones: dict[str, int | None] = {}  # deletions seen before the first list
        self.floor: int | None = None  # events at or below this rv are older than our list
        self.known = False
        self.dirty = False
        self.updates = 0  # published changes (tests, bench)

    # -- changes (batched: publish() runs once per loop turn) --------------------------

    def upsert(self, name: str, rv: int | None, decoded: Any) -> None:
        old = self.objects.get(name)
        if rv is not None and (self.floor is not None and rv <= self.floor
                               or old is not None and old[0] is not None and rv <= old[0]):
            return  # older than what we have
        self.objects[name] = (rv, decoded)
        self.tombstones.pop(name, None)
        self.hub._mark(self)

    def remove(self, name: str, rv: int | None) -> None:
        if rv is not None and self.floor is not None and rv <= self.floor:
            return
        if not self.known:
            self.tombstones[name] = rv
        if self.objects.pop(name, None) is not None or self.known:
            self.hub._mark(self)

    def replace(self, objects: dict[str, tuple[int | None, Any]], floor: int | None,
                merge: bool) -> None:
        """The result of a list. `merge`: events may already have arrived for this channel
        (it joined a streaming feed): keep what is newer than the list."""
        if merge:
            for name, (rv, decoded) in self.objects.items():
                if rv is not None and floor is not None and rv > floor:
                    objects[name] = (rv, decoded)
            for name, rv in self.tombstones.items():
                if rv is None or floor is None or rv > floor:
                    objects.pop(name, None)
        self.objects = objects
        self.tombstones = {}
        self.floor = floor
        self.known = True
        self.hub._mark(self)

    def publish(self) -> None:
        self.dirty = False
        if not self.known:
            return
        kind = self.key.kind
        if kind in ENDPOINT_KINDS:
            if not self.objects:
                value: ObjState = ABSENT
            else:
                groups: dict[str, EndpointGroup] = {}
                for _rv, g in self.objects.values():
                    groups.update(g)
                value = Present(EndpointSet(groups, kind))
        else:
            value = Present(next(iter(self.objects.values()))[1]) if self.objects else ABSENT
        before = self.state.value
        self.state.set(value)
        if self.state.value is not before:
            self.updates += 1


class Feed:
    """One list+watch stream, feeding the channels of its scope."""

    def __init__(self, hub: WatchHub, kind: str, namespace: str | None, name: str | None,
                 label_selector: str | None) -> None:
        self.hub = hub
        self.api = hub.api
        self.kind = kind
        self.namespace = namespace
        self.name = name  # one object's feed; None: every object of the scope
        self.label_selector = label_selector
        self.channels: dict[tuple[str, str], Channel] = {}
        self.resource_version: str | None = None
        self.identity: str | None = None
        self.lists = 0
        self.failures = 0
        self.events = 0
        self.superseded = 0  # big events not decoded: a later one of the object was read
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._outage_failures = 0
        self._attempt = 0
        self._probe = False
        self._listing: set[Channel] | None = None
        self._pending: set[Channel] = set()
        self._filler: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def show(self) -> str:
        where = self.namespace if self.namespace is not None else "*"
        what = f"{where}/{self.name}" if self.name else f"{where} (all)"
        sel = f" labelSelector={self.label_selector}" if self.label_selector else ""
        return f"{self.kind} {what}{sel}"

    @property
    def scope(self) -> str:
        return "object" if self.name else ("namespace" if self.namespace else "cluster")

    def _selectors(self, name: str | None) -> tuple[str | None, str | None]:
        """(fieldSelector, labelSelector) for this feed's objects, or one key's."""
        labels = [self.label_selector] if self.label_selector else []
        fields = None
        if name is not None:
            if self.kind == "endpointslices":
                labels.insert(0, f"{SERVICE_NAME_LABEL}={name}")
            else:
                fields = f"metadata.name={name}"
        return fields, (",".join(labels) or None)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"k8s-watch {self.show}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        task, self._task = self._task, None
        fills = [self._filler] if self._filler is not None else []
        self._filler = None
        self._pending.clear()
        for t in [*fills, *([task] if task else [])]:
            t.cancel()
        for t in [*fills, *([task] if task else [])]:
            try:
                await t
            except asyncio.CancelledError:
                pass

    def add(self, ch: Channel) -> None:
        ch.feed = self
        self.channels[(ch.key.namespace, ch.key.name)] = ch
        if self.resource_version is not None and self._listing is None and self.name is None:
            self._fill(ch)  # already streaming: this key needs its own first state

    def remove(self, ch: Channel) -> None:
        if self.channels.get((ch.key.namespace, ch.key.name)) is ch:
            del self.channels[(ch.key.namespace, ch.key.name)]
        self._pending.discard(ch)
        if ch.feed is self:
            ch.feed = None

    # -- listing -----------------------------------------------------------------------

    def _fill(self, ch: Channel) -> None:
        """Give a key that joined this (streaming) feed its first state. One worker per
        feed, so joins hold at most one API connection; a batch of joins is one list of
        the feed's scope, a few are a list of just their objects each."""
        self._pending.add(ch)
        if self._filler is None or self._filler.done():
            self._filler = asyncio.get_running_loop().create_task(
                self._fill_worker(), name=f"k8s-list {self.show}")

    async def _fill_worker(self) -> None:
        attempt = 0
        while self._pending:
            await asyncio.sleep(COALESCE_S)  # let a burst of joins gather
            batch = [c for c in self._pending if c.feed is self]
            self._pending.clear()
            try:
                # A scope list costs what the whole namespace (or cluster) weighs; a key's
                # list what the key weighs. The scope is worth it only for most of its keys.
                if len(batch) > max(FILL_ONE_BY_ONE, len(self.channels) // 2):
                    await self._fill_from_scope(batch)
                else:
                    for i in range(0, len(batch), FILL_PARALLEL):
                        part = batch[i:i + FILL_PARALLEL]
                        results = await asyncio.gather(*(self._fill_one(c) for c in part),
                                                       return_exceptions=True)
                        errors = [r for r in results if isinstance(r, BaseException)]
                        if errors:
                            self._pending.update(c for c in batch[i:] if not c.known)
                            raise errors[0]
                attempt = 0
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                self._pending.update(c for c in batch if not c.known)
                attempt += 1
                delay = self.hub.backoff.delay(attempt)
                self._note_failure(e, delay)
                await asyncio.sleep(delay)

    async def _fill_from_scope(self, batch: list[Channel]) -> None:
        fields, labels = self._selectors(None)
        found: dict[Channel, dict[str, tuple[int | None, Any]]] = {c: {} for c in batch}
        floor = None
        first = True
        want = set(batch)
        async for page in self.api.list_all(self.kind, self.namespace, field_selector=fields,
                                            label_selector=labels):
            if first:
                floor, first = _rv_int(page.resource_version), False
            await self._collect(page.items, lambda c: found.setdefault(c, {}), only_in=want)
        self.lists += 1
        for ch in batch:
            if ch.feed is self:
                ch.replace(found[ch], floor, merge=True)

    async def _fill_one(self, ch: Channel) -> None:
        fields, labels = self._selectors(ch.key.name)
        objects: dict[str, tuple[int | None, Any]] = {}
        floor = None
        first = True
        async for page in self.api.list_all(self.kind, ch.key.namespace,
                                            field_selector=fields, label_selector=labels):
            if first:
                floor, first = _rv_int(page.resource_version), False
            await self._collect(page.items, {ch: objects}.__getitem__, only=ch)
        self.lists += 1
        if ch.feed is self:
            ch.replace(objects, floor, merge=True)

    async def _collect(self, items: list[dict[str, Any]],
                       objects_for: Callable[[Channel], dict[str, Any]],
                       only: Channel | None = None, only_in: set[Channel] | None = None) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for obj in items:
            ch = only if only is not None else self._channel_of(obj)
            if ch is None or (only_in is not None and ch not in only_in):
                continue
            meta = obj.get("metadata") or {}
            name = meta.get("name", "")
            rv = _rv_int(meta.get("resourceVersion"))
            old = ch.objects.get(name)
            if old is not None and old[0] is not None and old[0] == rv:
                decoded = old[1]  # unchanged: keep its caches
            elif is_big(self.kind, obj):
                decoded = await pieces.run(decode_object_pieces(
                    self.kind, obj, old[1] if old is not None else None))
                started = loop.time()
            else:
                decoded = decode_object(self.kind, obj)
            objects_for(ch)[name] = (rv, decoded)
            if loop.time() - started > YIELD_EVERY:
                await asyncio.sleep(0)
                started = loop.time()

    def _channel_of(self, obj: dict[str, Any]) -> Channel | None:
        ns = (obj.get("metadata") or {}).get("namespace") or self.namespace or ""
        name = route_name(self.kind, obj)
        return None if name is None else self.channels.get((ns, name))

    async def _list(self) -> None:
        """List the whole scope: every channel's state replaced by what the server has."""
        self._listing = set(self.channels.values())
        try:
            fields, labels = self._selectors(self.name)
            found: dict[Channel, dict[str, tuple[int | None, Any]]] = {}
            rv = None
            async for page in self.api.list_all(self.kind, self.namespace,
                                                field_selector=fields, label_selector=labels):
                if rv is None:
                    rv = page.resource_version
                    if page.identity is not None:
                        self.identity = page.identity
                await self._collect(page.items, lambda c: found.setdefault(c, {}))
            self.lists += 1
            self.resource_version = rv or "0"
            floor = _rv_int(rv)
            for ch in list(self.channels.values()):
                if ch in self._listing:
                    ch.replace(found.get(ch, {}), floor, merge=False)
                else:  # joined while we were listing: our pages may have missed it
                    self._fill(ch)
        finally:
            self._listing = None

    async def _check_server(self) -> None:
        """After a broken stream: the same store behind the API server, not behind us?"""
        fields, labels = self._selectors(self.name)
        page = await self.api.list_page(self.kind, self.namespace, field_selector=fields,
                                        label_selector=labels, limit=1)
        self._probe = False
        now, ours = _rv_int(page.resource_version), _rv_int(self.resource_version)
        why = None
        if page.identity is not None and self.identity is not None \
                and page.identity != self.identity:
            why = f"the cluster store changed (identity {clip(page.identity, 80)})"
        elif now is not None and ours is not None and now < ours:
            why = f"its resourceVersion went backwards ({ours} -> {now})"
        if page.identity is not None:
            self.identity = page.identity
        if why is not None:
            log.warning("k8s: %s: the API server came back but %s; listing again",
                        self.show, why)
            self.resource_version = None

    # -- watching ----------------------------------------------------------------------

    async def _watch_once(self) -> tuple[int, float]:
        """Stream events from the current version; (events, seconds the stream lived)."""
        assert self.resource_version is not None
        loop = asyncio.get_running_loop()
        opened = loop.time()
        n = 0
        fields, labels = self._selectors(self.name)
        yielded = loop.time()
        try:
            async for ev in self.api.watch(
                self.kind, self.namespace, None, self.resource_version, labels,
                timeout_seconds=self.hub.watch_timeout, on_open=self._opened,
                field_selector=fields,
            ):
                n += 1
                self.events += 1
                big = self._event(ev)
                if big is not None:  # a big object: decoded in pieces, then applied
                    ch, name, rv, obj = big
                    old = ch.objects.get(name)
                    decoded = await pieces.run(decode_object_pieces(
                        self.kind, obj, old[1] if old is not None else None))
                    ch.upsert(name, rv, decoded)
                    await asyncio.sleep(0)  # the next event's read is another loop turn
                    yielded = loop.time()
                if loop.time() - yielded > YIELD_EVERY:
                    await asyncio.sleep(0)
                    yielded = loop.time()
        finally:
            lived = loop.time() - opened
            if lived >= HEALTHY_AFTER:
                self._attempt = 0
        return n, lived

    def _event(self, ev: dict[str, Any]
               ) -> tuple[Channel, str, int | None, dict[str, Any]] | None:
        """Apply one event; a big object's upsert is returned for the caller to decode
        in pieces and apply (`decode_object_pieces`)."""
        etype = ev.get("type")
        obj = ev.get("object") or {}
        meta = obj.get("metadata") or {}
        rv_text = meta.get("resourceVersion")
        rv, ours = _rv_int(rv_text), _rv_int(self.resource_version)
        if rv is not None and ours is not None and rv < ours:
            raise _Backwards(ours, rv)
        if rv_text:
            self.resource_version = str(rv_text)
        if etype == "BOOKMARK":
            return None
        if ev.get("superseded"):  # a later event of the object was already read: skipped
            self.superseded += 1
            return None
        if etype not in ("ADDED", "MODIFIED", "DELETED"):
            self.hub.limiter.warning((self.hub.api.target, "event", etype),
                                     "k8s: %s: ignoring watch event of type %r", self.show,
                                     etype)
            return None
        ch = self._channel_of(obj)
        if ch is None:
            return None  # an object of this scope nobody watches: filtered here
        name = meta.get("name", "")
        if etype == "DELETED":
            ch.remove(name, rv)
            return None
        if is_big(self.kind, obj):
            return ch, name, rv, obj
        ch.upsert(name, rv, decode_object(self.kind, obj))
        return None

    async def _run(self) -> None:
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                    self._opened()
                elif self._probe:
                    await self._check_server()
                    continue
                events, lived = await self._watch_once()
                if lived >= 1.0:
                    continue  # a normal end (the server's watch timeout): resume at once
                # A stream that ended at once: do not spin, whatever it carried.
                self._attempt += 1
                await asyncio.sleep(self.hub.backoff.delay(self._attempt))
            except _Backwards as e:
                log.warning("k8s: %s: the API server's resourceVersion went backwards "
                            "(%d -> %d); listing again", self.show, e.ours, e.theirs)
                self.resource_version = None
                await self._pause()
            except ApiError as e:
                if e.status == 410 or (e.status == 504 and "too large" in str(e).lower()):
                    log.info("k8s: %s: %s; listing again", self.show, clip(str(e)))
                    self.resource_version = None
                    await self._pause()
                    continue
                await self._retry(e)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                await self._retry(e)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug, not an outage: log it loudly, keep trying
                self.hub.limiter.exception((self.hub.api.target, "bug"),
                                           "k8s: %s: unexpected error in watch", self.show)
                await self._retry(e)

    async def _pause(self) -> None:
        """Relist at once the first time; back off if relists keep failing at once."""
        self._attempt += 1
        if self._attempt > 1:
            await asyncio.sleep(self.hub.backoff.delay(self._attempt))

    def _opened(self) -> None:
        """The API server answered: clear the error, say so if it had been failing.
        (The backoff itself resets only once a stream has stayed up: HEALTHY_AFTER.)"""
        self.last_error = self.last_error_at = None
        if self._outage_failures:
            self.hub.limiter.info((self.hub.api.target, "recovered"),
                                  "k8s: %s: watching again after %d failed attempts",
                                  self.show, self._outage_failures)
            self._outage_failures = 0

    def _note_failure(self, error: BaseException, delay: float) -> None:
        self.failures += 1
        self._outage_failures += 1
        self.last_error = clip(f"{type(error).__name__}: {error}")
        self.last_error_at = time.time()
        # The API server being away is one event, not one line per watch per retry:
        # one warning per API server a minute, the rest at debug.
        if not self.hub.limiter.warning(
            (self.hub.api.target, "outage"),
            "k8s: %s via %s failed (%d in a row): %s: %s; retrying in %.2fs, "
            "keeping the last known state",
            self.show, self.api.target.show, self._outage_failures,
            type(error).__name__, error, delay,
        ):
            log.debug("k8s: %s failed (%d in a row): %s", self.show, self._outage_failures,
                      clip(str(error)))

    async def _retry(self, error: BaseException) -> None:
        delay = self.hub.backoff.delay(self._attempt)
        self._attempt += 1
        self._probe = self.resource_version is not None
        self._note_failure(error, delay)
        await asyncio.sleep(delay)


class _Backwards(Exception):
    def __init__(self, ours: int, theirs: int) -> None:
        super().__init__(f"{ours} -> {theirs}")
        self.ours = ours
        self.theirs = theirs


# What older code and tests call a watch of one object.
ObjectWatch = Feed


class WatchLease:
    """One user's hold on a shared channel; `release()` once when done."""

    def __init__(self, hub: WatchHub, channel: Channel) -> None:
        self._hub = hub
        self.channel = channel
        self._released = False

    @property
    def state(self) -> Var[ObjState]:
        return self.channel.state

    @property
    def watch(self) -> Feed | None:
        """The feed serving this key now (its `last_error` is the outage's)."""
        return self.channel.feed

    @property
    def last_error(self) -> tuple[str, float] | None:
        f = self.channel.feed
        if f is not None and f.last_error and f.last_error_at is not None:
            return f.last_error, f.last_error_at
        return None

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._hub._release(self.channel.key)


class EndpointsLease:
    """A service's endpoints from EndpointSlices or Endpoints, whichever `source` says
    (`auto`: API discovery decides, once per hub). `state` is Unknown until then."""

    def __init__(self, hub: WatchHub, namespace: str, name: str,
                 label_selector: str | None, source: str) -> None:
        self.hub = hub
        self.namespace = namespace
        self.name = name
        self.label_selector = label_selector
        self.state: Var[ObjState] = Var(UNKNOWN)
        self.lease: WatchLease | None = None
        self._unsub: Callable[[], None] | None = None
        self._released = False
        kind = hub.endpoint_kind(source)
        if kind is not None:
            self._attach(kind)
        else:
            hub._on_discovered(self._attach)

    @property
    def kind(self) -> str | None:
        return self.lease.channel.key.kind if self.lease is not None else None

    def _attach(self, kind: str) -> None:
        if self._released or self.lease is not None:
            return
        self.lease = self.hub.acquire(WatchKey(kind, self.namespace, self.name,
                                               self.label_selector))
        self._unsub = self.lease.state.observe(self.state.set)
        self.state.set(self.lease.state.value)

    @property
    def last_error(self) -> tuple[str, float] | None:
        if self.lease is not None:
            return self.lease.last_error
        err = self.hub.discovery_error
        return (err, self.hub.discovery_error_at or 0.0) if err else None

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.hub._forget_discovery(self._attach)
        if self._unsub is not None:
            self._unsub()
        if self.lease is not None:
            self.lease.release()


class WatchHub:
    """The shared channels and feeds of one API server."""

    def __init__(
        self,
        api: K8sApi,
        *,
        backoff: Backoff | None = None,
        linger: float = 5.0,
        watch_timeout: int = 300,
        namespace_threshold: int = 4,
        max_watches: int = 8,
    ) -> None:
        self.api = api
        self.backoff = backoff or Backoff()
        self.linger = linger
        self.watch_timeout = watch_timeout
        self.namespace_threshold = namespace_threshold
        self.max_watches = max_watches
        # The connections to the API server: one per feed (at most max_watches, or one
        # per (kind, labelSelector) past that), plus the API client's list pool (two:
        # one list worker per wide feed, first lists of new keys, checks after
        # outages), where lists wait for a free connection rather than open one per key.
        self.limiter = LogLimiter(log, 60.0)
        self._channels: dict[WatchKey, Channel] = {}
        self._refs: dict[WatchKey, int] = {}
        self._stops: dict[WatchKey, asyncio.TimerHandle] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._feeds: dict[tuple[str, str | None, str | None, str | None], Feed] = {}
        self._dirty: list[Channel] = []
        self._flush_handle: asyncio.Handle | None = None
        self._discovered: str | None = None
        self._discovery: asyncio.Task[None] | None = None
        self._discovery_waiters: list[Callable[[str], None]] = []
        self.discovery_error: str | None = None
        self.discovery_error_at: float | None = None

    # -- keys --------------------------------------------------------------------------

    def acquire(self, key: WatchKey) -> WatchLease:
        timer = self._stops.pop(key, None)
        if timer is not None:
            timer.cancel()
        ch = self._channels.get(key)
        if ch is None:
            ch = self._channels[key] = Channel(self, key)
            self._assign(ch)
        self._refs[key] = self._refs.get(key, 0) + 1
        return WatchLease(self, ch)

    def acquire_endpoints(self, namespace: str, name: str, label_selector: str | None = None,
                          source: str = "auto") -> EndpointsLease:
        return EndpointsLease(self, namespace, name, label_selector, source)

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
        ch = self._channels.pop(key, None)
        if ch is None:
            return
        feed = ch.feed
        if feed is not None:
            feed.remove(ch)
            if not feed.channels:
                log.info("k8s: stopping idle watch of %s", feed.show)
                self._drop_feed(feed)

    # -- which feed serves a key -------------------------------------------------------

    def _feed_key(self, f: Feed) -> tuple[str, str | None, str | None, str | None]:
        return (f.kind, f.namespace, f.name, f.label_selector)

    def _new_feed(self, kind: str, ns: str | None, name: str | None, sel: str | None,
                  channels: list[Channel]) -> Feed:
        feed = Feed(self, kind, ns, name, sel)
        for ch in channels:
            old = ch.feed
            if old is not None:
                old.remove(ch)
                if not old.channels:
                    self._drop_feed(old)
            feed.add(ch)
        self._feeds[self._feed_key(feed)] = feed
        feed.start()
        return feed

    def _drop_feed(self, feed: Feed) -> None:
        if self._feeds.get(self._feed_key(feed)) is feed:
            del self._feeds[self._feed_key(feed)]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(feed.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _assign(self, ch: Channel) -> None:
        k = ch.key
        wide = (self._feeds.get((k.kind, None, None, k.label_selector))
                or self._feeds.get((k.kind, k.namespace, None, k.label_selector)))
        if wide is not None:
            wide.add(ch)
            return
        group = [c for c in self._channels.values()
                 if c.key.kind == k.kind and c.key.namespace == k.namespace
                 and c.key.label_selector == k.label_selector]
        if len(group) > self.namespace_threshold:
            log.info("k8s: %d %s watched in namespace %s: one namespace-wide watch for them",
                     len(group), k.kind, k.namespace)
            self._new_feed(k.kind, k.namespace, None, k.label_selector, group)
        else:
            self._new_feed(k.kind, k.namespace, k.name, k.label_selector, [ch])
        self._enforce_budget()

    def _enforce_budget(self) -> None:
        while len(self._feeds) > self.max_watches:
            counts: dict[tuple[str, str | None], int] = {}
            for f in self._feeds.values():
                if f.namespace is not None:
                    counts[(f.kind, f.label_selector)] = counts.get(
                        (f.kind, f.label_selector), 0) + 1
            (kind, sel), n = max(counts.items(), key=lambda kv: kv[1], default=(("", None), 0))
            if n <= 1:
                # One feed per (kind, labelSelector) already: each is one watch (and one
                # connection of the watch pool, which is not capped).
                self.limiter.warning(
                    (self.api.target, "watch groups"),
                    "k8s: %d distinct (kind, labelSelector) watch groups: %d watches to %s, "
                    "more than max_watches (%d); each label value a dtab names is a watch "
                    "of its own", len(self._feeds), len(self._feeds), self.api.target.show,
                    self.max_watches)
                return
            chans = [c for c in self._channels.values()
                     if c.key.kind == kind and c.key.label_selector == sel]
            log.info("k8s: %d watches of %s would exceed %d: one cluster-wide watch for %d "
                     "keys", n, kind, self.max_watches, len(chans))
            self._new_feed(kind, None, None, sel, chans)

    # -- publishing (batched: the latest state of each changed channel, once) -----------

    def _mark(self, ch: Channel) -> None:
        if ch.dirty:
            return
        ch.dirty = True
        self._dirty.append(ch)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(COALESCE_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_SLICE
        dirty = self._dirty
        i = 0
        try:
            while i < len(dirty):
                ch = dirty[i]
                i += 1
                try:
                    ch.publish()
                except Exception:  # one broken observer must not stop the others
                    self.limiter.exception((self.api.target, "publish"),
                                           "k8s: applying an update of %s failed", ch.key.show)
                if loop.time() > deadline and i < len(dirty):
                    break
        finally:
            self._dirty = dirty[i:]
            if self._dirty and self._flush_handle is None:
                self._flush_handle = loop.call_soon(self._flush)

    # -- API discovery: EndpointSlices or Endpoints ------------------------------------

    def endpoint_kind(self, source: str) -> str | None:
        """The kind to watch for `source`; None while discovery (`auto`) is running."""
        if source in ENDPOINT_KINDS:
            return source
        if self._discovered is None and self._discovery is None:
            self._discovery = asyncio.get_running_loop().create_task(
                self._discover(), name="k8s API discovery")
        return self._discovered

    def _on_discovered(self, fn: Callable[[str], None]) -> None:
        self._discovery_waiters.append(fn)

    def _forget_discovery(self, fn: Callable[[str], None]) -> None:
        try:
            self._discovery_waiters.remove(fn)
        except ValueError:
            pass

    async def _discover(self) -> None:
        attempt = 0
        while True:
            try:
                slices = await self.api.has_resource("discovery.k8s.io/v1", "endpointslices")
                break
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                attempt += 1
                self.discovery_error = clip(f"{type(e).__name__}: {e}")
                self.discovery_error_at = time.time()
                self.limiter.warning((self.api.target, "discovery"),
                                     "k8s: API discovery via %s failed: %s; retrying",
                                     self.api.target.show, self.discovery_error)
                await asyncio.sleep(self.backoff.delay(attempt))
        self.discovery_error = self.discovery_error_at = None
        kind = "endpointslices" if slices else "endpoints"
        if not slices:
            log.info("k8s: %s serves no discovery.k8s.io/v1 EndpointSlices; using Endpoints",
                     self.api.target.show)
        self._discovered = kind
        waiters, self._discovery_waiters = self._discovery_waiters, []
        for fn in waiters:
            fn(kind)

    # -- views -------------------------------------------------------------------------

    def watching(self) -> list[WatchKey]:
        return [k for k, c in self._channels.items() if c.feed is not None and c.feed.running]

    def feeds(self) -> list[Feed]:
        return [f for f in self._feeds.values() if f.running]

    def state_json(self) -> dict[str, Any]:
        return {
            "apiServer": self.api.target.show,
            "endpointSource": self._discovered,
            "watchedKeys": len(self._channels),
            "watches": [{"scope": f.scope, "what": f.show, "keys": len(f.channels),
                         "resourceVersion": f.resource_version, "lists": f.lists,
                         "events": f.events, "superseded": f.superseded,
                         "failures": f.failures,
                         **({"error": f.last_error} if f.last_error else {})}
                        for f in self._feeds.values()],
        }

    async def close(self) -> None:
        for timer in self._stops.values():
            timer.cancel()
        self._stops.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._discovery is not None:
            self._discovery.cancel()
            try:
                await self._discovery
            except asyncio.CancelledError:
                pass
        feeds, self._feeds = list(self._feeds.values()), {}
        self._channels.clear()
        self._refs.clear()
        for f in feeds:
            await f.stop()
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
