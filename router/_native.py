"""Which hot modules run compiled (Cython), and the guard that a compiled module is never
used in place of a source it was not built from.

`setup.py` compiles the modules in `COMPILED` (each `.py` with its augmenting `.pxd`,
which adds C types without changing the Python source, so the `.py` stays the tested
reference) and writes `router/_native_build.json`: per module the SHA-256 of the `.py`,
of the `.pxd` and of the built extension. `install()` (run by `router/__init__.py`, so
before any of these modules is imported) puts a finder first on `sys.meta_path` that
imports each of them from its `.py` source when

- `L5D_PURE_PYTHON=1` is set (the pure-Python reference; `make test` runs the data-path
  tests this way too), or
- any one extension is missing, or its source, `.pxd` or the extension itself differs from
  what the manifest recorded (an edit after the build, a stale copy): a loud warning names
  the module and the command that rebuilds it, and all of them load from source (they
  cimport each other's types); a stale one is never used.

`STATUS` says, per module, what was loaded and why (logged at start by the CLI).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

log = logging.getLogger("router.native")

# The HTTP/1 hot path. Most have a `.pxd` beside it (router.policy.classifiers has none:
# compiled as it is, its methods are C functions, cheaper to call than bytecode).
COMPILED: tuple[str, ...] = (
    "router.metrics",
    "router.client.pool",
    "router.client.balancer",
    "router.policy.budget",
    "router.policy.retries",
    "router.http.proxy",
    "router.http.server",
    "router.stats",
    "router.identifiers",
    "router.request",
    "router.policy.classifiers",
)
ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Path(__file__).resolve().parent / "_native_build.json"
REBUILD = "make build (or: pip install -e .)"

STATUS: dict[str, str] = {}  # module -> "compiled" | "source: <why>"


def pure_python() -> bool:
    return os.environ.get("L5D_PURE_PYTHON", "") not in ("", "0")


def source_paths(module: str) -> tuple[Path, Path]:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py"), base.with_suffix(".pxd")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def extension_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = base.parent / (base.name + suffix)
        if p.exists():
            return p
    return None


def _read_manifest() -> dict[str, dict[str, str]]:
    try:
        return json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("%s unreadable (%s): running every compiled module from source", MANIFEST, e)
        return {}


def check(module: str, manifest: dict[str, dict[str, str]]) -> tuple[Path | None, str]:
    """(extension to load or None, why)."""
    if pure_python():
        return None, "source: L5D_PURE_PYTHON is set"
    ext = extension_path(module)
    if ext is None:
        return None, f"source: not compiled (run {REBUILD})"
    rec = manifest.get(module)
    py, pxd = source_paths(module)
    if rec is None:
        return None, f"source: {ext.name} is not in {MANIFEST.name} (run {REBUILD})"
    if rec.get("py") != digest(py) or rec.get("pxd") != (digest(pxd) if pxd.exists() else ""):
        return None, f"source: {py.name} changed since {ext.name} was built (run {REBUILD})"
    if rec.get("ext") != digest(ext) or rec.get("ext_name") != ext.name:
        return None, f"source: {ext.name} is not the extension the build recorded (run {REBUILD})"
    return ext, "compiled"


class _Finder(importlib.abc.MetaPathFinder):
    """All or nothing: the compiled modules cimport each other's types (proxy's Exchange
    holds a pool.UpstreamConnection), so one module from source means all from source."""

    def __init__(self) -> None:
        self.plan: dict[str, Path | None] | None = None

    def _decide(self) -> dict[str, Path | None]:
        manifest = _read_manifest()
        checked = {m: check(m, manifest) for m in COMPILED}
        bad = {m: why for m, (ext, why) in checked.items() if ext is None}
        if not bad:
            STATUS.update({m: "compiled" for m in COMPILED})
            return {m: ext for m, (ext, _) in checked.items()}
        for m in COMPILED:
            STATUS[m] = bad.get(m) or f"source: with {', '.join(sorted(bad))}"
        if not pure_python():  # not built, or stale: loud, never silent
            for m, why in sorted(bad.items()):
                log.warning("%s: not using its compiled module: %s", m, why[len("source: "):])
            log.warning("running all %d hot modules from source (they are compiled together)",
                        len(COMPILED))
        return dict.fromkeys(COMPILED)

    def find_spec(self, fullname: str, path: object = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in COMPILED:
            return None
        if self.plan is None:
            self.plan = self._decide()
        ext = self.plan[fullname]
        if ext is not None:
            loader: importlib.abc.Loader = importlib.machinery.ExtensionFileLoader(
                fullname, str(ext))
            return importlib.util.spec_from_file_location(fullname, ext, loader=loader)
        py, _ = source_paths(fullname)
        loader = importlib.machinery.SourceFileLoader(fullname, str(py))
        return importlib.util.spec_from_file_location(fullname, py, loader=loader)


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def summary() -> str:
    """One line for logs and the bench: how many hot modules run compiled, and why not."""
    compiled = [m for m, s in STATUS.items() if s == "compiled"]
    text = f"{len(compiled)}/{len(COMPILED)} hot modules compiled"
    reasons: dict[str, list[str]] = {}
    for m, s in sorted(STATUS.items()):
        if s != "compiled":
            reasons.setdefault(s, []).append(m)
    if reasons:
        text += "; " + "; ".join(
            f"{'all' if len(ms) == len(COMPILED) else ', '.join(ms)} from {why}"
            for why, ms in reasons.items())
    return text
