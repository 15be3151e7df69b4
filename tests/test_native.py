"""The compiled hot modules (router/_native.py, setup.py): the build is what runs, and a
compiled module that does not match its source is never used silently.

Each case imports the router in a fresh interpreter, on this tree or on a copy of its
`router/` package (with the built extensions and manifest) that the test edits."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from router import _native

REPO = Path(__file__).resolve().parent.parent
PROBE = ("import importlib, json, router._native as n\n"
         "files = {m: importlib.import_module(m).__file__ for m in n.COMPILED}\n"
         "print(json.dumps({'files': files, 'status': n.STATUS}))\n")


def probe(root: Path, **env: str) -> tuple[dict, str]:
    e = {k: v for k, v in os.environ.items() if k != "L5D_PURE_PYTHON"}
    e.update(env)
    e["PYTHONPATH"] = str(root)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=root, env=e, capture_output=True,
                         text=True, check=True, timeout=60)
    return json.loads(out.stdout), out.stderr


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "router", tmp_path / "router",
                    ignore=shutil.ignore_patterns("__pycache__", "static", "*.c"))
    return tmp_path


def test_this_tree_runs_what_it_built() -> None:
    """`make build` made every hot module; without L5D_PURE_PYTHON they all load compiled
    (under `make test`'s pure-Python run, all from source and nothing warned)."""
    got, err = probe(REPO, **({"L5D_PURE_PYTHON": "1"} if _native.pure_python() else {}))
    for m in _native.COMPILED:
        if _native.pure_python():
            assert got["files"][m].endswith(".py"), got
            assert got["status"][m] == "source: L5D_PURE_PYTHON is set"
        else:
            assert not got["files"][m].endswith(".py"), (m, got, err)
            assert got["status"][m] == "compiled"
    assert "not using its compiled module" not in err


def test_pure_python_switch(copy: Path) -> None:
    got, err = probe(copy, L5D_PURE_PYTHON="1")
    assert all(f.endswith(".py") for f in got["files"].values()), got
    assert err == ""


@pytest.mark.skipif(_native.pure_python(), reason="checks the compiled build; the pure run "
                    "has none to check (test_this_tree_runs_what_it_built covers it there)")
@pytest.mark.parametrize("edit", ["source", "pxd", "extension", "manifest"])
def test_stale_extension_is_refused_loudly(copy: Path, edit: str) -> None:
    got, _ = probe(copy)
    module = _native.COMPILED[0]
    assert set(got["status"].values()) == {"compiled"}  # the copy itself is good
    rel = Path(*module.split("."))
    if edit == "source":
        with open(copy / rel.with_suffix(".py"), "a") as f:
            f.write("\n# edited after the build\n")
    elif edit == "pxd":
        with open(copy / rel.with_suffix(".pxd"), "a") as f:
            f.write("\n# edited after the build\n")
    elif edit == "extension":
        ext = copy / rel.parent / Path(got["files"][module]).name
        with open(ext, "ab") as f:
            f.write(b"\0")
    else:
        (copy / "router" / "_native_build.json").write_text(json.dumps({}))
    got, err = probe(copy)
    # all from source: the compiled ones cimport each other's types
    assert all(f.endswith(".py") for f in got["files"].values()), got
    assert got["status"][module].startswith("source: ")
    assert f"{module}: not using its compiled module" in err, err
    assert "make build" in err
    assert f"running all {len(_native.COMPILED)} hot modules from source" in err
