"""The Prometheus exposition: Linkerd's label lifting, escaping, summaries, parseable text."""

from __future__ import annotations

import subprocess

from prometheus_client.parser import text_string_to_metric_families

from router.admin import prometheus
from router.metrics import Metrics
from router.stats import ClientStats, ServerStats, ServiceStats


def _samples(m: Metrics, prefix: str = "") -> dict[tuple[str, tuple], float]:
    text = prometheus.render(m, prefix).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _traffic() -> Metrics:
    m = Metrics()
    rt = m.scope("rt", "outgoing")
    server = ServerStats(rt, "127.0.0.1", 4140)
    service = ServiceStats(rt, "/svc/hello")
    client = ClientStats(rt, "/#/io.l5d.fs/hello")
    for i in range(10):
        for st in (server, service, client):
            st.record(200 if i < 8 else 503, 3.0 + i)
    client.services.get("/svc/hello").record(200, 4.0)
    server.record_failure("ConnectionFailed", 1.0, 502)
    m.scope("rt", "incoming").scope("server", "127.0.0.1", "4141").counter("requests").incr(4)
    m.snapshot_histograms()
    return m


def test_labels_lifted_as_linkerd_does() -> None:
    s = _samples(_traffic())
    assert s[("rt:server:requests", (("rt", "outgoing"), ("server", "127.0.0.1/4140")))] == 11
    assert s[("rt:server:requests", (("rt", "incoming"), ("server", "127.0.0.1/4141")))] == 4
    assert s[("rt:service:success", (("rt", "outgoing"), ("service", "svc/hello")))] == 8
    assert s[("rt:client:failures", (("client", "#/io.l5d.fs/hello"), ("rt", "outgoing")))] == 2
    assert s[("rt:client:service:requests",
              (("client", "#/io.l5d.fs/hello"), ("rt", "outgoing"), ("service", "svc/hello")))] == 1
    # Linkerd's names: the exception is a label on `failures` itself.
    assert s[("rt:server:failures",
              (("exception", "ConnectionFailed"), ("rt", "outgoing"),
               ("server", "127.0.0.1/4140")))] == 1
    assert s[("rt:server:status:2XX", (("rt", "outgoing"), ("server", "127.0.0.1/4140")))] == 8


def test_failures_family_is_a_partition_so_sum_counts_each_failure_once() -> None:
    """Linkerd (PrometheusTelemeter.writeMetrics) wrote the total `rt:server:failures{rt,
    server}` and, for each `failures/<exn>`, `rt:server:failures{rt,server,exception}`, so
    `sum(rt:server:failures)` counted every failure with an exception twice. We keep those
    names and labels; the unlabelled series is the failures without an exception, so
    `sum()` is the total of metrics.json's `failures` and every name+label set is once."""
    m = _traffic()
    server = ServerStats(m.scope("rt", "outgoing"), "127.0.0.1", 4140)
    server.record_failure("Timeout", 1.0, 503)
    server.record_failure("Timeout", 1.0, 503)
    text = prometheus.render(m).decode()
    seen: set[tuple[str, tuple]] = set()
    series: dict[tuple[str, str | None], float] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            key = (smp.name, tuple(sorted(smp.labels.items())))
            assert key not in seen, key
            seen.add(key)
            if smp.labels.get("rt") == "outgoing" and "server" in smp.labels:
                series[(smp.name, smp.labels.get("exception"))] = smp.value
    # 2 responses classified as failures (503), 1 ConnectionFailed, 2 Timeouts.
    assert m.scope("rt", "outgoing", "server", "127.0.0.1", "4140").counter("failures").value == 5
    assert series[("rt:server:failures", None)] == 2
    assert series[("rt:server:failures", "ConnectionFailed")] == 1
    assert series[("rt:server:failures", "Timeout")] == 2
    assert sum(v for (n, _), v in series.items() if n == "rt:server:failures") == 5
    assert not any(n.endswith("failures_by_exception") for n, _ in series)


def test_histograms_are_summaries_with_quantiles_avg_and_cumulative_count() -> None:
    s = _samples(_traffic())
    labels = (("rt", "outgoing"), ("service", "svc/hello"))
    q = {k[1]: v for k, v in s.items() if k[0] == "rt:service:request_latency_ms"}
    quantiles = {dict(lbl)["quantile"]: v for lbl, v in q.items()}
    assert set(quantiles) == {"0", "0.5", "0.9", "0.95", "0.99", "0.999", "0.9999", "1"}
    assert quantiles["0"] == 3 and quantiles["1"] == 12
    assert s[("rt:service:request_latency_ms_count", labels)] == 10
    assert s[("rt:service:request_latency_ms_sum", labels)] == sum(3.0 + i for i in range(10))
    assert s[("rt:service:request_latency_ms_avg", labels)] == 7.5


def test_prefix_and_escaping() -> None:
    m = Metrics()
    m.scope("jvm", "mem.used-bytes").counter("x").incr()
    m.scope("9lives").counter("c").incr()
    s = _samples(m, prefix="linkerd_")
    assert s[("linkerd_jvm:mem_used_bytes:x", ())] == 1
    assert s[("linkerd_9lives:c", ())] == 1
    assert _samples(m)[("_9lives:c", ())] == 1


def test_promtool_parses_exposition_and_only_flags_linkerds_naming() -> None:
    """promtool's lint rejects ':' in names and `_ms`, which Linkerd's names require;
    anything else (parse error, missing HELP, counter suffixes, misplaced quantile) fails."""
    text = prometheus.render(_traffic())
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          timeout=30)
    err = proc.stderr.decode()
    assert "error while linting" not in err
    assert proc.returncode in (0, 3), err
    problems = {line.split(" ", 1)[1] for line in err.splitlines() if " " in line}
    assert problems <= {
        "metric names should not contain ':'",
        "metric names should not contain abbreviated units",
    }, problems
