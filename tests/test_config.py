"""The config loader: Linkerd names and defaults; errors say file, line, key, expected."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from dtab.dtab import Dtab
from dtab.path import Path
from router.config import ConfigError, NoRoutersSpecified, load, parse
from router.router import Linker


def cfg(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def err(text: str, name: str = "l5d.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(cfg(text), name)
    return info.value


MINIMAL = """
routers:
- protocol: http
  servers:
  - port: 4140
"""


def test_defaults_follow_the_reference() -> None:
    c = parse(cfg(MINIMAL))
    (r,) = c.routers
    assert r.label == "http"
    assert r.dst_prefix == Path.read("/svc")
    assert r.dtab == Dtab.empty()
    assert [i.kind for i in r.identifiers] == ["io.l5d.header.token"]
    assert r.interpreter.kind == "default"
    assert r.binding_timeout_ms == 10000
    assert r.binding_cache_idle_ttl_secs == 600
    (s,) = r.servers
    assert (s.ip, s.port, s.clear_context, s.max_call_depth) == ("127.0.0.1", 4140, False, 1000)
    assert (c.admin.ip, c.admin.port, c.admin.shutdown_grace_ms) == ("127.0.0.1", 9990, 10000)
    client = r.client.resolve(Path.read("/#/io.l5d.fs/x"))
    assert client.load_balancer.kind == "p2c" and client.load_balancer.max_effort == 5
    assert client.requeue_budget.percent_can_retry == 0.2
    svc = r.service.resolve(Path.read("/svc/x"))
    assert svc.total_timeout_ms is None
    assert svc.response_classifier == "io.l5d.http.nonRetryable5XX"
    assert svc.retries.budget.min_retries_per_sec == 10


def test_full_router_and_to_json_round_trip() -> None:
    text = cfg("""
    admin: {port: 9991, ip: 0.0.0.0}
    routers:
    - protocol: http
      label: outgoing
      dstPrefix: /http
      dtab: |
        /svc => /#/io.l5d.fs;
        /svc/world => /svc/world-v2;
      identifier:
      - kind: io.l5d.path
        segments: 2
        consume: true
      - kind: io.l5d.header.token
        header: X-Name
      bindingTimeoutMs: 500
      bindingCache: {idleTtlSecs: 5}
      servers:
      - {port: 4140, ip: 0.0.0.0, clearContext: true, maxCallDepth: 7}
      client:
        loadBalancer: {kind: ewma, decayTimeMs: 2000, maxEffort: 3}
      service:
        totalTimeoutMs: 500
        retries:
          budget: {minRetriesPerSec: 5, percentCanRetry: 0.5, ttlSecs: 15}
          backoff: {kind: jittered, minMs: 10, maxMs: 100}
        responseClassifier: {kind: io.l5d.http.retryableRead5XX}
    telemetry:
    - kind: io.l5d.prometheus
      prefix: l5d_
    """)
    c = parse(text)
    (r,) = c.routers
    assert r.label == "outgoing" and r.dst_prefix == Path.read("/http")
    assert r.dtab == Dtab.read("/svc=>/#/io.l5d.fs;/svc/world=>/svc/world-v2")
    assert [(i.kind, dict(i.params)) for i in r.identifiers] == [
        ("io.l5d.path", {"segments": 2, "consume": True}),
        ("io.l5d.header.token", {"header": "X-Name"}),
    ]
    assert (r.binding_timeout_ms, r.binding_cache_idle_ttl_secs) == (500, 5)
    s = r.servers[0]
    assert (s.ip, s.clear_context, s.max_call_depth) == ("0.0.0.0", True, 7)
    lb = r.client.resolve(Path.read("/$/inet/a/1")).load_balancer
    assert (lb.kind, lb.decay_time_ms, lb.max_effort) == ("ewma", 2000, 3)
    svc = r.service.resolve(Path.read("/svc/a"))
    assert svc.total_timeout_ms == 500
    assert svc.retries.budget.percent_can_retry == 0.5
    assert (svc.retries.backoff.kind, svc.retries.backoff.min_ms) == ("jittered", 10)
    assert svc.response_classifier == "io.l5d.http.retryableRead5XX"
    assert dict(c.telemetry[0].params) == {"path": "/admin/metrics/prometheus", "prefix": "l5d_"}
    assert c.to_json()["routers"][0]["label"] == "outgoing"
    json.dumps(c.to_json())  # plain data, serialisable
    # the same config as JSON loads to the same thing
    as_json = json.dumps(c.to_json())
    assert parse(as_json, "l5d.json").routers == c.routers


def test_static_client_and_service_configs_later_entries_win_with_captures() -> None:
    c = parse(cfg("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      client:
        kind: io.l5d.static
        configs:
        - prefix: /
          loadBalancer: {kind: roundRobin}
        - prefix: /#/io.l5d.fs/{service}
          tls: {commonName: "{service}.linkerd.io"}
          requestAttemptTimeoutMs: 100
        - prefix: /#/io.l5d.fs/world
          requestAttemptTimeoutMs: 250
        - prefix: /$/inet/*/8080
          loadBalancer: {kind: ewma}
      service:
        kind: io.l5d.static
        configs:
        - prefix: /svc
          totalTimeoutMs: 1000
        - prefix: /svc/slow
          totalTimeoutMs: 5000
    """))
    r = c.routers[0]
    world = r.client.resolve(Path.read("/#/io.l5d.fs/world"))
    assert world.request_attempt_timeout_ms == 250
    assert world.tls.common_name == "world.linkerd.io"
    assert world.load_balancer.kind == "roundRobin"
    hello = r.client.resolve(Path.read("/#/io.l5d.fs/hello/residual"))
    assert hello.request_attempt_timeout_ms == 100
    assert hello.tls.common_name == "hello.linkerd.io"
    assert r.client.resolve(Path.read("/$/inet/h/8080")).load_balancer.kind == "ewma"
    assert r.client.resolve(Path.read("/$/inet/h/9090")).load_balancer.kind == "roundRobin"
    assert r.service.resolve(Path.read("/svc/fast")).total_timeout_ms == 1000
    assert r.service.resolve(Path.read("/svc/slow/x")).total_timeout_ms == 5000
    assert r.service.resolve(Path.read("/other")).total_timeout_ms is None


