"""`io.l5d.mesh`: the router binds through namerd's gRPC API (Linkerd's `io.linkerd.mesh`).

Per (dtab, path) an `Interpreter.StreamBoundTree(root, name, dtab)` call feeds
the Activity the binding cache observes; per bound id a
`Resolver.StreamReplicas(id)` call feeds the leaf's addresses (the bound tree
carries ids only, as in Linkerd's mesh Client). `delegate` is
`Delegator.GetDelegateTree` plus `GetReplicas` for each leaf, rendered as the
§4.1 JSON the admin's delegator draws. Keeping the last good value,
reconnecting with backoff and the admin state are router/remote_interpreter.py,
shared with `io.l5d.namerd.http`.

Keys are Linkerd's: `dst` (required), `root` (`/default`: one label, the dtab
namespace), `retry {baseSeconds: 1, maxSeconds: 600}`, `failureThreshold
{minPeriodMs: 5000, closeTimeoutMs: 6000}` (Finagle's ping failure detector,
here HTTP/2 keepalive pings: one every minPeriodMs, the connection dropped
when a ping is unanswered for closeTimeoutMs, so a namerd that vanished
without closing is noticed), `initialStreamWindowSizeKB` (1024), and `tls`
(refused: not implemented). State at
`/<router>/interpreter_state/io.l5d.mesh/<root label>.json`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from dtab.dtab import Dtab
from dtab.nametree import Leaf
from dtab.path import Path
from mesh_proto import (
    delegator_pb2,
    delegator_pb2_grpc,
    interpreter_pb2,
    interpreter_pb2_grpc,
    resolver_pb2,
    resolver_pb2_grpc,
)
from mesh_proto.convert import (
    addr_from_pb,
    bound_tree_from_pb,
    delegate_pb_to_json,
    dtab_to_pb,
    leaf_ids,
    path_to_pb,
    path_tree_to_pb,
)
from router.namerd_interpreter import parse_common, parse_retry
from router.remote_interpreter import RemoteInterpreter, Update
from transformers.base import Transformer

DELEGATE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class MeshParams:
    host: str
    port: int
    namespace: str = "default"  # the root's one label (the admin path names it)
    retry_base_s: float = 1.0
    retry_max_s: float = 600.0
    keepalive_s: float = 5.0
    keepalive_timeout_s: float = 6.0
    window_kb: int = 1024

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def mesh_params(obj: Any) -> dict[str, Any]:
    """Parse and check io.l5d.mesh's keys (`obj` is router.config's cursor)."""
    out = parse_common(obj, "io.l5d.mesh", 4321)
    root = obj.path_value("root", "/default")
    if root is None or len(root.elems) != 1:
        raise obj.err("root", f"io.l5d.mesh: `root` may only contain a single path element "
                      f"(for now): {root.show if root is not None else ''}",
                      "a one-label path such as /default")
    out["namespace"] = root.elems[0]
    out.update(parse_retry(obj, 1.0, 600.0))
    ft = obj.child("failureThreshold")
    if ft is not None:
        out["keepalive_s"] = ft.int("minPeriodMs", 5000, lo=100, hi=3_600_000) / 1000
        out["keepalive_timeout_s"] = ft.int("closeTimeoutMs", 6000, lo=100,
                                            hi=3_600_000) / 1000
        ft.finish()
    out["window_kb"] = obj.int("initialStreamWindowSizeKB", 1024, lo=64, hi=1 << 20)
    return out


def _rpc_error(e: Exception) -> Exception:
    """A gRPC failure as one readable line (status and details)."""
    code = getattr(e, "code", None)
    details = getattr(e, "details", None)
    if callable(code) and callable(details):
        return RuntimeError(f"{code().name}: {details()}")
    return e


class MeshInterpreter(RemoteInterpreter):
    kind = "io.l5d.mesh"

    def __init__(self, params: MeshParams, transformers: Sequence[Transformer] = (),
                 label: str = "", metrics: Any = None) -> None:
        # gRPC's keepalive pings find a dead namerd; an idle stream is normal here.
        super().__init__(transformers, label, retry_base_s=params.retry_base_s,
                         retry_max_s=params.retry_max_s, heartbeat_timeout_s=None,
                         metrics=metrics)
        self.params = params
        self._channel: Any = None
        self._stubs: Any = None

    def _endpoint(self) -> str:
        return self.params.target

    def _state_extra(self) -> dict[str, Any]:
        return {"root": f"/{self.params.namespace}", "namespace": self.params.namespace}

    def _grpc(self) -> Any:
        if self._channel is None:
            p = self.params
            self._channel = aio.insecure_channel(p.target, options=[
                ("grpc.keepalive_time_ms", int(p.keepalive_s * 1000)),
                ("grpc.keepalive_timeout_ms", int(p.keepalive_timeout_s * 1000)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.http2.min_time_between_pings_ms", int(p.keepalive_s * 1000)),
                ("grpc.http2.ping_timeout_ms", int(p.keepalive_timeout_s * 1000)),
                ("grpc.http2.lookahead_bytes", p.window_kb * 1024),
                ("grpc.initial_reconnect_backoff_ms", int(p.retry_base_s * 1000)),
                ("grpc.max_reconnect_backoff_ms", int(p.retry_max_s * 1000)),
            ])
            self._stubs = (interpreter_pb2_grpc.InterpreterStub(self._channel),
                           resolver_pb2_grpc.ResolverStub(self._channel),
                           delegator_pb2_grpc.DelegatorStub(self._channel))
        return self._stubs

    def _root(self) -> Any:
        return path_to_pb(Path.of(self.params.namespace))

    async def _follow_call(self, call: Any) -> AsyncIterator[Any]:
        try:
            async for rsp in call:
                yield rsp
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise _rpc_error(e) from None
        finally:
            call.cancel()

    async def _bind_updates(self, dtab: Dtab, path: Path) -> AsyncIterator[Any]:
        interp, _resolver, _delegator = self._grpc()
        req = interpreter_pb2.BindReq(root=self._root(), name=path_to_pb(path),
                                      dtab=dtab_to_pb(dtab))
        async for rsp in self._follow_call(interp.StreamBoundTree(req)):
            if not rsp.HasField("tree"):
                continue  # Linkerd's client skips a response without a tree too
            tree = bound_tree_from_pb(rsp.tree, self._addr_var)
            yield Update(tree, tree.show)  # as Linkerd's state: ids here, addresses under "addr"

    async def _addr_updates(self, ident: Path) -> AsyncIterator[Any]:
        _interp, resolver, _delegator = self._grpc()
        req = resolver_pb2.ReplicasReq(id=path_to_pb(ident))
        async for rsp in self._follow_call(resolver.StreamReplicas(req)):
            addr = addr_from_pb(rsp)
            yield Update(addr, addr.to_json())

    async def delegate(self, dtab: Dtab, path: Path) -> dict[str, Any]:
        """namerd's delegate tree for `path` under its dtab plus `dtab` (reference §4.1);
        TimeoutError after 2 s (the admin's 503 "Request timed out.")."""
        _interp, resolver, delegator = self._grpc()
        req = delegator_pb2.DelegateTreeReq(root=self._root(), tree=path_tree_to_pb(Leaf(path)),
                                            dtab=dtab_to_pb(dtab))
        try:
            rsp = await delegator.GetDelegateTree(req, timeout=DELEGATE_TIMEOUT_S)
            ids = list(dict.fromkeys(leaf_ids(rsp.tree)))
            replicas = await asyncio.gather(*(
                resolver.GetReplicas(resolver_pb2.ReplicasReq(id=path_to_pb(i)),
                                     timeout=DELEGATE_TIMEOUT_S) for i in ids))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError(f"namerd {self.params.target} did not delegate "
                                   f"{path.show} within {DELEGATE_TIMEOUT_S}s") from None
            raise RuntimeError(f"namerd {self.params.target}: {_rpc_error(e)}") from None
        addrs = {i: addr_from_pb(r).to_json() for i, r in zip(ids, replicas, strict=True)}
        return delegate_pb_to_json(rsp.tree, lambda i: addrs.get(i, {"type": "pending"}))

    async def _close_transport(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs = None
