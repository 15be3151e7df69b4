"""k8s/l5d-tls.yml: the mesh with TLS between nodes (linkerd-tls.yml's layout).

Schema validity comes from tests/test_manifests.py (it checks every k8s/*.yml); here:
the Secret is mounted where the config reads its certificates, only the daemonset hop
is encrypted, and the config passes `l5d --validate` with real certificates in place —
and fails, naming the key, without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dtab.path import Path as DPath
from router.config import ConfigError, parse
from tests.test_manifests import ROOT, one
from tests.tls_pki import make_pki

TLS_MESH = ROOT / "k8s" / "l5d-tls.yml"
CERTS = "/io.buoyant/linkerd/certs"
ENV = dict(os.environ, NODE_NAME="node-a", POD_IP="10.0.1.10", PYTHONPATH=str(ROOT))


def config_text() -> str:
    return one(TLS_MESH, "ConfigMap")["data"]["config.yaml"]


def with_certs(tmp: Path) -> str:
    """The ConfigMap's config with the Secret's files made for real under `tmp`."""
    pki = make_pki(tmp / "pki")
    pair = pki.issue("l5d")
    certs = tmp / "certs"
    certs.mkdir()
    (certs / "certificate.pem").write_bytes(pair.cert.read_bytes())
    (certs / "key.pk8").write_bytes(pair.key.read_bytes())
    (certs / "cacertificate.pem").write_bytes(pki.ca_pem.read_bytes())
    return config_text().replace(CERTS, str(certs))


def test_the_secret_is_mounted_where_the_config_reads_it() -> None:
    pod = one(TLS_MESH, "DaemonSet")["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    (c,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    secret = next(n for n, v in vols.items() if "secret" in v)
    assert vols[secret]["secret"]["secretName"] == "certificates"
    assert mounts[secret] == CERTS
    assert config_text().count(CERTS) == 4  # cert + key on incoming, the CA on two clients


def test_only_the_daemonset_hop_is_encrypted(tmp_path: Path) -> None:
    cfg = parse(with_certs(tmp_path), "l5d-tls.yml")
    routers = {r.label: r for r in cfg.routers}
    (incoming,) = routers["incoming"].servers
    assert incoming.tls is not None and incoming.port == 4141
    hop = DPath.read("/%/io.l5d.k8s.daemonset/default/incoming/l5d/#/io.l5d.k8s/default/http/"
                     "hello")
    local = DPath.read("/%/io.l5d.k8s.localnode/10.0.1.10/#/io.l5d.k8s/default/http/hello")
    for label in ("outgoing", "ingress"):
        tls = routers[label].client.resolve(hop).tls
        assert tls is not None and tls.common_name == "l5d"
        assert routers[label].servers[0].tls is None  # apps talk plaintext to their node
    assert routers["incoming"].client.resolve(local).tls is None  # node-local hop is plain
    assert cfg.admin.tls is None  # the seeds' /admin/ping check reaches a plain admin


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", "--validate", str(path)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)


def test_config_validates_with_certificates_and_starts_only_with_them(tmp_path: Path) -> None:
    """The manifest's certificates are mounted in the pod: `--validate` on a machine without
    them warns at the key (a host check), loading the config to start refuses it."""
    good = tmp_path / "tls.yaml"
    good.write_text(with_certs(tmp_path))
    out = _validate(good)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "a check of this machine" not in out.stderr
    bare = tmp_path / "bare.yaml"
    bare.write_text(config_text())
    out = _validate(bare)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tls.trustCertsBundle" in out.stderr and "cannot read" in out.stderr, out.stderr
    assert "a check of this machine" in out.stderr
    with pytest.raises(ConfigError) as e:
        parse(config_text(), "l5d-tls.yml")
    assert "tls.trustCertsBundle" in str(e.value) and "cannot read" in str(e.value)
