"""Shared fixtures: real `l5d` processes, demo services and an echo backend, on free ports.

- `l5d_process(config_text)` writes the config, starts `python -m router.cli` on it,
  waits until every router server and the admin port accept connections, and
  stops it (SIGTERM, then SIGKILL) at teardown. A process that dies on the way
  fails the test with its log.
- `demo_service(name, port, proxy=None)` starts `python -m router.demo.services`.
- `echo_backend(name)` is an HTTP server (a thread in the test process) that
  answers with JSON describing the request it got (method, target, headers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path as FsPath

import pytest

from tests.util import free_port, port_open, stop_process

REPO = FsPath(__file__).resolve().parent.parent


@dataclass
class L5dProcess:
    proc: subprocess.Popen[bytes]
    config_path: FsPath
    log_path: FsPath
    admin_port: int
    ports: dict[str, int] = field(default_factory=dict)  # router label -> first server port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        return stop_process(self.proc, timeout)


def _start_process(args: list[str], log_path: FsPath, cwd: FsPath,
                   env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("http_proxy", None)
    full_env.pop("HTTP_PROXY", None)
    if env:
        full_env.update(env)
    with open(log_path, "wb") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=full_env)


def _wait_ports(proc: subprocess.Popen[bytes], ports: list[int], log_path: FsPath,
                timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"process exited with {proc.returncode} before listening on {ports}:\n"
                + log_path.read_text(errors="replace"))
        if all(port_open(p) for p in ports):
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"ports {ports} not open after {timeout}s:\n"
                         + log_path.read_text(errors="replace"))


@pytest.fixture
def l5d_process(tmp_path: FsPath) -> Iterator[Callable[..., L5dProcess]]:
    """Factory: `l5d_process(config_text, env=None, log_level="debug") -> L5dProcess`."""
    from router.config import parse

    started: list[L5dProcess] = []

    def start(config_text: str, *, env: dict[str, str] | None = None,
              log_level: str = "debug") -> L5dProcess:
        n = len(started)
        path = tmp_path / f"l5d-{n}.yaml"
        path.write_text(config_text)
        cfg = parse(config_text, str(path))
        log_path = tmp_path / f"l5d-{n}.log"
        proc = _start_process(
            [sys.executable, "-m", "router.cli", str(path), "--log-level", log_level],
            log_path, tmp_path, env)
        p = L5dProcess(proc, path, log_path, cfg.admin.port,
                       {r.label: r.servers[0].port for r in cfg.routers})
        started.append(p)
        ports = [s.port for r in cfg.routers for s in r.servers] + [cfg.admin.port]
        _wait_ports(proc, ports, log_path)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.stop()


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen[bytes]


@pytest.fixture
def demo_service(tmp_path: FsPath) -> Iterator[Callable[..., Service]]:
    """Factory: `demo_service("world", port)` or `demo_service("hello", port, proxy="ip:port")`."""
    started: list[Service] = []

    def start(name: str, port: int | None = None, proxy: str | None = None) -> Service:
        port = port or free_port()
        args = [sys.executable, "-m", "router.demo.services", name, "--port", str(port)]
        if proxy:
            args += ["--proxy", proxy]
        log_path = tmp_path / f"demo-{name}-{port}.log"
        proc = _start_process(args, log_path, tmp_path)
        svc = Service(name, port, proc)
        started.append(svc)
        _wait_ports(proc, [port], log_path)
        return svc

    try:
        yield start
    finally:
        for s in started:
            if s.proc.poll() is None:
                s.proc.terminate()
                try:
                    s.proc.wait(10)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait(5)


@dataclass
class Echo:
    name: str
    port: int
    server: ThreadingHTTPServer
    requests: list[dict] = field(default_factory=list)


def _echo_handler(echo: Echo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = {
                "name": echo.name,
                "method": self.command,
                "target": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            }
            echo.requests.append(seen)
            out = json.dumps(seen).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.send_header("l5d-backend-secret", "leak")
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def echo_backend() -> Iterator[Callable[[str], Echo]]:
    """Factory: `echo_backend("name") -> Echo` listening on a free loopback port."""
    servers: list[Echo] = []

    def start(name: str) -> Echo:
        echo = Echo(name, 0, None)  # type: ignore[arg-type]
        server = ThreadingHTTPServer(("127.0.0.1", 0), _echo_handler(echo))
        server.daemon_threads = True
        echo.server = server
        echo.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True, name=f"echo {name}").start()
        servers.append(echo)
        return echo

    try:
        yield start
    finally:
        for e in servers:
            e.server.shutdown()
            e.server.server_close()


# Hypothesis: `make test` runs a derandomized, bounded profile (same examples every run,
# seconds in total); `make soak` sets HYPOTHESIS_PROFILE=soak for many more, randomized.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None,
                               print_blob=True)
_hyp_settings.register_profile("soak", max_examples=5000, deadline=None, print_blob=True)
_hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
