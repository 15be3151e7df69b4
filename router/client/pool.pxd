# Cython declarations for pool.py (setup.py; router/_native.py): native classes with
# C-level attributes. pool.py itself stays plain Python, the tested reference.

cdef class UpstreamConnection:
    cdef public object endpoint, transport, parser, sink, _headers, _length, _tokens
    cdef public bint closed, _no_body, _until_close, _in_body, _head_done, _connected
    cdef public bint reused, _received, _chunked, _l5d, _l5d_err
    cdef public Py_ssize_t _head_bytes, reads, fd
    cdef public double born, idle_since
    cpdef _reset_head(self)
    cpdef _fail(self, err)
    cpdef write(self, data)

cdef class Endpoint:
    cdef public object address, host, port, hostport, idle, on_connect, idle_s, life_s
    cdef public object _sweeper, tls, accrual
    cdef public double weight, cost, stamp, connect_timeout_s
    cdef public Py_ssize_t pending, open_connections
    cdef public bint down, removed, dead, probe_open
    cpdef release(self, UpstreamConnection conn, bint reusable)
