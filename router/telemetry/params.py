"""Reading a telemeter's (or the access log's) own keys: each kind owns its params.

A wrong value is a `ParamError(key, message)`; the config loader turns it into
file, line and key, as it does for namers and classifiers.
"""

from __future__ import annotations

from builtins import str as Str  # the methods below shadow str, int and bool
from collections.abc import Mapping
from typing import Any

from dtab.errors import ParamError


class Params:
    """A cursor over one mapping: typed getters, then `finish()` refuses unknown keys."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.used: set[str] = {"kind", "experimental"}

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.data.get(key)

    def str(self, key: str, default: str | None, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise ParamError(key, f"got {value!r}, expected a non-empty string")
        if choices and value not in choices:
            raise ParamError(key, f"unknown value {value!r}, expected one of: "
                             + ", ".join(choices))
        return value

    def int(self, key: Str, default: int | None, lo: int, hi: int | None = None) -> Any:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(key, f"got {value!r}, expected an integer")
        if value < lo or (hi is not None and value > hi):
            raise ParamError(key, f"{value} is out of range, expected an integer from {lo}"
                             + (f" to {hi}" if hi is not None else " up"))
        return value

    def rate(self, key: Str, default: float | None) -> Any:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(key, f"got {value!r}, expected a number from 0.0 to 1.0")
        if not 0.0 <= value <= 1.0:
            raise ParamError(key, f"{value} is out of range, expected a number from 0.0 to 1.0")
        return float(value)

    def bool(self, key: Str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ParamError(key, f"got {value!r}, expected true or false")
        return value

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            known = ", ".join(sorted(self.used - {"kind", "experimental"}))
            raise ParamError(unknown[0], f"unknown key {unknown[0]!r}, expected one of: {known}")
