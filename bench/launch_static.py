"""Start the HTTP data path alone, behind the static Router double, under uvloop.

A fallback for `bench/run.py --launcher static` (and for profiling the data path
without config, namers or admin): `python bench/launch_static.py PORT DTAB [--profile OUT]`.
The benchmark uses the real `l5d` process by default.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop  # noqa: E402

from router.http import start_http_router  # noqa: E402
from router.http.testing import StaticRouter, StaticServerConfig  # noqa: E402


async def serve(port: int, dtab: str, label: str) -> None:
    router = StaticRouter([StaticServerConfig(port)], dtab, label=label)
    handle = await start_http_router(router)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening on {handle.ports}", flush=True)
    await stop.wait()
    await handle.close(1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("dtab")
    ap.add_argument("--label", default="bench")
    ap.add_argument("--profile", help="write cProfile stats here on exit")
    a = ap.parse_args()
    if a.profile:
        prof = cProfile.Profile()
        prof.enable()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(a.port, a.dtab, a.label))
    if a.profile:
        prof.disable()
        prof.dump_stats(a.profile)


if __name__ == "__main__":
    main()
