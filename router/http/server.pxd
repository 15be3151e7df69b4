# Cython declarations for server.py (setup.py; router/_native.py): the downstream
# connection as a native class. server.py stays plain Python, the tested reference.

cimport cython
from router.http.proxy cimport Exchange
from router.stats cimport ServerStats
from router.request cimport HeadInfo, NameCodes

# The header codes, as C integers: on_header's comparisons are C comparisons, and its
# cache lookup a C call (read from Python with name_codes()).
cdef NameCodes _NAME_CODES
cdef dict _METHOD_NAMES
cdef Py_ssize_t _VIA, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _CTX_DTAB
cdef Py_ssize_t _USER_DTAB, _DROP, _PLAIN, _L5D, _HOST, _AMBIGUOUS, _CTX_DEADLINE

cpdef Py_ssize_t _request_code(bytes name) except -1

# What the proxy reads per request of its server and runtime, as C attributes (the
# runtime is swapped on reload, so it is read per request, not copied per connection).
cdef class RouterRuntime:
    cdef public object router, clients, services, identification_error, _sweeper, routes
    cdef public object _names, max_dtab_bytes, cached_bind, telemetry, retry_buffer_bytes
    cdef public object identify
    cdef public double binding_timeout_s, idle_s

cdef class HttpServer:
    cdef public RouterRuntime runtime
    cdef public ServerStats stats
    cdef public object label, ip, port, shedder, session, tick_s, timeouts, connections
    cdef public object aserver, tls
    cdef public bint clear_context
    cdef public Py_ssize_t max_call_depth

cdef class ServerConnection:
    cdef public ServerStats stats
    cdef public HttpServer server
    cdef public object transport, parser, peer, queue
    cdef public Exchange current, parsing
    cdef public bytes _url
    cdef public object _headers, _timer, _w_head, _w_idle, _chunk
    cdef public HeadInfo _info
    cdef public bint _closed, draining, writing_paused, _broken, _lingering
    cdef public bint _between, _fresh, _at_start, _clear
    cdef public Py_ssize_t _head_bytes, _paused, _hosts, reads, _heads, _w_mark, _w_heads
    cdef public Py_ssize_t _idle_reads
    cdef public double _w_since, _born, _w_tick
    cpdef write(self, data)
    @cython.locals(code=Py_ssize_t, info=HeadInfo)
    cpdef on_header(self, bytes name, bytes value)
    @cython.locals(chunk=bytes, method=bytes, url=bytes, n=Py_ssize_t, info=HeadInfo)
    cpdef on_headers_complete(self)
    cpdef writelines(self, parts, Py_ssize_t n)
    cpdef pause_reading(self, Py_ssize_t reason)
    cpdef resume_reading(self, Py_ssize_t reason)
    cpdef _serve(self, Exchange ex)
    cpdef exchange_done(self, Exchange ex, reusable)
