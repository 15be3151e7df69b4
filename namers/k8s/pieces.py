"""Large API objects decoded in bounded pieces, so the event loop is never held long.

A 10,000-address Endpoints object is ~1.3 MB of JSON. `json.loads` of it holds the
loop for 40+ ms on this project's machine, and a thread does not help: the C decoder
never releases the GIL, so the loop waits for it all the same. Turning the dicts into
records and Addresses costs as much again. So, for large objects only, both are
generators that do a bounded amount of work between two `yield`s, and `run()` drives
one on the loop, one piece per loop turn (other callbacks run in between).

`loads_pieces(text)` walks containers in Python and hands each value that fits in a
window (at most `MAX_WINDOW` characters; sized from its previous sibling) to the C
scanner whole: an address of an Endpoints subset is one C call, the subsets list and
the object around it are walked here. A piece is at most `PIECE_CHARS` characters of
C decoding or `PIECE_STEPS` values, whichever comes first. The result is what
`json.loads` returns (same scanner; duplicate keys: the last wins).

`hold_gc()` / `release_gc()` keep the cyclic garbage collector off while a big object is
decoded and applied: spread over many loop turns, its ~25,000 short-lived dicts would
otherwise survive two young collections, count as long-lived and trigger full
collections of the whole heap (7 of up to 310 ms each over 20 updates of a 10,000-address
Endpoints object, in a test process). Reference counting still frees them; nothing here
makes cycles. A hold is released by whoever consumed the object (api.py, after the
event or page was handled), and one held longer than `GC_HOLD_MAX_S` is ended with a
warning rather than leaving the collector off.

`stats` counts pieces and the largest one (values, characters), for tests and the bench.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time
from collections.abc import Callable, Generator
from json.decoder import JSONDecodeError, scanstring  # type: ignore[attr-defined]
from json.scanner import make_scanner
from typing import Any, TypeVar, cast

T = TypeVar("T")

log = logging.getLogger("l5d.k8s")

PIECE_CHARS = 32 * 1024  # ~1 ms of C decoding on a slow core
PIECE_STEPS = 250  # values (or records) per piece: ~1 ms
MAX_WINDOW = 16 * 1024  # a value bigger than this is walked, not decoded in one C call
FIRST_WINDOW = 256
GC_HOLD_MAX_S = 10.0

# the C scanner: (value, end) at an index
_scan: Callable[[str, int], tuple[Any, int]] = make_scanner(
    json.JSONDecoder())  # type: ignore[arg-type]
# `*` always matches: never None
_ws = cast(Callable[[str, int], "re.Match[str]"], re.compile(r"[ \t\n\r]*").match)


class Stats:
    """What `run()` has done: pieces driven, the largest piece's values and characters."""

    __slots__ = ("pieces", "runs", "max_steps", "max_chars", "max_cpu")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.pieces = self.runs = self.max_steps = self.max_chars = 0
        self.max_cpu = 0.0  # seconds of the thread's CPU in one step of run()


stats = Stats()


class _GcHold:
    """Nested holds of the collector; the first one turns it off if it was on."""

    def __init__(self) -> None:
        self.depth = 0
        self.epoch = 0
        self.turned_off = False
        self.holds = 0  # total, for tests and the bench
        self._timer: asyncio.TimerHandle | None = None

    def hold(self) -> int:
        if self.depth == 0:
            self.turned_off = gc.isenabled()
            if self.turned_off:
                gc.disable()
            try:
                self._timer = asyncio.get_running_loop().call_later(
                    GC_HOLD_MAX_S, self._expire, self.epoch)
            except RuntimeError:
                self._timer = None
        self.depth += 1
        self.holds += 1
        return self.epoch

    def release(self, epoch: int) -> None:
        if epoch != self.epoch or self.depth == 0:
            return  # that hold was expired
        self.depth -= 1
        if self.depth == 0:
            self._end()

    def _end(self) -> None:
        self.epoch += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.turned_off:
            self.turned_off = False
            gc.enable()

    def _expire(self, epoch: int) -> None:
        if epoch == self.epoch and self.depth:
            log.warning("k8s: the garbage collector was held off for %.0fs by %d unfinished "
                        "decodes of large objects; turning it back on", GC_HOLD_MAX_S,
                        self.depth)
            self.depth = 0
            self._timer = None
            self._end()


gc_hold = _GcHold()


def hold_gc() -> int:
    """Keep the cyclic collector off until `release_gc(token)` (see the module docs)."""
    return gc_hold.hold()


def release_gc(token: int) -> None:
    gc_hold.release(token)


def _note(steps: int, chars: int) -> None:
    stats.pieces += 1
    if steps > stats.max_steps:
        stats.max_steps = steps
    if chars > stats.max_chars:
        stats.max_chars = chars


