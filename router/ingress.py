"""`io.l5d.ingress`: Kubernetes Ingress resources as an identifier (Linkerd's
IngressIdentifier and IngressCache, linkerd/protocol/http and k8s/IngressCache.scala).

Every Ingress of the cluster (or of `namespace`) is watched (namers/k8s/collection.py:
list, watch, 410 lists again, the last known rules kept through an outage). A request
is named `/<dstPrefix>/<ingress namespace>/<servicePort>/<serviceName>` from the first
rule that matches, in Linkerd's order: every Ingress's rules first (the watch's order:
listed, then each added or changed Ingress at the end; within one Ingress its rules
and paths in order), then the first default backend (`spec.defaultBackend`, v1beta1's
`spec.backend`) unless `ignoreDefaultBackends`. No match is Linkerd's 400 "no ingress
rule matches".

Matching, as Linkerd's IngressPath: a rule's `host` equals the request's Host without
its port; a `path` is a regular expression the whole request path must match (`""` and
no path match everything, `/` only `/`). Ingresses whose `kubernetes.io/ingress.class`
annotation names another class are someone else's (`ingressClassAnnotation`, default
`linkerd`); an Ingress without the annotation is ours.

Where l5d-py goes further (Ingresses from after Linkerd's time): `networking.k8s.io/v1`
is read (backends `service.name` / `service.port.{number,name}`, `defaultBackend`), and
`extensions/v1beta1` where the API server serves nothing newer; `spec.ingressClassName`
counts as the annotation when the annotation is absent; a v1 `pathType: Exact` or
`Prefix` matches as Kubernetes defines it (`ImplementationSpecific` or none: Linkerd's
regular expression); `*.example.com` hosts match one label; hosts compare without case
(DNS names have none), and `[::1]:80` loses its port properly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dtab.errors import ParamError
from dtab.observable import Unsubscribe
from dtab.path import Path
from router.identifiers import IdentificationError, Identified
from router.request import RequestHead

log = logging.getLogger("l5d.ingress")

KIND = "io.l5d.ingress"
ANNOTATION = "kubernetes.io/ingress.class"
VERSIONS = ("networking.k8s.io/v1", "networking.k8s.io/v1beta1", "extensions/v1beta1")
NO_MATCH = "no ingress rule matches"
START_WAIT_S = 10.0  # how long start() waits for the first list before serving anyway


@dataclass(frozen=True, slots=True)
class IngressPath:
    """One rule path (or a default backend: no host, no path) and where it sends."""

    host: str | None
    path: str | None
    namespace: str
    svc: str
    port: str
    path_type: str | None = None
    regex: re.Pattern[str] | None = None

    def matches(self, host: str | None, path: str) -> bool:
        if self.host is not None and not _host_matches(self.host, host):
            return False
        p = self.path
        if not p:
            return True
        if self.path_type == "Exact":
            return path == p
        if self.path_type == "Prefix":
            want = [s for s in p.split("/") if s]
            have = [s for s in path.split("/") if s]
            return have[:len(want)] == want
        return self.regex is not None and self.regex.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class IngressSpec:
    name: str
    namespace: str
    fallback: IngressPath | None
    rules: tuple[IngressPath, ...]


def _host_matches(rule: str, host: str | None) -> bool:
    if host is None:
        return False
    if rule.startswith("*."):
        head, dot, rest = host.partition(".")
        return bool(head) and bool(dot) and rest == rule[2:]
    return host == rule


def host_sans_port(value: str | None) -> str | None:
    """`web:8080` -> `web`, `[::1]:80` -> `::1`, lowercased (Linkerd split on ':')."""
    if not value:
        return None
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        return v[1:end] if end > 0 else v
    if v.count(":") == 1:
        v = v.split(":", 1)[0]
    return v


def _backend(b: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(service, port) of a v1 or v1beta1 backend; None for a resource backend."""
    if not isinstance(b, Mapping):
        return None
    svc = b.get("service")
    if isinstance(svc, Mapping):  # networking.k8s.io/v1
        port = svc.get("port") or {}
        number = port.get("number") if isinstance(port, Mapping) else None
        pname = port.get("name") if isinstance(port, Mapping) else None
        value = pname if pname else number
        if svc.get("name") and value not in (None, ""):
            return str(svc["name"]), str(value)
        return None
    if b.get("serviceName") and b.get("servicePort") not in (None, ""):  # v1beta1
        return str(b["serviceName"]), str(b["servicePort"])
    return None


