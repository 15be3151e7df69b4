"""`io.l5d.k8s.ns`: `io.l5d.k8s` in one namespace (Linkerd's K8sNamespacedInitializer).

`/#/io.l5d.k8s.ns/<port name or number>/<service>[/<label value>]/residual` resolves
as `io.l5d.k8s` does with `<namespace>` put in front, and binds the id
`/#/io.l5d.k8s.ns/<port>/<service>` (Linkerd's SingleNsNamer). The namespace is read
at start from the environment variable `envVar` (default `POD_NAMESPACE`, which the
downward API sets from `metadata.namespace`); l5d-py also takes `namespace:` in the
config. Linkerd stops at start when the variable is unset ("could not find namespace
for envVar"); here that is a check of this machine: a warning under `l5d --validate`,
an error when the router starts.
"""

from __future__ import annotations

import os
from typing import Any

from dtab.errors import ParamError
from namers.k8s.namer import _DNS_LABEL, K8sNamer
from namers.k8s.namer import build as build_k8s

KIND = "io.l5d.k8s.ns"
DEFAULT_ENV_VAR = "POD_NAMESPACE"


class K8sNsNamer(K8sNamer):
    """A K8sNamer whose namespace is fixed: one segment shorter paths."""

    kind = KIND


def _valid(ns: str) -> bool:
    return len(ns) <= 63 and _DNS_LABEL.fullmatch(ns) is not None


def build(params: dict[str, Any]) -> K8sNamer:
    """The registry's builder for `kind: io.l5d.k8s.ns`."""
    from namers.registry import HostCheckError

    env_var = params.get("envVar", DEFAULT_ENV_VAR)
    if not isinstance(env_var, str) or not env_var:
        raise ParamError("envVar", f"expected an environment variable name, got {env_var!r}")
    given = params.get("namespace")
    if given is not None and (not isinstance(given, str) or not _valid(given)):
        raise ParamError("namespace", f"expected a Kubernetes namespace name, got {given!r}")
    extra = frozenset({"envVar", "namespace"})
    rest = {k: v for k, v in params.items() if k not in extra}
    if given is not None:
        return build_k8s(rest, cls=K8sNsNamer, extra=extra, namespace=given)
    ns = os.environ.get(env_var, "")
    if not ns:
        built = build_k8s(rest, cls=K8sNsNamer, extra=extra, namespace="default")
        raise HostCheckError("envVar", f"{KIND} reads its namespace from ${env_var}, which is "
                             "not set (the downward API sets it from metadata.namespace); "
                             "or give namespace: in the config", built)
    if not _valid(ns):
        raise ParamError("envVar", f"${env_var} is {ns[:80]!r}, not a Kubernetes namespace name")
    return build_k8s(rest, cls=K8sNsNamer, extra=extra, namespace=ns)
