"""`Router` (one `routers:` entry) and `Linker` (the whole process).

A `Router` is what the data path calls per request: `identify` (request head
-> logical name), `bind` (dtab + name -> bound tree, from the binding cache),
`client_config` / `service_config` (static params by prefix). The `Linker`
builds everything from a `LinkerConfig` *before* anything listens, so a bad
namer or transformer parameter is a ConfigError naming the file and line,
and `l5d --validate` can stop there; `start()` then starts namers, the
routers' servers and the admin server, undoing what it started if any step
fails; `shutdown(grace_ms)` drains and stops in the reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from dtab.bounded import WeightedLRU, approx_size
from dtab.dtab import Dtab
from dtab.errors import ParamError
from dtab.nametree import NameTree
from dtab.path import Path
from namers.base import Namer, bound_names, close_namers
from namers.builtin import BuiltinNamers
from namers.registry import HostCheckError, build_namer
from router import dtab_interpreters
from router.binding import BindingCache
from router.config import (
    ClientConfig,
    ConfigError,
    LinkerConfig,
    NamerConfig,
    PluginConfig,
    RouterConfig,
    ServiceConfig,
    Where,
)
from router.identifiers import Identified, build_identifiers, with_lifecycle
from router.interpreter import Interpreter, TransformedNamer
from router.lifecycle import ShutdownOnce
from router.metrics import Metrics, Scope
from router.request import RequestHead
from transformers.base import Transformer

log = logging.getLogger(__name__)

_CONFIG_CACHE_MAX = 10000
# interpreters that bind with the configured namers (the others ask namerd)
LOCAL_NAMER_INTERPRETERS = ("default", *dtab_interpreters.KINDS)
_CONFIG_CACHE_BYTES = 4 * 1024 * 1024


def _plugin_error(where: Where | None, e: Exception, what: str) -> ConfigError:
    if where is None:
        return ConfigError(f"{what}: {e}", file="<config>", line=None, key="")
    if isinstance(e, ParamError):
        return where.param_error(e)
    return where.error(f"{what}: {e}")


# True while a Linker is built for `l5d --validate`: checks of this machine only warn.
_VALIDATING: ContextVar[bool] = ContextVar("l5d_validating", default=False)


def _host_check(where: Where | None, e: HostCheckError, what: str) -> Any:
    """The plugin `e` built anyway when validating (with a warning); else the ConfigError."""
    err = _plugin_error(where, e, what)
    if not _VALIDATING.get():
        raise err
    log.warning("%s (a check of this machine: an error when the router starts)", err)
    return e.built


def build_transformers(cfgs: Sequence[PluginConfig]) -> list[Transformer]:
    """Transformers in config order; a bad parameter is a ConfigError at its line."""
    from transformers.registry import build_transformer

    out = []
    for cfg in cfgs:
        try:
            out.append(build_transformer(cfg.kind, {"kind": cfg.kind, **cfg.params}))
        except HostCheckError as e:
            out.append(_host_check(cfg.where, e, f"transformer {cfg.kind}"))
        except (ParamError, ValueError, TypeError) as e:
            raise _plugin_error(cfg.where, e, f"transformer {cfg.kind}") from None
    return out


def close_transformers(transformers: Sequence[Any]) -> None:
    """Close each transformer that has a `close()`; a failure is logged, the rest still close."""
    for t in transformers:
        close = getattr(t, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception:
            log.exception("closing transformer %s failed", getattr(t, "prefix", t))


def warn_unreachable_namers(
    config: RouterConfig, prefixes: Sequence[Path], builtins: Sequence[str]
) -> list[str]:
    """Warn about dtab leaves under `/#/` or `/$/` that no configured or built-in namer
    serves (a typo, or a namer left out of the config): Linkerd accepts them, and every
    name through them then fails with "Unable to route request!"."""
    where = config.where
    line = where.key_lines.get("dtab", where.line) if where else None
    place = f"{where.file}:{line}: {where.key}.dtab" if where else f"router {config.label} dtab"
    problems = []
    for dentry in config.dtab:
        for leaf in dentry.dst.leaves():
            elems = leaf.elems
            if len(elems) < 2:
                continue
            if elems[0] == "#":
                rest = leaf.drop(1)
                if not any(rest.startswith(p) or p.startswith(rest) for p in prefixes):
                    known = ", ".join(p.show for p in prefixes) or "none"
                    problems.append(f"{leaf.show} reaches no configured namer "
                                    f"(namer prefixes: {known})")
            elif elems[0] == "$" and elems[1] not in builtins:
                problems.append(f"{leaf.show}: no built-in namer /$/{elems[1]} "
                                f"(built-ins: {', '.join(builtins)})")
    for problem in problems:
        log.warning("%s: %s; names routed there will not resolve", place, problem)
    return problems


def build_configured_namer(ncfg: NamerConfig) -> Namer:
    """One `namers:` entry (with its transformers); a bad parameter is a ConfigError."""
    params = {"kind": ncfg.kind, "prefix": ncfg.prefix.show,
              "experimental": ncfg.experimental, **ncfg.params}
    try:
        namer: Namer = build_namer(params)
    except HostCheckError as e:
        namer = _host_check(ncfg.where, e, f"namer {ncfg.kind}")
    except (ParamError, ValueError, TypeError) as e:
        raise _plugin_error(ncfg.where, e, f"namer {ncfg.kind}") from None
    if ncfg.transformers:
        namer = TransformedNamer(namer, build_transformers(ncfg.transformers))
    return namer


class Router:
    """One router: the request-time interface the data path uses."""

    def __init__(
        self,
        config: RouterConfig,
        namers: Sequence[tuple[Path, Namer]],
        builtins: BuiltinNamers,
        metrics: Metrics,
        *,
        interpreter: Any = None,
    ) -> None:
        """`interpreter`: bind through it instead of building one from the config (a
        data-path worker's mirror of the supervisor's, router/workers/mirror.py)."""
        self.label: str = config.label
        self.config: RouterConfig = config
        self.base_dtab: Dtab = config.dtab
        self.dst_prefix: Path = config.dst_prefix
        self.metrics: Scope = metrics.scope("rt", config.label)
        self.reuse_port = False  # servers share their ports with other workers' (SO_REUSEPORT)
        self.interpreter: Any = interpreter
        # io.l5d.fs / io.l5d.k8s.configMap: the local namers plus a dtab kept outside the
        # config (a watched file or ConfigMap key), prepended to the router's `dtab`. A
        # data-path worker (`interpreter` given) follows the dtab itself too.
        self.dtab_source: Any = None
        if config.interpreter.kind in dtab_interpreters.KINDS:
            try:
                self.dtab_source = dtab_interpreters.build_source(
                    config.interpreter.kind, config.interpreter.params, config.label)
            except (ParamError, ValueError) as e:
                raise _plugin_error(config.where, e, f"interpreter {config.interpreter.kind}"
                                    ) from None
        if interpreter is not None:
            pass
        elif config.interpreter.kind in LOCAL_NAMER_INTERPRETERS:
            transformers = build_transformers(config.interpreter.transformers)
            self.interpreter = Interpreter(namers, transformers, builtins)
        else:  # namerd binds for this router; the local namers are not used (as in Linkerd)
            from router.namerd_interpreter import build_interpreter

            transformers = build_transformers(config.interpreter.transformers)
            self.interpreter = build_interpreter(config.interpreter.kind,
                                                 config.interpreter.params, transformers,
                                                 config.label, self.metrics)
        build_ids = build_identifiers
        if config.protocol == "h2":  # Linkerd's h2 identifiers (`:authority`, `:path`)
            from router.h2.identifiers import build_h2_identifiers as build_ids
        try:
            self.identify = build_ids(config.identifiers, config.dst_prefix)
        except (ParamError, ValueError) as e:
            where = config.identifiers[0].where if config.identifiers else config.where
            for ident in config.identifiers:  # name the entry whose params are wrong
                try:
                    build_ids([ident], config.dst_prefix)
                except (ParamError, ValueError):
                    where = ident.where
                    break
            raise _plugin_error(where, e, "identifier") from None
        self.bindings = BindingCache(
            self.interpreter,
            timeout_ms=config.binding_timeout_ms,
            idle_ttl_s=float(config.binding_cache_idle_ttl_secs),
            capacity=config.binding_cache_capacity.get("paths", 1000),
            base=config.dtab,
        )
        self._client_configs: WeightedLRU[Path, ClientConfig] = WeightedLRU(
            _CONFIG_CACHE_BYTES, max_entries=_CONFIG_CACHE_MAX)
        self._service_configs: WeightedLRU[Path, ServiceConfig] = WeightedLRU(
            _CONFIG_CACHE_BYTES, max_entries=_CONFIG_CACHE_MAX)
        self.handle: Any = None  # the data path's handle once started
        self.telemetry: Any = None  # router.telemetry.RouterTelemetry, set by the Linker
        if self.dtab_source is not None:
            self._follow_dtab_source()

    def _follow_dtab_source(self) -> None:
        """The base dtab is the source's dtab + the router's `dtab` (Linkerd's
        ConfiguredDtabNamer: the interpreter's dtab first, then the router's)."""
        configured = self.config.dtab

        def on_dtab(dtab: Dtab) -> None:
            self.base_dtab = dtab + configured
            self.bindings.base = self.base_dtab
            handle = self.handle
            if handle is not None:  # route decisions remember the binding of the old dtab
                handle.runtime.routes.clear()

        self._unfollow = self.dtab_source.dtab.observe(on_dtab)
        on_dtab(self.dtab_source.dtab.value)

    async def start(self) -> None:
        """Background parts of this router (a watched dtab) before its servers listen."""
        if self.dtab_source is not None:
            await self.dtab_source.start()

    def identify(self, head: RequestHead) -> Identified:  # replaced per instance in __init__
        raise NotImplementedError

    async def bind(self, dtab: Dtab, path: Path) -> NameTree:
        """The bound tree for `path` under `dtab` (cached; waits while Pending).

        Raises router.binding.BindingTimeout or BindingFailed.
        """
        tree = self.bindings.get(dtab, path)
        if tree is not None:
            return tree
        return await self.bindings.bind(dtab, path)

    def client_config(self, client_id: Path) -> ClientConfig:
        """Client params for a bound id (static entries merged, later wins), cached."""
        cfg = self._client_configs.get(client_id)
        if cfg is None:
            cfg = self.config.client.resolve(client_id)
            self._client_configs.put(client_id, cfg, 2 * approx_size(client_id) + 512)
        return cfg

    def service_config(self, name: Path) -> ServiceConfig:
        cfg = self._service_configs.get(name)
        if cfg is None:  # names come from requests: bounded by bytes
            cfg = self.config.service.resolve(name)
            self._service_configs.put(name, cfg, 2 * approx_size(name) + 512)
        return cfg

    async def delegate(self, dtab: Dtab, path: Path) -> dict[str, Any]:
        """The `/delegator.json` tree, evaluated with `dtab` exactly as given."""
        return await self.interpreter.delegate(dtab, path)

    @property
    def clients(self) -> Any:
        """The data path's client cache (for /client_state.json), once started."""
        return getattr(self.handle, "clients", None)

    async def start_identifiers(self) -> None:
        """Identifiers with a watch (io.l5d.ingress) start before the servers listen."""
        for ident in with_lifecycle(self.identify):
            await ident.start()

    async def close_identifiers(self) -> None:
        for ident in with_lifecycle(self.identify):
            try:
                await ident.close()
            except Exception:
                log.exception("closing an identifier of router %s failed", self.label)

    def close(self) -> None:
        """Stop the binding cache, then the interpreter's transformers (their watches, timers)
        and the watched dtab."""
        self.bindings.close()
        close_transformers(self.interpreter.transformers)
        if self.dtab_source is not None:
            self._unfollow()
            self.dtab_source.close()



