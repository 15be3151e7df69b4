"""SSLContexts from TLS params, checked file by file, and swapped when the files change.

`build_*_context` read every file with `cryptography` first, so a failure names
the key, the file and what is wrong (not found, not PEM, encrypted, the key of
another certificate) instead of OpenSSL's `[SSL] PEM lib`. `TlsSource` holds the
current context and re-reads the files when their identity (inode, size, mtime of
the resolved path) changes — which is what a Kubernetes Secret mount does when it
swaps its `..data` symlink — checking at most once per `CHECK_INTERVAL_S`, when a
connection asks for the context. A broken new set keeps the previous context.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where a file is read: ~7 MB a process without TLS never needs
    from cryptography import x509

from router.tls.params import PROTOCOL_VERSIONS, ClientTls, ServerTls, TlsFileError

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


# ---------------------------------------------------------------------------
# Files


def _read(path: str, key: str, section: str | None) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TlsFileError(key, f"cannot read {path}: {e.strerror or e}", section,
                           missing=isinstance(e, FileNotFoundError)) from None


def read_certs(path: str, key: str, section: str | None = None) -> list[x509.Certificate]:
    from cryptography import x509

    data = _read(path, key, section)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TlsFileError(key, f"{path} holds no PEM certificate "
                           "(expected -----BEGIN CERTIFICATE-----)", section)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise TlsFileError(key, f"{path}: invalid PEM certificate: {e}", section) from None


def read_key(path: str, key: str, section: str | None = None) -> Any:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    data = _read(path, key, section)
    if b"ENCRYPTED" in data:
        raise TlsFileError(key, f"{path} is an encrypted private key; l5d-py needs it "
                           "unencrypted (openssl pkcs8 -topk8 -nocrypt)", section)
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise TlsFileError(key, f"{path} is not a PEM private key (expected PKCS#8 "
                           "-----BEGIN PRIVATE KEY-----; PKCS#1 RSA and SEC1 EC keys are "
                           "accepted too)", section)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise TlsFileError(key, f"{path}: unsupported or invalid private key: {e}",
                           section) from None


def _public(obj: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return obj.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _check_validity(cert: x509.Certificate, path: str, where: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc < now:
        log.warning("%s: the certificate in %s (%s) expired at %s; peers that validate will "
                    "refuse it", where, path, subject(cert), cert.not_valid_after_utc)
    elif cert.not_valid_before_utc > now:
        log.warning("%s: the certificate in %s (%s) is not valid before %s", where, path,
                    subject(cert), cert.not_valid_before_utc)


def _pem_chain(cert_path: str, key_path: str, chain_path: str | None, section: str | None,
               where: str, ckey: str = "certPath", kkey: str = "keyPath",
               chkey: str = "intermediateCertsPath") -> tuple[bytes, bytes, x509.Certificate]:
    """The leaf (+ intermediates) and key as PEM, after checking they belong together."""
    from cryptography.hazmat.primitives import serialization

    certs = read_certs(cert_path, ckey, section)
    pkey = read_key(key_path, kkey, section)
    if _public(certs[0]) != _public(pkey):
        raise TlsFileError(kkey, f"the key in {key_path} does not match the certificate in "
                           f"{cert_path} ({subject(certs[0])})", section)
    _check_validity(certs[0], cert_path, where)
    chain = list(certs)
    if chain_path:
        chain += read_certs(chain_path, chkey, section)
    cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    key_pem = pkey.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return cert_pem, key_pem, certs[0]


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, key: str,
                section: str | None) -> None:
    # ssl loads chains from files only: a private temporary file, removed at once.
    fd, tmp = tempfile.mkstemp(prefix="l5d-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem + key_pem)
        ctx.load_cert_chain(tmp)
    except ssl.SSLError as e:
        raise TlsFileError(key, f"OpenSSL cannot use this certificate and key: {e}",
                           section) from None
    finally:
        os.unlink(tmp)


def _load_cas(ctx: ssl.SSLContext, path: str, key: str) -> None:
    read_certs(path, key)
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as e:
        raise TlsFileError(key, f"OpenSSL cannot load CA certificates from {path}: {e}") from None


def _set_protocols(ctx: ssl.SSLContext, protocols: tuple[str, ...]) -> None:
    if protocols:
        versions = sorted(PROTOCOL_VERSIONS[p] for p in protocols)
        try:
            ctx.minimum_version = versions[0]
            ctx.maximum_version = versions[-1]
        except (ValueError, ssl.SSLError) as e:
            raise TlsFileError("protocols", f"OpenSSL refuses {list(protocols)}: {e}") from None


# ---------------------------------------------------------------------------
# Contexts


def build_server_context(cfg: ServerTls, *, where: str = "tls",
                         alpn: tuple[str, ...] = ("http/1.1",)) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert_pem, key_pem, _leaf = _pem_chain(cfg.cert_path, cfg.key_path,
                                          cfg.intermediate_certs_path, None, where)
    _load_chain(ctx, cert_pem, key_pem, "certPath", None)
    if cfg.ca_cert_path:
        _load_cas(ctx, cfg.ca_cert_path, "caCertPath")
    # Linkerd: client certificates are asked for (and must verify) only with requireClientAuth.
    ctx.verify_mode = ssl.CERT_REQUIRED if cfg.require_client_auth else ssl.CERT_NONE
    _set_protocols(ctx, cfg.protocols)
    if cfg.ciphers:
        try:
            ctx.set_ciphers(":".join(cfg.ciphers))
        except ssl.SSLError as e:
            raise TlsFileError("ciphers", f"OpenSSL knows none of {list(cfg.ciphers)}: "
                               f"{e}") from None
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def build_client_context(cfg: ClientTls, alpn: tuple[str, ...] = ("http/1.1",)
                         ) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.disable_validation:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cfg.trust_certs or cfg.trust_certs_bundle:
        for path in cfg.trust_certs:
            _load_cas(ctx, path, "trustCerts")
        if cfg.trust_certs_bundle:
            _load_cas(ctx, cfg.trust_certs_bundle, "trustCertsBundle")
    else:
        ctx.load_default_certs()
    if cfg.client_auth is not None:
        ca = cfg.client_auth
        cert_pem, key_pem, _leaf = _pem_chain(ca.cert_path, ca.key_path,
                                              ca.intermediate_certs_path, "clientAuth",
                                              "tls.clientAuth")
        _load_chain(ctx, cert_pem, key_pem, "certPath", "clientAuth")
    _set_protocols(ctx, cfg.protocols)
    ctx.set_alpn_protocols(list(alpn))
    return ctx


def file_identity(paths: tuple[str, ...]) -> tuple[Any, ...]:
    """What changes when any of `paths` is rewritten or a symlink in front of it (a
    Kubernetes ConfigMap/Secret mount's `..data`) is swapped; compare two to notice."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)  # follows symlinks: a swapped ..data link gives another inode
            out.append((os.path.realpath(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p, None))
    return tuple(out)


_identity = file_identity


class TlsSource:
    """The current SSLContext for one set of TLS params, rebuilt when its files change."""

    def __init__(self, build: Callable[[], ssl.SSLContext], files: tuple[str, ...],
                 label: str) -> None:
        self._build = build
        self.files = files
        self.label = label
        self._ctx = build()
        self._identity = _identity(files)
        self._checked = time.monotonic()
        self.generation = 1  # bumps on each successful reload
        self.loaded_at = time.time()
        self.last_error: str | None = None
        self.on_reload: list[Callable[[ssl.SSLContext], None]] = []
        self._timer: asyncio.TimerHandle | None = None

    def watch(self) -> None:
        """Check the files every CHECK_INTERVAL_S from the running loop (a server's source:
        the change is logged when it happens, not at the next connection)."""
        loop = asyncio.get_running_loop()

        def tick() -> None:
            try:
                self.context()
            except Exception:  # a bug here must not stop future checks silently
                log.exception("%s: checking TLS files failed", self.label)
            self._timer = loop.call_later(CHECK_INTERVAL_S, tick)

        self.unwatch()
        self._timer = loop.call_later(CHECK_INTERVAL_S, tick)

    def unwatch(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def context(self) -> ssl.SSLContext:
        now = time.monotonic()
        if now - self._checked >= CHECK_INTERVAL_S:
            self._checked = now
            self.check()
        return self._ctx

    def check(self) -> bool:
        """Re-read the files if they changed; True when a new context is in use."""
        ident = _identity(self.files)
        if ident == self._identity:
            return False
        self._identity = ident
        try:
            ctx = self._build()
        except (TlsFileError, OSError, ssl.SSLError) as e:
            self.last_error = str(e)
            log.error("%s: TLS files changed but cannot be used (%s); still serving the "
                      "previous certificate", self.label, e)
            return False
        self._ctx = ctx
        self.generation += 1
        self.loaded_at = time.time()
        self.last_error = None
        log.warning("%s: TLS files changed on disk (%s); new connections use them",
                    self.label, ", ".join(self.files))
        for fn in self.on_reload:
            fn(ctx)
        return True


def server_source(cfg: ServerTls, label: str, alpn: tuple[str, ...] = ("http/1.1",)
                  ) -> TlsSource:
    return TlsSource(lambda: build_server_context(cfg, where=label, alpn=alpn), cfg.files(),
                     label)


_CLIENT_SOURCES: dict[tuple[ClientTls, tuple[str, ...]], TlsSource] = {}
_CLIENT_SOURCES_MAX = 256


def client_source(cfg: ClientTls, alpn: tuple[str, ...] = ("http/1.1",)) -> TlsSource:
    """One context per distinct client TLS params (clients differing only by name share it)
    and ALPN list (h2 clients offer `h2`)."""
    key = cfg.context_key()
    src = _CLIENT_SOURCES.get((key, alpn))
    if src is None:
        if len(_CLIENT_SOURCES) >= _CLIENT_SOURCES_MAX:
            _CLIENT_SOURCES.clear()
        src = _CLIENT_SOURCES[(key, alpn)] = TlsSource(
            lambda: build_client_context(key, alpn), key.files(), "client tls")
    return src


def peer_subject(transport: Any) -> str | None:
    """The verified peer certificate's subject (RFC 4514), or None."""
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    try:
        der = sslobj.getpeercert(binary_form=True)
    except (ValueError, ssl.SSLError):
        return None
    if not der:
        return None
    from cryptography import x509

    try:
        return subject(x509.load_der_x509_certificate(der))
    except ValueError:
        return None


def describe_failure(e: BaseException) -> tuple[str, str]:
    """(short metric reason, text for people) for a failed handshake."""
    if isinstance(e, ssl.SSLCertVerificationError):
        msg = e.verify_message or str(e)
        low = msg.lower()
        if "hostname mismatch" in low or "ip address mismatch" in low:
            reason = "name_mismatch"
        elif "expired" in low:
            reason = "expired"
        elif "not yet valid" in low:
            reason = "not_yet_valid"
        elif "self-signed" in low or "unable to get local issuer" in low or "self signed" in low:
            reason = "untrusted"
        else:
            reason = "verify_failed"
        return reason, f"certificate verify failed: {msg}"
    if isinstance(e, ssl.SSLError):
        reason = (e.reason or "ssl_error").lower()
        return reason[:48], f"TLS error: {e.reason or e}"
    if isinstance(e, TimeoutError):
        return "timeout", "TLS handshake timed out"
    return "connection_error", ("connection failed during the TLS handshake: "
                                f"{e or type(e).__name__}")
