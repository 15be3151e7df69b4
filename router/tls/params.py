"""The `tls:` keys of servers, clients and the admin, as Linkerd's TlsServerConfig and
TlsClientConfig define them (reference §1.7, §1.9), and their checks at load.

Loading is strict because TLS is a security key: a file that cannot be read, a key
that is encrypted, not PEM or not the certificate's, an unknown key under `tls:` —
each is a ConfigError on the key's line, so `l5d --validate` catches it and `l5d`
never starts serving plaintext where TLS was asked for.
"""

from __future__ import annotations

import logging
import ssl
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.config import _Obj

log = logging.getLogger(__name__)

PROTOCOL_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


class TlsFileError(Exception):
    """A TLS file that cannot be used: `key` is the config key naming it (`certPath`),
    `section` the sub-mapping it sits in (`clientAuth`) or None."""

    def __init__(self, key: str, message: str, section: str | None = None, *,
                 missing: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.section = section
        self.missing = missing  # the file is not on this machine (a host check)


# True while `l5d --validate` loads a config: a TLS file missing on the machine that
# validates is a warning there (the config is checked elsewhere than it runs), as the fs
# namer's rootDir is; starting a router stays strict, so TLS is never skipped.
HOST_CHECKS_WARN: ContextVar[bool] = ContextVar("l5d_tls_host_checks_warn", default=False)


@dataclass(frozen=True)
class ServerTls:
    """A server's `tls:` (§1.9). `caCertPath` verifies client certificates (mTLS)."""

    cert_path: str
    key_path: str
    intermediate_certs_path: str | None = None
    ca_cert_path: str | None = None
    require_client_auth: bool = False
    protocols: tuple[str, ...] = ()
    ciphers: tuple[str, ...] = ()

    def files(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert_path, self.key_path, self.intermediate_certs_path,
                                 self.ca_cert_path) if p)

    def to_json(self) -> dict[str, Any]:
        return {"enabled": True, "certPath": self.cert_path, "keyPath": self.key_path,
                "intermediateCertsPath": self.intermediate_certs_path,
                "caCertPath": self.ca_cert_path, "requireClientAuth": self.require_client_auth,
                "protocols": list(self.protocols) or None}


@dataclass(frozen=True)
class ClientAuth:
    """`clientAuth`: the certificate a client presents to an mTLS server."""

    cert_path: str
    key_path: str
    intermediate_certs_path: str | None = None


@dataclass(frozen=True)
class ClientTls:
    """A client's `tls:` (§1.7). `commonName` is checked against the server's
    certificate and sent as SNI; validation is on unless `disableValidation`."""

    common_name: str | None
    disable_validation: bool = False
    trust_certs: tuple[str, ...] = ()
    trust_certs_bundle: str | None = None
    client_auth: ClientAuth | None = None
    protocols: tuple[str, ...] = ()

    def context_key(self) -> ClientTls:
        """What the SSLContext depends on: everything but the name (set per connection)."""
        return replace(self, common_name=None)

    def files(self) -> tuple[str, ...]:
        out = list(self.trust_certs)
        if self.trust_certs_bundle:
            out.append(self.trust_certs_bundle)
        if self.client_auth is not None:
            ca = self.client_auth
            out += [p for p in (ca.cert_path, ca.key_path, ca.intermediate_certs_path) if p]
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"enabled": True, "commonName": self.common_name,
                               "disableValidation": self.disable_validation}
        if self.trust_certs:
            out["trustCerts"] = list(self.trust_certs)
        if self.trust_certs_bundle:
            out["trustCertsBundle"] = self.trust_certs_bundle
        if self.client_auth is not None:
            out["clientAuth"] = {"certPath": self.client_auth.cert_path,
                                 "keyPath": self.client_auth.key_path}
        return out


# ---------------------------------------------------------------------------
# Parsing (called by router.config with its positioned mapping)


def _file_key(obj: _Obj, key: str, *, required: bool) -> str | None:
    value = obj.str(key, None, required=required)
    if value is not None and not value.strip():
        raise obj.err(key, "is empty", "a file path")
    return value


def _protocols(obj: _Obj) -> tuple[str, ...]:
    value = obj.raw("protocols", [])
    if isinstance(value, str):
        value = [value]
    expected = "a list of: " + ", ".join(PROTOCOL_VERSIONS)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise obj.err("protocols", "must be a list of protocol names", expected)
    for v in value:
        if v not in PROTOCOL_VERSIONS:
            raise obj.err("protocols", f"unknown TLS protocol {v!r}", expected)
    return tuple(value)


