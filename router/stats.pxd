# Cython declarations for stats.py (setup.py; router/_native.py). stats.py stays plain
# Python, the tested reference.
cimport cython
from router.metrics cimport Counter, Histogram, bucket_index

cdef class RequestStats:
    cdef public object scope, _causes
    cdef public dict _status
    cdef public Counter requests, success, failures
    cdef public Histogram latency
    cdef public bint with_status
    cdef public double last_used

cdef class ServerStats(RequestStats):
    cdef public Counter connects, sent_bytes, received_bytes
    cdef public Py_ssize_t open_connections

cdef class ServiceStats(RequestStats):
    pass

cdef class ClientStats(RequestStats):
    cdef public object connect_latency, services, connects

@cython.locals(s=RequestStats, i=Py_ssize_t, h=Histogram, code=Counter, klass=Counter)
cpdef record_all(tuple group, status, double latency_ms, double now, bint ok)
