"""`python -m router.tls.demo_certs DIR`: a throwaway CA and a certificate for the local
TLS mesh demo (`make run-tls`), in the file names of linkerd-tls.yml's Secret.

Never for production: the CA key is written next to the certificates. Existing files
are kept, so restarting the demo keeps the same CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "l5d-py demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make(root: Path, name: str = "l5d") -> None:
    if (root / "certificate.pem").exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("l5d-py demo CA"))
          .issuer_name(_name("l5d-py demo CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(name), x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    (root / "cacertificate.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "ca.key").write_bytes(_pem_key(ca_key))
    (root / "certificate.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (root / "key.pk8").write_bytes(_pem_key(key))
    (root / "key.pk8").chmod(0o600)
    (root / "ca.key").chmod(0o600)


if __name__ == "__main__":
    make(Path(sys.argv[1] if len(sys.argv) > 1 else ".run/tls"))
    print(f"certificates in {sys.argv[1] if len(sys.argv) > 1 else '.run/tls'}")
