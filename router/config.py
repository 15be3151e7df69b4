"""The Linkerd 1 config file, loaded into typed frozen dataclasses.

A config is YAML or JSON (JSON is YAML), from a file or `-` (stdin). We load
it with a YAML loader that remembers where every key and value sits, so a
mistake is reported as `file:line: routers[0].servers[0]: missing required
key 'port' (expected ...)` instead of a stack trace, and a bad config never
half-starts a process: everything that can be checked without binding ports
is checked here (plugin params are checked when `Linker` builds them, with
the same file/line treatment via `Where.param_error`).

Names and defaults follow ../shared/reference/linkerd1.md (§1.1-1.11).
The data path acts on the communications policy (router/policy/): service
`totalTimeoutMs`, `retries` and `responseClassifier`; client
`requestAttemptTimeoutMs`, `failureAccrual`, `requeueBudget` and `loadBalancer`;
server `maxConcurrentRequests`; the router's `streamAfterContentLengthKB` bounds
the retry replay buffer. Classifier and failure-accrual kinds validate their own
params (their modules' `build`); the loader turns a ParamError into file:line.
Parameters that Linkerd has but l5d-py does not act on yet (`failFast`, TLS,
the router's other size limits, ...) are parsed, validated and kept; the loader
logs a warning, with the line, for each one the file sets.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from dtab.dtab import Dtab
from dtab.errors import DtabParseError, ParamError
from dtab.path import Path
from router.policy import accrual as policy_accrual
from router.policy import classifiers as policy_classifiers
from router.session import (
    DEFAULT_CLIENT_SESSION,
    DEFAULT_SERVER_SESSION,
    ClientSession,
    ServerSession,
    parse_client_session,
    parse_server_session,
)
from router.tls.params import ClientTls, ServerTls, parse_client_tls, parse_server_tls

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY


# ---------------------------------------------------------------------------
# Errors and positions


class ConfigError(ValueError):
    """A config mistake: where it is (file, line, key) and what was expected."""

    def __init__(
        self, message: str, *, file: str, line: int | None, key: str, expected: str | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.problem = message
        self.expected = expected
        where = f"{file}:{line}" if line else file
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)


class NoRoutersSpecified(ConfigError):
    """Linkerd's name for a config whose `routers` list is missing or empty."""


@dataclass(frozen=True)
class Where:
    """Where a plugin's params sit in the file, to turn a ParamError into a ConfigError."""

    file: str
    line: int | None
    key: str
    key_lines: Mapping[str, int] = field(default_factory=_empty, compare=False, repr=False)

    def error(
        self, message: str, *, key: str | None = None, expected: str | None = None
    ) -> ConfigError:
        line = self.key_lines.get(key, self.line) if key else self.line
        full = f"{self.key}.{key}" if key else self.key
        return ConfigError(message, file=self.file, line=line, key=full, expected=expected)

    def param_error(self, e: ParamError) -> ConfigError:
        return self.error(e.detail, key=e.key)


# ---------------------------------------------------------------------------
# YAML with positions


class _Map(dict):
    """A mapping that remembers the line of each key and where each value starts."""

    line: int = 0
    key_lines: dict[Any, int]
    value_pos: dict[Any, tuple[int, int, str | None]]  # (line, column, scalar style)


