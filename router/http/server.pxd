# Cython declarations for server.py (setup.py; router/_native.py): the downstream
# connection as a native class. server.py stays plain Python, the tested reference.

from router.http.proxy cimport Exchange
from router.stats cimport ServerStats

cdef class _HeadInfo:
    cdef public object length, conn_tokens, ctx_dtabs, user_dtabs, deadlines
    cdef public Py_ssize_t hops, body_mode
    cdef public bint expect, bad_target

cdef class ServerConnection:
    cdef public ServerStats stats
    cdef public object server, transport, parser, peer, queue
    cdef public Exchange current, parsing
    cdef public object _url, _headers, _info, _timer, _w_head, _w_idle
    cdef public bint _closed, draining, writing_paused, _broken, _lingering
    cdef public Py_ssize_t _head_bytes, _paused, _hosts, reads, _heads, _w_mark, _w_heads
    cdef public Py_ssize_t _idle_reads
    cdef public double _w_since, _born, _w_tick
    cpdef write(self, data)
    cpdef writelines(self, parts, Py_ssize_t n)
    cpdef pause_reading(self, Py_ssize_t reason)
    cpdef resume_reading(self, Py_ssize_t reason)
    cpdef _serve(self, Exchange ex)
    cpdef exchange_done(self, Exchange ex, reusable)
