"""Fuzzing the dtab, path and name-tree parsers (issue 8), with hypothesis.

Properties: any text either parses or raises DtabParseError (never a RecursionError,
a decimal error or anything else), within a bounded time, including hostile shapes
(deep nesting, huge weights, long labels); whatever parses round-trips through
`show`, and binding what parses never raises. `make test` runs the derandomized
"ci" profile (tests/conftest.py); `make soak` runs the "soak" profile.
"""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from dtab import Dentry, Dtab, DtabParseError, NameTree, Path
from dtab.binding import bind
from dtab.delegation import delegate
from dtab.observable import Failed, Ok, Pending

READERS = (Dtab.read, NameTree.read, Path.read, Dentry.read)
TIME_LIMIT_S = 2.0  # per input and reader, generous for a loaded 2-core machine

# Tokens of the grammar, junk characters, and the shapes that broke it before.
TOKENS = ["/", "/a", "/b/c", "/#/io.l5d.fs/x", "/$/inet/127.0.0.1/80", "/*", "*", "=>",
          "&", "|", "(", ")", "!", "~", "$", ";", "#c\n", " ", "\n", "0.5*", "1*", "2.*",
          ".25*", "\\x41", "\\xZZ", "\\", "99999999999999999999999999999999*", "1e32*",
          "nan*", "-1*", "\u2028", "\x00", "é", "/\u00ff"]
token_text = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
any_text = st.text(max_size=300)


def nested(depth: int, op: str, inner: str) -> str:
    return f"(/x {op} " * depth + inner + ")" * depth


hostile = st.one_of(
    st.builds(nested, st.integers(0, 5000), st.sampled_from(["|", "&"]),
              st.sampled_from(["/b", "2*/b", ""])).map(lambda t: "/a=>" + t),
    st.builds(lambda d: "/a=>" + "(" * d + "/b" + ")" * d, st.integers(0, 5000)),
    st.builds(lambda n, k: f"/a=>{'9' * n}*/b & {'1' * k}.5*/c",
              st.integers(1, 500), st.integers(1, 40)),
    st.builds(lambda n: "/a=>/" + "l" * n, st.integers(0, 20_000)),
    st.builds(lambda n: ";".join(["/a=>/b"] * n), st.integers(0, 3000)),
)


def _read_all(text: str) -> list[object]:
    parsed = []
    for read in READERS:
        start = time.perf_counter()
        try:
            parsed.append(read(text))
        except DtabParseError as e:
            assert e.line >= 1 and e.column >= 1
            assert len(str(e)) < 2000, "the error quotes the input in part, not whole"
        elapsed = time.perf_counter() - start
        assert elapsed < TIME_LIMIT_S, f"{read.__qualname__} took {elapsed:.2f}s"
    return parsed


@given(any_text)
def test_arbitrary_text_parses_or_is_a_parse_error(text: str) -> None:
    _read_all(text)


@given(token_text)
def test_token_soup_parses_or_is_a_parse_error_and_round_trips(text: str) -> None:
    for value in _read_all(text):
        shown = value.show  # type: ignore[attr-defined]
        again = type(value).read(shown)  # type: ignore[attr-defined]
        # weights print to two decimals: compare printed forms
        assert again.show == shown


@settings(max_examples=40)
@given(hostile)
def test_hostile_shapes_are_parse_errors_not_crashes(text: str) -> None:
    for value in _read_all(text):
        assert type(value).read(value.show).show == value.show  # type: ignore[attr-defined]


@given(token_text, st.sampled_from(["/a", "/b/c", "/x", "/#/io.l5d.fs/x"]))
def test_binding_and_delegating_what_parses_never_raises(text: str, name: str) -> None:
    try:
        dtab = Dtab.read(text)
    except DtabParseError:
        return
    path = Path.read(name)
    result = bind(dtab, path, lambda _p: None)
    assert isinstance(result.state, Ok | Failed | Pending)
    delegate(dtab, path, lambda _p: None).to_json()


@given(st.lists(st.text(max_size=12), max_size=8))
def test_paths_of_arbitrary_labels_round_trip(labels: list[str]) -> None:
    labels = [x for x in labels if x and not any(0xD800 <= ord(c) <= 0xDFFF for c in x)]
    p = Path(tuple(labels))
    assert Path.read(p.show) == p
