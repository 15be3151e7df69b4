"""`/workers.json`: the processes that serve the routers, for people and the dashboard.

Linkerd 1 is one JVM and has no such endpoint; l5d-py's own state endpoints sit at the
top level as Linkerd's do (`/client_state.json`, `/server_state.json`), so this is
`/workers.json`. Under `workers: N` the supervisor answers with each worker's index,
pid, state (`starting`, `serving`, `draining`, `restarting`, `exited`), restarts,
resident memory, uptime and last exit (`Supervisor.workers_state`). With `workers: 1`
there is no supervisor: the one process serves every router itself, and the answer
says so in the same shape, so a reader never has to guess from a 404.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web

from router.admin import diagnostics
from router.workers import rss_bytes

ENDPOINT = ("/workers.json", "data-path workers: index, pid, state, restarts, uptime, last exit")

ONE_PROCESS = ("workers: 1: this process serves every router itself (no supervisor); "
               "set workers: N or auto to run N data-path processes")


def one_process_state() -> dict[str, Any]:
    started = diagnostics.started_at()
    return {"count": 1, "supervisor": None, "note": ONE_PROCESS,
            "workers": [{"worker": 0, "pid": os.getpid(), "state": "serving", "restarts": 0,
                         "rssBytes": rss_bytes(os.getpid()),
                         "uptimeSecs": round(time.time() - started, 1),
                         "startedAt": round(started, 3), "lastExit": None,
                         "lastExitReason": None, "lastExitAt": None}]}


def add_routes(app: web.Application, linker: Any) -> None:
    state = getattr(linker, "workers_state", None)  # a supervisor of workers

    async def workers(_: web.Request) -> web.Response:
        return web.json_response(state() if state is not None else one_process_state())

    app.router.add_get("/workers.json", workers)
