"""How the k8s client finds the API server: kubectl proxy host/port, kubeconfig, in-cluster."""

from __future__ import annotations

from pathlib import Path as FsPath

import pytest
import yaml

from dtab.nametree import Leaf
from dtab.observable import Ok
from dtab.path import Path
from namers.k8s.api import ApiError, ApiTarget, K8sApi, _configuration
from namers.k8s.namer import K8sNamer
from namers.k8s.watch import Backoff, WatchHub
from tests.fake_apiserver import FakeApiServer, endpoint_slice, fake_k8s  # noqa: F401
from tests.util import async_wait_until


async def test_kubeconfig_target_reaches_the_server(
    fake_k8s: FakeApiServer, tmp_path: FsPath  # noqa: F811
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake_k8s.url}}],
        "users": [{"name": "me", "user": {"token": "secret-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
    }))
    target = ApiTarget(kubeconfig=str(kubeconfig))
    hub = WatchHub(K8sApi(target), backoff=Backoff(0.02, 0.2), linger=0.05)
    namer = K8sNamer(target, hub=hub)  # EndpointSlices served, found by discovery
    try:
        fake_k8s.upsert("endpointslices", endpoint_slice("hello-x1", "hello", [("10.0.1.5", "a")],
                                                         {"http": 80}))
        act = namer.lookup(Path.read("/default/http/hello"))
        await async_wait_until(lambda: isinstance(act.value, Ok), 5, "resolution via kubeconfig")
        assert isinstance(act.value.value, Leaf)
    finally:
        await namer.close()
        await hub.close()


async def test_in_cluster_is_the_default_inside_a_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    # No service-account token is mounted here: the in-cluster loader says so.
    with pytest.raises(Exception, match="(?i)token|service"):
        await _configuration(ApiTarget())


async def test_outside_a_cluster_falls_back_to_kubectl_proxy(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cfg = await _configuration(ApiTarget())
    assert cfg.host == "http://localhost:8001"
    assert "kubectl proxy" in caplog.text
    cfg = await _configuration(ApiTarget(host="127.0.0.1", port=8011))
    assert cfg.host == "http://127.0.0.1:8011"


async def test_http_errors_carry_status_and_url(fake_k8s: FakeApiServer) -> None:  # noqa: F811
    api = K8sApi(ApiTarget("127.0.0.1", fake_k8s.port))
    try:
        with pytest.raises(ApiError) as e:
            await api.list("endpoints", "default", "x", label_selector="no-equals-sign")
        assert e.value.status == 400
        assert "/api/v1/namespaces/default/endpoints" in str(e.value)
        assert "unsupported labelSelector" in str(e.value)
    finally:
        await api.close()
