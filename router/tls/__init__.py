"""TLS for the routers' servers, their clients and the admin (reference §1.7, §1.9, §1.11).

`params` owns the `tls:` keys and their checks (files readable, key matches its
certificate, a format we can load): a config that asks for TLS either gets it or
does not start. `context` builds `ssl.SSLContext`s and swaps them when the files
change on disk (Kubernetes Secret rotation). `accept` does the server-side
handshake before a connection reaches the HTTP protocol, so failures are counted
and a plaintext request to a TLS port never gets an HTTP answer.
"""

from router.tls.params import ClientAuth, ClientTls, ServerTls, TlsFileError

__all__ = ["ClientAuth", "ClientTls", "ServerTls", "TlsFileError"]
