"""Run every Linkerd 1 config of linkerd/linkerd-examples through `l5d --validate`.

    .venv/bin/python bench/linkerd_examples.py [GIT_DIR_OR_CHECKOUT]

The default source is the fetched bare repository
(/work/.mirror/linkerd+linkerd-examples/repo). Every `*.yml`/`*.yaml` file that
mentions `routers` is a candidate (a Linkerd config, or a Kubernetes manifest
whose ConfigMap holds one); Marathon `*.json` app definitions are not. Prints
one line per file (OK, or the first line of the error) and the tally; exit 0.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from router.cli import validate  # noqa: E402
from router.config import ConfigError, NoRoutersSpecified  # noqa: E402

DEFAULT_SOURCE = "/work/.mirror/linkerd+linkerd-examples/repo"


def candidates(source: str) -> dict[str, str]:
    """{path in the repository: text} of every YAML file that mentions `routers`."""
    src = Path(source)
    out: dict[str, str] = {}
    if (src / "HEAD").is_file() and not (src / ".git").exists():  # a bare git dir
        names = subprocess.run(["git", f"--git-dir={src}", "ls-tree", "-r", "--name-only",
                                "HEAD"], capture_output=True, text=True, check=True).stdout
        for name in names.splitlines():
            if name.endswith((".yml", ".yaml")):
                text = subprocess.run(["git", f"--git-dir={src}", "show", f"HEAD:{name}"],
                                      capture_output=True, text=True).stdout
                if "routers" in text:
                    out[name] = text
    else:
        for p in sorted(src.rglob("*")):
            if p.suffix in (".yml", ".yaml") and ".git" not in p.parts:
                text = p.read_text(errors="replace")
                if "routers" in text:
                    out[str(p.relative_to(src))] = text
    return dict(sorted(out.items()))


def check(name: str, text: str, tmp: Path) -> tuple[bool, str]:
    path = tmp / name.replace("/", "__")
    path.write_text(text)
    warnings = io.StringIO()
    handler = logging.StreamHandler(warnings)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            validate(str(path))
        return True, ""
    except (ConfigError, NoRoutersSpecified) as e:
        return False, str(e).splitlines()[0].replace(str(path), name)
    except Exception as e:  # a crash is a finding too: report it, keep going
        return False, f"CRASH {type(e).__name__}: {e}"
    finally:
        logging.getLogger().removeHandler(handler)


def main(argv: list[str]) -> int:
    source = argv[1] if len(argv) > 1 else DEFAULT_SOURCE
    logging.basicConfig(level=logging.ERROR)
    files = candidates(source)
    ok = 0
    with tempfile.TemporaryDirectory() as d:
        for name, text in files.items():
            good, why = check(name, text, Path(d))
            ok += good
            print(f"{'OK  ' if good else 'FAIL'} {name}" + (f"\n       {why}" if why else ""))
    print(f"\n{ok} of {len(files)} validate")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
