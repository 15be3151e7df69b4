"""TLS params at load: a config that asks for TLS gets it or does not start.

Every bad file (missing, unreadable, not PEM, encrypted, a key of another
certificate) and every unknown key under `tls:` is a ConfigError naming the file,
the line of the key and what is wrong — for `l5d --validate` and for `l5d`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path as FsPath

import pytest

from dtab.path import Path
from router.config import ConfigError, parse
from router.tls import ClientTls, ServerTls
from tests.conftest import REPO
from tests.tls_pki import Pki, make_pki
from tests.util import free_port


@pytest.fixture
def pki(tmp_path: FsPath) -> Pki:
    return make_pki(tmp_path / "pki")


def server_config(tls_lines: str, port: int = 4141) -> str:
    return (
        "routers:\n"
        "- protocol: http\n"
        "  servers:\n"
        f"  - port: {port}\n"
        "    tls:\n" + "".join(f"      {line}\n" for line in tls_lines.strip().splitlines())
    )


def load_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, "l5d.yaml")
    return info.value


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_server_tls_is_parsed_into_its_params(pki: Pki) -> None:
    p = pki.issue("incoming.l5d.test")
    text = server_config(f"""
certPath: {p.cert}
keyPath: {p.key}
caCertPath: {pki.ca_pem}
requireClientAuth: true
protocols: [TLSv1.2, TLSv1.3]
""")
    tls = parse(text).routers[0].servers[0].tls
    assert tls == ServerTls(str(p.cert), str(p.key), None, str(pki.ca_pem), True,
                            ("TLSv1.2", "TLSv1.3"))


def test_tls_keys_are_not_warned_about_as_unacted(pki: Pki, caplog: pytest.LogCaptureFixture
                                                   ) -> None:
    p = pki.issue("incoming.l5d.test")
    text = server_config(f"certPath: {p.cert}\nkeyPath: {p.key}") + (
        "  client:\n"
        f"    tls: {{commonName: incoming.l5d.test, trustCertsBundle: {pki.ca_pem}}}\n"
        "admin:\n"
        f"  tls: {{certPath: {p.cert}, keyPath: {p.key}}}\n"
    )
    with caplog.at_level(logging.WARNING):
        cfg = parse(text)
    assert "not acted on" not in caplog.text
    assert cfg.admin.tls is not None and cfg.routers[0].servers[0].tls is not None
    assert cfg.routers[0].client.default.tls.common_name == "incoming.l5d.test"


@pytest.mark.parametrize("case", ["missing cert", "missing key", "missing ca", "no pem",
                                  "key mismatch", "encrypted key", "der key",
                                  "unknown key", "no certPath", "client auth without ca",
                                  "bad protocol"])
def test_server_tls_errors_name_the_line(pki: Pki, case: str) -> None:
    p = pki.issue("incoming.l5d.test")
    other = pki.issue("other.l5d.test")
    garbage = pki.root / "garbage.pem"
    garbage.write_text("hello\n")
    der = pki.root / "key.der"
    der.write_bytes(b"\x30\x82\x01\x00" + b"\x00" * 64)
    encrypted = pki.root / "enc.key"
    encrypted.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n"
                         "-----END ENCRYPTED PRIVATE KEY-----\n")
    cert, key = f"certPath: {p.cert}", f"keyPath: {p.key}"
    lines, bad_key, words = {
        "missing cert": (f"certPath: {pki.root}/nope.crt\n{key}", "certPath",
                         "cannot read"),
        "missing key": (f"{cert}\nkeyPath: /nonexistent/tls.key", "keyPath", "cannot read"),
        "missing ca": (f"{cert}\n{key}\ncaCertPath: {pki.root}/none.pem", "caCertPath",
                       "No such file"),
        "no pem": (f"certPath: {garbage}\n{key}", "certPath", "no PEM certificate"),
        "key mismatch": (f"{cert}\nkeyPath: {other.key}", "keyPath", "does not match"),
        "encrypted key": (f"{cert}\nkeyPath: {encrypted}", "keyPath", "encrypted"),
        "der key": (f"{cert}\nkeyPath: {der}", "keyPath", "not a PEM private key"),
        "unknown key": (f"{cert}\n{key}\nrequireClientAuthh: true", "requireClientAuthh",
                        "unknown key"),
        "no certPath": (key, "tls", "missing required key 'certPath'"),
        "client auth without ca": (f"{cert}\n{key}\nrequireClientAuth: true",
                                   "requireClientAuth", "needs caCertPath"),
        "bad protocol": (f"{cert}\n{key}\nprotocols: [SSLv3]", "protocols",
                         "unknown TLS protocol"),
    }[case]
    text = server_config(lines)
    e = load_error(text)
    assert e.file == "l5d.yaml"
    assert e.line == line_of(text, bad_key + ":"), (e, text)
    assert words in str(e), e
    assert e.key.startswith("routers[0].servers[0].tls")


def test_client_tls_errors_inside_static_configs(pki: Pki) -> None:
    client = pki.issue("outgoing.l5d.test")
    other = pki.issue("other.l5d.test")
    base = (
        "routers:\n"
        "- protocol: http\n"
        "  servers: [{port: 4140}]\n"
        "  client:\n"
        "    kind: io.l5d.static\n"
        "    configs:\n"
        "    - prefix: /#/io.l5d.fs/{service}\n"
        "      tls:\n"
        "        commonName: '{service}.l5d.test'\n"
    )
    ok = base + (f"        trustCertsBundle: {pki.ca_pem}\n"
                 "        clientAuth:\n"
                 f"          certPath: {client.cert}\n"
                 f"          keyPath: {client.key}\n")
    cfg = parse(ok)
    resolved = cfg.routers[0].client.resolve(Path.read("/#/io.l5d.fs/incoming"))
    assert resolved.tls.common_name == "incoming.l5d.test"
    assert resolved.tls.client_auth.cert_path == str(client.cert)
    # a path that is not under any prefix gets no TLS: only the mesh hop is encrypted
    assert cfg.routers[0].client.resolve(Path.read("/$/inet/127.0.0.1/80")).tls is None

    mismatch = ok.replace(f"keyPath: {client.key}", f"keyPath: {other.key}")
    e = load_error(mismatch)
    assert e.line == line_of(mismatch, f"keyPath: {other.key}")
    assert e.key.endswith("tls.clientAuth.keyPath") and "does not match" in str(e)

    missing = base + "        trustCertsBundle: /etc/none/ca.pem\n"
    e = load_error(missing)
    assert e.line == line_of(missing, "trustCertsBundle") and "cannot read" in str(e)

    no_cn = base.replace("        commonName: '{service}.l5d.test'\n",
                         f"        trustCerts: [{pki.ca_pem}]\n")
    e = load_error(no_cn)
    assert "commonName" in str(e) and e.line == line_of(no_cn, "tls:")

    typo = ok + "        disableValidaton: true\n"
    e = load_error(typo)
    assert "unknown key 'disableValidaton'" in str(e)
    assert e.line == line_of(typo, "disableValidaton")


def test_client_disable_validation_needs_no_name(pki: Pki) -> None:
    text = ("routers:\n- protocol: http\n  servers: [{port: 4140}]\n"
            "  client: {tls: {disableValidation: true}}\n")
    tls = parse(text).routers[0].client.default.tls
    assert tls == ClientTls(None, True)


def test_admin_tls_errors(pki: Pki) -> None:
    p = pki.issue("admin.l5d.test")
    text = ("admin:\n  port: 9990\n  tls:\n"
            f"    certPath: {p.cert}\n    keyPath: {pki.root}/missing.key\n"
            "routers:\n- protocol: http\n  servers: [{port: 4140}]\n")
    e = load_error(text)
    assert e.key == "admin.tls.keyPath" and e.line == 5 and "cannot read" in str(e)


def test_unreadable_key_file(pki: Pki) -> None:
    """Tests run as root (any mode is readable): a directory is what cannot be read."""
    p = pki.issue("incoming.l5d.test")
    text = server_config(f"certPath: {p.cert}\nkeyPath: {pki.root}")
    e = load_error(text)
    assert e.line == line_of(text, "keyPath") and "cannot read" in str(e)
    assert "Is a directory" in str(e)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "router.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60, cwd=REPO)


def test_validate_and_serve_stop_on_a_bad_tls_file(pki: Pki, tmp_path: FsPath) -> None:
    p = pki.issue("incoming.l5d.test")
    other = pki.issue("other.l5d.test")
    text = server_config(f"certPath: {p.cert}\nkeyPath: {other.key}", port=free_port())
    path = tmp_path / "bad-tls.yaml"
    path.write_text(text)
    line = line_of(text, "keyPath")
    for args in (("--validate", str(path)), (str(path),)):
        out = _cli(*args)
        assert out.returncode != 0, out
        assert f"{path}:{line}: routers[0].servers[0].tls.keyPath" in out.stderr, out.stderr
        assert "does not match the certificate" in out.stderr


def test_a_tls_file_missing_on_the_validating_machine_is_a_warning_there_only(
        pki: Pki, tmp_path: FsPath) -> None:
    """Linkerd configs name certificates mounted in the pod (linkerd-examples' linkerd-tls.yml):
    `--validate` elsewhere warns at the key's line, starting stays an error (never plaintext);
    a file that is present but wrong stays an error under `--validate` too (test above)."""
    p = pki.issue("incoming.l5d.test")
    text = server_config(f"certPath: /nonexistent/tls.crt\nkeyPath: {p.key}", port=free_port())
    path = tmp_path / "mounted-tls.yaml"
    path.write_text(text)
    where = f"{path}:{line_of(text, 'certPath')}: routers[0].servers[0].tls.certPath"
    checked = _cli("--validate", str(path))
    assert checked.returncode == 0, checked.stderr
    assert where in checked.stderr and "a check of this machine" in checked.stderr
    started = _cli(str(path))
    assert started.returncode != 0
    assert where in started.stderr and "cannot read /nonexistent/tls.crt" in started.stderr
