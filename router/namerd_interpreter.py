"""Interpreters that bind through namerd: `io.l5d.namerd.http` (and the choice of kind).

The router's local namers are not used: namerd binds `(dtab, path)` with its
stored dtab for `namespace` in front of the router's dtab, and streams the
bound tree each time it changes (`GET /api/1/bind/<ns>?watch=true`); each
bound id's addresses stream separately (`/api/1/addr/<ns>?watch=true`), as in
Linkerd's StreamingNamerClient. What both namerd interpreters share (last good
value kept while namerd is away, jittered backoff `retry: {baseSeconds,
maxSeconds}` (Linkerd's 5 s / 600 s here), idle streams, the admin state at
`/<router>/interpreter_state/io.l5d.namerd.http/<namespace>.json`) is
router/remote_interpreter.py; `io.l5d.mesh` (gRPC) is router/mesh_interpreter.py.

namerd's watch streams write a bare newline every `heartbeatSecs` (10 s) when
nothing changed; a stream silent for `heartbeatTimeoutSecs` (30 s, 0 = never)
is taken for a dead namerd and reconnected. A JSON stream parser (Linkerd's)
skips the newline as whitespace.

`io.l5d.namerd` (the thrift long-poll protocol) is refused at start-up with a
pointer to `io.l5d.mesh`: Finagle's TTwitter-upgraded thrift with namerd's
stamps is a protocol of its own that only Linkerd 1 speaks, and the gRPC mesh
API (or the streaming HTTP API) carries the same information.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from dtab.dtab import Dtab
from dtab.json_codec import CodecError, addr_from_json, bound_tree_from_json
from dtab.path import Path
from router.remote_interpreter import HEARTBEAT, RemoteInterpreter, Update
from transformers.base import Transformer

KINDS = ("io.l5d.namerd.http", "io.l5d.mesh")
THRIFT = "io.l5d.namerd"
MAX_LINE = 1 << 20


@dataclass(frozen=True)
class NamerdParams:
    host: str
    port: int
    namespace: str = "default"
    retry_base_s: float = 5.0
    retry_max_s: float = 600.0
    heartbeat_timeout_s: float = 30.0

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


def parse_common(obj: Any, kind: str, default_port: int) -> dict[str, Any]:
    """`dst` and `tls`, the keys every namerd interpreter has (`obj`: router.config's
    cursor)."""
    dst_text = obj.str("dst", required=True)
    try:
        host, port = parse_dst(dst_text)
    except ValueError as e:
        raise obj.err("dst", str(e), f"/$/inet/<host>/{default_port}") from None
    if obj.has("tls"):
        raise obj.err("tls", "TLS to namerd is not implemented; refusing to send routing "
                      "requests in plain text when the config asks for TLS", "no tls key")
    return {"host": host, "port": port, "dst": dst_text}


def parse_retry(obj: Any, base: float, cap: float) -> dict[str, float]:
    retry = obj.child("retry")
    if retry is not None:
        base = retry.float("baseSeconds", base, lo=0.001, hi=3600.0)
        cap = retry.float("maxSeconds", cap, lo=0.001, hi=86400.0)
        retry.finish()
    return {"retry_base_s": base, "retry_max_s": max(cap, base)}


def interpreter_params(obj: Any, kind: str) -> dict[str, Any]:
    """Parse and check the interpreter's keys (`obj` is router.config's cursor)."""
    if kind == THRIFT:
        raise obj.err("kind", "io.l5d.namerd (namerd's thrift long-poll protocol) is not "
                      "implemented by l5d-py: use io.l5d.mesh (namerd's gRPC API, interface "
                      "io.l5d.mesh, :4321) or io.l5d.namerd.http (interface "
                      "io.l5d.httpController, :4180)",
                      "kind: io.l5d.mesh, dst: /$/inet/<namerd>/4321, root: /default")
    if kind == "io.l5d.mesh":
        from router.mesh_interpreter import mesh_params

        return mesh_params(obj)
    if not obj.bool("experimental", False):
        raise obj.err("experimental", f"{kind} is experimental (as in Linkerd): set "
                      "experimental: true to use it", "experimental: true")
    out = parse_common(obj, kind, 4180)
    out["namespace"] = obj.str("namespace", "default")
    out.update(parse_retry(obj, 5.0, 600.0))
    out["heartbeat_timeout_s"] = obj.float("heartbeatTimeoutSecs", 30.0, lo=0.0, hi=86400.0)
    return out


def build_interpreter(kind: str, params: Any, transformers: Sequence[Transformer],
                      label: str, metrics: Any = None) -> RemoteInterpreter:
    """`metrics`: the router's scope; the interpreter's are under `interpreter/<kind>`."""
    p = dict(params)
    p.pop("dst", None)
    scope = metrics.scope("interpreter", kind) if metrics is not None else None
    if kind == "io.l5d.mesh":
        from router.mesh_interpreter import MeshInterpreter, MeshParams

        return MeshInterpreter(MeshParams(**p), transformers, label, scope)
    return NamerdHttpInterpreter(NamerdParams(**p), transformers, label, scope)


class NamerdHttpInterpreter(RemoteInterpreter):
    """Streams from namerd's `io.l5d.httpController`; `delegate` for the admin."""

    kind = "io.l5d.namerd.http"

    def __init__(self, params: NamerdParams, transformers: Sequence[Transformer] = (),
                 label: str = "", metrics: Any = None) -> None:
        super().__init__(transformers, label, retry_base_s=params.retry_base_s,
                         retry_max_s=params.retry_max_s,
                         heartbeat_timeout_s=params.heartbeat_timeout_s, metrics=metrics)
        self.params = params
        self._session: Any = None

    def _endpoint(self) -> str:
        return self.params.base_url

    def _state_extra(self) -> dict[str, Any]:
        return {"namespace": self.params.namespace}

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

    async def _lines(self, what: str, params: dict[str, str]) -> AsyncIterator[Any]:
        """One `?watch=true` stream: each JSON line, HEARTBEAT for a blank one."""
        import aiohttp

        url = f"{self.params.base_url}/api/1/{what}/{self.params.namespace}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0)
        async with self._client().get(url, params={**params, "watch": "true"},
                                      timeout=timeout) as resp:
            if resp.status != 200:
                text = (await resp.text())[:300]
                raise RuntimeError(f"HTTP {resp.status}: {text.strip()}")
            yield HEARTBEAT  # connected
            async for line in resp.content:
                if not line.strip():
                    yield HEARTBEAT  # namerd's keep-alive newline
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    # namerd writes an error as a text line, then ends the stream
                    raise RuntimeError(line.decode("utf-8", "replace").strip()[:300]) from None

    async def _bind_updates(self, dtab: Dtab, path: Path) -> AsyncIterator[Any]:
        async for data in self._lines("bind", {"path": path.show, "dtab": dtab.show}):
            if data is HEARTBEAT:
                yield data
                continue
            try:
                yield Update(bound_tree_from_json(data, self._addr_var), data)
            except CodecError as e:
                raise RuntimeError(f"bad bound tree from namerd: {e}") from None

    async def _addr_updates(self, ident: Path) -> AsyncIterator[Any]:
        async for data in self._lines("addr", {"path": ident.show}):
            if data is HEARTBEAT:
                yield data
                continue
            try:
                yield Update(addr_from_json(data), data)
            except CodecError as e:
                raise RuntimeError(f"bad addr from namerd: {e}") from None

    async def _close_transport(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
