"""`io.l5d.mesh` (:4321): namerd's gRPC API, Linkerd's `io.linkerd.mesh` services (grpc.aio).

- Interpreter: `GetBoundTree` / `StreamBoundTree(BindReq{root, name, dtab})` bind
  `name` under the stored dtab of namespace `root` (one label, as Linkerd) plus `dtab`.
- Resolver: `GetReplicas` / `StreamReplicas(ReplicasReq{id})`: the addresses of a
  bound id (transformer prefixes stripped, as Linkerd's `Paths.stripTransformerPrefix`).
- Delegator: `GetDtab` / `StreamDtab` (the versioned dtab of a namespace),
  `GetDelegateTree` / `StreamDelegateTree` (one value, as Linkerd's deprecated stream).
- Codec: `ReadDtab`, `ShowDtab`, `ReadPath`, `ShowPath`.

Statuses and messages are Linkerd's `Errors`: no root is INVALID_ARGUMENT "No
namespace specified", a root of more than one label INVALID_ARGUMENT "Invalid
root: ...", a missing namespace NOT_FOUND "Root not found", no name NOT_FOUND
"No name given". A stream sends a message on every distinct change (`follow`)
and ends with the error when binding fails. HTTP/2 keepalive pings are
allowed from clients every 5 s, so a router notices a dead namerd that never
closed its connection (see router/mesh_interpreter.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import grpc
from grpc import aio

from dtab.addr import AddrPending
from dtab.dtab import Dtab
from dtab.errors import DtabParseError
from dtab.nametree import Leaf
from dtab.observable import Failed, Ok, Pending
from dtab.path import Path
from mesh_proto import (
    codec_pb2,
    codec_pb2_grpc,
    delegator_pb2,
    delegator_pb2_grpc,
    dtab_pb2,
    interpreter_pb2,
    interpreter_pb2_grpc,
    resolver_pb2,
    resolver_pb2_grpc,
)
from mesh_proto.convert import (
    MeshCodecError,
    addr_to_pb,
    bound_tree_to_pb,
    delegate_json_to_pb,
    dtab_from_pb,
    dtab_to_pb,
    path_from_pb,
    path_to_pb,
    path_tree_from_pb,
)
from namerd import access_log
from namerd.access_log import AccessLogConfig
from namerd.core import Namerd, follow
from namerd.telemetry import Stats

log = logging.getLogger("namerd.mesh")

KIND = "io.l5d.mesh"
# Clients may ping this often (router/mesh_interpreter.py pings every 10 s by default).
SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
]


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


NO_ROOT = _Abort(grpc.StatusCode.INVALID_ARGUMENT, "No namespace specified")
ROOT_NOT_FOUND = _Abort(grpc.StatusCode.NOT_FOUND, "Root not found")
NO_NAME = _Abort(grpc.StatusCode.NOT_FOUND, "No name given")


def _namespace(msg: Any, field: str = "root") -> str:
    if not msg.HasField(field):
        raise NO_ROOT
    root = path_from_pb(getattr(msg, field))
    if len(root.elems) != 1:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                     f"Invalid root: `{root.show}` must have exactly one segment")
    return root.elems[0]


def _dtab(msg: Any) -> Dtab:
    return dtab_from_pb(msg.dtab) if msg.HasField("dtab") else Dtab.empty()


class MeshService:
    """The four services over one Namerd; each handler maps errors to gRPC statuses."""

    def __init__(self, namerd: Namerd, access: logging.Logger | None = None,
                 authority: str = "-") -> None:
        self.namerd = namerd
        self.stats = Stats(namerd.metrics.scope("interface", KIND), "streams")
        self.access = access
        self.authority = authority

    def _log_access(self, name: str, context: aio.ServicerContext) -> None:
        if self.access is None:
            return
        meta = dict(context.invocation_metadata() or ())
        peer = context.peer() or "-"
        host = peer.split(":", 1)[1].rsplit(":", 1)[0] if ":" in peer else peer
        service, method = name.split("/")
        self.access.info(access_log.line(
            str(meta.get(":authority", self.authority)), host.strip("[]"),
            f"/io.linkerd.mesh.{service}/{method}", str(meta.get("user-agent", "-"))))

    # -- plumbing: errors to statuses, stats
    async def _unary(self, name: str, context: aio.ServicerContext,
                     fn: Callable[[], Any]) -> Any:
        stat = self.stats.of(*name.split("/"))
        t0 = stat.start()
        try:
            result = await fn()
        except (_Abort, MeshCodecError) as e:
            stat.done(t0, False)
            self._log_access(name, context)
            await _abort(context, e)
        stat.done(t0, True)
        self._log_access(name, context)
        return result

    async def _stream(self, name: str, context: aio.ServicerContext,
                      gen: Callable[[], AsyncIterator[Any]]) -> AsyncIterator[Any]:
        stat = self.stats.of(*name.split("/"))
        t0 = stat.start()
        self.stats.open_streams += 1
        ok = True
        try:
            async with aclosing(gen()) as items:  # closed now, also when cancelled
                async for item in items:
                    yield item
        except (_Abort, MeshCodecError) as e:
            ok = False
            await _abort(context, e)
        finally:
            self.stats.open_streams -= 1
            stat.done(t0, ok, timed=False)
            self._log_access(name, context)

    # -- Interpreter
    def _bound_trees(self, req: interpreter_pb2.BindReq) -> AsyncIterator[Any]:
        ns = _namespace(req)
        if not req.HasField("name") or not req.name.elems:
            raise NO_NAME
        name, extra = path_from_pb(req.name), _dtab(req)

        async def values() -> AsyncIterator[Any]:
            states = follow(lambda: self.namerd.bind(ns, extra, name))
            try:
                async for state in states:
                    if isinstance(state, Pending):
                        continue
                    if isinstance(state, Failed):
                        raise _Abort(grpc.StatusCode.INTERNAL, str(state.error))
                    assert isinstance(state, Ok)
                    yield interpreter_pb2.BoundTreeRsp(tree=bound_tree_to_pb(state.value))
            finally:
                await states.aclose()  # type: ignore[attr-defined]
        return values()

    async def GetBoundTree(self, req: Any, context: aio.ServicerContext) -> Any:
        return await self._unary("Interpreter/GetBoundTree", context,
                                 lambda: _first(self._bound_trees(req)))

    async def StreamBoundTree(self, req: Any, context: aio.ServicerContext
                              ) -> AsyncIterator[Any]:
        async with aclosing(self._stream("Interpreter/StreamBoundTree", context,
                                       lambda: self._bound_trees(req))) as items:
            async for item in items:
                yield item

    # -- Resolver
    def _replicas(self, req: resolver_pb2.ReplicasReq, skip_pending: bool
                  ) -> AsyncIterator[Any]:
        async def values() -> AsyncIterator[Any]:
            if not req.HasField("id") or not req.id.elems:
                yield resolver_pb2.Replicas(failed=resolver_pb2.Replicas.Failed(
                    message="No ID provided"))
                return
            ident = path_from_pb(req.id)
            addrs = follow(lambda: self.namerd.addr("", ident))
            try:
                async for addr in addrs:
                    if skip_pending and isinstance(addr, AddrPending):
                        continue
                    yield addr_to_pb(addr)
            finally:
                await addrs.aclose()  # type: ignore[attr-defined]
        return values()

    async def GetReplicas(self, req: Any, context: aio.ServicerContext) -> Any:
        return await self._unary("Resolver/GetReplicas", context,
                                 lambda: _first(self._replicas(req, skip_pending=True)))

    async def StreamReplicas(self, req: Any, context: aio.ServicerContext
                             ) -> AsyncIterator[Any]:
        async with aclosing(self._stream("Resolver/StreamReplicas", context,
                                       lambda: self._replicas(req, skip_pending=False))) as items:
            async for item in items:
                yield item

    # -- Delegator
    def _dtabs(self, req: delegator_pb2.DtabReq) -> AsyncIterator[Any]:
        ns = _namespace(req)
        store = self.namerd.store

        async def values() -> AsyncIterator[Any]:
            if not getattr(store, "synced", True):
                raise _Abort(grpc.StatusCode.UNAVAILABLE,
                             f"dtab storage {store.kind} is not available yet")
            vds = follow(lambda: (store.state.value.get(ns), (store.state,)))
            try:
                async for vd in vds:
                    if vd is None:
                        raise ROOT_NOT_FOUND
                    yield delegator_pb2.DtabRsp(dtab=dtab_pb2.VersionedDtab(
                        version=dtab_pb2.VersionedDtab.Version(id=vd.version),
                        dtab=dtab_to_pb(vd.dtab)))
            finally:
                await vds.aclose()  # type: ignore[attr-defined]
        return values()

    async def GetDtab(self, req: Any, context: aio.ServicerContext) -> Any:
        return await self._unary("Delegator/GetDtab", context, lambda: _first(self._dtabs(req)))

    async def StreamDtab(self, req: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        async with aclosing(self._stream("Delegator/StreamDtab", context,
                                       lambda: self._dtabs(req))) as items:
            async for item in items:
                yield item

    async def _delegate(self, req: delegator_pb2.DelegateTreeReq) -> Any:
        ns = _namespace(req)
        if not req.HasField("tree"):
            raise NO_NAME
        tree = path_tree_from_pb(req.tree)
        if not isinstance(tree, Leaf):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"Delegation too complex: {tree.show} (delegate one path)")
        try:
            out = await self.namerd.delegate(ns, _dtab(req), tree.value)
        except TimeoutError:
            raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Request timed out.") from None
        return delegator_pb2.DelegateTreeRsp(tree=delegate_json_to_pb(out))

    async def GetDelegateTree(self, req: Any, context: aio.ServicerContext) -> Any:
        return await self._unary("Delegator/GetDelegateTree", context,
                                 lambda: self._delegate(req))

    async def StreamDelegateTree(self, req: Any, context: aio.ServicerContext
                                 ) -> AsyncIterator[Any]:
        async def one() -> AsyncIterator[Any]:
            yield await self._delegate(req)

        async with aclosing(self._stream("Delegator/StreamDelegateTree", context, one)) as items:
            async for item in items:
                yield item

    # -- Codec
    async def _codec(self, name: str, context: aio.ServicerContext,
                     fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            try:
                return fn()
            except (DtabParseError, ValueError) as e:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        return await self._unary(name, context, run)

    async def ReadDtab(self, req: Any, context: aio.ServicerContext) -> Any:
        return await self._codec("Codec/ReadDtab", context, lambda: codec_pb2.ReadDtabRsp(
            dtab=dtab_to_pb(Dtab.read(req.text) if req.text else Dtab.empty())))

    async def ShowDtab(self, req: Any, context: aio.ServicerContext) -> Any:
        return await self._codec("Codec/ShowDtab", context, lambda: codec_pb2.ShowDtabRsp(
            text=dtab_from_pb(req.dtab).show if req.HasField("dtab") else ""))

    async def ReadPath(self, req: Any, context: aio.ServicerContext) -> Any:
        return await self._codec("Codec/ReadPath", context, lambda: codec_pb2.ReadPathRsp(
            path=path_to_pb(Path.read(req.text) if req.text else Path.empty())))

    async def ShowPath(self, req: Any, context: aio.ServicerContext) -> Any:
        return await self._codec("Codec/ShowPath", context, lambda: codec_pb2.ShowPathRsp(
            text=path_from_pb(req.path).show if req.HasField("path") else ""))


async def _abort(context: aio.ServicerContext, e: Exception) -> None:
    if isinstance(e, _Abort):
        await context.abort(e.code, e.message)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))


async def _first(values: AsyncIterator[Any]) -> Any:
    try:
        async for v in values:
            return v
    finally:
        await values.aclose()  # type: ignore[attr-defined]
    raise _Abort(grpc.StatusCode.INTERNAL, "no value")


def _servicers(svc: MeshService) -> list[tuple[Any, Any]]:
    pairs = [
        (interpreter_pb2_grpc.InterpreterServicer,
         interpreter_pb2_grpc.add_InterpreterServicer_to_server),
        (resolver_pb2_grpc.ResolverServicer, resolver_pb2_grpc.add_ResolverServicer_to_server),
        (delegator_pb2_grpc.DelegatorServicer,
         delegator_pb2_grpc.add_DelegatorServicer_to_server),
        (codec_pb2_grpc.CodecServicer, codec_pb2_grpc.add_CodecServicer_to_server),
    ]
    out = []
    for base, add in pairs:  # a servicer class whose methods are MeshService's
        names = [n for n in vars(base) if not n.startswith("_")]
        cls = type(base.__name__ + "Impl", (base,),
                   {n: getattr(svc, n) for n in names})
        out.append((cls(), add))
    return out


class MeshHandle:
    def __init__(self, server: aio.Server, ip: str, port: int,
                 access: logging.Logger | None = None) -> None:
        self.server = server
        self.ip = ip
        self.port = port
        self.name = KIND
        self.access = access

    async def close(self) -> None:
        await self.server.stop(grace=0.5)
        if self.access is not None:
            access_log.close(self.access)

    def __repr__(self) -> str:
        return f"{KIND} on {self.ip}:{self.port}"


async def start_mesh(namerd: Namerd, ip: str, port: int,
                     access: AccessLogConfig | None = None) -> MeshHandle:
    """Serve the mesh API on ip:port (0 = any free port); the handle has `.port`."""
    server = aio.server(options=SERVER_OPTIONS)
    host = f"[{ip}]" if ":" in ip else ip
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(98, f"{KIND} cannot listen on {ip}:{port}")
    try:
        logger = access_log.open_logger(access, KIND) if access is not None else None
    except OSError as e:
        await server.stop(None)
        raise OSError(e.errno, f"{KIND} h2AccessLog {access.path if access else ''}: "
                      f"{e.strerror or e}") from e
    svc = MeshService(namerd, logger, f"{host}:{bound}")
    for servicer, add in _servicers(svc):
        add(servicer, server)
    await server.start()
    log.info("%s serving on %s:%d", KIND, ip, bound)
    return MeshHandle(server, ip, bound, logger)
