# Cython declarations for pool.py (setup.py; router/_native.py): native classes with
# C-level attributes. pool.py itself stays plain Python, the tested reference.

cimport cython
from router.request cimport NameCodes

# The header codes, as C integers: on_header's comparisons are C comparisons, and its
# cache lookup a C call (read from Python with name_codes()).
cdef NameCodes _NAME_CODES
cdef Py_ssize_t _R_LENGTH, _R_CHUNKED, _R_CONNECTION, _R_DROP, _R_PLAIN, _R_L5D, _R_L5D_ERR
cdef Py_ssize_t _R_SUCCESS_CLASS, _R_RETRYABLE

cpdef Py_ssize_t _response_code(bytes name) except -1

cdef class UpstreamConnection:
    cdef public object endpoint, transport, parser, sink, _headers, _length, _tokens
    cdef public object _success_class
    cdef public bint closed, _no_body, _until_close, _in_body, _head_done, _connected
    cdef public bint reused, _received, _chunked, _l5d, _l5d_err, _version_seen, _retryable
    cdef public Py_ssize_t _head_bytes, reads, fd
    cdef public double born, idle_since
    cpdef _reset_head(self)
    cpdef _fail(self, err)
    cpdef start(self, sink, bytes head, bint no_body)
    cpdef write(self, data)
    cpdef data_received(self, bytes data)
    @cython.locals(code=Py_ssize_t)
    cpdef on_header(self, bytes name, bytes value)

cdef class Endpoint:
    cdef public object address, host, port, hostport, idle, on_connect, idle_s, life_s
    cdef public object _sweeper, tls, accrual
    cdef public double weight, cost, stamp, connect_timeout_s
    cdef public Py_ssize_t pending, open_connections
    cdef public bint down, removed, dead, probe_open
    cpdef release(self, UpstreamConnection conn, bint reusable)
