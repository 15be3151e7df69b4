"""The communications-policy modules on their own: classifiers, budgets, backoffs,
failure accrual, deadlines (the data-path tests drive them through real routers)."""

from __future__ import annotations

import random

import pytest

from dtab.addr import AddrBound, Address
from dtab.errors import ParamError
from dtab.observable import Var
from router.client.balancer import build_balancer
from router.metrics import Metrics
from router.policy import accrual, backoff, budget, classifiers, deadline
from router.policy.classifiers import FAILURE, RETRYABLE, SUCCESS
from router.policy.retries import total_timeout_message


def test_classifiers_follow_linkerds_method_sets() -> None:
    nr = classifiers.build("io.l5d.http.nonRetryable5XX")
    read = classifiers.build("io.l5d.http.retryableRead5XX")
    idem = classifiers.build("io.l5d.http.retryableIdempotent5XX")
    every = classifiers.build("io.l5d.http.retryableAll5XX")
    ok = classifiers.build("io.l5d.http.allSuccessful")
    assert nr.classify("GET", 500) == FAILURE and nr.classify("GET", 404) == SUCCESS
    assert read.classify("GET", 503) == RETRYABLE and read.classify("POST", 503) == FAILURE
    assert read.classify("PUT", 500) == FAILURE and idem.classify("PUT", 500) == RETRYABLE
    assert idem.classify("POST", 500) == FAILURE and every.classify("POST", 500) == RETRYABLE
    assert every.classify("PATCH", 502) == RETRYABLE and every.classify("GET", 200) == SUCCESS
    assert ok.classify("GET", 500) == SUCCESS
    # l5d-retryable: true from the next hop makes any 5XX retryable, even a POST
    assert nr.classify("POST", 502, retryable_header=True) == RETRYABLE
    # exceptions: only the retryable kinds (reset, timeout, refused) of retryable methods
    assert read.classify_error("GET", True) == RETRYABLE
    assert read.classify_error("GET", False) == FAILURE
    assert read.classify_error("POST", True) == FAILURE
    assert nr.classify_error("GET", True) == FAILURE
    assert classifiers.build("io.l5d.retryableRead5XX") is read  # Linkerd 0.9 name
    with pytest.raises(ParamError):
        classifiers.build("io.l5d.http.retryable4XX")
    assert classifiers.success_class(b"1.0") and not classifiers.success_class(b"0.0")
    assert not classifiers.success_class(b"junk")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_budget_lets_percent_can_retry_through_and_no_more() -> None:
    clock = Clock()
    b = budget.RetryBudget(ttl_s=10, min_retries_per_sec=0, percent_can_retry=0.2, clock=clock)
    granted = 0
    for _ in range(1000):
        b.deposit()
        if b.try_withdraw():
            granted += 1
        clock.t += 0.001
    assert granted == 200  # exactly 20% when every request wants a retry
    # deposits expire after ttlSecs: after 11 s idle nothing is left
    clock.t += 11
    assert b.balance == 0 and not b.try_withdraw()


def test_budget_deposits_leave_with_their_slice() -> None:
    """A slice's deposits leave the window together, ttlSecs after they came, with what
    was withdrawn from them."""
    clock = Clock()
    b = budget.RetryBudget(ttl_s=10, min_retries_per_sec=0, percent_can_retry=0.5, clock=clock)
    for _ in range(100):
        b.deposit(clock.t)
    assert b.balance == 50
    clock.t += 5
    for _ in range(40):
        b.deposit(clock.t)
    assert b.balance == 70
    assert sum(b.try_withdraw() for _ in range(10)) == 10
    assert b.balance == 60
    clock.t += 5.5  # the first slice has left: its 50 go, the second's 20 - 10 stay
    assert b.balance == 10
    clock.t += 5
    assert b.balance == 0 and not b.try_withdraw()


def test_budget_reserve_is_min_retries_per_sec_times_ttl() -> None:
    clock = Clock()
    b = budget.RetryBudget(ttl_s=2, min_retries_per_sec=5, percent_can_retry=0.1, clock=clock)
    assert b.balance == 10
    assert sum(b.try_withdraw() for _ in range(50)) == 10
    assert budget.RetryBudget(10, 0, 0.0, clock=clock).try_withdraw() is False


def test_backoffs() -> None:
    it = backoff.constant(7).delays()
    assert [next(it) for _ in range(3)] == [7, 7, 7]
    jit = backoff.Backoff("jittered", 10, 100, rng=random.Random(1)).delays()
    ds = [next(jit) for _ in range(50)]
    assert ds[0] == 10 and all(10 <= d <= 100 for d in ds) and max(ds) > 30
    eq = backoff.Backoff("equalJittered", 5000, 300000, rng=random.Random(2)).delays()
    ds = [next(eq) for _ in range(12)]
    assert ds[0] == 5000 and 5000 <= ds[1] <= 10000 and all(d <= 300000 for d in ds)
    assert ds[-1] >= 150000  # doubled up to the cap


