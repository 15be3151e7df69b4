"""Real CAs and certificates for the TLS tests (trustme), written as PEM files."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path as FsPath

import trustme


@dataclass
class Pair:
    cert: FsPath
    key: FsPath


@dataclass
class Pki:
    root: FsPath
    ca: trustme.CA
    ca_pem: FsPath
    other_ca_pem: FsPath

    def issue(self, name: str, *identities: str, ca: trustme.CA | None = None,
              expired: bool = False) -> Pair:
        """A leaf for `identities` (default: `name`), signed by this CA unless `ca`."""
        kw = {}
        if expired:
            now = datetime.datetime.now(datetime.UTC)
            kw = {"not_before": now - datetime.timedelta(days=30),
                  "not_after": now - datetime.timedelta(days=1)}
        leaf = (ca or self.ca).issue_cert(*(identities or (name,)), common_name=name, **kw)
        cert = self.root / f"{name}.crt"
        key = self.root / f"{name}.key"
        cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        return Pair(cert, key)


def make_pki(root: FsPath) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="l5d-py test CA")
    other = trustme.CA(organization_name="some other CA")
    ca_pem = root / "ca.pem"
    other_pem = root / "other-ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    other.cert_pem.write_to_path(str(other_pem))
    return Pki(root, ca, ca_pem, other_pem)