def test_omitted_port_is_the_protocols_default_and_a_bad_one_names_file_line_and_key() -> None:
    """Linkerd's ServerConfig: a server without `port` listens on the protocol's
    default (http: 4140; linkerd/docs/protocol-http.md)."""
    c = parse(cfg("""
    routers:
    - protocol: http
      servers:
      - ip: 0.0.0.0
    """))
    assert c.routers[0].servers[0].port == 4140
    e = err("""
    routers:
    - protocol: http
      servers:
      - port: 0
    """)
    assert (e.file, e.line, e.key) == ("l5d.yaml", 4, "routers[0].servers[0].port")
    assert "port number" in (e.expected or "")


def test_experimental_is_accepted_where_linkerd_accepts_it() -> None:
    """`experimental: true` on routers, interpreters, telemeters and namers (Linkerd's
    opt-in for experimental plugins, linkerd/docs/config.md) loads."""
    c = parse(cfg("""
    namers:
    - kind: io.l5d.k8s
      experimental: true
    telemetry:
    - kind: io.l5d.prometheus
      experimental: true
    routers:
    - protocol: http
      experimental: true
      interpreter: {kind: default, experimental: true}
      servers: [{port: 4140}]
    """))
    assert c.namers[0].experimental and c.routers[0].servers[0].port == 4140


@pytest.mark.parametrize(("section", "kind", "alt"), [
    ("namer", "io.l5d.consul", "io.l5d.k8s"),
    ("namer", "io.l5d.marathon", "io.l5d.k8s"),
    ("namer", "io.l5d.serversets", "io.l5d.fs"),
    ("namer", "io.l5d.curator", "io.l5d.fs"),
    ("namer", "io.l5d.dnssrv", "/$/inet"),
    ("identifier", "io.l5d.k8s.istio", "io.l5d.header.token"),
    ("protocol", "mux", None),
    ("protocol", "thrift", None),
])
def test_linkerd_kinds_not_implemented_are_refused_as_such(section, kind, alt) -> None:
    """A Linkerd kind l5d-py lacks reads "not supported by l5d-py", never "unknown kind"."""
    text = {
        "namer": f"namers:\n- kind: {kind}\nrouters:\n- protocol: http\n  servers: [{{}}]\n",
        "identifier": f"routers:\n- protocol: http\n  identifier: {{kind: {kind}}}\n"
                      "  servers: [{}]\n",
        "protocol": f"routers:\n- protocol: {kind}\n  servers: [{{}}]\n",
    }[section]
    with pytest.raises(ConfigError) as info:
        parse(text, "l5d.yaml")
    msg = str(info.value)
    assert f"{kind} is a Linkerd {section} that is not supported by l5d-py" in msg, msg
    assert "unknown kind" not in msg
    if alt:
        assert "nearest supported: " in msg and alt in msg


