"""`l5dctl`: namerctl's `dtab` commands, and `shift` — traffic shifting with a guard.

`l5dctl dtab list|get|create|update|delete` speak namerd's REST API as
namerctl does (`--base-url`, or NAMERCTL_BASE_URL; `get` prints the version).
`l5dctl shift NS PREFIX OLD NEW --steps 10,50,100` writes the weighted dentry
`PREFIX => (100-p)*OLD & p*NEW` step by step, each write with If-Match (a
concurrent writer makes it stop, not overwrite), and between steps reads the
routers' /admin/metrics.json: the success rate of NEW's clients over the
interval. Below `--min-success`, or on Ctrl-C, it writes the original dtab
back and exits non-zero.
"""

from __future__ import annotations

import argparse
import builtins
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from dtab.dtab import Dentry, Dtab
from dtab.path import Path

DEFAULT_BASE = "http://localhost:4180"


class CtlError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Client:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def _req(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - an http URL
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
        except urllib.error.URLError as e:
            raise CtlError(f"namerd at {self.base} is unreachable: {e.reason}") from None

    def list(self) -> list[str]:
        status, _, body = self._req("GET", "/api/1/dtabs")
        if status != 200:
            raise CtlError(f"list: HTTP {status}: {body[:200]!r}")
        names: list[str] = json.loads(body)
        return names

    def get(self, ns: str) -> tuple[Dtab, str]:
        status, headers, body = self._req("GET", f"/api/1/dtabs/{_q(ns)}",
                                          headers={"Accept": "application/dtab"})
        if status == 404:
            raise CtlError(f"dtab namespace {ns} does not exist")
        if status != 200:
            raise CtlError(f"get {ns}: HTTP {status}: {body[:200]!r}")
        return Dtab.read(body.decode()), headers.get("ETag", "")

    def write(self, method: str, ns: str, dtab: Dtab, version: str | None = None) -> int:
        headers = {"Content-Type": "application/dtab"}
        if version:
            headers["If-Match"] = version
        status, _, body = self._req(method, f"/api/1/dtabs/{_q(ns)}", dtab.show.encode(),
                                    headers)
        if status not in (204, 409, 412, 404):
            raise CtlError(f"{method} {ns}: HTTP {status}: {body[:200]!r}")
        return status

    def delete(self, ns: str) -> int:
        return self._req("DELETE", f"/api/1/dtabs/{_q(ns)}")[0]

    def bound_ids(self, ns: str, path: Path) -> builtins.list[str]:
        status, _, body = self._req("GET", f"/api/1/bind/{_q(ns)}?path={_q(path.show)}")
        if status != 200:
            raise CtlError(f"bind {path.show} in {ns}: HTTP {status}: {body[:200]!r}")
        out: list[str] = []
        _ids(json.loads(body), out)
        return out


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _ids(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        bound = node.get("bound")
        if isinstance(bound, dict) and isinstance(bound.get("id"), str):
            out.append(bound["id"])
        for v in node.values():
            _ids(v, out)
    elif isinstance(node, list):
        for v in node:
            _ids(v, out)


def _read_file(path: str) -> Dtab:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    return Dtab.read(text)


# -- shift


def parse_interval(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 30s or 2m")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def parse_steps(text: str) -> list[float]:
    try:
        steps = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected percentages like 10,50,100") \
            from None
    if not steps or any(not 0 < s <= 100 for s in steps) or steps != sorted(steps):
        raise argparse.ArgumentTypeError("steps are increasing percentages in (0, 100]")
    return steps


def step_dtab(base: Dtab, prefix: Path, old: Path, new: Path, pct: float) -> Dtab:
    """`base` without its `prefix` dentries, plus the weighted one for `pct` % to `new`."""
    kept = tuple(d for d in base.dentries if d.prefix.show != prefix.show)
    if pct >= 100:
        dst = new.show
    else:
        dst = f"{_w(100 - pct)} * {old.show} & {_w(pct)} * {new.show}"
    return Dtab((*kept, Dentry.read(f"{prefix.show} => {dst}")))


def _w(x: float) -> str:
    return f"{x:g}"


def fetch_counts(urls: Sequence[str], ids: Sequence[str]) -> tuple[int, int]:
    """(successes, failures) summed over every router's clients for `ids`."""
    ok = bad = 0
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310
                data = json.loads(resp.read())
        except (urllib.error.URLError, ValueError) as e:
            raise CtlError(f"metrics at {url}: {e}") from None
        for key, value in data.items():
            if "/client/" not in key or not isinstance(value, int | float):
                continue
            for ident in ids:
                tail = ident.lstrip("/")
                if key.endswith(f"{tail}/success"):
                    ok += int(value)
                elif key.endswith(f"{tail}/failures"):
                    bad += int(value)
    return ok, bad


def shift(client: Client, args: argparse.Namespace, out: Any = sys.stdout) -> int:
    ns = args.namespace
    prefix, old, new = Path.read(args.prefix), Path.read(args.old), Path.read(args.new)
    original, version = client.get(ns)
    print(f"{ns}: version {version}: {original.show}", file=out, flush=True)
    ids = client.bound_ids(ns, new)
    print(f"{new.show} binds to {', '.join(ids) or 'nothing'}", file=out, flush=True)
    urls = list(args.metrics_url or [])

    def revert(why: str) -> int:
        status = client.write("PUT", ns, original, version)
        if status != 204:
            print(f"REVERT FAILED ({why}): HTTP {status}; the dtab changed meanwhile. "
                  f"Restore by hand: {original.show}", file=out, flush=True)
            return 4
        _, v = client.get(ns)
        print(f"reverted ({why}): {prefix.show} back as before, version {v}", file=out,
              flush=True)
        return 1

    try:
        for pct in args.steps:
            dtab = step_dtab(original, prefix, old, new, pct)
            status = client.write("PUT", ns, dtab, version)
            if status == 412:
                print(f"step {pct:g}%: someone else changed {ns} (412); stopping without "
                      "writing", file=out, flush=True)
                return 3
            if status != 204:
                print(f"step {pct:g}%: HTTP {status}", file=out, flush=True)
                return revert(f"write failed at {pct:g}%")
            _, version = client.get(ns)
            print(f"step {pct:g}%: version {version}: {dtab.dentries[-1].show}", file=out,
                  flush=True)
            if not urls:
                time.sleep(args.interval)
                continue
            before = fetch_counts(urls, ids)
            time.sleep(args.interval)
            after = fetch_counts(urls, ids)
            ok, bad = after[0] - before[0], after[1] - before[1]
            if ok + bad == 0:
                print(f"  {new.show}: no requests in {args.interval:g}s", file=out, flush=True)
                continue
            rate = 100.0 * ok / (ok + bad)
            print(f"  {new.show}: success {rate:.2f}% over {ok + bad} requests "
                  f"(min {args.min_success:g}%)", file=out, flush=True)
            if rate < args.min_success:
                return revert(f"success {rate:.2f}% < {args.min_success:g}%")
    except KeyboardInterrupt:
        return revert("interrupted") or 130
    print(f"done: {prefix.show} => {new.show} (version {version})", file=out, flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="l5dctl", description=__doc__.split("\n")[0])
    ap.add_argument("--base-url", default=os.environ.get("NAMERCTL_BASE_URL", DEFAULT_BASE))
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dtab", help="namerctl's dtab commands")
    dsub = d.add_subparsers(dest="dcmd", required=True)
    dsub.add_parser("list")
    for name in ("get", "delete"):
        dsub.add_parser(name).add_argument("namespace")
    for name in ("create", "update"):
        p = dsub.add_parser(name)
        p.add_argument("namespace")
        p.add_argument("file", help="dtab file, or - for stdin")
        if name == "update":
            p.add_argument("--version", help="If-Match version (default: the current one)")
    s = sub.add_parser("shift", help="shift traffic step by step, reverting on failure")
    s.add_argument("namespace")
    s.add_argument("prefix")
    s.add_argument("old")
    s.add_argument("new")
    s.add_argument("--steps", type=parse_steps, default=[10.0, 50.0, 100.0])
    s.add_argument("--interval", type=parse_interval, default=30.0)
    s.add_argument("--min-success", type=float, default=99.5)
    s.add_argument("--metrics-url", action="append",
                   help="a router's /admin/metrics.json (repeat for every router)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client = Client(args.base_url)
    try:
        if args.cmd == "shift":
            return shift(client, args)
        if args.dcmd == "list":
            for ns in client.list():
                print(ns)
            return 0
        if args.dcmd == "get":
            dtab, version = client.get(args.namespace)
            print(f"# version {version}")
            for dentry in dtab.dentries:
                print(f"{dentry.show};")
            return 0
        if args.dcmd == "delete":
            status = client.delete(args.namespace)
            if status == 404:
                raise CtlError(f"dtab namespace {args.namespace} does not exist")
            return 0 if status == 204 else 1
        dtab = _read_file(args.file)
        if args.dcmd == "create":
            status = client.write("POST", args.namespace, dtab)
            if status == 409:
                raise CtlError(f"dtab namespace {args.namespace} already exists")
        else:
            version = args.version or client.get(args.namespace)[1]
            status = client.write("PUT", args.namespace, dtab, version)
            if status == 412:
                raise CtlError(f"{args.namespace} changed since version {version}; get it "
                               "again and retry", 3)
        print(f"{args.dcmd}d {args.namespace}" if status == 204 else f"HTTP {status}")
        return 0 if status == 204 else 1
    except (CtlError, ValueError) as e:
        print(f"l5dctl: {e}", file=sys.stderr)
        return e.code if isinstance(e, CtlError) else 2


if __name__ == "__main__":
    sys.exit(main())
