"""protocol: h2 in the config: defaults, h2 keys, identifier and classifier kinds per
protocol (file:line errors), the gRPC classifiers' semantics, the shipped h2 mesh config."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from router.config import ConfigError, parse
from router.policy import classifiers
from router.policy.classifiers import FAILURE, RETRYABLE, SUCCESS

ROOT = Path(__file__).resolve().parent.parent


def _parse(text: str):  # noqa: ANN202
    return parse(textwrap.dedent(text), "l5d.yaml")


def test_h2_router_defaults() -> None:
    c = _parse("""
    routers:
    - protocol: h2
      servers: [{}]
    """)
    r = c.routers[0]
    assert r.protocol == "h2" and r.label == "h2"
    assert r.servers[0].port == 4142  # Linkerd's h2 default
    assert r.service.default.response_classifier == "io.l5d.h2.nonRetryable5XX"


def test_h2_access_log_keys_are_linkerds_h2_names() -> None:
    """Linkerd's H2Config: `h2AccessLog*`; the HTTP/1 names are refused on an h2 router."""
    c = _parse("""
    routers:
    - protocol: h2
      h2AccessLog: /tmp/h2.log
      h2AccessLogRollPolicy: 10.megabytes
      h2AccessLogRotateCount: 3
      servers: [{}]
    """)
    alog = c.routers[0].access_log
    assert (alog.path, alog.max_bytes, alog.rotate_count) == ("/tmp/h2.log", 10 << 20, 3)
    for keys, line in (("h2AccessLog: /tmp/h2.log\n  h2AccessLogRollPolicy: fortnightly", 4),
                       ("h2AccessLog: /tmp/h2.log\n  h2AccessLogAppend: maybe", 4),
                       ("h2AccessLogRotateCount: 2", 3),  # without the file
                       ("httpAccessLog: /tmp/x.log", 3)):
        text = "routers:\n- protocol: h2\n  " + keys + "\n  servers: [{}]\n"
        with pytest.raises(ConfigError) as e:
            parse(text, "l5d.yaml")
        assert f"l5d.yaml:{line}" in str(e.value), str(e.value)
        assert keys.splitlines()[-1].split(":")[0].strip() in str(e.value), str(e.value)


def test_h2_server_keys_and_limits_are_checked_with_their_line() -> None:
    c = _parse("""
    routers:
    - protocol: h2
      servers:
      - port: 4340
        maxConcurrentStreamsPerConnection: 50
        initialStreamWindowBytes: 131072
        h2Limits: {pingsPerSec: 10, stallTimeoutMs: 2000}
    """)
    h2 = c.routers[0].servers[0].h2
    assert h2["max_concurrent_streams"] == 50 and h2["initial_window"] == 131072
    assert h2["pings_per_s"] == 10 and h2["stall_s"] == 2.0
    with pytest.raises(ConfigError) as e:
        _parse("""
        routers:
        - protocol: h2
          servers:
          - port: 4340
            maxConcurrentStreamsPerConnection: 0
        """)
    assert "l5d.yaml:6" in str(e.value) and "maxConcurrentStreamsPerConnection" in str(e.value)
    with pytest.raises(ConfigError) as e:  # h2 keys are not http keys
        _parse("""
        routers:
        - protocol: http
          servers:
          - port: 4140
            maxConcurrentStreamsPerConnection: 5
        """)
    assert "maxConcurrentStreamsPerConnection" in str(e.value)


