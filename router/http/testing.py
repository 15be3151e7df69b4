"""A static Router double for data-path tests and the benchmark launcher.

It has the interface the data path calls on `router.router.Router` (label,
config.servers, base_dtab, metrics, identify, bind, client_config) with a
deliberately small binder: dtab lookup, `/$/inet/<host>/<port>[/residual]`
leaves, and fixed `names` (id -> BoundName with a Var the test can change).
It is not the product's binding cache; it exists so the data path can be
exercised alone, on real sockets, with real clients.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dtab.addr import Address, BoundName, bound
from dtab.dtab import Dtab
from dtab.nametree import Alt, Leaf, NameTree, Neg, NegTree, Union, Weighted
from dtab.observable import Var
from dtab.path import Path
from router.identifiers import IdentificationError, Identified
from router.metrics import Metrics, Scope
from router.request import RequestHead


@dataclass
class StaticServerConfig:
    port: int
    ip: str = "127.0.0.1"
    clear_context: bool = False
    max_call_depth: int = 1000
    session: Any = None  # router.session.ServerSession; None: the defaults


@dataclass
class StaticLoadBalancer:
    kind: str = "p2c"
    decay_time_ms: float = 10_000.0
    max_effort: int = 5


@dataclass
class StaticClientConfig:
    load_balancer: StaticLoadBalancer = field(default_factory=StaticLoadBalancer)
    request_attempt_timeout_ms: int | None = None
    client_session: Any = None  # router.session.ClientSession; None: the defaults


@dataclass
class StaticServiceConfig:
    total_timeout_ms: int | None = None


@dataclass
class StaticRouterConfig:
    servers: list[StaticServerConfig]
    binding_timeout_ms: int = 2000


class _StaticBindings:
    """The synchronous cached lookup the data path's fast path uses (`Router.bindings.get`)."""

    def __init__(self) -> None:
        self.trees: dict[tuple[Dtab, Path], NameTree[Any]] = {}

    def get(self, dtab: Dtab, path: Path) -> NameTree[Any] | None:
        return self.trees.get((dtab, path))


class StaticRouter:
    def __init__(
        self,
        servers: list[StaticServerConfig],
        dtab: str | Dtab = "",
        *,
        label: str = "test",
        names: dict[str, BoundName] | None = None,
        load_balancer: str = "p2c",
        metrics: Metrics | None = None,
        dst_prefix: str = "/svc",
        binding_timeout_ms: int = 2000,
        total_timeout_ms: int | None = None,
        attempt_timeout_ms: int | None = None,
        client_session: Any = None,
    ) -> None:
        self.label = label
        self.config = StaticRouterConfig(servers, binding_timeout_ms)
        self.base_dtab = Dtab.read(dtab) if isinstance(dtab, str) else dtab
        self.registry = metrics if metrics is not None else Metrics()
        self.metrics: Scope = self.registry.scope("rt", label)
        self.names: dict[Path, BoundName] = {Path.read(k): v for k, v in (names or {}).items()}
        self.inet: dict[Path, BoundName] = {}
        self.lb = StaticClientConfig(StaticLoadBalancer(load_balancer), attempt_timeout_ms,
                                     client_session)
        self.svc = StaticServiceConfig(total_timeout_ms)
        self.dst_prefix = Path.read(dst_prefix)
        self.bind_calls = 0
        self.bindings = _StaticBindings()

    def identify(self, head: RequestHead) -> Identified:
        host = head.host
        if not host:
            raise IdentificationError("no host header")  # type: ignore[call-arg]
        return Identified(self.dst_prefix + Path.of(host))

    def client_config(self, client_id: Path) -> StaticClientConfig:
        return self.lb

    def service_config(self, name: Path) -> StaticServiceConfig:
        return self.svc

    async def bind(self, dtab: Dtab, path: Path) -> NameTree[BoundName]:
        self.bind_calls += 1
        tree = self._bind(dtab, path, 0)
        self.bindings.trees[(dtab, path)] = tree
        return tree

    def _bind(self, dtab: Dtab, path: Path, depth: int) -> NameTree[Any]:
        if depth > 50:
            return Neg.because(f"dtab loop binding {path.show}")
        for prefix, bn in self.names.items():
            if path.startswith(prefix):
                return Leaf(BoundName(bn.id, bn.addr, path.drop(len(prefix))))
        if len(path) >= 4 and path.elems[:2] == ("$", "inet"):
            id_ = path.take(4)
            bn = self.inet.get(id_)
            if bn is None:
                host, port = path.elems[2], int(path.elems[3])
                bn = self.inet[id_] = BoundName(id_, Var(bound(Address(host, port))))
            return Leaf(BoundName(bn.id, bn.addr, path.drop(4)))
        return self._eval(dtab, dtab.lookup(path), depth)

    def _eval(self, dtab: Dtab, tree: NameTree[Any], depth: int) -> NameTree[Any]:
        if isinstance(tree, Leaf):
            return self._bind(dtab, tree.value, depth + 1)
        if isinstance(tree, Alt):
            for t in tree.trees:
                r = self._eval(dtab, t, depth)
                if not isinstance(r, NegTree):
                    return r
            return Neg
        if isinstance(tree, Union):
            ws = [Weighted(w.weight, self._eval(dtab, w.tree, depth)) for w in tree.weighted]
            ws = [w for w in ws if not isinstance(w.tree, NegTree)]
            return Union(tuple(ws)) if ws else Neg
        return tree


