"""The per-host mesh transformers: `io.l5d.k8s.daemonset` and `io.l5d.k8s.localnode`.

outgoing (daemonset): each pod address becomes the l5d router pod on that
pod's node, at the router's `incoming` port, so the hop goes node to node.
"Same node" is the pod's /24 by default (the classic one-subnet-per-node
layout; `netmask` changes it) or, with `hostNetwork: true`, the address's `nodeName` metadata,
which is what works on CNI networks (reference §5 pain point 2).

incoming (localnode): keep only addresses on this node, by POD_IP's /24 (`netmask`) or,
with `hostNetwork: true`, by NODE_NAME. Both come from the Downward API.

The daemonset's own endpoints are watched through the same shared `WatchHub`
as the `io.l5d.k8s` namer (namers/k8s), so one API connection serves both, from
EndpointSlices or Endpoints (`endpointSource`, as the namer's).

Both run on every change of a service's addresses, so a 10,000-pod service must
not cost 10,000 subnet computations per update: the key of each pod IP (its /24,
or its node) is memoized, and the rewrite is set operations over those keys.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from dtab.addr import ADDR_PENDING, AddrBound, Address, AddrNeg
from dtab.errors import ParamError
from dtab.observable import Var
from dtab.path import Path
from namers.k8s.api import ApiTarget
from namers.k8s.namer import resolve_endpoints, source_param, target_from_params
from namers.k8s.watch import EndpointsLease, WatchHub, shared_hub
from namers.registry import HostCheckError
from transformers.simple import AddrTransformer, check_keys, prefix_param, required

DAEMONSET = "io.l5d.k8s.daemonset"
LOCALNODE = "io.l5d.k8s.localnode"


Net = ipaddress.IPv4Network | ipaddress.IPv6Network

LINKERD_NETMASK = 24  # Linkerd's Netmask("255.255.255.0") in both k8s transformers


def subnet(ip: str, prefixlen: int = LINKERD_NETMASK) -> Net | None:
    """The IPv4 network of `ip` under the netmask; None for what is not an IP.

    Linkerd's Netmask compares address families byte-wise with an IPv4 mask, so an
    IPv6 address is never local to anything there; here it is local to itself only.
    """
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if addr.version != 4:
        return ipaddress.ip_network(f"{ip}/128")
    return ipaddress.ip_network(f"{ip}/{prefixlen}", strict=False)


def netmask_param(params: dict[str, Any]) -> int:
    """`netmask: 255.255.0.0` or `netmask: 16` (an l5d-py extension; Linkerd fixes /24)."""
    value = params.get("netmask", LINKERD_NETMASK)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 32:
        return value
    if isinstance(value, str):
        text = value.lstrip("/")
        if text.isdigit() and int(text) <= 32:
            return int(text)
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{value}").prefixlen
        except ValueError:
            pass
    raise ParamError("netmask", "expected an IPv4 netmask such as 255.255.255.0 or a prefix "
                     f"length 0-32, got {value!r}")


def _where(a: Address) -> str:
    node = a.meta.get("nodeName")
    return f"{a.host} ({node})" if node else a.host


class _SubnetMemo:
    """`subnet(ip)` remembered per IP string; bounded (cleared when it grows past max)."""

    __slots__ = ("netmask", "_memo", "max")

    def __init__(self, netmask: int, max_entries: int = 200_000) -> None:
        self.netmask = netmask
        self._memo: dict[str, Net | None] = {}
        self.max = max_entries

    def of(self, ip: str) -> Net | None:
        memo = self._memo
        try:
            return memo[ip]
        except KeyError:
            if len(memo) >= self.max:
                memo.clear()
            net = memo[ip] = subnet(ip, self.netmask)
            return net


class DaemonSetTransformer(AddrTransformer):
    kind = DAEMONSET

    def __init__(
        self,
        namespace: str,
        service: str,
        port: str,
        *,
        host_network: bool = False,
        netmask: int = LINKERD_NETMASK,
        target: ApiTarget | None = None,
        hub: WatchHub | None = None,
        prefix: Path | None = None,
        endpoint_source: str = "auto",
    ) -> None:
        super().__init__(prefix or Path.of(DAEMONSET, namespace, port, service))
        self.endpoint_source = endpoint_source
        self._subnets = _SubnetMemo(netmask)
        self.namespace = namespace
        self.service = service
        self.port = port
        self.host_network = host_network
        self.netmask = netmask
        self.target = target or ApiTarget()
        self._hub = hub
        self._lease: EndpointsLease | None = None

    def sources(self) -> tuple[Var[Any], ...]:
        if self._lease is None:
            hub = self._hub or shared_hub(self.target)
            self._lease = hub.acquire_endpoints(self.namespace, self.service, None,
                                                self.endpoint_source)
        return (self._lease.state,)

    def _key(self, a: Address) -> Any:
        if self.host_network:
            return a.meta.get("nodeName")
        return self._subnets.of(a.host)

    def rewrite(self, addr: Any, *extra: Any) -> Any:
        (ds_state,) = extra
        if not isinstance(addr, AddrBound):
            return addr
        where = f"{self.namespace}/{self.service}"
        ds = resolve_endpoints(ds_state, None, self.port, where)
        if ds is None:
            return ADDR_PENDING
        if not isinstance(ds.addr, AddrBound):
            return AddrNeg(f"{DAEMONSET}: {ds.neg_reason}")
        # Linkerd's GatewayTransformer keeps, for each address, *every* gateway the
        # predicate accepts: same subnet, or with hostNetwork equal `nodeName`
        # metadata compared as Options (two missing node names are equal).
        # Grouping by that key gives the same answer in one pass.
        gateways: dict[Any, list[Address]] = {}
        for gw in ds.addr.addresses:
            key = self._key(gw)
            if key is not None or self.host_network:
                gateways.setdefault(key, []).append(gw)
        out: set[Address] = set()
        if self.host_network:
            keys = {a.meta.get("nodeName") for a in addr.addresses}
        else:
            of = self._subnets.of
            keys = {of(a.host) for a in addr.addresses}
            keys.discard(None)
        for key in keys:
            gws = gateways.get(key)
            if gws is not None:
                out.update(gws)
        if not out and addr.addresses:
            missed = [a for a in addr.addresses
                      if (self._key(a) is None and not self.host_network)
                      or gateways.get(self._key(a)) is None]
            how = "node" if self.host_network else f"/{self.netmask}"
            shown = ", ".join(_where(a) for a in sorted(missed, key=lambda a: a.host)[:5])
            return AddrNeg(
                f"{DAEMONSET}: no {where} router pod (port {self.port}) on the same {how} "
                f"as any of: {shown}"
            )
        return AddrBound(frozenset(out), addr.meta)

    def close(self) -> None:
        super().close()
        if self._lease is not None:
            self._lease.release()
            self._lease = None


class LocalNodeTransformer(AddrTransformer):
    kind = LOCALNODE

    def __init__(
        self, *, host_network: bool, pod_ip: str | None = None, node_name: str | None = None,
        prefix: Path | None = None, netmask: int = LINKERD_NETMASK,
    ) -> None:
        self.host_network = host_network
        self.node_name = node_name
        self.pod_ip = pod_ip
        if host_network:
            assert node_name, "NODE_NAME is required with hostNetwork"
            self.here = node_name
            self.subnet = None
        else:
            assert pod_ip, "POD_IP is required"
            self.here = pod_ip
            self.subnet = subnet(pod_ip, netmask)
        self.netmask = netmask
        self._subnets = _SubnetMemo(netmask)
        super().__init__(prefix or Path.of(LOCALNODE, self.here))

    def _local(self, a: Address) -> bool:
        if self.host_network:
            return a.meta.get("nodeName") == self.node_name
        return self._subnets.of(a.host) == self.subnet

    def rewrite(self, addr: Any, *extra: Any) -> Any:
        if not isinstance(addr, AddrBound):
            return addr
        out = frozenset(a for a in addr.addresses if self._local(a))
        if not out and addr.addresses:
            how = f"node {self.node_name}" if self.host_network else f"subnet {self.subnet}"
            return AddrNeg(
                f"{LOCALNODE}: none of the {len(addr.addresses)} addresses is on {how}"
            )
        return AddrBound(out, addr.meta)


def _bool(params: dict[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise ParamError(key, f"expected true or false, got {value!r}")
    return value


def _name(params: dict[str, Any], key: str, kind: str) -> str:
    value = required(params, key, kind)
    if not isinstance(value, str) or not value or "/" in value:
        raise ParamError(key, f"expected a Kubernetes name, got {value!r}")
    return value.lower()


def build_daemonset(params: dict[str, Any]) -> DaemonSetTransformer:
    check_keys(DAEMONSET, params,
               {"namespace", "service", "port", "hostNetwork", "k8sHost", "k8sPort",
                "kubeconfig", "netmask", "endpointSource"})
    ns = _name(params, "namespace", DAEMONSET)
    svc = _name(params, "service", DAEMONSET)
    port = _name(params, "port", DAEMONSET)
    if port.isdigit():
        raise ParamError("port", "expected the port *name* of the daemonset's service "
                         f"(e.g. incoming), got {port!r}")
    target = target_from_params(params, "k8sHost", "k8sPort")
    return DaemonSetTransformer(
        ns, svc, port, host_network=_bool(params, "hostNetwork"), target=target,
        netmask=netmask_param(params),
        prefix=prefix_param(params, Path.of(DAEMONSET, ns, port, svc)),
        endpoint_source=source_param(params),
    )


def build_localnode(
    params: dict[str, Any], env: dict[str, str] | None = None
) -> LocalNodeTransformer:
    check_keys(LOCALNODE, params, {"hostNetwork", "netmask"})
    netmask = netmask_param(params)
    env = dict(os.environ) if env is None else env
    host_network = _bool(params, "hostNetwork")
    if host_network:
        node = env.get("NODE_NAME")
        built = LocalNodeTransformer(host_network=True, node_name=node or "$NODE_NAME",
                                     prefix=prefix_param(params, Path.of(LOCALNODE,
                                                                         node or "NODE_NAME")))
        if not node:
            # The Downward API sets it in the pod; a laptop running --validate has none.
            raise HostCheckError("hostNetwork", f"{LOCALNODE} with hostNetwork: true needs "
                                 "the NODE_NAME environment variable (Downward API "
                                 "spec.nodeName)", built)
        return built
    ip = env.get("POD_IP")
    if not ip or subnet(ip) is None:
        built = LocalNodeTransformer(host_network=False, pod_ip="127.0.0.1", netmask=netmask,
                                     prefix=prefix_param(params, Path.of(LOCALNODE, "POD_IP")))
        raise HostCheckError("kind", f"{LOCALNODE} needs the POD_IP environment variable set "
                             f"to an IP (Downward API status.podIP), got {ip!r}", built)
    return LocalNodeTransformer(host_network=False, pod_ip=ip, netmask=netmask,
                                prefix=prefix_param(params, Path.of(LOCALNODE, ip)))