def test_identifier_and_classifier_kinds_follow_the_protocol() -> None:
    with pytest.raises(ConfigError) as e:
        _parse("""
        routers:
        - protocol: h2
          identifier: {kind: io.l5d.methodAndHost}
          servers: [{}]
        """)
    assert "l5d.yaml:4" in str(e.value) and "io.l5d.header.path" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _parse("""
        routers:
        - protocol: h2
          service:
            responseClassifier: {kind: io.l5d.http.retryableRead5XX}
          servers: [{}]
        """)
    assert "l5d.yaml:5" in str(e.value) and "io.l5d.h2.retryableRead5XX" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _parse("""
        routers:
        - protocol: http
          service:
            responseClassifier: {kind: io.l5d.h2.grpc.default}
          servers: [{}]
        """)
    assert "l5d.yaml:5" in str(e.value)
    with pytest.raises(ConfigError) as e:
        _parse("""
        routers:
        - protocol: h2
          service:
            responseClassifier:
              kind: io.l5d.h2.grpc.retryableStatusCodes
          servers: [{}]
        """)
    assert "retryableStatusCodes" in str(e.value) and "l5d.yaml:5" in str(e.value)
    c = _parse("""
    routers:
    - protocol: h2
      identifier: {kind: io.l5d.header.path, segments: 1}
      service:
        responseClassifier:
          kind: io.l5d.h2.grpc.retryableStatusCodes
          retryableStatusCodes: [4, 14]
          successStatusCodes: [0, 5]
      servers: [{}]
    """)
    cl = c.routers[0].service.default.response_classifier
    assert cl.final("POST", 200, 4) == RETRYABLE and cl.final("POST", 200, 5) == SUCCESS


def test_grpc_classifiers_as_linkerd_defines_them() -> None:
    d = classifiers.build("io.l5d.h2.grpc.default")
    assert d.early("POST", 200) is None  # the trailers decide
    assert d.final("POST", 200, 0) == SUCCESS
    assert d.final("POST", 200, 14) == RETRYABLE
    assert d.final("POST", 200, 2) == FAILURE
    assert d.final("POST", 200, None) == FAILURE  # no grpc-status at all
    assert d.final("POST", 503, None) == FAILURE
    c = classifiers.build("io.l5d.h2.grpc.compliant")
    assert c.final("POST", 503, None) == RETRYABLE and c.final("POST", 500, None) == FAILURE
    assert c.refused() == RETRYABLE and d.refused() == FAILURE
    a = classifiers.build("io.l5d.h2.grpc.alwaysRetryable")
    assert a.final("POST", 200, 3) == RETRYABLE
    n = classifiers.build("io.l5d.h2.grpc.neverRetryable")
    assert n.final("POST", 200, 14) == FAILURE
    h = classifiers.build("io.l5d.h2.retryableRead5XX")
    assert h.early("GET", 503) == RETRYABLE and h.early("POST", 503) == FAILURE
    assert h.early("POST", 200) == SUCCESS
    assert classifiers.build("io.l5d.h2.allSuccessful").early("GET", 500) == SUCCESS


def test_k8s_h2_manifest_ships_configs_h2_mesh() -> None:
    mesh = yaml.safe_load((ROOT / "configs" / "h2-mesh.yaml").read_text())
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s" / "l5d-h2.yml").read_text()) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert yaml.safe_load(cm["data"]["config.yaml"]) == mesh
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    ports = {p["name"]: p["containerPort"]
             for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports["grpc-outgoing"] == 4340 and ports["grpc-incoming"] == 4341
    assert [r["servers"][0]["port"] for r in mesh["routers"]] == [4340, 4341]


def test_h2_service_retry_buffer_and_classification_timeout(caplog) -> None:
    c = _parse("""
    routers:
    - protocol: h2
      service:
        retryBufferSize: {requestBytes: 100, responseBytes: 2000}
        classificationTimeoutMs: 100
      servers: [{}]
    """)
    svc = c.routers[0].service.default
    assert (svc.retry_buffer_request_bytes, svc.retry_buffer_response_bytes) == (100, 2000)
    assert svc.classification_timeout_ms == 100  # acted on: no warning
    assert not any("classificationTimeoutMs" in r.getMessage() for r in caplog.records)
    assert c.routers[0].servers[0].max_call_depth == 10  # Linkerd's h2 default
    with pytest.raises(ConfigError) as e:  # an h2 key on an http router
        _parse("""
        routers:
        - protocol: http
          service:
            retryBufferSize: {requestBytes: 100}
          servers: [{}]
        """)
    assert "retryBufferSize" in str(e.value)