class Backend:
    """A small HTTP/1.1 backend on a real socket whose behaviour is chosen by the path.

    `/echo...` answers JSON with what arrived (method, target, headers, body size);
    `/chunked?n=N&size=S` streams N chunks; `/die` promises 1000 bytes and closes
    after 10; `/garbage` answers with bytes that are not HTTP; `/reset` closes
    without answering; `/stall` never answers; `/l5derr` is a 500 with `l5d-err`;
    `/hop` answers with hop-by-hop and `l5d-*` headers; `/slow?ms=N` answers after N ms;
    any `?drop_next=1` makes the connection close on its next request, unanswered;
    `/close` answers with no length and closes (read-until-EOF framing); `/bighead` sends a
    200 KB response head; `/early` answers 200 before reading the request body (then reads
    it); `/halfbody` promises 1000 bytes, sends 10 and stalls.
    """

    def __init__(self, name: str = "backend") -> None:
        self.name = name
        self.server: Any = None
        self.port = 0
        self.connections = 0
        self.requests: list[dict[str, Any]] = []
        self.sent_body_bytes = 0
        self.read_gate: Any = None  # an asyncio.Event: /upload waits for it before reading
        self.writers: set[Any] = set()

    async def start(self) -> Backend:
        import asyncio

        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for w in list(self.writers):
            w.transport.abort()
        self.server.close()
        await self.server.wait_closed()

    async def _conn(self, reader: Any, writer: Any) -> None:
        import asyncio

        self.connections += 1
        self.writers.add(writer)
        drop_next = False
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: list[tuple[str, str]] = []
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, v = h.decode("latin-1").split(":", 1)
                    headers.append((k.strip(), v.strip()))
                if drop_next:
                    # like a keep-alive timeout racing a new request: close, answer nothing
                    writer.transport.abort()
                    return
                drop_next = "drop_next=1" in target
                hmap = {k.lower(): v for k, v in headers}
                req = {"method": method, "target": target, "headers": headers,
                       "backend": self.name}
                self.requests.append(req)
                if target.startswith("/upload") and self.read_gate is not None:
                    await self.read_gate.wait()
                if target.startswith("/early"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
                    await writer.drain()
                    req["body_len"] = await self._read_body(reader, hmap)
                    continue
                body_len = await self._read_body(reader, hmap)
                req["body_len"] = body_len
                if not await self._respond(writer, method, target, req):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    @staticmethod
    async def _read_body(reader: Any, hmap: dict[str, str]) -> int:
        if "chunked" in hmap.get("transfer-encoding", "").lower():
            total = 0
            while True:
                size = int((await reader.readline()).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b""):
                        pass
                    return total
                await reader.readexactly(size)
                await reader.readexactly(2)
                total += size
        n = int(hmap.get("content-length", "0"))
        if n:
            await reader.readexactly(n)
        return n

    async def _respond(self, writer: Any, method: str, target: str, req: dict[str, Any]) -> bool:
        import asyncio
        import json
        from urllib.parse import parse_qs, urlsplit

        u = urlsplit(target)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        path = u.path
        if path.startswith("/chunked"):
            n, size = int(q.get("n", "4")), int(q.get("size", "1024"))
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            block = b"x" * size
            for _ in range(n):
                writer.write(b"%x\r\n" % size + block + b"\r\n")
                await writer.drain()
                self.sent_body_bytes += size
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        if path == "/die":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()
            return False
        if path == "/bighead":
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(2000):
                writer.write(b"X-Filler-%d: %s\r\n" % (i, b"f" * 100))
            writer.write(b"Content-Length: 0\r\n\r\n")
            await writer.drain()
            return True
        if path == "/garbage":
            writer.write(b"SPLAT \x00\x01 this is not http\r\n\r\n")
            await writer.drain()
            writer.close()
            return False
        if path == "/reset":
            writer.transport.abort()
            return False
        if path == "/slow":
            await asyncio.sleep(int(q.get("ms", "300")) / 1000)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow")
            await writer.drain()
            return True
        if path == "/halfbody":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            await writer.drain()
            await asyncio.sleep(3600)
            return False
        if path == "/stall":
            await asyncio.sleep(3600)
            return False
        if path == "/close":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-eof-body")
            await writer.drain()
            writer.close()
            return False
        if path == "/l5derr":
            body = b"backend router says no"
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nl5d-err: no%20route\r\nl5d-other: 1\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            return True
        if path == "/hop":
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"
                         b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
                         b"l5d-success-class: 1.0\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return True
        body = json.dumps(req).encode()
        status = int(q.get("status", "200"))
        writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nX-Backend: %s\r\n"
                     b"Content-Length: %d\r\n\r\n" % (status, self.name.encode(), len(body)))
        if method != "HEAD":
            writer.write(body)
        await writer.drain()
        return True
