"""`admin.security`: which admin paths answer (reference §1.11, SecurityFilter).

Paths fall in three categories: UI, control and diagnostics. A path is
rejected with 404 when it matches `pathBlacklist`, or when its category is
disabled and it does not match `pathWhitelist`. Lists are regexes matched
against the whole path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_UI = re.compile(
    r"/|/files/.*|/config\.json|/admin/metrics\.json|/admin/metrics|/delegator|"
    r"/delegator\.json|/logging|/help|/admin/reload\.json|/admin/metrics/history\.json"
)
_CONTROL = re.compile(r"/admin/shutdown|/logging\.json|/admin/reload")


def setting(obj: Any, name: str, default: Any) -> Any:
    """Read a config field whether the config is a dict or a dataclass (camel or snake case)."""
    if obj is None:
        return default
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)
    for key in (name, snake):
        if isinstance(obj, dict):
            if obj.get(key) is not None:
                return obj[key]
        elif getattr(obj, key, None) is not None:
            return getattr(obj, key)
    return default


@dataclass(frozen=True, slots=True)
class Security:
    ui_enabled: bool = True
    control_enabled: bool = True
    diagnostics_enabled: bool = True
    whitelist: tuple[re.Pattern[str], ...] = ()
    blacklist: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_config(cls, security: Any) -> Security:
        return cls(
            ui_enabled=bool(setting(security, "uiEnabled", True)),
            control_enabled=bool(setting(security, "controlEnabled", True)),
            diagnostics_enabled=bool(setting(security, "diagnosticsEnabled", True)),
            whitelist=tuple(re.compile(p) for p in setting(security, "pathWhitelist", []) or []),
            blacklist=tuple(re.compile(p) for p in setting(security, "pathBlacklist", []) or []),
        )

    @staticmethod
    def category(path: str) -> str:
        if _UI.fullmatch(path):
            return "ui"
        if _CONTROL.fullmatch(path):
            return "control"
        return "diagnostics"

    def allows(self, path: str) -> bool:
        if any(p.fullmatch(path) for p in self.blacklist):
            return False
        enabled = {
            "ui": self.ui_enabled,
            "control": self.control_enabled,
            "diagnostics": self.diagnostics_enabled,
        }[self.category(path)]
        return enabled or any(p.fullmatch(path) for p in self.whitelist)
