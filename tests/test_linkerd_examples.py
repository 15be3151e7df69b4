"""Configs from linkerd/linkerd-examples validate and start unchanged in meaning.

The copies under tests/data/linkerd-examples/ are byte-for-byte the repository's
(tests/data/linkerd-examples/README.md names the commit); to start one here its
fixed ports, 0.0.0.0 listen IPs, fs rootDir and API server address are replaced
for the test machine, nothing else.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path as FsPath

import pytest
import yaml

from tests.fake_apiserver import FakeApiServer, fake_k8s  # noqa: F401
from tests.util import free_port

DATA = FsPath(__file__).parent / "data" / "linkerd-examples"
EXAMPLES = [
    "getting-started/local/linkerd.yaml",
    "http-proxy/linkerd.yaml",
    "failure-accrual/linkerd.yml",
    "k8s-daemonset/k8s/linkerd.yml",
]
# Validated here; started by tests/test_ingress_e2e.py (which routes through it).
VALIDATED_ONLY = ["k8s-daemonset/k8s/linkerd-ingress-controller.yml"]


def _validate(path: FsPath, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "router.cli", "--validate", str(path)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})},
                          cwd=FsPath(__file__).parent.parent)


@pytest.mark.parametrize("name", EXAMPLES + VALIDATED_ONLY)
def test_example_validates(name: str) -> None:
    out = _validate(DATA / name)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK"), out.stdout
    if name == "k8s-daemonset/k8s/linkerd.yml":
        # no Downward API here: localnode's POD_IP is a warning under --validate
        assert "POD_IP" in out.stderr and "an error when the router starts" in out.stderr


def _config_text(name: str) -> str:
    text = (DATA / name).read_text()
    if name.startswith("k8s-daemonset"):
        cm = next(d for d in yaml.safe_load_all(text) if d and d.get("kind") == "ConfigMap")
        text = cm["data"]["config.yaml"]
    return text


def _localise(text: str, disco: FsPath, api_port: int) -> str:
    text = text.replace("ip: 0.0.0.0", "ip: 127.0.0.1")
    text = re.sub(r"rootDir: \S+", f"rootDir: {disco}", text)
    text = text.replace("port: 8001", f"port: {api_port}")  # kubectl proxy -> fake API
    ports: dict[str, int] = {}
    return re.sub(r"port: (\d+)",
                  lambda m: f"port: {ports.setdefault(m.group(1), free_port())}", text)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_starts(name: str, l5d_process, tmp_path: FsPath,
                        fake_k8s: FakeApiServer) -> None:  # noqa: F811
    disco = tmp_path / "disco"
    disco.mkdir()
    text = _localise(_config_text(name), disco, fake_k8s.port)
    proc = l5d_process(text, env={"POD_IP": "127.0.0.1"})
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin_port}/admin/ping",
                                timeout=10) as r:
        assert r.read() == b"pong"
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.admin_port}/config.json",
                                timeout=10) as r:
        routers = json.loads(r.read())["routers"]
    assert len(routers) == len(proc.ports) >= 1


def test_k8s_example_without_the_downward_api_does_not_start(monkeypatch) -> None:
    """What --validate warns about stops a real start: localnode without POD_IP."""
    from router.config import ConfigError, load_all
    from router.router import Linker

    monkeypatch.delenv("POD_IP", raising=False)
    [(_, config)] = load_all(str(DATA / "k8s-daemonset/k8s/linkerd.yml"))
    with pytest.raises(ConfigError, match="POD_IP"):
        Linker(config)
