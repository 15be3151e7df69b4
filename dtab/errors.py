"""Errors raised by the pure layers, carrying what a person needs to act."""

from __future__ import annotations

from typing import Any


class DtabParseError(ValueError):
    """A path, dentry, dtab or name tree that does not parse.

    The message names the input, the line and column, and what was expected,
    e.g. ``invalid dtab '/a=>' at line 1, column 5: expected a path, '!', '~', '$', '('
    or a weight; found end of input at '/a=>[]'`` (the bracket marks the spot, as in
    Finagle's messages). `expected` holds just the "a path, ..." part.
    """

    def __init__(self, message: str, *, text: str, line: int, column: int, expected: str) -> None:
        super().__init__(message)
        self.text = text
        self.line = line
        self.column = column
        self.expected = expected


class ParamError(ValueError):
    """A plugin (namer, transformer, identifier ...) config parameter is wrong.

    `key` is the parameter's name inside the plugin's mapping, so the config
    loader can point at the right line of the file.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.detail = message


class DelegationLoopError(Exception):
    """Binding a path went deeper than the limit: almost always a dtab loop.

    `chain` is the sequence of paths one branch was rewritten through; the
    message shows the repeating part (or the start and end of a chain that only
    grows) and the dtab, so the person who wrote the loop can find it.
    """

    def __init__(
        self,
        path: Any,
        chain: tuple[Any, ...],
        max_depth: int,
        dtab: str,
        *,
        max_lookups: int | None = None,
        max_nesting: int | None = None,
    ) -> None:
        self.path = path
        self.chain = chain
        self.max_depth = max_depth
        self.max_lookups = max_lookups
        self.max_nesting = max_nesting
        self.dtab = dtab
        shown = dtab if len(dtab) <= 500 else dtab[:500] + "..."
        if max_nesting is not None:
            # Trees nested inside trees along a chain: bounded so evaluation (and the
            # hashing and printing of its result) never exhausts the stack.
            what = f"nested name trees more than {max_nesting} levels deep"
        elif max_lookups is None:
            what = f"exceeded the limit of {max_depth} delegation steps"
        else:
            # Unions and alternatives that rewrite into themselves grow exponentially
            # long before any one chain reaches the depth limit.
            what = f"needed more than {max_lookups} lookups (the dtab keeps expanding)"
        super().__init__(f"binding {path.show} {what}: {describe_chain(chain)} (dtab: {shown})")


def describe_chain(chain: tuple[Any, ...]) -> str:
    """`loop /a -> /b -> /a` for a cycle, else the first and last steps of the chain."""
    seen: dict[Any, int] = {}
    for i, p in enumerate(chain):
        if p in seen:
            cycle = chain[seen[p] : i + 1]
            return "loop " + " -> ".join(x.show for x in cycle)
        seen[p] = i
    shown = [x.show if len(x.show) <= 60 else x.show[:57] + "..." for x in chain]
    if len(shown) > 6:
        shown = shown[:3] + ["..."] + shown[-3:]
    return f"chain of {len(chain)} paths " + " -> ".join(shown)