async def run(gen: Generator[None, None, T]) -> T:
    """Drive a pieces generator on the loop: one piece, then let other callbacks run."""
    stats.runs += 1
    clock = time.thread_time
    try:
        while True:
            await asyncio.sleep(0)  # first: whatever ran before us in this turn is enough
            t0 = clock()
            try:
                next(gen)
            finally:
                took = clock() - t0
                if took > stats.max_cpu:
                    stats.max_cpu = took
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def run_now(gen: Generator[None, None, T]) -> T:
    """Drive a pieces generator to the end at once (callers off the loop, tests)."""
    try:
        while True:
            next(gen)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _c_value(text: str, i: int, window: int) -> tuple[Any, int] | None:
    """The container at `i` decoded by the C scanner if it closes within MAX_WINDOW
    characters (tried in growing windows), else None. A window is a prefix of the
    text, and a container that closes inside a prefix parses the same in the whole."""
    n = len(text)
    w = window
    while True:
        if n - i <= w:
            try:
                return _scan(text, i)  # type: ignore[no-any-return]
            except (StopIteration, ValueError, RecursionError):
                return None  # malformed: the walk says where
        try:
            v, j = _scan(text[i:i + w], 0)
            return v, i + j
        except (StopIteration, ValueError, RecursionError):
            pass
        if w >= MAX_WINDOW:
            return None
        w = min(MAX_WINDOW, w * 4)


def loads_pieces(text: str) -> Generator[None, None, Any]:
    """`json.loads(text)`, a piece at a time (see the module docstring)."""
    stack: list[Any] = []  # open containers
    keys: list[Any] = []  # per open dict: the key its next value goes to
    hints: list[int] = []  # per open container: a window for its next child
    i = _ws(text, 0).end()
    steps = 0
    mark = i
    while True:
        # -- a value at i ------------------------------------------------------------
        c = text[i:i + 1]
        if c == "{" or c == "[":
            got = _c_value(text, i, hints[-1] if hints else FIRST_WINDOW)
            if got is None:  # big: walk it
                container: Any = {} if c == "{" else []
                i = _ws(text, i + 1).end()
                close = "}" if c == "{" else "]"
                if text[i:i + 1] == close:
                    value, i = container, i + 1
                else:
                    stack.append(container)
                    hints.append(FIRST_WINDOW)
                    if c == "{":
                        key, i = _key(text, i)
                        keys.append(key)
                    else:
                        keys.append(None)
                    continue
            else:
                value, j = got
                if hints:
                    hints[-1] = max(64, 2 * (j - i))
                i = j
        else:
            try:
                value, i = _scan(text, i)
            except StopIteration:
                raise JSONDecodeError("Expecting value", text, i) from None
        steps += 1
        if steps >= PIECE_STEPS or i - mark >= PIECE_CHARS:
            _note(steps, i - mark)
            yield
            steps, mark = 0, i
        # -- attach it to its container; close the containers that end here ---------
        while True:
            if not stack:
                end = _ws(text, i).end()
                if end != len(text):
                    raise JSONDecodeError("Extra data", text, end)
                _note(steps, i - mark)
                return value
            top = stack[-1]
            if type(top) is list:
                top.append(value)
            else:
                top[keys[-1]] = value
            i = _ws(text, i).end()
            ch = text[i:i + 1]
            if ch == ",":
                i = _ws(text, i + 1).end()
                if type(top) is dict:
                    keys[-1], i = _key(text, i)
                break
            if ch == ("]" if type(top) is list else "}"):
                value = stack.pop()
                keys.pop()
                hints.pop()
                i += 1
                continue
            raise JSONDecodeError("Expecting ',' delimiter", text, i)


def _key(text: str, i: int) -> tuple[str, int]:
    """A dict key at `i`, then the colon: (key, index of its value)."""
    if text[i:i + 1] != '"':
        raise JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
    key, i = scanstring(text, i + 1)
    i = _ws(text, i).end()
    if text[i:i + 1] != ":":
        raise JSONDecodeError("Expecting ':' delimiter", text, i)
    return key, _ws(text, i + 1).end()


def peek_metadata(text: str) -> dict[str, Any] | None:
    """A watch event's `object.metadata`, read from the start of its text without the
    rest (the API server writes `type`, then `object` with `kind`, `apiVersion` and
    `metadata` first). None when it is not there, or not within a small prefix."""
    try:
        i = _ws(text, 0).end()
        if text[i:i + 1] != "{":
            return None
        i = _ws(text, i + 1).end()
        inside = False
        while text[i:i + 1] == '"':
            key, i = _key(text, i)
            if key == "object" and not inside:
                if text[i:i + 1] != "{":
                    return None
                inside = True
                i = _ws(text, i + 1).end()
                continue
            c = text[i:i + 1]
            got = _c_value(text, i, 1024) if c in ("{", "[") else _scan(text, i)
            if got is None:
                return None
            if inside and key == "metadata":
                return got[0] if isinstance(got[0], dict) else None
            i = _ws(text, got[1]).end()
            if text[i:i + 1] != ",":
                return None
            i = _ws(text, i + 1).end()
    except (ValueError, StopIteration, RecursionError):
        pass
    return None