async def serve_router(router: Router) -> None:
    """Start `router`'s identifiers, then its servers (`router.handle`): the Linker's and
    each data-path worker's start. OSError names the router and its ports."""
    await router.start_identifiers()  # io.l5d.ingress: its watch
    try:
        if router.config.protocol == "h2":
            from router.h2 import start_h2_router

            router.handle = await start_h2_router(router)
        else:
            from router.http import start_http_router

            router.handle = await start_http_router(router)
    except OSError as e:
        raise OSError(e.errno, f"router {router.label} cannot listen on {_ports(router)}: "
                      f"{e.strerror or e}") from e


def _ports(router: Router) -> str:
    return ", ".join(f"{s.ip}:{s.port}" for s in router.config.servers)


async def close_routers(routers: Sequence[Router], grace_s: float) -> None:
    """Drain every router's servers for up to `grace_s` (all at once), then close each
    router's bindings, transformers and identifiers: the Linker's and each data-path
    worker's (router/workers) shutdown."""
    handles = [r.handle for r in routers if r.handle is not None]
    results = await asyncio.gather(*(h.close(grace_s) for h in handles),
                                   return_exceptions=True)
    for res in results:
        if isinstance(res, BaseException):
            log.error("closing router servers failed: %r", res)
    for r in routers:
        r.handle = None
        r.close()
        await r.close_identifiers()