class _Seq(list):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    # `<<: *anchor` merges come first after flattening; a key written in this mapping
    # overrides a merged one (YAML's merge rule). Only two written keys are duplicates.
    written = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    out = _Map()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    out.value_pos = {}
    written_keys: set[str] = set()
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"keys must be strings, got {key!r}", knode.start_mark
            )
        if id(knode) in written:
            if key in written_keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", knode.start_mark
                )
            written_keys.add(key)
        out[key] = loader.construct_object(vnode, deep=True)
        out.key_lines[key] = knode.start_mark.line + 1
        style = vnode.style if isinstance(vnode, yaml.ScalarNode) else None
        out.value_pos[key] = (vnode.start_mark.line + 1, vnode.start_mark.column + 1, style)
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    out = _Seq(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


def plain(value: Any) -> Any:
    """Strip position bookkeeping: plain dicts and lists, for JSON and for plugins."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# A cursor over one mapping of the file


_NOT_ACTED_ON = "is accepted but not acted on yet by l5d-py"
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")


class _Obj:
    """One mapping of the config, with its place in the file.

    Every getter marks its key as used; `finish()` rejects the leftovers, so a
    typo (`clearContex`) is an error naming the line rather than a silent no-op.
    """

    def __init__(self, src: _Source, key: str, data: Any, line: int | None) -> None:
        self.src = src
        self.key = key
        self.line = line
        if not isinstance(data, dict):
            raise self._err(f"must be a mapping, got {_describe(data)}", None, "a mapping of keys")
        self.data = data
        self.used: set[str] = set()

    # -- positions
    def key_line(self, key: str) -> int | None:
        lines = getattr(self.data, "key_lines", None)
        return lines.get(key, self.line) if lines else self.line

    def value_pos(self, key: str) -> tuple[int, int, str | None] | None:
        pos = getattr(self.data, "value_pos", None)
        return pos.get(key) if pos else None

    def path(self, key: str) -> str:
        return f"{self.key}.{key}" if self.key else key

    def _err(self, msg: str, key: str | None, expected: str | None) -> ConfigError:
        line = self.key_line(key) if key else self.line
        return ConfigError(
            msg, file=self.src.name, line=line, key=self.path(key) if key else self.key,
            expected=expected,
        )

    def err(self, key: str | None, msg: str, expected: str | None = None) -> ConfigError:
        return self._err(msg, key, expected)

    def where(self) -> Where:
        lines = getattr(self.data, "key_lines", None) or {}
        return Where(self.src.name, self.line, self.key, MappingProxyType(dict(lines)))

    # -- access
    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        value = self.data.get(key)
        return default if value is None else value

    def require(self, key: str, expected: str) -> Any:
        self.used.add(key)
        if self.data.get(key) is None:
            raise self._err(f"missing required key '{key}'", None, expected)
        return self.data[key]

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        value = self.require(key, "a string") if required else self.raw(key, default)
        if value is not None and not isinstance(value, str):
            if isinstance(value, bool | int | float):
                value = str(value) if not isinstance(value, bool) else value
            if not isinstance(value, str):
                raise self.err(key, f"got {_describe(value)}", "a string")
        return value

    def int(self, key: str, default: int | None = None, *, lo: int | None = None,
            hi: int | None = None, required: bool = False, expected: str | None = None) -> Any:
        if expected is None:
            expected = ("an integer" if lo is None and hi is None else
                        f"an integer >= {lo}" if hi is None else
                        f"an integer <= {hi}" if lo is None else
                        f"an integer from {lo} to {hi}")
        value = self.require(key, expected) if required else self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, str) and _INT_TEXT.fullmatch(value):
            value = int(value)  # "4140" is 4140, as Linkerd's Jackson reads it (templated YAML)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.err(key, f"got {_describe(value)}", expected)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.err(key, f"{value} is out of range", expected)
        return value

    def float(self, key: str, default: float | None = None, *, lo: float | None = None,
              hi: float | None = None) -> Any:
        value = self.raw(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.err(key, f"got {_describe(value)}", "a number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.err(key, f"{value} is out of range", f"a number in [{lo}, {hi}]")
        return float(value)

    def ip(self, key: str, default: str) -> str:
        """An address to bind: an IP literal, or a host name that resolves here."""
        value = self.str(key, default)
        try:
            ipaddress.ip_address(value)
            return value
        except ValueError:
            pass
        try:
            socket.getaddrinfo(value, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise self.err(key, f"{value!r} is not an IP address and does not resolve ({e})",
                           "an IP address to listen on, such as 127.0.0.1 or 0.0.0.0") from None
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"  # as Jackson reads "true"
        if not isinstance(value, bool):
            raise self.err(key, f"got {_describe(value)}", "true or false")
        return value

    def path_value(self, key: str, default: str | None = None) -> Path | None:
        text = self.str(key, default)
        if text is None:
            return None
        try:
            return Path.read(text)
        except (DtabParseError, ValueError) as e:
            raise self.err(key, f"invalid path {text!r}: {e}", "a path such as /svc") from None

    def dtab(self, key: str) -> Dtab:
        text = self.raw(key, "")
        if not isinstance(text, str):
            raise self.err(key, f"got {_describe(text)}",
                           "a dtab string such as '/svc => /#/io.l5d.fs'")
        try:
            return Dtab.read(text)
        except DtabParseError as e:
            line, col = self.src.map_position(self.value_pos(key), e.line, e.column)
            msg = str(e)
            marker = f"column {e.column}: "
            detail = msg[msg.find(marker) + len(marker):] if marker in msg else msg
            # show only the offending line of the dtab, with the position marked
            lines = e.text.splitlines() or [""]
            if 0 < e.line <= len(lines) and " at '" in detail:
                bad = lines[e.line - 1]
                c = min(max(e.column - 1, 0), len(bad))
                pointed = f"{bad[:c]}[{bad[c:c + 1]}]{bad[c + 1:]}".strip()
                detail = detail[: detail.rfind(" at '")] + f" in '{pointed}'"
            raise ConfigError(
                f"invalid dtab at column {col}: {detail}", file=self.src.name,
                line=line or self.key_line(key), key=self.path(key),
            ) from None

    def child(self, key: str) -> _Obj | None:
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.err(key, f"got {_describe(value)}", "a mapping of keys")
        return _Obj(self.src, self.path(key), value, self.key_line(key))

    def children(self, key: str, *, one_or_list: bool = False) -> list[_Obj]:
        self.used.add(key)
        value = self.data.get(key)
        if value is None:
            return []
        if one_or_list and isinstance(value, dict):
            return [_Obj(self.src, self.path(key), value, self.key_line(key))]
        if not isinstance(value, list):
            raise self.err(key, f"got {_describe(value)}", "a list of mappings")
        lines = getattr(value, "item_lines", None)
        out = []
        for i, item in enumerate(value):
            line = lines[i] if lines else self.key_line(key)
            out.append(_Obj(self.src, f"{self.path(key)}[{i}]", item, line))
        return out

    def kind(self, known: Iterable[str], default: str | None = None, *,
             family: str | None = None) -> str:
        known = list(known)
        expected = "one of: " + ", ".join(known)
        value = self.str("kind", default, required=default is None)
        if value not in known:
            if family is not None:
                from router.linkerd_kinds import refusal

                if (why := refusal(family, value)) is not None:
                    raise self.err("kind", why, expected)
            raise self.err("kind", f"unknown kind {value!r}", expected)
        return value

    def rest(self) -> dict[str, Any]:
        """The keys not read yet (plugin params); they count as used."""
        out = {k: v for k, v in self.data.items() if k not in self.used}
        self.used.update(out)
        return out

    def keep_unacted(self, *keys: str) -> dict[str, Any]:
        """Linkerd keys we parse but do not act on yet: kept verbatim, with a warning."""
        kept = {}
        for key in keys:
            if self.has(key):
                kept[key] = plain(self.raw(key))
            self.used.add(key)
        self.warn_unacted(*keys)
        return kept

    def warn_unacted(self, *keys: str) -> None:
        """Warn, with the line, about each of `keys` the file sets (parsed, not acted on yet)."""
        if not self.src.warn:
            return
        for key in keys:
            if self.has(key):
                log.warning("%s:%s: %s %s", self.src.name, self.key_line(key), self.path(key),
                            _NOT_ACTED_ON)

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            key = unknown[0]
            known = sorted(self.used)
            raise self.err(key, f"unknown key '{key}'", "one of: " + ", ".join(known) if known
                           else "no other keys")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


@dataclass
class _Source:
    name: str
    text: str
    warn: bool = True  # False when re-building static params per name at request time

    def map_position(
        self, pos: tuple[int, int, str | None] | None, line: int, column: int
    ) -> tuple[int | None, int]:
        """A position inside a scalar value (1-based line/column) → file line and column."""
        if pos is None:
            return None, column
        vline, vcol, style = pos
        if style in ("|", ">"):
            file_line = vline + line  # the indicator's line, then the content
            lines = self.text.splitlines()
            indent = 0
            if 0 < file_line <= len(lines):
                text_line = lines[file_line - 1]
                indent = len(text_line) - len(text_line.lstrip(" "))
            return file_line, indent + column
        quote = 1 if style in ("'", '"') else 0
        if line != 1:
            return vline + line - 1, column
        # A flow scalar folds its lines into one, joined by spaces: walk the file's
        # lines to find which one holds `column` of the folded value.
        lines = self.text.splitlines()
        offset = column - 1
        file_line, start = vline, vcol + quote
        seg = lines[vline - 1][start - 1:].rstrip() if 0 < vline <= len(lines) else ""
        while offset > len(seg) and file_line < len(lines):
            offset -= len(seg) + 1
            file_line += 1
            raw = lines[file_line - 1]
            seg = raw.strip()
            start = len(raw) - len(raw.lstrip()) + 1
        return file_line, start + offset


# ---------------------------------------------------------------------------
# Config dataclasses


@dataclass(frozen=True)
class AdminSecurityConfig:
    ui_enabled: bool = True
    control_enabled: bool = True
    diagnostics_enabled: bool = True
    path_whitelist: tuple[str, ...] = ()
    path_blacklist: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdminConfig:
    ip: str = "127.0.0.1"
    port: int = 9990
    shutdown_grace_ms: int = 10000
    http_identifier_port: int | None = None
    security: AdminSecurityConfig = AdminSecurityConfig()
    tls: ServerTls | None = None


@dataclass(frozen=True)
class PluginConfig:
    """A `kind` plus its own params (a namer, transformer, identifier or telemeter)."""

    kind: str
    params: Mapping[str, Any] = field(default_factory=_empty, hash=False)
    where: Where | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class NamerConfig:
    kind: str
    prefix: Path
    params: Mapping[str, Any] = field(default_factory=_empty, hash=False)
    transformers: tuple[PluginConfig, ...] = ()
    experimental: bool = False
    where: Where | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class InterpreterConfig:
    kind: str = "default"
    transformers: tuple[PluginConfig, ...] = ()
    params: Mapping[str, Any] = field(default_factory=_empty, hash=False)


@dataclass(frozen=True)
class TelemeterConfig:
    kind: str
    params: Mapping[str, Any] = field(default_factory=_empty, hash=False)


@dataclass(frozen=True)
class ServerConfig:
    port: int
    ip: str = "127.0.0.1"
    clear_context: bool = False
    max_call_depth: int = 1000
    max_concurrent_requests: int | None = None
    tls: ServerTls | None = None
    extra: Mapping[str, Any] = field(default_factory=_empty, hash=False)
    session: ServerSession = DEFAULT_SERVER_SESSION  # serverSession (router/session.py)
    h2: Mapping[str, Any] = field(default_factory=_empty, hash=False)  # router/h2/params.py


@dataclass(frozen=True)
class LoadBalancerConfig:
    kind: str = "p2c"
    max_effort: int = 5
    decay_time_ms: int = 10000  # ewma only
    enable_probation: bool = False
    # aperture only (Finagle's defaults)
    smooth_window_ms: int = 5000
    low_load: float = 0.5
    high_load: float = 2.0
    min_aperture: int = 1


@dataclass(frozen=True)
class BudgetConfig:
    min_retries_per_sec: int = 10
    percent_can_retry: float = 0.2
    ttl_secs: int = 10


@dataclass(frozen=True)
class BackoffConfig:
    kind: str = "constant"  # constant{ms} | jittered{minMs, maxMs}
    ms: int = 0
    min_ms: int | None = None
    max_ms: int | None = None


@dataclass(frozen=True)
class FailureAccrualConfig:
    kind: str = "io.l5d.consecutiveFailures"
    failures: int = 5
    params: Mapping[str, Any] = field(default_factory=_empty, hash=False)
    backoff: BackoffConfig = BackoffConfig(kind="jittered", min_ms=5000, max_ms=300000)


@dataclass(frozen=True)
class ClientConfig:
    """Per-client params (reference §1.7); `client_config(id)` merges static entries.

    Acted on: `requestAttemptTimeoutMs`, `loadBalancer`, `failureAccrual`, `requeueBudget`
    (router/policy/, router/client/) and `tls` (router.tls: checked at load, no plaintext
    fallback). The rest is kept for later work, with a warning at load when the file sets it.
    """

    load_balancer: LoadBalancerConfig = LoadBalancerConfig()
    failure_accrual: FailureAccrualConfig = FailureAccrualConfig()
    requeue_budget: BudgetConfig = BudgetConfig()
    request_attempt_timeout_ms: int | None = None
    fail_fast: bool = False
    tls: ClientTls | None = None
    host_connection_pool: Mapping[str, Any] = field(default_factory=_empty, hash=False)
    client_session: ClientSession = DEFAULT_CLIENT_SESSION  # clientSession (router/session.py)
    extra: Mapping[str, Any] = field(default_factory=_empty, hash=False)


@dataclass(frozen=True)
class RetriesConfig:
    budget: BudgetConfig = BudgetConfig()
    backoff: BackoffConfig = BackoffConfig()


@dataclass(frozen=True)
class ServiceConfig:
    """Per-service params (reference §1.8).

    All acted on (router/policy/retries.py): `totalTimeoutMs` bounds the whole exchange,
    retries and the response body included; `retries` budgets and backs off retries of
    what `responseClassifier` calls retryable.
    """

    total_timeout_ms: int | None = None
    retries: RetriesConfig = RetriesConfig()
    response_classifier: str = "io.l5d.http.nonRetryable5XX"
    retries_set: bool = False  # a `retries` block was written (retries are then budgeted)
    # h2 only: Linkerd's retryBufferSize {requestBytes, responseBytes} (None: 16383 each)
    retry_buffer_request_bytes: int | None = None
    retry_buffer_response_bytes: int | None = None
    classification_timeout_ms: int | None = None  # h2 only (None: Linkerd's 100)


class PrefixPattern:
    """A static-config prefix: labels, `*` (any one label) and `{var}` captures."""

    def __init__(self, text: str) -> None:
        if not text.startswith("/"):
            raise ValueError("must start with '/'")
        self.text = text
        segs = [s for s in text[1:].split("/") if s] if text != "/" else []
        self._matchers: list[re.Pattern[str] | str] = []
        for seg in segs:
            if seg == "*":
                self._matchers.append(re.compile(r".+", re.S))
            elif "{" in seg or "}" in seg:
                parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", seg)
                rx = ""
                for part in parts:
                    if part.startswith("{") and part.endswith("}"):
                        rx += f"(?P<{part[1:-1]}>.+?)"
                    elif "{" in part or "}" in part:
                        raise ValueError(f"bad capture in {seg!r}: use {{name}}")
                    else:
                        rx += re.escape(part)
                self._matchers.append(re.compile(rx, re.S))
            else:
                self._matchers.append(seg)

    def match(self, path: Path) -> dict[str, str] | None:
        elems = path.elems
        if len(elems) < len(self._matchers):
            return None
        captures: dict[str, str] = {}
        for m, elem in zip(self._matchers, elems, strict=False):
            if isinstance(m, str):
                if m != elem:
                    return None
            else:
                found = m.fullmatch(elem)
                if found is None:
                    return None
                captures.update(found.groupdict())
        return captures

    def __repr__(self) -> str:
        return f"PrefixPattern({self.text})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrefixPattern) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def _substitute(value: Any, captures: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        for name, sub in captures.items():
            value = value.replace("{" + name + "}", sub)
        return value
    if isinstance(value, Mapping):
        return {k: _substitute(v, captures) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, captures) for v in value]
    return value


@dataclass(frozen=True)
class StaticEntry:
    prefix: PrefixPattern
    params: Mapping[str, Any] = field(hash=False)


@dataclass(frozen=True)
class ParamSpec:
    """`client:` or `service:` — io.l5d.global (one set) or io.l5d.static (by prefix).

    `resolve(name)` applies every matching static entry in order (later entries
    win key by key, as Linkerd does), with `{var}` captures substituted.
    """

    kind: str
    default: Any
    entries: tuple[StaticEntry, ...] = ()
    builder: Callable[[_Obj], Any] | None = field(default=None, compare=False, repr=False)

    def resolve(self, name: Path) -> Any:
        if not self.entries:
            return self.default
        merged: dict[str, Any] = {}
        for entry in self.entries:
            captures = entry.prefix.match(name)
            if captures is not None:
                merged.update(_substitute(entry.params, captures))
        if not merged:
            return self.default
        assert self.builder is not None
        src = _Source("<static config for " + name.show + ">", "", warn=False)
        return self.builder(_Obj(src, "", merged, None))


@dataclass(frozen=True)
class RouterConfig:
    protocol: str
    label: str
    servers: tuple[ServerConfig, ...]
    dtab: Dtab = field(default_factory=Dtab.empty)
    dst_prefix: Path = field(default_factory=lambda: Path.of("svc"))
    identifiers: tuple[PluginConfig, ...] = (PluginConfig("io.l5d.header.token"),)
    interpreter: InterpreterConfig = InterpreterConfig()
    client: ParamSpec = field(default_factory=lambda: ParamSpec("io.l5d.global", ClientConfig()))
    service: ParamSpec = field(
        default_factory=lambda: ParamSpec("io.l5d.global", ServiceConfig())
    )
    binding_timeout_ms: int = 10000
    binding_cache_idle_ttl_secs: int = 600
    binding_cache_capacity: Mapping[str, int] = field(default_factory=_empty, hash=False)
    originator: bool = False
    max_headers_kb: int = 8
    max_dtab_header_kb: int = 8  # l5d-py: l5d-dtab + l5d-ctx-dtab per request
    max_initial_line_kb: int = 4
    max_err_response_kb: int = 5120
    stream_after_content_length_kb: int = 5
    streaming_enabled: bool = True
    compression_level: int = -1
    extra: Mapping[str, Any] = field(default_factory=_empty, hash=False)
    where: Where | None = field(default=None, compare=False, repr=False)
    # router/telemetry: tracePropagator kind, httpAccessLog* (access_log.AccessLogConfig)
    trace_propagator: str = "io.l5d.default"
    access_log: Any = None


@dataclass(frozen=True)
class LinkerConfig:
    routers: tuple[RouterConfig, ...]
    admin: AdminConfig = AdminConfig()
    namers: tuple[NamerConfig, ...] = ()
    telemetry: tuple[TelemeterConfig, ...] = ()
    source: str = "<config>"
    raw: Mapping[str, Any] = field(default_factory=_empty, hash=False, compare=False, repr=False)
    workers: int = 1  # data-path processes (router/workers); 1 = one process, as before

    def to_json(self) -> dict[str, Any]:
        """The loaded config re-serialised (what `/config.json` serves)."""
        return plain(dict(self.raw))


# ---------------------------------------------------------------------------
# Kinds known to the loader

PROTOCOLS = ("http", "h2")
PROTOCOL_DEFAULT_PORT = {"http": 4140, "h2": 4142}
IDENTIFIER_KINDS = (
    "io.l5d.header.token",
    "io.l5d.methodAndHost",
    "io.l5d.path",
    "io.l5d.header",
    "io.l5d.static",
    "io.l5d.ingress",  # router/ingress.py
)
# Linkerd's h2 identifiers (router/h2/identifiers.py builds them)
H2_IDENTIFIER_KINDS = ("io.l5d.header.token", "io.l5d.header.path", "io.l5d.ingress")
INTERPRETER_KINDS = ("default", "io.l5d.namerd.http", "io.l5d.mesh", "io.l5d.fs",
                     "io.l5d.k8s.configMap")
LOAD_BALANCER_KINDS = ("p2c", "roundRobin", "ewma", "aperture", "heap")
# Classifier and failure-accrual kinds own their params (router/policy/*): `build` validates.
FAILURE_ACCRUAL_KINDS = policy_accrual.KINDS
RESPONSE_CLASSIFIER_KINDS = policy_classifiers.KINDS
H2_CLASSIFIER_KINDS = policy_classifiers.h2_classifiers.KINDS
# Telemeters: prometheus is served by the admin server; zipkin, tracelog and
# recentRequests live in router/telemetry (they own their params); the rest are
# recognised (so Linkerd configs load) and warned about until they are implemented.
TELEMETER_KINDS = ("io.l5d.prometheus", "io.l5d.zipkin", "io.l5d.tracelog",
                   "io.l5d.recentRequests")
TELEMETER_KINDS_NOT_YET = (
    "io.l5d.statsd",
    "io.l5d.influxdb",
)


def _namer_kinds() -> list[str]:
    from namers.registry import namer_kinds

    return namer_kinds()


# ---------------------------------------------------------------------------
# Section parsers


def _admin(obj: _Obj | None) -> AdminConfig:
    if obj is None:
        return AdminConfig()
    sec = obj.child("security")
    security = AdminSecurityConfig()
    if sec is not None:
        security = AdminSecurityConfig(
            ui_enabled=sec.bool("uiEnabled", True),
            control_enabled=sec.bool("controlEnabled", True),
            diagnostics_enabled=sec.bool("diagnosticsEnabled", True),
            path_whitelist=tuple(_str_list(sec, "pathWhitelist")),
            path_blacklist=tuple(_str_list(sec, "pathBlacklist")),
        )
        sec.finish()
    cfg = AdminConfig(
        ip=obj.ip("ip", "127.0.0.1"),
        port=obj.int("port", 9990, lo=0, hi=65535, expected="a port number (0-65535)"),
        shutdown_grace_ms=obj.int("shutdownGraceMs", 10000, lo=0),
        http_identifier_port=obj.int("httpIdentifierPort", None, lo=1, hi=65535),
        security=security,
        tls=_tls(obj, "tls", parse_server_tls),
    )
    obj.keep_unacted("socketOptions", "workerThreads")
    obj.warn_unacted("httpIdentifierPort")
    obj.finish()
    return cfg


def _str_list(obj: _Obj, key: str) -> list[str]:
    value = obj.raw(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise obj.err(key, f"got {_describe(value)}", "a list of strings")
    return list(value)


def _mapping_or_none(obj: _Obj, key: str) -> Mapping[str, Any] | None:
    child = obj.child(key)
    if child is None:
        return None
    child.rest()
    return MappingProxyType(plain(child.data))


def _tls(obj: _Obj, key: str, parse_tls: Callable[[_Obj], Any]) -> Any:
    """`tls:` is owned by router.tls.params (keys, files, checks); None when absent."""
    child = obj.child(key)
    return None if child is None else parse_tls(child)


def _plugin(obj: _Obj, known: Iterable[str], default: str | None = None,
            family: str | None = None) -> PluginConfig:
    kind = obj.kind(known, default, family=family)
    return PluginConfig(kind, MappingProxyType(plain(obj.rest())), obj.where())


def _transformers(obj: _Obj, key: str = "transformers") -> tuple[PluginConfig, ...]:
    """Transformer kinds are checked when the Linker builds them (transformers.registry)."""
    out = []
    for t in obj.children(key):
        kind = t.str("kind", required=True)
        out.append(PluginConfig(kind, MappingProxyType(plain(t.rest())), t.where()))
    return tuple(out)


def _namer(obj: _Obj) -> NamerConfig:
    kind = obj.kind(_namer_kinds(), family="namer")
    prefix = obj.path_value("prefix", "/" + kind)
    assert prefix is not None
    experimental = obj.bool("experimental", False)
    transformers = _transformers(obj)
    params = plain(obj.rest())
    return NamerConfig(kind, prefix, MappingProxyType(params), transformers, experimental,
                       obj.where())


def _telemeter(obj: _Obj) -> TelemeterConfig:
    kind = obj.kind(TELEMETER_KINDS + TELEMETER_KINDS_NOT_YET)
    obj.bool("experimental", False)  # Linkerd's opt-in for experimental plugins
    if kind == "io.l5d.prometheus":
        path = obj.str("path", "/admin/metrics/prometheus")
        if not path.startswith("/"):
            raise obj.err("path", f"{path!r} does not start with '/'", "an admin path")
        params = {"path": path, "prefix": obj.str("prefix", "")}
        obj.finish()
        return TelemeterConfig(kind, MappingProxyType(params))
    if kind in TELEMETER_KINDS:
        from router import telemetry

        try:
            params = telemetry.parse_params(kind, plain(obj.rest()))
        except ParamError as e:
            raise obj.err(e.key, e.detail) from None
        if kind == "io.l5d.tracelog":
            obj.warn_unacted("host")  # in the reference, not in Linkerd's TracelogConfig
        return TelemeterConfig(kind, MappingProxyType(params))
    log.warning("%s:%s: %s: telemeter %s %s", obj.src.name, obj.line, obj.key, kind, _NOT_ACTED_ON)
    return TelemeterConfig(kind, MappingProxyType(plain(obj.rest())))


def _server(obj: _Obj, protocol: str) -> ServerConfig:
    h2: Mapping[str, Any] = _EMPTY
    if protocol == "h2":  # the h2 keys are owned by router/h2/params.py
        from router.h2.params import parse_server_h2

        h2 = parse_server_h2(obj)
    cfg = ServerConfig(
        # Linkerd's ServerConfig: an omitted port is the protocol's default (http 4140)
        port=obj.int("port", PROTOCOL_DEFAULT_PORT[protocol], lo=1, hi=65535,
                     expected="a port number (1-65535)"),
        ip=obj.ip("ip", "127.0.0.1"),
        clear_context=obj.bool("clearContext", False),
        # Linkerd's defaults: http 1000, h2 10 (counted from the Via hops)
        max_call_depth=obj.int("maxCallDepth", 10 if protocol == "h2" else 1000, lo=1),
        max_concurrent_requests=obj.int("maxConcurrentRequests", None, lo=1),
        tls=_tls(obj, "tls", parse_server_tls),
        session=parse_server_session(obj.child("serverSession")),
        extra=MappingProxyType(obj.keep_unacted(
            "announce", "socketOptions", "addForwardedHeader",
            "timestampHeader", "label", "timeoutMs",
        )),
        h2=h2,
    )
    obj.finish()
    return cfg


def _backoff(obj: _Obj | None, default: BackoffConfig) -> BackoffConfig:
    if obj is None:
        return default
    kind = obj.kind(("constant", "jittered"))
    if kind == "constant":
        cfg = BackoffConfig("constant", ms=obj.int("ms", 0, lo=0))
    else:
        lo = obj.int("minMs", required=True, lo=0)
        hi = obj.int("maxMs", required=True, lo=0)
        if hi < lo:
            raise obj.err("maxMs", f"maxMs {hi} < minMs {lo}", "maxMs >= minMs")
        cfg = BackoffConfig("jittered", min_ms=lo, max_ms=hi)
    obj.finish()
    return cfg


def _budget(obj: _Obj | None) -> BudgetConfig:
    if obj is None:
        return BudgetConfig()
    cfg = BudgetConfig(
        min_retries_per_sec=obj.int("minRetriesPerSec", 10, lo=0),
        percent_can_retry=obj.float("percentCanRetry", 0.2, lo=0.0, hi=1000.0),
        ttl_secs=obj.int("ttlSecs", 10, lo=1, hi=60),
    )
    obj.finish()
    return cfg


def _load_balancer(obj: _Obj | None) -> LoadBalancerConfig:
    if obj is None:
        return LoadBalancerConfig()
    kind = obj.kind(LOAD_BALANCER_KINDS, "p2c")
    aperture = kind == "aperture"
    cfg = LoadBalancerConfig(
        kind=kind,
        max_effort=obj.int("maxEffort", 5, lo=1),
        decay_time_ms=obj.int("decayTimeMs", 10000, lo=1) if kind == "ewma" else 10000,
        enable_probation=obj.bool("enableProbation", False),
        smooth_window_ms=obj.int("smoothWindowMs", 5000, lo=1) if aperture else 5000,
        low_load=obj.float("lowLoad", 0.5, lo=0.0, hi=1e6) if aperture else 0.5,
        high_load=obj.float("highLoad", 2.0, lo=0.0, hi=1e6) if aperture else 2.0,
        min_aperture=obj.int("minAperture", 1, lo=1) if aperture else 1,
    )
    if cfg.high_load < cfg.low_load:
        raise obj.err("highLoad", f"highLoad {cfg.high_load:g} < lowLoad {cfg.low_load:g}",
                      "highLoad >= lowLoad")
    obj.warn_unacted("enableProbation")
    obj.finish()
    return cfg


def _failure_accrual(obj: _Obj | None) -> FailureAccrualConfig:
    if obj is None:
        return FailureAccrualConfig()
    kind = obj.kind(FAILURE_ACCRUAL_KINDS)
    backoff = _backoff(obj.child("backoff"), FailureAccrualConfig().backoff)
    params = plain(obj.rest())
    try:  # the kind's own params, checked by its code (router/policy/accrual.py)
        policy_accrual.build(kind, params)
    except ParamError as e:
        raise obj.err(e.key if e.key in params else None, e.detail) from None
    failures = int(params.get("failures", 5)) if kind == "io.l5d.consecutiveFailures" else 5
    return FailureAccrualConfig(kind, failures, MappingProxyType(params), backoff)


def _client_params(obj: _Obj) -> ClientConfig:
    cfg = ClientConfig(
        load_balancer=_load_balancer(obj.child("loadBalancer")),
        failure_accrual=_failure_accrual(obj.child("failureAccrual")),
        requeue_budget=_budget(obj.child("requeueBudget")),
        request_attempt_timeout_ms=obj.int("requestAttemptTimeoutMs", None, lo=1),
        fail_fast=obj.bool("failFast", False),
        tls=_tls(obj, "tls", parse_client_tls),
        host_connection_pool=_mapping_or_none(obj, "hostConnectionPool") or _EMPTY,
        client_session=parse_client_session(obj.child("clientSession")),
        extra=MappingProxyType(obj.keep_unacted(
            "socketOptions", "forwardClientCert", "requestAuthorizers"
        )),
    )
    obj.warn_unacted("failFast", "hostConnectionPool")
    obj.finish()
    return cfg


def _service_params(obj: _Obj, protocol: str = "http") -> ServiceConfig:
    retries = RetriesConfig()
    r = obj.child("retries")
    retries_set = r is not None
    if r is not None:
        retries = RetriesConfig(
            budget=_budget(r.child("budget")),
            backoff=_backoff(r.child("backoff"), BackoffConfig()),
        )
        r.finish()
    classifier: Any = ("io.l5d.h2.nonRetryable5XX" if protocol == "h2"
                       else "io.l5d.http.nonRetryable5XX")
    c = obj.child("responseClassifier")
    if c is not None:
        # Linkerd: an h2 router takes the io.l5d.h2.* kinds, an http router the others
        kinds = (H2_CLASSIFIER_KINDS if protocol == "h2" else
                 tuple(k for k in RESPONSE_CLASSIFIER_KINDS if k not in H2_CLASSIFIER_KINDS))
        classifier = c.kind(kinds)
        params = plain(c.rest())
        try:  # the kind's own params, checked by its code (router/policy/classifiers.py)
            built = policy_classifiers.build(classifier, params)
        except ParamError as e:
            raise c.err(e.key if e.key in params else None, e.detail) from None
        # a classifier with params (gRPC status codes) is kept built; the others by name
        classifier = built if params else built.kind
        c.finish()
    request_bytes = response_bytes = classification_ms = None
    if protocol == "h2":  # Linkerd's H2SvcConfig keys
        rb = obj.child("retryBufferSize")
        if rb is not None:
            request_bytes = rb.int("requestBytes", None, lo=0)
            response_bytes = rb.int("responseBytes", None, lo=0)
            rb.finish()
        classification_ms = obj.int("classificationTimeoutMs", None, lo=1)
    cfg = ServiceConfig(
        total_timeout_ms=obj.int("totalTimeoutMs", None, lo=1),
        retries=retries,
        response_classifier=classifier,
        retries_set=retries_set,
        retry_buffer_request_bytes=request_bytes,
        retry_buffer_response_bytes=response_bytes,
        classification_timeout_ms=classification_ms,
    )
    obj.finish()
    return cfg


def _param_spec(obj: _Obj | None, builder: Callable[[_Obj], Any], default: Any) -> ParamSpec:
    if obj is None:
        return ParamSpec("io.l5d.global", default, (), builder)
    kind = obj.kind(("io.l5d.global", "io.l5d.static"), "io.l5d.global")
    if kind == "io.l5d.global":
        return ParamSpec(kind, builder(obj), (), builder)
    entries = []
    for entry in obj.children("configs"):
        text = entry.str("prefix", required=True)
        try:
            pattern = PrefixPattern(text)
        except ValueError as e:
            raise entry.err("prefix", f"invalid prefix {text!r}: {e}",
                            "a path prefix such as /#/io.l5d.fs/{service} or /svc/*") from None
        params = {k: v for k, v in entry.data.items() if k != "prefix"}
        builder(_Obj(entry.src, entry.key, _sub_map(entry.data, params), entry.line))
        entries.append(StaticEntry(pattern, MappingProxyType(plain(params))))
    obj.finish()
    if not entries:
        raise obj.err("configs", "io.l5d.static needs at least one entry",
                      "a list of {prefix, ...params}")
    return ParamSpec(kind, default, tuple(entries), builder)


def _sub_map(parent: dict, params: dict) -> _Map:
    """A copy of some of `parent`'s keys that keeps their positions (for error lines)."""
    out = _Map(params)
    out.line = getattr(parent, "line", 0)
    out.key_lines = dict(getattr(parent, "key_lines", {}))
    out.value_pos = dict(getattr(parent, "value_pos", {}))
    return out


def _router(obj: _Obj) -> RouterConfig:
    protocol = obj.str("protocol", required=True)
    if protocol not in PROTOCOLS:
        from router.linkerd_kinds import refusal

        raise obj.err("protocol", refusal("protocol", protocol)
                      or f"unsupported protocol {protocol!r}", "one of: " + ", ".join(PROTOCOLS))
    obj.bool("experimental", False)  # Linkerd's opt-in for experimental plugins
    label = obj.str("label", protocol)
    servers = obj.children("servers")
    if not servers:
        raise obj.err(None, "missing required key 'servers'",
                      "a list of servers such as [{port: 4140}]")
    server_cfgs = tuple(_server(s, protocol) for s in servers)
    dtab = obj.dtab("dtab")
    dst_prefix = obj.path_value("dstPrefix", "/svc")
    assert dst_prefix is not None
    identifiers = tuple(_plugin(i, H2_IDENTIFIER_KINDS if protocol == "h2" else
                                IDENTIFIER_KINDS, family="identifier")
                        for i in obj.children("identifier", one_or_list=True))
    if not identifiers:
        identifiers = (PluginConfig("io.l5d.header.token", MappingProxyType({}), obj.where()),)
    interp_obj = obj.child("interpreter")
    interpreter = InterpreterConfig()
    if interp_obj is not None:
        interp_obj.bool("experimental", False)
        kind = interp_obj.raw("kind", "default")
        if kind not in INTERPRETER_KINDS and kind != "io.l5d.namerd":
            raise interp_obj.err("kind", f"interpreter {kind!r} is not supported by l5d-py yet",
                                 "one of: " + ", ".join(INTERPRETER_KINDS))
        interp_params: dict[str, Any] = {}
        if kind in ("io.l5d.fs", "io.l5d.k8s.configMap"):  # a watched dtab: own keys
            from router.dtab_interpreters import interpreter_params as dtab_params

            interp_params = dtab_params(interp_obj, kind)
        elif kind != "default":  # the namerd interpreters own their keys
            from router.namerd_interpreter import interpreter_params

            interp_params = interpreter_params(interp_obj, kind)
        interp_obj.kind((*INTERPRETER_KINDS, "io.l5d.namerd"), "default")
        interpreter = InterpreterConfig(kind, _transformers(interp_obj),
                                        MappingProxyType(interp_params))
        interp_obj.finish()
    client = _param_spec(obj.child("client"), _client_params, ClientConfig())
    service = _param_spec(obj.child("service"),
                          (lambda o: _service_params(o, "h2")) if protocol == "h2"
                          else _service_params,
                          ServiceConfig(response_classifier="io.l5d.h2.nonRetryable5XX")
                          if protocol == "h2" else ServiceConfig())
    ttl = 600
    capacity: dict[str, int] = {}
    bc = obj.child("bindingCache")
    if bc is not None:
        ttl = bc.int("idleTtlSecs", 600, lo=1)
        for k in ("paths", "trees", "bounds", "clients"):
            capacity[k] = bc.int(k, 1000, lo=1)
        bc.warn_unacted("trees", "bounds", "clients")  # one cache here, sized by `paths`
        bc.finish()
    cfg = RouterConfig(
        protocol=protocol,
        label=label,
        servers=server_cfgs,
        dtab=dtab,
        dst_prefix=dst_prefix,
        identifiers=identifiers,
        interpreter=interpreter,
        client=client,
        service=service,
        binding_timeout_ms=obj.int("bindingTimeoutMs", 10000, lo=1),
        binding_cache_idle_ttl_secs=ttl,
        binding_cache_capacity=MappingProxyType(capacity),
        originator=obj.bool("originator", False),
        max_headers_kb=obj.int("maxHeadersKB", 8, lo=1),
        max_dtab_header_kb=obj.int("maxDtabHeaderKB", 8, lo=1),
        max_initial_line_kb=obj.int("maxInitialLineKB", 4, lo=1),
        max_err_response_kb=obj.int("maxErrResponseKB", 5120, lo=0),
        stream_after_content_length_kb=obj.int("streamAfterContentLengthKB", 5, lo=0),
        streaming_enabled=obj.bool("streamingEnabled", True),
        compression_level=obj.int("compressionLevel", -1, lo=-1, hi=9),
        extra=MappingProxyType(obj.keep_unacted("announcers", "socketOptions")),
        where=obj.where(),
        trace_propagator=_trace_propagator(obj),
        access_log=_access_log(obj, protocol),
    )
    obj.warn_unacted("originator", "maxHeadersKB", "maxInitialLineKB", "maxErrResponseKB",
                     "streamingEnabled", "compressionLevel")
    obj.finish()
    return cfg


def _trace_propagator(obj: _Obj) -> str:
    """`tracePropagator: {kind: io.l5d.default | io.l5d.zipkin}` (router/telemetry)."""
    child = obj.child("tracePropagator")
    if child is None:
        return "io.l5d.default"
    kind = child.kind(("io.l5d.default", "io.l5d.zipkin"))
    child.finish()
    return kind


def _access_log(obj: _Obj, protocol: str) -> Any:
    """`httpAccessLog` (h2: `h2AccessLog`) and its rotation keys (router/telemetry/access_log)."""
    from router.telemetry import access_log

    values = {k: plain(obj.raw(k)) for k in access_log.keys(protocol)}
    try:
        return access_log.parse(values, protocol)
    except ParamError as e:
        raise obj.err(e.key, e.detail) from None


_WILDCARD_IPS = frozenset({"0.0.0.0", "::", ""})


def _same_socket(a: str, b: str) -> bool:
    """Two listeners on one port collide when the IPs are equal or either is a wildcard."""
    return a == b or a in _WILDCARD_IPS or b in _WILDCARD_IPS


def _linker(obj: _Obj, src: _Source) -> LinkerConfig:
    admin = _admin(obj.child("admin"))
    namers = tuple(_namer(n) for n in obj.children("namers"))
    prefixes: dict[Path, str] = {}
    for n in namers:
        if n.prefix in prefixes:
            assert n.where is not None
            raise n.where.error(
                f"namer prefix {n.prefix.show} is already used by {prefixes[n.prefix]}",
                key="prefix", expected="a distinct prefix per namer")
        prefixes[n.prefix] = n.where.key if n.where else n.kind
    telemetry = tuple(_telemeter(t) for t in obj.children("telemetry"))
    usage = obj.child("usage")
    if usage is not None:
        usage.bool("enabled", True)
        usage.str("orgId", None)
        usage.finish()
    if not obj.has("routers"):
        raise NoRoutersSpecified("missing required key 'routers' (NoRoutersSpecified)",
                                 file=src.name, line=obj.line, key="routers",
                                 expected="a non-empty list of routers")
    router_objs = obj.children("routers")
    if not router_objs:
        raise NoRoutersSpecified("'routers' is empty (NoRoutersSpecified)", file=src.name,
                                 line=obj.key_line("routers"), key="routers",
                                 expected="a non-empty list of routers")
    routers = []
    labels: dict[str, str] = {}
    ports: list[tuple[str, int, str]] = [(admin.ip, admin.port, f"admin ({admin.ip}:{admin.port})")]
    for r in router_objs:
        cfg = _router(r)
        if cfg.label in labels:
            raise r.err("label" if r.has("label") else None,
                        f"router label {cfg.label!r} is already used by {labels[cfg.label]}",
                        "a unique label per router")
        labels[cfg.label] = r.key
        for i, s in enumerate(cfg.servers):
            for ip, port, other in ports:
                if port == s.port and _same_socket(ip, s.ip):
                    server = r.data["servers"][i]
                    lines = getattr(server, "key_lines", None) or {}
                    raise ConfigError(f"{s.ip}:{s.port} is already used by {other}",
                                      file=src.name, line=lines.get("port", r.line),
                                      key=f"{r.key}.servers[{i}].port",
                                      expected="a port not used by another server")
            ports.append((s.ip, s.port, f"{r.key}.servers[{i}] ({s.ip}:{s.port})"))
        routers.append(cfg)
    workers = _workers(obj)
    obj.finish()
    return LinkerConfig(tuple(routers), admin, namers, telemetry, src.name, plain(obj.data),
                        workers)


def _workers(obj: _Obj) -> int:
    """`workers: N | auto` (router/workers owns what it means)."""
    from router.workers import MAX_WORKERS, parse_workers

    value = obj.raw("workers", 1)
    count = parse_workers(value)
    if count is None:
        raise obj.err("workers", f"got {_describe(value)}",
                      f"a number of worker processes from 1 to {MAX_WORKERS}, or auto "
                      "(the CPUs this process may use)")
    return count


# ---------------------------------------------------------------------------
# Entry points


def parse(text: str, name: str = "<config>") -> LinkerConfig:
    """Parse config text; raises ConfigError naming `name`, the line and the key."""
    root, src = load_document(text, name)
    return _linker(root, src)


def load_document(text: str, name: str = "<config>") -> tuple[_Obj, _Source]:
    """The one YAML/JSON document of `text` as a positioned mapping (namerd/config.py
    loads its own schema with it); a YAML error names the file, line and column."""
    src = _Source(name, text)
    try:
        # Empty documents (a stray leading or trailing `---`) are skipped; two real ones
        # are an error (a Kubernetes manifest goes through load_all's ConfigMap path).
        docs = [d for d in yaml.load_all(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
                if d is not None]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = e.problem or str(e)
        if mark is not None:
            problem += f" at column {mark.column + 1}"
        if e.context:
            problem = f"{e.context}: {problem}"
            ctx = e.context_mark
            if ctx is not None and mark is not None and ctx.line != mark.line:
                problem += f" (the construct began at line {ctx.line + 1})"
        if "\t" in text and "'\\t'" in problem:
            problem += "; YAML indents with spaces, not tabs"
        raise ConfigError(f"not valid YAML/JSON: {problem}", file=name, line=line, key="",
                          expected=None) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML/JSON: {e}", file=name, line=None, key="") from None
    if not docs:
        raise NoRoutersSpecified("the config is empty (NoRoutersSpecified)", file=name, line=1,
                                 key="routers", expected="a mapping with a 'routers' list")
    if len(docs) > 1:
        raise ConfigError(f"{len(docs)} YAML documents (separated by ---); l5d reads one",
                          file=name, line=getattr(docs[1], "line", None), key="",
                          expected="a single config document")
    data = docs[0]
    return _Obj(src, "", data, getattr(data, "line", 1)), src


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as e:
        raise ConfigError(f"cannot read config: {e.strerror}", file=path, line=None,
                          key="") from None


def load(path: str, text: str | None = None) -> LinkerConfig:
    """Load a config file, or stdin for `-` (a manifest with one l5d ConfigMap works too);
    `text` is the file's content when the caller has read it already (a reload)."""
    configs = load_all(path, text)
    if len(configs) > 1:
        where = ", ".join(label for label, _ in configs)
        raise ConfigError(f"holds {len(configs)} l5d configs ({where}); l5d runs one",
                          file=configs[0][1].source, line=None, key="",
                          expected="a file with a single config")
    return configs[0][1]


def load_all(path: str, text: str | None = None) -> list[tuple[str, LinkerConfig]]:
    """(label, config) for a config file, or for each l5d config in the ConfigMaps of a
    Kubernetes manifest (several YAML documents, or one ConfigMap), so `l5d --validate
    k8s/l5d.yml` checks what the DaemonSet will run, with the manifest's line numbers."""
    text, name = _read(path) if text is None else (text, path)
    embedded = _manifest_configs(text)
    if embedded is None:
        return [("", parse(text, name))]
    if not embedded:
        raise ConfigError("a Kubernetes manifest with no ConfigMap holding an l5d config",
                          file=name, line=None, key="",
                          expected="an l5d config, or a ConfigMap whose data has one")
    out = []
    for label, aligned in embedded:
        try:
            out.append((label, parse(aligned, name)))
        except ConfigError as e:
            raise labelled(e, label) from None
    return out


def labelled(e: ConfigError, label: str) -> ConfigError:
    """`e` with the key prefixed by where in a manifest the config sits (no-op for '')."""
    if not label:
        return e
    key = f"{label}: {e.key}" if e.key else label
    return type(e)(e.problem, file=e.file, line=e.line, key=key, expected=e.expected)


_ROUTERS_KEY = re.compile(r"^\s*routers\s*:", re.M)


def _node_value(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _manifest_configs(text: str) -> list[tuple[str, str]] | None:
    """None when `text` is not a Kubernetes manifest; else each ConfigMap data entry that
    holds an l5d config (it has `routers:`), as (label, text padded so its line numbers
    are the manifest's)."""
    try:
        docs = [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader) if d is not None]
    except yaml.YAMLError:
        return None  # parse() reports it with its line

    def kind(doc: Any) -> Any:
        node = _node_value(doc, "kind")
        return node.value if isinstance(node, yaml.ScalarNode) else None

    if not any(kind(d) is not None and _node_value(d, "apiVersion") is not None for d in docs):
        return None  # no Kubernetes object: an l5d config (parse() checks the rest)
    lines = text.splitlines()
    out = []
    for doc in docs:
        if kind(doc) != "ConfigMap":
            continue
        name_node = _node_value(_node_value(doc, "metadata"), "name")
        cm = name_node.value if isinstance(name_node, yaml.ScalarNode) else "?"
        data = _node_value(doc, "data")
        if not isinstance(data, yaml.MappingNode):
            continue
        for knode, vnode in data.value:
            if not isinstance(vnode, yaml.ScalarNode) or not _ROUTERS_KEY.search(vnode.value):
                continue
            first = vnode.start_mark.line + 1  # 0-based index of the first content line
            if vnode.style == "|":
                raw = "\n".join(lines[first:vnode.end_mark.line])
                if textwrap.dedent(raw).strip() == vnode.value.strip():
                    out.append((f"ConfigMap {cm} {knode.value}", "\n" * first + raw + "\n"))
                    continue
            out.append((f"ConfigMap {cm} {knode.value}",
                        "\n" * vnode.start_mark.line + vnode.value))
    return out
