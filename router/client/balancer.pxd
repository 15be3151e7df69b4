# Cython declarations for balancer.py (setup.py; router/_native.py): the base balancer and
# the default p2c as native classes (the other kinds stay Python subclasses of them).
# balancer.py stays plain Python, the tested reference.
from router.client.pool cimport Endpoint

cdef class Balancer:
    cdef public object max_effort, rng, endpoints, all, _cum, _by_addr, _addresses
    cdef public object on_new_endpoint, _addr, _unsubscribe, state
    cpdef pick(self)
    cpdef started(self, Endpoint ep)
    cpdef finished(self, Endpoint ep, double latency_ms)

cdef class P2CLeastLoaded(Balancer):
    cpdef pick(self)
