"""The router: config, data path, admin. Hot modules may run compiled (router/_native.py)."""

from router import _native

_native.install()
