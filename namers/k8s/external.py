"""`io.l5d.k8s.external`: a Service's external load balancer (Linkerd's ServiceNamer).

`/#/io.l5d.k8s.external/<namespace>/<port name or number>/<service>[/<label value>]/
residual` binds the id `/#/io.l5d.k8s.external/<namespace>/<port>/<service>` to the
Service's `status.loadBalancer.ingress` addresses (a `hostname` where the cloud gives
one, else the `ip`) on the Service's `port` — not a pod, not the targetPort. It is
for routers outside the cluster that reach services inside it. As in Linkerd:
- `experimental: true` is required;
- the three segments are lowercased (Linkerd's ServiceNamerTest "is case insensitive");
- a missing Service, a port the Service does not have, or a Service with no load
  balancer ingress yet (a ClusterIP Service, or a LoadBalancer still being provisioned)
  is Neg, and the name follows the Service: an ingress address appearing, changing or
  going away updates the bound address in place;
- with `labelSelector`, the fourth segment is the label's value and the Service must
  carry it.
Where l5d-py differs: a load balancer with several ingress entries gives all of them
(Linkerd kept the last one), a port number is the Service's `port` (Linkerd looked it
up through the targetPort, which only found ports whose targetPort equals their own
name), and the id is lowercased like io.l5d.k8s's (Linkerd kept the request's case,
which made one client per spelling).

Watches are the io.l5d.k8s namer's: one shared watch per Service (namers/k8s/watch.py),
entries cached, bounded and released when idle by K8sNamer.
"""

from __future__ import annotations

from typing import Any

from dtab.addr import AddrBound, Address, AddrNeg
from dtab.errors import ParamError
from namers.k8s.namer import K8sNamer, Resolved, _Entry
from namers.k8s.namer import build as build_k8s
from namers.k8s.watch import Absent, Present, WatchKey

KIND = "io.l5d.k8s.external"


def resolve_load_balancer(service: Any, port: str, where: str) -> Resolved | None:
    """The load balancer addresses of a Service port (None while the Service is not known)."""
    if not isinstance(service, Present | Absent):
        return None
    if isinstance(service, Absent):
        reason = f"k8s service {where} not found"
        return Resolved(AddrNeg(reason), reason)
    spec = service.obj.get("spec") or {}
    ports = spec.get("ports") or []
    if port.isdigit():
        match = next((p for p in ports if p.get("port") == int(port)), None)
    else:
        match = next((p for p in ports if (p.get("name") or "") == port), None)
    if match is None:
        known = ", ".join(str(p.get("name") or p.get("port")) for p in ports) or "none"
        reason = f"k8s service {where} has no port {port} (ports: {known})"
        return Resolved(AddrNeg(reason), reason)
    number = int(match["port"])
    ingress = ((service.obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    hosts = {i.get("hostname") or i.get("ip") for i in ingress} - {None, ""}
    if not hosts:
        kind = spec.get("type") or "ClusterIP"
        reason = f"k8s service {where} has no load balancer ingress (type {kind})"
        return Resolved(AddrNeg(reason), reason)
    return Resolved(AddrBound(frozenset(Address(str(h), number) for h in hosts)), None)


class _ServiceEntry(_Entry):
    """One id resolved from the Service object alone."""

    def watch_keys(self, ns: str, port: str, svc: str, selector: str | None) -> list[WatchKey]:
        return [WatchKey("services", ns, svc, selector)]

    def resolve(self) -> Resolved | None:
        return resolve_load_balancer(self.leases[0].state.value, self.port, self.where)


class K8sExternalNamer(K8sNamer):
    kind = KIND
    entry_type = _ServiceEntry


def build(params: dict[str, Any]) -> K8sNamer:
    """The registry's builder for `kind: io.l5d.k8s.external`."""
    if params.get("experimental") is not True:
        # Linkerd: "The /io.l5d.k8s.external namer is experimental and must be explicitly
        # enabled by setting the `experimental' parameter to `true'." (Linker.scala)
        prefix = params.get("prefix") or f"/{KIND}"
        raise ParamError("experimental", f"The {prefix} namer is experimental and must be "
                         "explicitly enabled by setting the `experimental' parameter to `true'")
    return build_k8s(params, cls=K8sExternalNamer)