class FakeTimers:
    def __init__(self) -> None:
        self.pending: list[tuple[float, object]] = []

    def __call__(self, delay_s: float, fn):  # noqa: ANN001, ANN204
        self.pending.append((delay_s, fn))

        class H:
            def cancel(self_inner) -> None:  # noqa: N805
                pass
        return H()

    def fire(self) -> float:
        delay, fn = self.pending.pop(0)
        fn()  # type: ignore[operator]
        return delay


class FakeEp:
    def __init__(self, name: str) -> None:
        self.hostport = name
        self.dead = False
        self.probe_open = False
        self.removed = False
        self.accrual = None


class FakeBalancer:
    def __init__(self) -> None:
        self.refreshes = 0

    def refresh(self) -> None:
        self.refreshes += 1


def _accrual(spec: accrual.AccrualSpec) -> tuple[accrual.FailureAccrual, FakeTimers, Metrics]:
    m = Metrics()
    timers = FakeTimers()
    return accrual.FailureAccrual(spec, FakeBalancer(), m.scope("c"), "c", timers), timers, m


def test_consecutive_failures_remove_then_probe_back() -> None:
    """Finagle's FailureAccrualFactory states: Alive -> Dead -> ProbeOpen -> (one request)
    ProbeClosed -> Alive on success, Dead (next backoff, no new removal) on failure."""
    spec = accrual.build("io.l5d.consecutiveFailures", {"failures": 3},
                         backoff.constant(50))
    fa, timers, m = _accrual(spec)
    ep = FakeEp("a")
    fa.attach(ep)
    st = ep.accrual

    def stat(name: str) -> int:
        return m.get(("c", "failure_accrual", name)).value

    st.failure()
    st.failure()
    st.success()  # resets the count
    st.failure()
    st.failure()
    assert not ep.dead and st.state == accrual.ALIVE
    st.failure()
    assert ep.dead and st.state == accrual.DEAD and stat("removals") == 1
    assert stat("removed_for_ms") == 50
    assert timers.fire() == 0.05  # the backoff elapses: ProbeOpen, back in the balancer
    assert not ep.dead and ep.probe_open and st.state == accrual.PROBE_OPEN
    assert stat("probes") == 0
    fa.probe_taken(st)  # the balancer dispatched one request to it: no more until it ends
    assert ep.dead and not ep.probe_open and st.state == accrual.PROBE_CLOSED
    assert stat("probes") == 1
    st.failure()  # the probe failed: dead again for the next backoff, not a new removal
    assert ep.dead and st.state == accrual.DEAD
    assert stat("removals") == 1 and stat("removed_for_ms") == 100
    timers.fire()
    fa.probe_taken(st)
    st.success()  # the probe succeeded: alive, count and backoff reset
    assert not ep.dead and st.state == accrual.ALIVE
    assert stat("revivals") == 1 and stat("probes") == 2
    assert not st.needs_success  # steady state: successes cost the exchange one test
    st.failure()
    assert not ep.dead and st.needs_success
    for _ in range(2):
        st.failure()
    assert ep.dead and stat("removals") == 2
    st.failure()  # used while out (every endpoint is): no new removal
    st.success()  # ... and a success there does not revive it either: the timer decides
    assert ep.dead and stat("removals") == 2 and stat("revivals") == 1
    timers.fire()
    assert st.state == accrual.PROBE_OPEN
    st.failure()  # a connect failure on the probe counts as the probe; but the success
    # while dead had reset the count (Finagle's recordSuccess), so it is inconclusive
    assert st.state == accrual.PROBE_OPEN and stat("probes") == 3
    fa.probe_taken(st)
    st.success()
    assert st.state == accrual.ALIVE and stat("revivals") == 2 and stat("probes") == 4


def test_inconclusive_probe_opens_again() -> None:
    """successRateWindowed whose window emptied while dead: a failed probe does not reach
    the threshold, so Finagle probes again instead of marking dead."""
    clock = Clock()
    spec = accrual.AccrualSpec("io.l5d.successRateWindowed",
                               lambda: accrual.SuccessRateWindowed(0.5, 10, clock),
                               backoff.constant(1000))
    fa, timers, m = _accrual(spec)
    ep = FakeEp("a")
    fa.attach(ep)
    st = ep.accrual
    for _ in range(5):
        st.failure()
    assert st.state == accrual.DEAD
    clock.t += 60  # the window is empty by the time the backoff ends
    timers.fire()
    fa.probe_taken(st)
    st.failure()
    assert st.state == accrual.PROBE_OPEN and not ep.dead


