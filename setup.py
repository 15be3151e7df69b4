"""Compiles the HTTP/1 hot modules with Cython (metadata is in setup.cfg).

Each module in `router._native.COMPILED` is its `.py` plus the augmenting `.pxd` beside it
(C types and native classes; the `.py` is unchanged and stays the pure-Python reference).
After building, `router/_native_build.json` records the SHA-256 of each source, `.pxd` and
extension, which the import guard in router/_native.py checks, so a stale extension is
never used. `L5D_PURE_PYTHON=1 pip install .` builds nothing (the router then runs from
source, with a warning at start unless L5D_PURE_PYTHON is also set when it runs); a failed
compile fails the install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_native", HERE / "router" / "_native.py")
assert _spec is not None and _spec.loader is not None
_native = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_native)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


class BuildExtWithManifest(build_ext):
    def run(self) -> None:
        super().run()
        manifest: dict[str, dict[str, str]] = {}
        out_dir: Path | None = None
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            root = built.parents[len(ext.name.split(".")) - 1]
            out_dir = root / "router"
            py, pxd = _native.source_paths(ext.name)
            manifest[ext.name] = {"py": _sha(py), "pxd": _sha(pxd) if pxd.exists() else "",
                                  "ext": _sha(built), "ext_name": built.name}
        if out_dir is not None:
            (out_dir / "_native_build.json").write_text(json.dumps(manifest, indent=1) + "\n")


def _extensions() -> list:
    if _native.pure_python():
        return []
    from Cython.Build import cythonize

    sources = [str(_native.source_paths(m)[0].relative_to(HERE)) for m in _native.COMPILED]
    return cythonize(sources, language_level=3, quiet=True,
                     compiler_directives={"binding": True, "annotation_typing": False})


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExtWithManifest})
