"""`io.l5d.rewrite`: a namer whose answer is another path, built from captures.

Linkerd's RewritingNamer with Finagle-buoyant's PathMatcher
(namer/core/src/main/scala/io/buoyant/namer/RewritingNamer.scala,
finagle/buoyant/src/main/scala/com/twitter/finagle/buoyant/PathMatcher.scala):
`pattern` is `/`-separated segments, each literal, `*` (any one segment) or
holding `{var}` captures (`{svc}` or `pre-{svc}`); a path that matches the pattern
as a prefix becomes `name` with the captures substituted, and the rest of the
path is dropped, as Linkerd does. The result is a Path leaf, evaluated against
the dtab again. No match is `~`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from dtab.errors import DtabParseError, ParamError
from dtab.nametree import Leaf, Neg
from dtab.observable import Activity, Failed
from dtab.path import Path

KIND = "io.l5d.rewrite"
# PathMatcher's capture syntax, character class included (`:-_` is the range ':'..'_').
_CAPTURE = re.compile(r"\{([a-zA-Z0-9\.:-_]+)\}")


@dataclass(frozen=True)
class _Segment:
    text: str
    regex: re.Pattern[str] | None
    keys: tuple[str, ...]


class PathMatcher:
    """Extract `{var}` values from a path and substitute them into a pattern."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        segs = []
        for text in itertools.dropwhile(lambda s: not s, expr.split("/")):
            keys = _CAPTURE.findall(text)
            if keys:
                # only '.' is both a path character and a regex one (Linkerd escapes it alone)
                rx = text.replace(".", "\\.")
                for k in keys:
                    rx = rx.replace("{" + k + "}", "(.*)")
                segs.append(_Segment(text, re.compile(rx), tuple(keys)))
            else:
                segs.append(_Segment(text, None, ()))
        self.segments = tuple(segs)

    def extract(self, path: Path) -> dict[str, str] | None:
        elems = Path(path.elems).show.split("/")[1:] if path.elems else []
        out: dict[str, str] = {}
        for i, seg in enumerate(self.segments):
            if i >= len(elems):
                return None
            if seg.text == "*":
                continue
            if seg.regex is None:
                if seg.text != elems[i]:
                    return None
                continue
            m = seg.regex.search(elems[i])  # unanchored, as Scala's findAllIn
            if m is None:
                return None
            out.update(zip(seg.keys, m.groups(), strict=True))
        return out

    def substitute(self, values: dict[str, str], pattern: str) -> str:
        for k, v in values.items():
            pattern = pattern.replace("{" + k + "}", v)
        return pattern


class RewritingNamer:
    def __init__(self, matcher: PathMatcher, name: str) -> None:
        self.matcher = matcher
        self.name = name

    def lookup(self, path: Path) -> Activity:
        values = self.matcher.extract(path)
        if values is None:
            return Activity.ok(Neg.because(f"{KIND}: {path.show} does not match "
                                           f"{self.matcher.expr}"))
        text = self.matcher.substitute(values, self.name)
        try:
            return Activity.ok(Leaf(Path.read(text)))
        except (DtabParseError, ValueError) as e:
            return Activity(Failed(ValueError(f"{KIND}: {self.name} with {values} gives "
                                              f"{text!r}, not a path: {e}")))


def build(params: dict[str, Any]) -> RewritingNamer:
    """The registry's builder: `pattern` and `name` required (and Linkerd's `prefix`)."""
    known = {"kind", "prefix", "experimental", "pattern", "name"}
    for key in params:
        if key not in known:
            raise ParamError(key, f"unknown parameter for {KIND}; known: "
                             + ", ".join(sorted(known - {"kind"})))
    for key, example in (("pattern", "/{service}/api"), ("name", "/srv/{service}")):
        value = params.get(key)
        if not isinstance(value, str) or not value.startswith("/"):
            raise ParamError(key, f"{KIND} needs {key}, a path such as {example}; "
                             f"got {value!r}")
    matcher = PathMatcher(params["pattern"])
    try:  # the name must be a path once the captures are filled in
        Path.read(matcher.substitute({k: "x" for s in matcher.segments for k in s.keys},
                                     params["name"]))
    except (DtabParseError, ValueError) as e:
        raise ParamError("name", f"{params['name']!r} is not a path pattern: {e}") from None
    return RewritingNamer(matcher, params["name"])