def test_probe_open_endpoint_gets_exactly_one_request() -> None:
    """Through a real balancer: while the probe is out, every other pick goes elsewhere."""
    addr = Var(AddrBound(frozenset({Address("127.0.0.1", 1), Address("127.0.0.1", 2)})))
    bal = build_balancer("p2c", addr)
    m = Metrics()
    timers = FakeTimers()
    fa = accrual.FailureAccrual(
        accrual.build("io.l5d.consecutiveFailures", {"failures": 1},
                      backoff.constant(10)), bal, m.scope("c"), "c", timers)
    for e in bal.all:
        fa.attach(e)
    sick = bal.all[0]
    sick.accrual.failure()
    assert bal.endpoints == [bal.all[1]]
    timers.fire()
    assert sick in bal.endpoints
    picked = []
    for _ in range(200):
        ep = bal.pick()
        bal.started(ep)
        picked.append(ep)
    assert picked.count(sick) == 1  # the probe; then it is out until the probe ends
    assert bal.endpoints == [bal.all[1]]
    sick.accrual.success()
    assert sick in bal.endpoints and bal.available == 2


def test_success_rate_policies() -> None:
    sr = accrual.SuccessRate(0.8, 10)
    assert not any(sr.failure() for _ in range(9))  # never before `requests` were seen
    assert sr.failure()
    clock = Clock()
    win = accrual.SuccessRateWindowed(0.5, 10, clock)
    for _ in range(3):
        win.success()
    assert not win.failure() and not win.failure()  # 3/5 >= 0.5
    assert not win.failure()  # 3/6 is not below 0.5
    assert win.failure()  # 3/7 is
    clock.t += 20  # the window moved on: old outcomes are gone
    assert not win.failure()  # only 1 request in the window


def test_accrual_kinds_validate_params() -> None:
    assert accrual.DEFAULT.backoff.kind == "equalJittered"
    assert accrual.DEFAULT.backoff.min_ms == 5000 and accrual.DEFAULT.backoff.max_ms == 300000
    assert accrual.build("none", {}).make is None
    for kind, params, key in (
        ("io.l5d.consecutiveFailures", {"failures": 0}, "failures"),
        ("io.l5d.successRate", {"successRate": 0.9}, "requests"),
        ("io.l5d.successRate", {"successRate": 2, "requests": 5}, "successRate"),
        ("io.l5d.successRateWindowed", {"successRate": 0.9, "window": "x"}, "window"),
        ("io.l5d.consecutiveFailures", {"failure": 3}, "failure"),
        ("io.l5d.bogus", {}, "kind"),
    ):
        with pytest.raises(ParamError) as info:
            accrual.build(kind, params)
        assert info.value.key == key, (kind, params)


def test_deadline_strictest_wins_and_local_timeout_tightens() -> None:
    assert deadline.parse((b"100 900", b"200 800", b"junk")) == (200, 800)
    assert deadline.parse((b"1 2 3",)) is None
    now = 10**18
    assert deadline.combine(None, 0.5, now) == (now, now + 500_000_000)
    incoming = (now - 1, now + 100_000_000)
    assert deadline.combine(incoming, 0.5, now) == (now, now + 100_000_000)
    assert deadline.combine((now - 1, now + 900_000_000), 0.5, now) == (now, now + 500_000_000)
    assert deadline.combine(None, None, now) is None
    assert deadline.header_line((1, 2)) == b"l5d-ctx-deadline: 1 2\r\n"
    assert deadline.remaining_s((0, now + 250_000_000), now) == 0.25


def test_total_timeout_message_is_finagles() -> None:
    assert total_timeout_message(600) == (
        "exceeded 600.milliseconds to unspecified while waiting for a response for the "
        "request, including retries (if applicable). Remote Info: Not Available")


def test_a_removed_endpoint_is_freed_without_the_cycle_collector() -> None:
    """Endpoint.accrual <-> EndpointAccrual.ep was a reference cycle: under k8s churn every
    removed endpoint waited for a full collection (100+ ms for 10,000 of them)."""
    import gc

    from router.client.pool import Endpoint

    fa, _, _ = _accrual(accrual.build("io.l5d.consecutiveFailures", {}, backoff.constant(50)))
    eps = [Endpoint(Address("127.0.0.1", 1000 + i)) for i in range(3)]
    for ep in eps:
        fa.attach(ep)
    assert all(ep.accrual is not None for ep in eps)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for ep in eps:
            ep.close()
        del ep, eps
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage
                  if type(o).__name__ in ("Endpoint", "EndpointAccrual")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []
