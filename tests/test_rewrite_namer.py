"""io.l5d.rewrite, with the cases of Linkerd's RewritingNamerTest
(namer/core/src/test/scala/io/buoyant/namer/RewritingNamerTest.scala) and PathMatcherTest."""

from __future__ import annotations

import pytest

from dtab.dtab import Dtab
from dtab.errors import ParamError
from dtab.nametree import Leaf, NegTree
from dtab.observable import Ok
from dtab.path import Path
from namers.registry import build_namer
from namers.rewrite import PathMatcher, RewritingNamer
from router.interpreter import Interpreter


def rewrite(pattern: str, name: str, path: str) -> str | None:
    state = RewritingNamer(PathMatcher(pattern), name).lookup(Path.read(path)).value
    assert isinstance(state, Ok)
    if isinstance(state.value, NegTree):
        return None
    assert isinstance(state.value, Leaf)
    return state.value.value.show


def test_linkerds_rewriting_namer_cases() -> None:
    assert rewrite("/one/two", "/success", "/one/two/three") == "/success"  # matches prefix
    assert rewrite("/one/*/three", "/success", "/one/two/three") == "/success"  # wildcard
    assert rewrite("/one/*/four", "/success", "/one/two/three") is None  # mismatch
    assert rewrite("/{foo}/*/three", "/success/{foo}", "/one/two/three") == "/success/one"
    assert rewrite("/{foo}/*/four", "/success/{foo}", "/one/two/three") is None
    # captures inside a segment, and a path shorter than the pattern
    assert rewrite("/svc/{svc}.{ns}", "/k8s/{ns}/http/{svc}", "/svc/web.prod/x") == (
        "/k8s/prod/http/web")
    assert rewrite("/one/two", "/success", "/one") is None


def test_captures_are_the_shown_labels_so_escapes_survive() -> None:
    """PathMatcher reads `path.showElems`: a label with bytes outside the alphabet is
    captured in its \\xNN form and reads back as the same label."""
    state = RewritingNamer(PathMatcher("/{a}"), "/x/{a}").lookup(Path.of("a b")).value
    assert isinstance(state, Ok) and state.value.value == Path.of("x", "a b")


def test_builder_and_binding_through_the_dtab() -> None:
    namer = build_namer({"kind": "io.l5d.rewrite", "prefix": "/svcname",
                         "pattern": "/{service}", "name": "/srv/{service}"})
    interp = Interpreter([(Path.read("/svcname"), namer)])
    result = interp.bind(Dtab.read("/svc=>/#/svcname;/srv/web=>/$/inet/127.0.0.1/80"),
                         Path.read("/svc/web"))
    assert isinstance(result.state, Ok), result.state
    assert result.state.value.value.id.show == "/$/inet/127.0.0.1/80"
    for bad in ({"pattern": "/{a}"}, {"pattern": "x", "name": "/a"},
                {"pattern": "/{a}", "name": "/a b/{a}"}):
        with pytest.raises(ParamError):
            build_namer({"kind": "io.l5d.rewrite", "prefix": "/p", **bad})