def test_missing_fs_root_dir_warns_under_validate_and_stops_start(tmp_path) -> None:
    """A check of the machine (rootDir is not here) is a warning for --validate, an error
    when the router starts."""
    conf = tmp_path / "l5d.yaml"
    conf.write_text(cfg(f"""
    namers:
    - kind: io.l5d.fs
      rootDir: {tmp_path}/not-here
    routers:
    - protocol: http
      servers: [{{port: 4140}}]
    """))
    out = _l5d("--validate", str(conf))
    assert out.returncode == 0, out.stderr
    assert f"{conf}:3: namers[0].rootDir" in out.stderr and "not a directory" in out.stderr
    assert "an error when the router starts" in out.stderr
    with pytest.raises(ConfigError) as info:
        Linker(load(str(conf)))
    assert "not a directory" in str(info.value)


def test_unknown_kind_lists_known_kinds() -> None:
    e = err("""
    routers:
    - protocol: http
      identifier:
        kind: io.l5d.hostname
      servers: [{port: 4140}]
    """)
    assert (e.line, e.key) == (4, "routers[0].identifier.kind")
    assert "unknown kind 'io.l5d.hostname'" in str(e)
    for known in ("io.l5d.header.token", "io.l5d.methodAndHost", "io.l5d.path",
                  "io.l5d.header", "io.l5d.static"):
        assert known in (e.expected or "")
    e = err("""
    namers:
    - kind: io.l5d.consul
    routers:
    - protocol: http
      servers: [{port: 4140}]
    """)
    assert (e.line, e.key) == (2, "namers[0].kind") and "io.l5d.fs" in (e.expected or "")
    assert "not supported by l5d-py" in str(e)


def test_invalid_block_dtab_points_at_the_file_line_and_column() -> None:
    e = err("""
    routers:
    - protocol: http
      dtab: |
        /svc => /#/io.l5d.fs;
        /svc/world => => /svc/world-v2;
      servers: [{port: 4140}]
    """)
    assert (e.line, e.key) == (5, "routers[0].dtab")
    # "    /svc/world => =>": the second '=>' starts at column 19 of the file line
    assert "column 19" in str(e)
    assert "expected a path" in str(e)
    assert "in '/svc/world => [=]> /svc/world-v2;'" in str(e)  # just the offending line


def test_invalid_inline_dtab_column_is_in_file_coordinates() -> None:
    e = err("""
    routers:
    - protocol: http
      dtab: "/svc => /#/io.l5d.fs; /a =>"
      servers: [{port: 4140}]
    """)
    assert e.line == 3
    assert "column 37" in str(e)  # end of the quoted value on that line


def test_wrong_types_unknown_keys_and_bad_paths() -> None:
    e = err("""
    routers:
    - protocol: http
      servers: [{port: "4140x"}]
    """)
    assert e.key == "routers[0].servers[0].port" and "string '4140x'" in str(e)
    e = err("""
    routers:
    - protocol: http
      servers:
      - port: 4140
        clearContex: true
    """)
    assert (e.line, e.key) == (5, "routers[0].servers[0].clearContex")
    assert "unknown key" in str(e) and "clearContext" in (e.expected or "")
    e = err("""
    routers:
    - protocol: http
      dstPrefix: svc
      servers: [{port: 4140}]
    """)
    assert e.key == "routers[0].dstPrefix" and "invalid path" in str(e)
    e = err("""
    routers:
    - protocol: http
      servers: [{port: 4140, clearContext: "yes please"}]
    """)
    assert e.key == "routers[0].servers[0].clearContext" and e.expected == "true or false"
    e = err("""
    routers:
    - protocol: thrift
      servers: [{port: 4140}]
    """)
    assert e.key == "routers[0].protocol" and "http" in (e.expected or "")
    e = err("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      client:
        loadBalancer: {kind: aperture, lowLoad: 3, highLoad: 1}
    """)
    assert e.key == "routers[0].client.loadBalancer.highLoad" and "lowLoad" in str(e)
    e = err("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      client:
        loadBalancer: {kind: hep}
    """)
    assert e.key == "routers[0].client.loadBalancer.kind" and "aperture" in (e.expected or "")


