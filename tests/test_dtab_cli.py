"""`python -m dtab`: try a path against a dtab from the shell."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dtab.__main__ import main


def test_shows_rewrites_and_where_a_namer_takes_over(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dtab", "/svc=>/#/io.l5d.fs", "/svc/hello"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "dtab: /svc=>/#/io.l5d.fs",
        "/svc/hello",
        "  /#/io.l5d.fs/hello   [/svc=>/#/io.l5d.fs]   -> namer /#/io.l5d.fs/hello",
        "result: /#/io.l5d.fs/hello  (namer path + residual; namers decide)",
    ]


def test_alternatives_fail_and_later_dtabs_win(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--dtab", "/svc=>/$/fail", "--dtab", "/svc/web=>/srv/web | /#/x/web", "/svc/web"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(alternatives: first that is not ~ wins)" in out
    assert "~ /srv/web   [/svc/web=>/srv/web | /#/x/web]   (neg)" in out
    assert "! /$/fail/web   [/svc=>/$/fail]   (fail: stop, no fallback)" in out
    assert out.rstrip().endswith("result: /#/x/web  (namer path + residual; namers decide)")
    assert main(["--dtab", "/svc=>!", "/svc/x"]) == 1
    assert "result: !  (no route: a router would answer 502)" in capsys.readouterr().out


def test_loops_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dtab", "/a=>/b;/b=>/a", "/a"]) == 1
    assert "loop /a -> /b -> /a" in capsys.readouterr().out
    assert main(["--dtab", "/a=>", "/a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid dtab '/a=>' at line 1, column 5: expected a path")
    assert main(["--dtab-file", "/nonexistent/dtab", "/a"]) == 2


def test_json_and_real_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "d.dtab"
    f.write_text("# from a file\n/svc => /#/io.l5d.fs ;\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "dtab", "--json", "--dtab-file", str(f), "/svc/hello"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "type": "delegate",
        "path": "/svc/hello",
        "delegate": {
            "type": "leaf",
            "path": "/#/io.l5d.fs/hello",
            "dentry": {"prefix": "/svc", "dst": "/#/io.l5d.fs"},
            "bound": {"addr": {"type": "pending"}, "id": "/#/io.l5d.fs/hello", "path": "/"},
        },
    }


def test_global_names_agree_with_the_router(capsys) -> None:
    """The bound ids and errors of Finagle's global namer (NamerTest.scala "Namer.global:
    /$/inet", "/$/fixedinet"; Linkerd's RinetTest), as the router gives them."""
    cases = [
        ("/$/inet/1234/foobar", 0, "result: /$/inet/1234/foobar"),
        ("/$/io.buoyant.rinet/80/web/r", 0, "result: /$/io.buoyant.rinet/80/web/r"),
        ("/$/fixedinet/10.0.0.1/80", 0, "result: /$/fixedinet/10.0.0.1/80"),
        ("/$/inet/web", 1, "result: error: unknown namer 'inet'"),
        ("/$/io.l5d.nosuch/x", 1, "result: error: unknown namer 'io.l5d.nosuch'"),
    ]
    for path, rc, line in cases:
        assert main(["--dtab", "/svc=>/$/nil", path]) == rc, path
        out = capsys.readouterr().out
        assert line in out, out