def _ciphers(obj: _Obj) -> tuple[str, ...]:
    value = obj.raw("ciphers", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise obj.err("ciphers", "must be a list of OpenSSL cipher names",
                      "a list such as [ECDHE-RSA-AES128-GCM-SHA256]")
    return tuple(value)


def _enabled(obj: _Obj, what: str) -> bool:
    if obj.bool("enabled", True):
        return True
    obj.rest()  # the other keys do not matter when TLS is switched off explicitly
    log.info("%s:%s: %s: enabled: false, %s serves plaintext", obj.src.name,
             obj.key_line("enabled"), obj.key, what)
    return False


def _templated(*paths: str | None) -> bool:
    """A path with a `{var}` capture is known per client only: checked when it is used."""
    return any(p and "{" in p for p in paths)


def _raise_at(obj: _Obj, e: TlsFileError, children: dict[str, _Obj] | None = None) -> None:
    target = (children or {}).get(e.section or "", obj) if e.section else obj
    err = target.err(e.key, e.message)
    if e.missing and HOST_CHECKS_WARN.get():
        log.warning("%s (a check of this machine: an error when the router starts)", err)
        return
    raise err from None


def parse_server_tls(obj: _Obj) -> ServerTls | None:
    """`servers[].tls` or `admin.tls`; None when `enabled: false`."""
    from router.tls.context import build_server_context

    if not _enabled(obj, "this server"):
        return None
    cfg = ServerTls(
        cert_path=_file_key(obj, "certPath", required=True),  # type: ignore[arg-type]
        key_path=_file_key(obj, "keyPath", required=True),  # type: ignore[arg-type]
        intermediate_certs_path=_file_key(obj, "intermediateCertsPath", required=False),
        ca_cert_path=_file_key(obj, "caCertPath", required=False),
        require_client_auth=obj.bool("requireClientAuth", False),
        protocols=_protocols(obj),
        ciphers=_ciphers(obj),
    )
    obj.finish()
    if cfg.require_client_auth and not cfg.ca_cert_path:
        raise obj.err("requireClientAuth", "needs caCertPath to verify client certificates",
                      "caCertPath: the CA that signs the clients' certificates")
    try:
        build_server_context(cfg, where=f"{obj.src.name}:{obj.line}")
    except TlsFileError as e:
        _raise_at(obj, e)
    return cfg


def parse_client_tls(obj: _Obj) -> ClientTls | None:
    """`client.tls` (also inside io.l5d.static entries); None when `enabled: false`."""
    from router.tls.context import build_client_context

    if not _enabled(obj, "this client"):
        return None
    disable = obj.bool("disableValidation", False)
    common_name = obj.str("commonName", None)
    if not disable and not common_name:
        raise obj.err(None, "missing required key 'commonName'",
                      "the name the server's certificate must carry (also sent as SNI), "
                      "or disableValidation: true")
    trust = obj.raw("trustCerts", [])
    if isinstance(trust, str):
        trust = [trust]
    if not isinstance(trust, list) or not all(isinstance(t, str) and t for t in trust):
        raise obj.err("trustCerts", "must be a list of file paths", "a list of CA files")
    bundle = _file_key(obj, "trustCertsBundle", required=False)
    auth = None
    auth_obj = obj.child("clientAuth")
    if auth_obj is not None:
        auth = ClientAuth(
            cert_path=_file_key(auth_obj, "certPath", required=True),  # type: ignore[arg-type]
            key_path=_file_key(auth_obj, "keyPath", required=True),  # type: ignore[arg-type]
            intermediate_certs_path=_file_key(auth_obj, "intermediateCertsPath",
                                              required=False),
        )
        auth_obj.finish()
    cfg = ClientTls(
        common_name=common_name,
        disable_validation=disable,
        trust_certs=tuple(trust),
        trust_certs_bundle=bundle,
        client_auth=auth,
        protocols=_protocols(obj),
    )
    obj.finish()
    if disable and obj.src.warn:
        log.warning("%s:%s: %s: disableValidation: the server's certificate is not checked "
                    "(traffic is encrypted, the peer is not authenticated)", obj.src.name,
                    obj.key_line("disableValidation"), obj.key)
    if not _templated(*cfg.files()):
        try:
            build_client_context(cfg)
        except TlsFileError as e:
            _raise_at(obj, e, {"clientAuth": auth_obj} if auth_obj is not None else None)
    return cfg
