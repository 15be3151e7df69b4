"""The k8s/ manifests: valid against the Kubernetes schemas, consistent with each other,
and carrying a router config that `l5d --validate` accepts."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import resources_from_file

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.30.0"  # a fixed version: the schemas come with kubernetes-validate, offline
MANIFESTS = sorted((ROOT / "k8s").glob("*.yml"))
MESH = [ROOT / "k8s" / "l5d.yml", ROOT / "k8s" / "l5d-hostnetwork.yml"]


def resources(path: Path) -> list[dict[str, Any]]:
    return [r for r in resources_from_file(str(path)) if r]


def one(path: Path, kind: str) -> dict[str, Any]:
    found = [r for r in resources(path) if r["kind"] == kind]
    assert len(found) == 1, f"{path.name}: expected one {kind}, found {len(found)}"
    return found[0]


def test_the_manifests_exist() -> None:
    names = {p.name for p in MANIFESTS}
    assert {"l5d.yml", "l5d-hostnetwork.yml", "rbac.yml", "hello-world.yml"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    docs = resources(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_validator_rejects_a_broken_daemonset() -> None:
    ds = copy.deepcopy(one(MESH[0], "DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPort"] = "4140"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    ds = copy.deepcopy(one(MESH[0], "DaemonSet"))
    ds["spec"]["template"]["spec"]["containers"][0]["hostPorts"] = [4140]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_rbac_is_read_only_on_exactly_what_the_namer_reads() -> None:
    rbac = ROOT / "k8s" / "rbac.yml"
    role = one(rbac, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["endpoints", "services", "pods"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["get", "list", "watch"]},
    ]
    binding = one(rbac, "ClusterRoleBinding")
    sa = one(rbac, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": sa["metadata"]["namespace"]}]
    for path in MESH:
        pod = one(path, "DaemonSet")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == sa["metadata"]["name"]


def mesh_config(path: Path) -> dict[str, Any]:
    cm = one(path, "ConfigMap")
    return yaml.safe_load(cm["data"]["config.yaml"])


@pytest.mark.parametrize("path", MESH, ids=lambda p: p.name)
def test_daemonset_config_and_service_agree(path: Path) -> None:
    host_network = "hostnetwork" in path.name
    ds = one(path, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p for p in c["ports"]}
    assert {n: (p["containerPort"], p["hostPort"]) for n, p in ports.items()} == {
        "outgoing": (4140, 4140), "incoming": (4141, 4141), "ingress": (4142, 4142),
        "admin": (9990, 9990),
    }
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_IP": "status.podIP"}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/admin/ping", "port": "admin"}
    assert c["resources"]["requests"]["memory"] == "96Mi"
    assert pod.get("hostNetwork", False) is host_network

    # The router config: servers on the container ports, transformers on the service.
    cfg = mesh_config(path)
    mount = c["volumeMounts"][0]["mountPath"]
    assert c["args"] == [f"{mount}/config.yaml"]
    assert pod["volumes"][0]["configMap"]["name"] == one(path, "ConfigMap")["metadata"]["name"]
    assert cfg["admin"]["port"] == ports["admin"]["containerPort"]
    routers = {r["label"]: r for r in cfg["routers"]}
    assert set(routers) == {"outgoing", "incoming", "ingress"}
    svc = one(path, "Service")
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    assert svc["spec"]["selector"] == ds["spec"]["selector"]["matchLabels"]
    for label, r in routers.items():
        assert [s["port"] for s in r["servers"]] == [ports[label]["containerPort"]]
        (t,) = r["interpreter"]["transformers"]
        assert t.get("hostNetwork", False) is host_network
        if label == "incoming":
            assert t["kind"] == "io.l5d.k8s.localnode"
        else:
            assert t["kind"] == "io.l5d.k8s.daemonset"
            assert t["service"] == svc["metadata"]["name"]
            assert t["namespace"] == svc["metadata"]["namespace"]
            assert t["port"] == "incoming" and "incoming" in svc_ports


def test_hello_world_uses_the_node_local_router() -> None:
    hw = ROOT / "k8s" / "hello-world.yml"
    hello = next(r for r in resources(hw) if r["metadata"]["name"] == "hello")
    (c,) = hello["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["http_proxy"]["value"] == "$(NODE_NAME):4140"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    services = {r["metadata"]["name"]: r for r in resources(hw) if r["kind"] == "Service"}
    # The outgoing dtab sends world to world-v1 on port name http.
    assert {"hello", "world-v1"} <= set(services)
    assert all(p["name"] == "http" for s in services.values() for p in s["spec"]["ports"])


def test_dockerfile_builds_the_router_from_this_repository() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("dtab", "namers", "transformers", "router"):
        assert f"COPY {pkg} ./{pkg}" in text
    assert "-c constraints.txt" in text
    assert 'ENTRYPOINT ["l5d"]' in text
    image = one(MESH[0], "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] == "l5d-py"
    assert "EXPOSE 4140 4141 4142 9990" in text


@pytest.mark.parametrize("path", MESH, ids=lambda p: p.name)
def test_configmap_config_passes_l5d_validate(path: Path, tmp_path: Path) -> None:
    cm = one(path, "ConfigMap")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(cm["data"]["config.yaml"])
    # What the DaemonSet's Downward API gives the process.
    env = dict(os.environ, NODE_NAME="node-a", POD_IP="10.0.1.10")
    proc = subprocess.run(
        [sys.executable, "-m", "router.cli", "--validate", str(cfg)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # And a broken copy is refused, naming the problem.
    bad = tmp_path / "bad.yaml"
    bad.write_text(cm["data"]["config.yaml"].replace("port: incoming", "port: 4141", 1))
    proc = subprocess.run(
        [sys.executable, "-m", "router.cli", "--validate", str(bad)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "port" in proc.stdout + proc.stderr


def test_configmap_is_configs_mesh_yaml() -> None:
    """k8s/l5d.yml ships configs/mesh.yaml; the hostNetwork variant differs only in the flags."""
    mesh = yaml.safe_load((ROOT / "configs" / "mesh.yaml").read_text())
    assert mesh_config(MESH[0]) == mesh
    host_net = mesh_config(MESH[1])
    for r in host_net["routers"]:
        for t in r["interpreter"]["transformers"]:
            assert t.pop("hostNetwork") is True
    assert host_net == mesh
