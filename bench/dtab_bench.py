"""Dtab parse and lookup speed for a 20-entry dtab (prints numbers; asserts nothing).

Lookups on a cached Dtab sit on the request path, parsing happens per config
load and per request that carries an `l5d-dtab` header. Run:
`.venv/bin/python bench/dtab_bench.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from dtab import Dtab, NameTree, Path
from dtab.binding import bind
from dtab.parser import _parser, parse_dtab

DTAB_20 = """
/srv         => /#/io.l5d.k8s/default/http ;
/host        => /srv ;
/svc         => /host ;
/host/web    => /srv/web-v1 ;
/host/web    => 0.9 * /srv/web-v1 & 0.1 * /srv/web-v2 ;
/ph          => /$/io.buoyant.rinet ;
/svc/*/api   => /srv/api | /srv/api-fallback ;
/domain      => /$/io.buoyant.http.domainToPathPfx/host ;
/http/1.1/*  => /host ;
/http/1.1/GET/world => /srv/world-v2 | /srv/world ;
/k8s         => /#/io.l5d.k8s ;
/ns          => /k8s/default ;
/port        => /ns/http ;
/svc/hello   => /port/hello ;
/svc/billing => /#/io.l5d.fs/billing ;
/svc/auth    => /srv/auth & /srv/auth-canary ;
/svc/old     => ! ;
/svc/gone    => ~ ;
/svc/nil     => $ ;
/svc/*/*/deep => /srv/deep ;
"""


def per_call(fn: Callable[[], object], seconds: float = 0.5) -> tuple[float, int]:
    """Mean seconds per call of `fn`, run for about `seconds`."""
    n, batch = 0, 64
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n, n
        batch *= 2


def report(name: str, fn: Callable[[], object]) -> None:
    mean, n = per_call(fn)
    print(f"{name:<48} {mean * 1e6:10.2f} µs/op  ({n} ops)")


def main() -> None:
    start = time.perf_counter()
    _parser()
    print(f"{'grammar load (once per process)':<48} {(time.perf_counter() - start) * 1e3:10.2f} ms")

    dtab = Dtab.read(DTAB_20)
    assert len(dtab) == 20
    text = dtab.show
    hit = Path.read("/svc/web/index.html")
    wildcard = Path.read("/svc/x/y/deep/z")
    miss = Path.read("/nowhere/at/all")
    header = "/svc/web=>/srv/web-canary;/svc/auth=>/srv/auth-test"

    report("parse a dtab (20 dentries, uncached)", lambda: parse_dtab(text))
    report("parse a dtab (l5d-dtab header, 2, uncached)", lambda: parse_dtab(header))
    report("Dtab.read (same text again: cached)", lambda: Dtab.read(header))
    report("NameTree.read ('0.9*/a & 0.1*/b | /c')", lambda: NameTree.read("0.9*/a & 0.1*/b | /c"))
    report("Path.read ('/svc/web/index.html', fast path)", lambda: Path.read("/svc/web/index.html"))
    report("Dtab.show (20 dentries)", lambda: dtab.show)
    report("Dtab.lookup hit (3 matching dentries)", lambda: dtab.lookup(hit))
    report("Dtab.lookup with wildcards", lambda: dtab.lookup(wildcard))
    report("Dtab.lookup miss", lambda: dtab.lookup(miss))
    report("hash((dtab, path)) (binding cache key)", lambda: hash((dtab, hit)))
    report(
        "bind /svc/web/index.html (namers answer None)",
        lambda: bind(dtab, hit, lambda p: None),
    )


if __name__ == "__main__":
    main()
