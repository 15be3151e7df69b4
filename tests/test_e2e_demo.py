"""`make run` (`python -m router.demo.run CONFIG`) on free ports: the README walkthrough."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path as FsPath

from tests.conftest import REPO, _start_process, _wait_ports
from tests.test_e2e_router import curl
from tests.util import free_port


def test_demo_runner_serves_the_walkthrough(tmp_path: FsPath) -> None:
    disco = tmp_path / "disco"
    disco.mkdir()
    ports = {name: free_port() for name in ("hello", "world", "world-v2")}
    for name, port in ports.items():
        (disco / name).write_text(f"127.0.0.1 {port}\n")
    router, admin = free_port(), free_port()
    # configs/local.yaml with its ports and directory swapped for free ones
    text = (REPO / "configs" / "local.yaml").read_text()
    text = text.replace("port: 4140", f"port: {router}").replace("port: 9990", f"port: {admin}")
    text = text.replace("rootDir: configs/disco", f"rootDir: {disco}")
    assert str(router) in text and str(disco) in text
    cfg = tmp_path / "local.yaml"
    cfg.write_text(text)
    log = tmp_path / "run.log"
    proc = _start_process([sys.executable, "-m", "router.demo.run", str(cfg)], log, tmp_path)
    try:
        _wait_ports(proc, [router, admin, *ports.values()], log)
        status, _, body = curl(router, "http://hello")
        assert (status, body) == (200, "Hello (127.0.0.1) world (127.0.0.1)!!")
        status, _, body = curl(router, "http://hello", "l5d-dtab: /svc/world => /svc/world-v2")
        assert (status, body) == (200, "Hello (127.0.0.1) earth (127.0.0.1)!!")
        # the admin answers too (the walkthrough points at the dashboard)
        status, _, body = curl(None, f"http://127.0.0.1:{admin}/admin/ping", direct=True)
        assert (status, body) == (200, "pong")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise


def test_shipped_configs_validate() -> None:
    env = dict(os.environ, POD_IP="10.0.0.1", NODE_NAME="node-a")
    for name in ("local.yaml", "mesh.yaml"):
        out = subprocess.run([sys.executable, "-m", "router.cli", "--validate",
                              str(REPO / "configs" / name)], capture_output=True, text=True,
                             cwd=REPO, env=env, timeout=60)
        assert out.returncode == 0, out.stderr

