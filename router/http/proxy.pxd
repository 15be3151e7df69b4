# Cython declarations for proxy.py (setup.py; router/_native.py): native classes with
# C-level attributes and direct calls inside the module. proxy.py stays plain Python,
# the tested reference.

cimport cython
from router.client.pool cimport Endpoint, UpstreamConnection
from router.client.balancer cimport Balancer
from router.policy.retries cimport ServicePolicy
from router.policy.budget cimport RetryBudget
from router.stats cimport record_all
from router.request cimport HeadInfo, RequestHead, cache_get, head_bytes, request_head_bytes
from router.http.server cimport HttpServer, RouterRuntime, ServerConnection

cdef class Exchange:
    cdef public ServerConnection conn
    cdef public HttpServer server
    cdef public object version, content_length, body_chunks
    cdef public RequestHead head
    cdef public UpstreamConnection upstream
    cdef public Endpoint endpoint
    cdef public Balancer balancer
    cdef public ServicePolicy policy
    cdef public object client, svc_stats, client_stats
    cdef public object client_svc_stats, task, pending_head, plan, total_timer
    cdef public HeadInfo info
    cdef public object attempt_timer, replay, delays, trace
    cdef public bint keep_alive, request_done, head_sent, chunked_down, close_after
    cdef public bint discard_body, finished, expect_continue, upstream_paused, requeued, ok
    cdef public Py_ssize_t body_mode, body_buffered, body_seen, status, retries, requeues
    cdef public double start
    cpdef feed_body(self, chunk)
    cpdef attach(self, UpstreamConnection conn, Endpoint ep, _Plan plan)
    cpdef on_response_body(self, chunk)
    cpdef _record(self, Py_ssize_t status, double latency, double now)

cdef class _Route:
    cdef public object tree, binding, bound, client, client_svc, suffix, service
    cdef public object addr, client_stats
    cdef public Balancer balancer
    cdef public RetryBudget requeue_budget

cdef class _Plan:
    cdef public object fwd, name, service, base, local, full, tree, bound, reason, client
    cdef public object head_bytes, route_key, suffix, deadline
    cdef public Endpoint ep
    cdef public _Route route

cdef unsigned long long _reqid_counter
cdef bytes _REQID_LINE
cdef tuple _HEX2
@cython.locals(n="unsigned long long", hex2=tuple)
cpdef _add_reqid(list parts)
cdef dict _STATUS_LINES
@cython.locals(hit=tuple)
cpdef bytes _status_line(status, bytes reason)
cpdef bint _verdict(bytes value) except -1

@cython.locals(ep=Endpoint, conn=UpstreamConnection, plan=_Plan, route=_Route, rt=RouterRuntime)
cpdef dispatch(Exchange ex)
@cython.locals(pol=ServicePolicy, route=_Route, plan=_Plan, info=HeadInfo, srv=HttpServer,
               rt=RouterRuntime, head=RequestHead)
cpdef _Plan _prepare(Exchange ex)
@cython.locals(route=_Route, bal=Balancer)
cpdef bint _choose(Exchange ex, _Plan plan) except -1