def test_no_routers_and_duplicates() -> None:
    for text in ("routers: []\n", "admin: {port: 9990}\n", ""):
        with pytest.raises(NoRoutersSpecified):
            parse(text, "x.yaml")
    e = err("""
    routers:
    - protocol: http
      label: a
      servers: [{port: 4140}]
    - protocol: http
      label: a
      servers: [{port: 4141}]
    """)
    assert (e.line, e.key) == (6, "routers[1].label") and "already used" in str(e)
    e = err("""
    routers:
    - protocol: http
      label: a
      servers: [{port: 4140}]
    - protocol: http
      label: b
      servers: [{port: 4140}]
    """)
    assert e.key == "routers[1].servers[0].port" and "127.0.0.1:4140" in str(e)
    e = err("""
    admin: {port: 4140}
    routers:
    - protocol: http
      servers: [{port: 4140}]
    """)
    assert "admin" in str(e)


def test_yaml_syntax_error_has_a_line() -> None:
    e = err("routers:\n- protocol: http\n  servers: [{port: 1}\n")
    assert e.line is not None and "not valid YAML" in str(e)
    e = err("routers:\n- protocol: http\n  protocol: http\n  servers: [{port: 1}]\n")
    assert e.line == 3 and "duplicate key" in str(e)


def test_namer_param_errors_are_reported_at_their_line(tmp_path) -> None:
    c = parse(cfg(f"""
    namers:
    - kind: io.l5d.fs
      rootDir: {tmp_path}/missing
    routers:
    - protocol: http
      servers: [{{port: 4140}}]
    """), "n.yaml")
    with pytest.raises(ConfigError) as info:
        Linker(c)
    e = info.value
    assert (e.file, e.line, e.key) == ("n.yaml", 3, "namers[0].rootDir")
    assert "not a directory" in str(e)


def test_identifier_and_transformer_param_errors_at_their_line() -> None:
    c = parse(cfg("""
    routers:
    - protocol: http
      identifier:
      - kind: io.l5d.header.token
      - kind: io.l5d.path
        segments: 0
      servers: [{port: 4140}]
    """), "i.yaml")
    with pytest.raises(ConfigError) as info:
        Linker(c)
    assert (info.value.line, info.value.key) == (6, "routers[0].identifier[1].segments")
    c = parse(cfg("""
    routers:
    - protocol: http
      interpreter:
        kind: default
        transformers:
        - kind: io.l5d.port
      servers: [{port: 4140}]
    """), "t.yaml")
    with pytest.raises(ConfigError) as info:
        Linker(c)
    assert info.value.key.startswith("routers[0].interpreter.transformers[0]")
    c = parse(cfg("""
    routers:
    - protocol: http
      interpreter:
        transformers:
        - kind: io.l5d.nope
      servers: [{port: 4140}]
    """), "t.yaml")
    with pytest.raises(ConfigError) as info:
        Linker(c)
    assert info.value.key == "routers[0].interpreter.transformers[0].kind"
    assert "io.l5d.port" in str(info.value)


def test_load_reports_unreadable_file(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "nope.yaml"))
    assert "cannot read config" in str(info.value)