class Linker(ShutdownOnce):
    """The process: metrics, namers, routers, admin. Build (validates), then `start()`;
    `shutdown`/`close`/`wait` are router.lifecycle's."""

    _log = log

    def __init__(self, config: LinkerConfig, *, validating: bool = False) -> None:
        """`validating` (l5d --validate): a check that only fails on this machine (an fs
        rootDir that is not here, no POD_IP for localnode) is a warning, not an error;
        starting stays strict."""
        token = _VALIDATING.set(validating)
        try:
            self._build(config)
        finally:
            _VALIDATING.reset(token)

    def _build(self, config: LinkerConfig) -> None:
        self.config = config
        self.config_json: dict[str, Any] = config.to_json()
        self.metrics = Metrics()
        self.builtins = BuiltinNamers()
        self.namers: list[tuple[Path, Namer]] = [
            (ncfg.prefix, build_configured_namer(ncfg)) for ncfg in config.namers]
        self.routers: list[Router] = [
            Router(rcfg, self.namers, self.builtins, self.metrics) for rcfg in config.routers
        ]
        from router.telemetry import Telemetry

        self.telemetry = Telemetry(config, self.metrics)
        for r in self.routers:
            r.telemetry = self.telemetry.for_router(r.config)
        for rcfg in config.routers:
            if rcfg.interpreter.kind not in LOCAL_NAMER_INTERPRETERS:
                continue  # namerd binds this router's names, not the local namers
            warn_unreachable_namers(rcfg, [p for p, _ in self.namers], self.builtins.names())
        self.admin: Any = None
        self.reloader: Any = None  # router.reload.Reloader when the config can be reloaded
        self.history: Any = None  # router.admin.history.History (the dashboard's, per process)
        # run first when the process stops (a reloader's watch and what it is retiring)
        self.stop_hooks: list[Callable[[], Awaitable[None]]] = []
        self._started: list[Any] = []
        self._init_shutdown()

    # -- lifecycle
    async def start(self, *, admin: bool = True, serve: bool = True) -> None:
        """Start namers, every router's servers (unless `serve` is False: a supervisor's
        workers serve them, router/workers), then the admin server.

        On failure (a port in use) everything already started is stopped and
        the error re-raised: a bad start never leaves half a process serving.
        """
        try:
            await self.telemetry.start()
            for _prefix, namer in self.namers:
                start = getattr(namer, "start", None)
                if start is not None:
                    await start()
            for router in self.routers:
                await router.start()  # a watched dtab: the supervisor binds with it too
            for router in self.routers if serve else ():
                await serve_router(router)
                self._started.append(router.handle)
                log.info("router %s serving on %s", router.label, _ports(router))
            if admin:
                from router.admin.server import start_admin

                self.admin = await start_admin(self)
        except BaseException:
            await self._stop_once(0)
            raise

    async def _stop(self, grace_ms: int) -> None:
        """Stop hooks, the routers (drained for `grace_ms`), remote interpreters, the
        admin, namers and telemetry (ShutdownOnce runs it once)."""
        for hook in self.stop_hooks:
            try:
                await hook()
            except Exception:
                log.exception("a stop hook failed")
        await close_routers(self.routers, grace_ms / 1000.0)
        for r in self.routers:
            aclose = getattr(r.interpreter, "aclose", None)  # remote interpreters' streams
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    log.exception("closing the interpreter of router %s failed", r.label)
        await self._close_admin()
        await close_namers(self.namers)
        self.builtins.close()
        await self.telemetry.aclose()

    # -- introspection for the admin
    def bound_names(self) -> list[str]:
        """Bound ids the enumerating namers (io.l5d.fs, io.l5d.k8s) know, sorted."""
        return bound_names(self.namers)

    def router(self, label: str) -> Router:
        for r in self.routers:
            if r.label == label:
                return r
        raise KeyError(label)

