"""Interpreters that bind through namerd: `io.l5d.namerd.http` (and the choice of kind).

The router's local namers are not used: namerd binds `(dtab, path)` with its
stored dtab for `namespace` in front of the router's dtab, and streams the
bound tree each time it changes (`GET /api/1/bind/<ns>?watch=true`); each
bound id's addresses stream separately (`/api/1/addr/<ns>?watch=true`), as in
Linkerd's StreamingNamerClient. Each (dtab, path) is an Activity the binding
cache observes, so a dtab write in namerd re-binds routing as soon as the
stream line arrives.

When namerd is unreachable or a stream breaks, the last good tree and
addresses stay in place (requests keep flowing) and the stream reconnects
with jittered exponential backoff (`retry: {baseSeconds, maxSeconds}`,
Linkerd's 5 s / 600 s by default). The state is on the admin at
`/<router>/interpreter_state/io.l5d.namerd.http/<namespace>.json`.

`io.l5d.namerd` (the thrift long-poll protocol) is refused at start-up with a
pointer to `io.l5d.namerd.http`: Finagle's TTwitter-upgraded thrift with
namerd's stamps is a protocol of its own that only Linkerd 1 speaks, and the
streaming HTTP API carries the same information.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dtab.addr import Addr, AddrPending
from dtab.binding import BindResult
from dtab.dtab import Dtab
from dtab.json_codec import CodecError, addr_from_json, bound_tree_from_json
from dtab.observable import PENDING, Activity, Failed, Ok, Var
from dtab.path import Path
from router.interpreter import apply_transformers
from transformers.base import Transformer

log = logging.getLogger("l5d.namerd")

KINDS = ("io.l5d.namerd.http",)
THRIFT = "io.l5d.namerd"
IDLE_S = 60.0
MAX_LINE = 1 << 20


@dataclass(frozen=True)
class NamerdParams:
    host: str
    port: int
    namespace: str = "default"
    retry_base_s: float = 5.0
    retry_max_s: float = 600.0

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_dst(text: str) -> tuple[str, int]:
    """`/$/inet/<host>/<port>` (Linkerd's form) or `host:port`."""
    elems = text.strip("/").split("/")
    if text.startswith("/$/inet/") and len(elems) == 4 and elems[3].isdigit():
        return elems[2], int(elems[3])
    if not text.startswith("/"):
        host, sep, port = text.rpartition(":")
        if sep and port.isdigit() and host:
            return host.strip("[]"), int(port)
    raise ValueError(f"dst {text!r}: expected /$/inet/<host>/<port> or host:port")


def interpreter_params(obj: Any, kind: str) -> dict[str, Any]:
    """Parse and check this interpreter's keys (`obj` is router.config's cursor)."""
    if kind == THRIFT:
        raise obj.err("kind", "io.l5d.namerd (namerd's thrift long-poll protocol) is not "
                      "implemented by l5d-py: use io.l5d.namerd.http (namerd's streaming HTTP "
                      "API, interface io.l5d.httpController)",
                      "kind: io.l5d.namerd.http, experimental: true, "
                      "dst: /$/inet/<namerd>/4180")
    if not obj.bool("experimental", False):
        raise obj.err("experimental", f"{kind} is experimental (as in Linkerd): set "
                      "experimental: true to use it", "experimental: true")
    dst_text = obj.str("dst", required=True)
    try:
        host, port = parse_dst(dst_text)
    except ValueError as e:
        raise obj.err("dst", str(e), "/$/inet/<host>/<port>") from None
    if obj.has("tls"):
        raise obj.err("tls", "TLS to namerd is not implemented; refusing to send routing "
                      "requests in plain text when the config asks for TLS", "no tls key")
    namespace = obj.str("namespace", "default")
    base, cap = 5.0, 600.0
    retry = obj.child("retry")
    if retry is not None:
        base = retry.float("baseSeconds", 5.0, lo=0.001, hi=3600.0)
        cap = retry.float("maxSeconds", 600.0, lo=0.001, hi=86400.0)
        retry.finish()
    return {"host": host, "port": port, "namespace": namespace, "retry_base_s": base,
            "retry_max_s": max(cap, base), "dst": dst_text}


def build_interpreter(kind: str, params: Any, transformers: Sequence[Transformer],
                      label: str) -> NamerdHttpInterpreter:
    p = dict(params)
    p.pop("dst", None)
    return NamerdHttpInterpreter(NamerdParams(**p), transformers, label)


class _Backoff:
    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.next = base, cap, base

    def reset(self) -> None:
        self.next = self.base

    def delay(self) -> float:
        d = self.next
        self.next = min(self.cap, self.next * 2)
        return d * (0.5 + random.random() / 2)


class _Watch:
    """One stream from namerd and what it last said."""

    __slots__ = ("key", "act", "task", "updates", "reconnects", "last_update", "last_error",
                 "connected", "last_used", "raw")

    def __init__(self, key: Any, act: Var[Any]) -> None:
        self.key = key
        self.act = act
        self.task: asyncio.Task[None] | None = None
        self.updates = 0
        self.reconnects = 0
        self.last_update: float | None = None
        self.last_error: str | None = None
        self.connected = False
        self.last_used = time.monotonic()
        self.raw: Any = None

    def state_json(self) -> dict[str, Any]:
        return {"connected": self.connected, "updates": self.updates,
                "reconnects": self.reconnects, "lastUpdate": self.last_update,
                "lastError": self.last_error, "value": self.raw}


class _NotFound(Exception):
    pass


class NamerdHttpInterpreter:
    """`bind(dtab, path) -> BindResult` for the binding cache; `delegate` for the admin."""

    kind = "io.l5d.namerd.http"

    def __init__(self, params: NamerdParams, transformers: Sequence[Transformer] = (),
                 label: str = "") -> None:
        self.params = params
        self.transformers = tuple(transformers)
        self.label = label
        self._binds: dict[tuple[Dtab, Path], _Watch] = {}
        self._addrs: dict[Path, _Watch] = {}
        self._transformed: dict[tuple[Dtab, Path], tuple[Any, Any]] = {}
        self._session: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    # -- the binding cache's interface
    def bind(self, dtab: Dtab, path: Path) -> BindResult:
        key = (dtab, path)
        w = self._binds.get(key)
        if w is None:
            w = self._binds[key] = _Watch(key, Activity(PENDING))
            self._spawn(w, self._bind_stream(w))
        w.last_used = time.monotonic()
        state = w.act.value
        if self.transformers and isinstance(state, Ok):
            cached = self._transformed.get(key)
            if cached is not None and cached[0] is state:
                state = cached[1]
            else:
                try:
                    out: Any = Ok(apply_transformers(state.value, self.transformers))
                except Exception as e:
                    log.exception("transformer failed binding %s", path.show)
                    out = Failed(e)
                self._transformed[key] = (state, out)
                state = out
        return BindResult(state, (w.act,))

    async def delegate(self, dtab: Dtab, path: Path) -> dict[str, Any]:
        """namerd's delegate tree for `path` under its dtab plus `dtab` (reference §4.1)."""
        import aiohttp

        session = self._client()
        url = f"{self.params.base_url}/api/1/delegate/{self.params.namespace}"
        try:
            async with session.get(url, params={"path": path.show, "dtab": dtab.show},
                                   timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                body = await resp.text()
                if resp.status == 503:
                    raise TimeoutError(body)
                if resp.status != 200:
                    raise RuntimeError(f"namerd {self.params.base_url} answered {resp.status} "
                                       f"to delegate {path.show}: {body[:200]}")
                result: dict[str, Any] = json.loads(body)
                return result
        except aiohttp.ClientError as e:
            raise RuntimeError(f"namerd {self.params.base_url} is unreachable: {e}") from None

    # -- streams
    def _client(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), read_bufsize=MAX_LINE)
        return self._session

    def _spawn(self, w: _Watch, coro: Any) -> None:
        if self._closed:
            coro.close()
            return
        loop = asyncio.get_running_loop()
        w.task = loop.create_task(coro, name=f"namerd watch {w.key}")
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep_forever(), name="namerd sweeper")

    async def _stream(self, w: _Watch, what: str, params: dict[str, str],
                      on_line: Any) -> None:
        """Follow one `?watch=true` stream forever: reconnect with backoff, keep the last
        good value while namerd is away (no update is an error for routing)."""
        import aiohttp

        backoff = _Backoff(self.params.retry_base_s, self.params.retry_max_s)
        url = f"{self.params.base_url}/api/1/{what}/{self.params.namespace}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0)
        while True:
            try:
                session = self._client()
                async with session.get(url, params={**params, "watch": "true"},
                                       timeout=timeout) as resp:
                    if resp.status == 404:
                        raise _NotFound(await resp.text())
                    if resp.status != 200:
                        text = (await resp.text())[:300]
                        raise RuntimeError(f"HTTP {resp.status}: {text.strip()}")
                    w.connected = True
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        try:
                            data = json.loads(line)
                        except ValueError:
                            # namerd writes an error as a text line, then ends the stream
                            raise RuntimeError(line.decode("utf-8", "replace").strip()[:300]) \
                                from None
                        on_line(data)
                        w.raw = data
                        w.updates += 1
                        w.last_update = time.time()
                        w.last_error = None
                        backoff.reset()
                    raise RuntimeError("namerd ended the stream")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                w.connected = False
                w.reconnects += 1
                w.last_error = f"{type(e).__name__}: {e}"[:500]
                delay = backoff.delay()
                log.warning("namerd %s %s %s: %s; keeping the last answer, retrying in %.2fs",
                            self.params.base_url, what, params.get("path", ""), w.last_error,
                            delay)
                await asyncio.sleep(delay)

    async def _bind_stream(self, w: _Watch) -> None:
        dtab, path = w.key

        def on_line(data: Any) -> None:
            try:
                tree = bound_tree_from_json(data, self._addr_var)
            except CodecError as e:
                raise RuntimeError(f"bad bound tree from namerd: {e}") from None
            w.act.set(Ok(tree))

        await self._stream(w, "bind", {"path": path.show, "dtab": dtab.show}, on_line)

    def _addr_var(self, ident: Path, addr_now: Addr) -> Var[Addr]:
        w = self._addrs.get(ident)
        if w is None:
            w = self._addrs[ident] = _Watch(ident, Var(addr_now))
            self._spawn(w, self._addr_stream(w))
        elif isinstance(w.act.value, AddrPending) and not isinstance(addr_now, AddrPending):
            w.act.set(addr_now)
        w.last_used = time.monotonic()
        var: Var[Addr] = w.act
        return var

    async def _addr_stream(self, w: _Watch) -> None:
        def on_line(data: Any) -> None:
            try:
                w.act.set(addr_from_json(data))
            except CodecError as e:
                raise RuntimeError(f"bad addr from namerd: {e}") from None

        await self._stream(w, "addr", {"path": w.key.show}, on_line)

    # -- idle streams
    async def _sweep_forever(self) -> None:
        while self._binds or self._addrs:
            await asyncio.sleep(min(IDLE_S / 4, 15.0))
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Stop streams nobody observes (the binding cache let go of the name)."""
        now = time.monotonic() if now is None else now
        live_ids: set[Path] = set()
        for key, w in list(self._binds.items()):
            if not w.act.observed and now - w.last_used > IDLE_S:
                self._stop(w)
                del self._binds[key]
                self._transformed.pop(key, None)
                continue
            state = w.act.value
            if isinstance(state, Ok):
                live_ids.update(b.id for b in state.value.leaves() if hasattr(b, "id"))
        for ident, w in list(self._addrs.items()):
            if ident not in live_ids and not w.act.observed and now - w.last_used > IDLE_S:
                self._stop(w)
                del self._addrs[ident]

    @staticmethod
    def _stop(w: _Watch) -> None:
        if w.task is not None:
            w.task.cancel()
            w.task = None

    # -- admin and lifecycle
    def state_json(self) -> dict[str, Any]:
        binds = {f"{p.show} {d.show}".strip(): w.state_json()
                 for (d, p), w in self._binds.items()}
        addrs = {i.show: w.state_json() for i, w in self._addrs.items()}
        connected = any(w.connected for w in self._binds.values())
        return {"kind": self.kind, "namerd": self.params.base_url,
                "namespace": self.params.namespace, "connected": connected,
                "bind": binds, "addr": addrs}

    async def aclose(self) -> None:
        self._closed = True
        tasks = [w.task for w in (*self._binds.values(), *self._addrs.values()) if w.task]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._binds.clear()
        self._addrs.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