def parse_ingress(obj: Mapping[str, Any], annotation_class: str,
                  ignore_default_backends: bool) -> IngressSpec | None:
    """Linkerd's IngressCache.mkIngress: None when the Ingress is another class's."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec")
    annotations = meta.get("annotations") or {}
    cls = annotations.get(ANNOTATION)
    if cls is None and isinstance(spec, Mapping):
        cls = spec.get("ingressClassName")
    if cls is not None and cls != annotation_class:
        return None
    if not isinstance(spec, Mapping):
        return None
    ns = str(meta.get("namespace") or "default")
    name = str(meta.get("name") or "unknown")
    rules: list[IngressPath] = []
    for rule in spec.get("rules") or []:
        host = rule.get("host")
        host = str(host).lower() if host else None
        for p in ((rule.get("http") or {}).get("paths") or []):
            backend = _backend(p.get("backend"))
            if backend is None:
                log.warning("ingress %s.%s: a path without a service backend (%.100s); "
                            "ignoring it", name, ns, p.get("backend"))
                continue
            path, path_type = p.get("path"), p.get("pathType")
            regex = None
            if path and path_type not in ("Exact", "Prefix"):
                try:
                    regex = re.compile(str(path))
                except re.error as e:
                    log.warning("ingress %s.%s: path %.100r is not a regular expression "
                                "(%s); ignoring it", name, ns, path, e)
                    continue
            rules.append(IngressPath(host, str(path) if path is not None else None, ns,
                                     backend[0], backend[1], path_type, regex))
    fallback = None
    default = spec.get("defaultBackend") or spec.get("backend")
    if default is not None:
        if ignore_default_backends:
            log.info("ingress %s.%s: ignoreDefaultBackends enabled, ignoring default backend",
                     name, ns)
        elif (b := _backend(default)) is not None:
            fallback = IngressPath(None, None, ns, b[0], b[1])
    return IngressSpec(name, ns, fallback, tuple(rules))


def match(specs: Sequence[IngressSpec], host: str | None, path: str) -> IngressPath | None:
    """Linkerd's IngressCache.getMatchingPath: every rule first, then the first fallback."""
    for spec in specs:
        for rule in spec.rules:
            if rule.matches(host, path):
                return rule
    for spec in specs:
        if spec.fallback is not None:
            return spec.fallback
    return None


class IngressIdentifier:
    """The identifier (callable per request) with the watch it needs (`start`/`close`)."""

    def __init__(self, prefix: Path, watch: Any, annotation_class: str = "linkerd",
                 ignore_default_backends: bool = False) -> None:
        self.prefix = prefix
        self.watch = watch
        self.annotation_class = annotation_class
        self.ignore_default_backends = ignore_default_backends
        self.specs: tuple[IngressSpec, ...] | None = None
        self._parsed: dict[tuple[str, str], tuple[str, IngressSpec | None]] = {}
        self._unsub: Unsubscribe | None = None

    def _changed(self, objs: Mapping[tuple[str, str], Mapping[str, Any]] | None) -> None:
        if objs is None:
            return
        specs, parsed = [], {}
        for key, obj in objs.items():
            # An unchanged object (same resourceVersion) is not parsed again.
            rv = str((obj.get("metadata") or {}).get("resourceVersion"))
            prev = self._parsed.get(key)
            spec = prev[1] if prev is not None and prev[0] == rv else parse_ingress(
                obj, self.annotation_class, self.ignore_default_backends)
            parsed[key] = (rv, spec)
            if spec is not None:
                specs.append(spec)
        self._parsed = parsed
        self.specs = tuple(specs)

    def __call__(self, head: RequestHead) -> Identified:
        specs = self.specs
        if specs is None:
            why = f": {self.watch.last_error}" if self.watch.last_error else ""
            raise IdentificationError(f"ingress resources not listed yet from "
                                      f"{self.watch.target.show}{why}")
        target = head.target
        q = target.find("?")
        path = target if q < 0 else target[:q]
        rule = match(specs, host_sans_port(head.host), path)
        if rule is None:
            raise IdentificationError(NO_MATCH)
        return Identified(self.prefix + Path((rule.namespace, rule.port, rule.svc)))

    async def start(self) -> None:
        self._unsub = self.watch.state.observe(self._changed)
        self._changed(self.watch.state.value)
        self.watch.start()
        if not await self.watch.wait_listed(START_WAIT_S):
            log.warning("%s: no Ingress list from %s within %.0fs (%s); requests get 400 "
                        "until it answers", KIND, self.watch.show, START_WAIT_S,
                        self.watch.last_error or "no answer")

    async def close(self) -> None:
        if self._unsub is not None:
            self._unsub()
            self._unsub = None
        await self.watch.close()

    def state_json(self) -> dict[str, Any]:
        return {"source": self.watch.show, "version": self.watch.version,
                "resourceVersion": self.watch.resource_version,
                "error": self.watch.last_error,
                "ingresses": [f"{s.namespace}/{s.name}" for s in self.specs or ()]}


KNOWN = ("host", "port", "kubeconfig", "namespace", "ingressClassAnnotation",
         "ignoreDefaultBackends")


def build(params: Mapping[str, Any], prefix: Path) -> IngressIdentifier:
    """From the identifier's config entry; ParamError(key, ...) for a bad value."""
    from namers.k8s.collection import CollectionWatch
    from namers.k8s.namer import target_from_params

    for key in params:
        if key != "kind" and key not in KNOWN:
            raise ParamError(key, f"unknown parameter for {KIND}; known: " + ", ".join(KNOWN))
    ns = params.get("namespace")
    if ns is not None and (not isinstance(ns, str) or not ns):
        raise ParamError("namespace", f"expected a Kubernetes namespace name, got {ns!r}")
    cls = params.get("ingressClassAnnotation", "linkerd")
    if not isinstance(cls, str) or not cls:
        raise ParamError("ingressClassAnnotation", f"expected a class name, got {cls!r}")
    ignore = params.get("ignoreDefaultBackends", False)
    if not isinstance(ignore, bool):
        raise ParamError("ignoreDefaultBackends", f"expected true or false, got {ignore!r}")
    target = target_from_params(dict(params))
    return IngressIdentifier(prefix, CollectionWatch(target, "ingresses", VERSIONS, ns),
                             cls, ignore)
