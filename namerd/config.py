"""namerd's config file: `storage`, `namers`, `interfaces`, `admin` (Linkerd's namerd schema).

Loaded with the router's positioned-YAML loader (`router.config.load_document`)
and its section parsers for `namers` and `admin`, so a namerd mistake reads
exactly like an l5d one: `file:line: interfaces[0].port: ... (expected ...)`.
That is the one place namerd imports `router/`: the config loader, which
itself depends only on `dtab/` (and on `namers.registry` for namer kinds).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from namerd import access_log
from namerd.access_log import AccessLogConfig
from router.config import (
    AdminConfig,
    ConfigError,
    NamerConfig,
    NoRoutersSpecified,
    TelemeterConfig,
    Where,
    _admin,
    _namer,
    _read,
    _telemeter,
    load_document,
    plain,
)

log = logging.getLogger("namerd")

STORAGE_KINDS = ("io.l5d.inMemory", "io.l5d.k8s")
STORAGE_KINDS_NOT_YET = ("io.l5d.zk", "io.l5d.etcd", "io.l5d.consul")
INTERFACE_KINDS = ("io.l5d.httpController", "io.l5d.mesh")
INTERFACE_KINDS_NOT_YET = ("io.l5d.thriftNameInterpreter", "io.l5d.destination")
INTERFACE_DEFAULT_PORT = {"io.l5d.httpController": 4180, "io.l5d.mesh": 4321,
                          "io.l5d.thriftNameInterpreter": 4100, "io.l5d.destination": 8086}


@dataclass(frozen=True)
class StorageConfig:
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    where: Where | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class InterfaceConfig:
    kind: str
    ip: str
    port: int
    heartbeat_s: float = 10.0  # httpController watch streams: a newline when idle (0 = none)
    where: Where | None = field(default=None, compare=False, repr=False)
    access_log: AccessLogConfig | None = None  # io.l5d.mesh's h2AccessLog*


@dataclass(frozen=True)
class NamerdConfig:
    storage: StorageConfig
    interfaces: tuple[InterfaceConfig, ...]
    namers: tuple[NamerConfig, ...] = ()
    admin: AdminConfig = AdminConfig()
    source: str = "<config>"
    raw: Mapping[str, Any] = field(default_factory=dict, hash=False)
    telemetry: tuple[TelemeterConfig, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)


def parse(text: str, name: str = "<config>") -> NamerdConfig:
    try:
        root, src = load_document(text, name)
    except NoRoutersSpecified as e:  # the shared loader's word for an empty file
        raise ConfigError("the config is empty", file=name, line=1, key="",
                          expected="a mapping with 'storage' and 'interfaces'") from e
    admin = _admin(root.child("admin"))
    namers = tuple(_namer(n) for n in root.children("namers"))
    st = root.child("storage")
    if st is None:
        raise root.err(None, "missing required key 'storage'",
                       "storage: {kind: io.l5d.inMemory} or {kind: io.l5d.k8s}")
    kind = st.kind(STORAGE_KINDS + STORAGE_KINDS_NOT_YET)
    if kind in STORAGE_KINDS_NOT_YET:
        raise st.err("kind", f"storage {kind} is not implemented by l5d-py's namerd",
                     "one of: " + ", ".join(STORAGE_KINDS))
    st.bool("experimental", False)
    storage = StorageConfig(kind, MappingProxyType(plain(st.rest())), st.where())
    _check_storage(storage)
    ifaces = []
    objs = root.children("interfaces")
    if not objs:
        raise root.err("interfaces" if root.has("interfaces") else None,
                       "missing required key 'interfaces'",
                       "a list such as [{kind: io.l5d.httpController}]")
    seen: dict[tuple[str, int], str] = {(admin.ip, admin.port): "admin"}
    for obj in objs:
        ikind = obj.kind(INTERFACE_KINDS + INTERFACE_KINDS_NOT_YET)
        if ikind in INTERFACE_KINDS_NOT_YET:
            hint = ("use io.l5d.mesh (gRPC) or io.l5d.httpController: the thrift protocol is "
                    "not implemented" if ikind == "io.l5d.thriftNameInterpreter" else
                    "not implemented by l5d-py's namerd")
            raise obj.err("kind", f"interface {ikind}: {hint}",
                          "one of: " + ", ".join(INTERFACE_KINDS))
        if obj.has("tls"):
            raise obj.err("tls", "TLS on namerd interfaces is not implemented; refusing to "
                          "serve in plain text what the config asks to protect",
                          "no tls key (terminate TLS in front of namerd)")
        port = obj.int("port", INTERFACE_DEFAULT_PORT[ikind], lo=0, hi=65535,
                       expected="a port number (0-65535)")
        ip = obj.ip("ip", "127.0.0.1")
        heartbeat = 10.0
        access = None
        if ikind == "io.l5d.httpController":
            heartbeat = obj.float("heartbeatSecs", 10.0, lo=0.0, hi=3600.0)
        else:
            access = access_log.parse(obj)
        if port and (ip, port) in seen:
            raise obj.err("port", f"{ip}:{port} is already used by {seen[(ip, port)]}",
                          "a port not used by another interface or the admin")
        seen[(ip, port)] = obj.key
        obj.finish()
        ifaces.append(InterfaceConfig(ikind, ip, port, heartbeat, obj.where(), access))
    telemetry = []
    for tobj in root.children("telemetry"):
        tele = _telemeter(tobj)
        if tele.kind != "io.l5d.prometheus":  # Linkerd's namerd ignores tracers too
            log.warning("%s:%s: telemetry: %s is not used by namerd (it does not trace; "
                        "only io.l5d.prometheus applies)", name, tobj.line, tele.kind)
        telemetry.append(tele)
    root.finish()
    return NamerdConfig(storage, tuple(ifaces), namers, admin, name, plain(root.data),
                        tuple(telemetry))


def _check_storage(cfg: StorageConfig) -> None:
    """Build-time checks of the storage params, with the file and line."""
    from dtab.errors import ParamError
    from namerd.store import build_store

    try:
        build_store(cfg.kind, cfg.params)
    except ParamError as e:
        assert cfg.where is not None
        raise cfg.where.param_error(e) from None


def load(path: str) -> NamerdConfig:
    text, name = _read(path)
    return parse(text, name)