def _l5d(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_cli_validate_ok_error_and_stdin(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(cfg(MINIMAL))
    out = _l5d("--validate", str(good))
    assert out.returncode == 0 and out.stdout.startswith("OK")
    bad = tmp_path / "bad.yaml"
    bad.write_text("routers:\n- protocol: http\n  servers:\n  - port: 0\n")
    out = _l5d("--validate", str(bad))
    assert out.returncode == 2
    assert f"{bad}:4: routers[0].servers[0].port" in out.stderr, out.stderr
    out = _l5d("--validate", "-", stdin=json.dumps(
        {"routers": [{"protocol": "http", "servers": [{"port": 4140}]}]}))
    assert out.returncode == 0, out.stderr
    out = _l5d("--validate", "-", stdin="routers: []\n")
    assert out.returncode == 2 and "NoRoutersSpecified" in out.stderr


def test_a_wildcard_ip_collides_with_any_ip_on_the_same_port() -> None:
    e = err("""
    routers:
    - protocol: http
      label: a
      servers:
      - port: 4140
        ip: 0.0.0.0
    - protocol: http
      label: b
      servers:
      - ip: 127.0.0.1
        port: 4140
    """)
    # the line of the colliding `port`, and both addresses named
    assert (e.line, e.key) == (11, "routers[1].servers[0].port")
    assert "127.0.0.1:4140 is already used by routers[0].servers[0] (0.0.0.0:4140)" in str(e)
    e = err("""
    admin: {ip: 0.0.0.0, port: 9990}
    routers:
    - protocol: http
      servers: [{port: 9990}]
    """)
    assert e.line == 4 and "admin (0.0.0.0:9990)" in str(e)
    # different ports, or two different specific IPs, are fine
    parse(cfg("""
    routers:
    - protocol: http
      label: a
      servers: [{port: 4140, ip: 127.0.0.1}, {port: 4140, ip: 127.0.0.2}]
    """))


def test_yaml_errors_give_the_column_where_the_construct_began_and_a_tab_hint() -> None:
    e = err("routers:\n- protocol: http\n  dtab: \"/svc => /b\n  servers:\n  - port: 1\n")
    assert e.line == 6 and "quoted scalar" in str(e)
    assert "(the construct began at line 3)" in str(e)
    e = err("routers:\n- protocol: http\n  servers:\n\t- port: 1\n")
    assert e.line == 4 and "at column 1" in str(e) and "spaces, not tabs" in str(e)


def test_invalid_folded_dtab_points_at_the_file_line_and_column() -> None:
    text = ("routers:\n- protocol: http\n  dtab: /svc => /#/io.l5d.fs;\n"
            "    /host => /svc &;\n  servers: [{port: 1}]\n")
    e = err(text)
    # a plain scalar folds its lines; the error is on the second one, at the ';'
    assert e.line == 4 and "column 20" in str(e), str(e)
    assert text.splitlines()[3][19] == ";"
    text = ('routers:\n- protocol: http\n  dtab: "/svc => /#/io.l5d.fs;\n'
            '     /host => /svc &;"\n  servers: [{port: 1}]\n')
    e = err(text)
    assert e.line == 4 and "column 21" in str(e), str(e)
    assert text.splitlines()[3][20] == ";"


def test_only_keys_not_acted_on_are_warned_about(caplog) -> None:
    caplog.set_level("WARNING", logger="router.config")
    parse(cfg("""
    routers:
    - protocol: http
      servers: [{port: 4140, maxConcurrentRequests: 10}]
      streamAfterContentLengthKB: 8
      client:
        requestAttemptTimeoutMs: 100
        loadBalancer: {kind: ewma, maxEffort: 3, decayTimeMs: 500}
        failureAccrual: {kind: io.l5d.successRate, successRate: 0.9, requests: 20}
        requeueBudget: {percentCanRetry: 0.5}
      service:
        totalTimeoutMs: 1000
        retries: {budget: {percentCanRetry: 0.5}, backoff: {kind: constant, ms: 5}}
        responseClassifier: {kind: io.l5d.http.retryableRead5XX}
    """), "acted.yaml")
    assert caplog.records == []  # the whole communications policy is enforced: no warning
    parse(cfg("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      maxHeadersKB: 16
      client:
        kind: io.l5d.static
        configs:
        - prefix: /#/io.l5d.fs/{svc}
          failFast: true
    """), "kept.yaml")
    warned = [r.getMessage() for r in caplog.records]
    for where in ("kept.yaml:4: routers[0].maxHeadersKB",
                  "kept.yaml:9: routers[0].client.configs[0].failFast"):
        assert any(m.startswith(where) and "not acted on" in m for m in warned), (where, warned)
    assert len(warned) == 2


def test_policy_kinds_validate_their_own_params() -> None:
    e = err("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      client:
        failureAccrual:
          kind: io.l5d.successRate
          successRate: 1.5
          requests: 20
    """)
    assert (e.line, e.key) == (7, "routers[0].client.failureAccrual.successRate")
    assert "out of range" in str(e)
    e = err("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      client:
        failureAccrual: {kind: io.l5d.successRateWindowed, successRate: 0.9}
    """)
    assert e.key == "routers[0].client.failureAccrual" and "window" in str(e)
    e = err("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      client:
        kind: io.l5d.static
        configs:
        - prefix: /svc
          failureAccrual: {kind: io.l5d.consecutiveFailures, failures: 0}
    """)
    assert e.key.endswith("failureAccrual.failures") and e.line == 8
    e = err("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      service:
        responseClassifier: {kind: io.l5d.http.retryableRead5XX, codes: [500]}
    """)
    assert e.key == "routers[0].service.responseClassifier.codes" and "no params" in str(e)
    config = parse(cfg("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      service: {responseClassifier: {kind: io.l5d.retryableIdempotent5XX}}
    """))
    svc = config.routers[0].service.resolve(Path.read("/svc/x"))
    assert svc.response_classifier == "io.l5d.http.retryableIdempotent5XX" and not svc.retries_set


def test_static_params_resolved_per_request_do_not_warn_again(caplog) -> None:
    config = parse(cfg("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      client:
        kind: io.l5d.static
        configs:
        - prefix: /#/io.l5d.fs/{svc}
          failFast: true
    """))
    caplog.clear()
    caplog.set_level("WARNING", logger="router.config")
    for name in ("a", "b", "c"):
        assert config.routers[0].client.resolve(Path.of("#", "io.l5d.fs", name)).fail_fast
    assert caplog.records == []


MANIFEST = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: l5d}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: l5d-config
data:
  other.yaml: |
    not: an l5d config
  config.yaml: |-
    admin:
      port: 9990
    routers:
    - protocol: http
      dtab: |
        /svc => /#/io.l5d.fs ;
      servers:
      - port: 4140
"""


def test_a_kubernetes_manifest_is_validated_through_its_configmap(tmp_path) -> None:
    from router.config import load_all

    good = tmp_path / "l5d.yml"
    good.write_text(MANIFEST)
    [(label, config)] = load_all(str(good))
    assert label == "ConfigMap l5d-config config.yaml"
    assert config.routers[0].servers[0].port == 4140
    assert load(str(good)) == config  # `l5d l5d.yml` runs it
    out = _l5d("--validate", str(good))
    assert out.returncode == 0 and out.stdout == f"OK: {good} (ConfigMap l5d-config config.yaml)\n"
    # errors carry the manifest's own line and column
    bad = tmp_path / "bad.yml"
    bad.write_text(MANIFEST.replace("/#/io.l5d.fs ;", "/#/io.l5d.fs &;"))
    out = _l5d("--validate", str(bad))
    assert out.returncode == 2
    assert f"{bad}:18: ConfigMap l5d-config config.yaml: routers[0].dtab: invalid dtab " \
           "at column 31" in out.stderr, out.stderr
    assert bad.read_text().splitlines()[17][30] == ";"
    missing = tmp_path / "missing.yml"
    missing.write_text(MANIFEST.replace("- port: 4140", "- port: 0"))
    out = _l5d("--validate", str(missing))
    assert out.returncode == 2 and f"{missing}:20: ConfigMap l5d-config config.yaml: " \
        "routers[0].servers[0].port" in out.stderr, out.stderr
    # a manifest without an l5d config says so instead of a YAML error
    other = tmp_path / "rbac.yml"
    other.write_text(MANIFEST.split("---")[0] + "---\n" + MANIFEST.split("---")[0])
    out = _l5d("--validate", str(other))
    assert out.returncode == 2 and "no ConfigMap holding an l5d config" in out.stderr


def test_listen_ips_must_parse_or_resolve_and_ranges_say_the_bound() -> None:
    e = err("""
    routers:
    - protocol: http
      servers:
      - port: 4140
        ip: not-an-ip.invalid
    """)
    assert (e.line, e.key) == (5, "routers[0].servers[0].ip") and "does not resolve" in str(e)
    e = err("admin: {ip: 999.1.1.1}\n" + cfg(MINIMAL))
    assert (e.line, e.key) == (1, "admin.ip")
    config = parse(cfg(MINIMAL.replace("- port: 4140", "- {port: 4140, ip: localhost}")))
    assert config.routers[0].servers[0].ip == "localhost"
    e = err("""
    routers:
    - protocol: http
      servers: [{port: 4140}]
      service: {totalTimeoutMs: 0}
    """)
    assert "0 is out of range (expected an integer >= 1)" in str(e)


def test_yaml_merge_keys_let_a_router_override_what_it_merges() -> None:
    config = parse(cfg("""
    routers:
    - &outgoing
      protocol: http
      label: outgoing
      dtab: /svc => /#/io.l5d.fs
      servers: [{port: 4140}]
    - <<: *outgoing
      label: incoming
      servers: [{port: 4141}]
    """))
    a, b = config.routers
    assert (b.label, b.servers[0].port, b.dtab) == ("incoming", 4141, a.dtab)
    e = err("""
    routers:
    - &r
      protocol: http
      servers: [{port: 4140}]
    - <<: *r
      label: b
      label: c
    """)
    assert e.line == 7 and "duplicate key 'label'" in str(e)


def test_quoted_numbers_and_booleans_read_as_linkerd_reads_them() -> None:
    # Templated YAML often quotes scalars; Linkerd's Jackson coerces them, so do we.
    config = parse(cfg("""
    admin: {port: "9991"}
    routers:
    - protocol: http
      servers: [{port: "4140", clearContext: "true"}]
      service: {totalTimeoutMs: "250"}
    """))
    server = config.routers[0].servers[0]
    assert (config.admin.port, server.port, server.clear_context) == (9991, 4140, True)
    assert config.routers[0].service.default.total_timeout_ms == 250
    e = err("""
    routers:
    - protocol: http
      servers: [{port: "41 40"}]
    """)
    assert "string '41 40'" in str(e)


def test_stray_document_markers_are_fine_and_two_configs_are_not() -> None:
    config = parse("---\n" + cfg(MINIMAL) + "---\n")
    assert config.routers[0].servers[0].port == 4140
    e = err(MINIMAL + "---\n" + MINIMAL)
    assert e.line == 7 and "2 YAML documents" in str(e)


def test_server_and_client_session_keys_defaults_and_errors() -> None:
    from router.session import DEFAULT_CLIENT_SESSION, DEFAULT_SERVER_SESSION

    (r,) = parse(cfg(MINIMAL)).routers
    assert r.servers[0].session is DEFAULT_SERVER_SESSION  # Linkerd: idle/life forever
    assert (DEFAULT_SERVER_SESSION.idle_time_ms, DEFAULT_SERVER_SESSION.life_time_ms) == (None,
                                                                                         None)
    assert (DEFAULT_SERVER_SESSION.header_read_timeout_ms,
            DEFAULT_SERVER_SESSION.body_progress_timeout_ms) == (10_000, 60_000)
    assert r.client.resolve(Path.read("/$/inet/a/1")).client_session is DEFAULT_CLIENT_SESSION
    (r,) = parse(cfg("""
    routers:
    - protocol: http
      client:
        kind: io.l5d.static
        configs:
        - prefix: /$/inet/*
          clientSession: {idleTimeMs: 5000, bodyProgressTimeoutMs: 0}
      servers:
      - port: 4140
        serverSession: {idleTimeMs: 30000, lifeTimeMs: 600000, headerReadTimeoutMs: 0}
    """)).routers
    s = r.servers[0].session
    assert (s.idle_time_ms, s.life_time_ms, s.header_read_timeout_ms,
            s.body_progress_timeout_ms) == (30000, 600000, None, 60000)
    c = r.client.resolve(Path.read("/$/inet/a/1")).client_session
    assert (c.idle_time_ms, c.body_progress_timeout_ms, c.body_s) == (5000, None, None)
    e = err("""
    routers:
    - protocol: http
      servers:
      - port: 4140
        serverSession:
          idleTimeMs: 0
    """)
    assert (e.file, e.line) == ("l5d.yaml", 6)
    assert e.key == "routers[0].servers[0].serverSession.idleTimeMs"
    e = err("""
    routers:
    - protocol: http
      servers:
      - port: 4140
        serverSession:
          headerReadTimeoutMS: 5
    """)
    assert e.line == 6 and "unknown key 'headerReadTimeoutMS'" in str(e)
