# Cython declarations for retries.py (setup.py; router/_native.py). retries.py stays plain
# Python, the tested reference.
cimport cython
from router.metrics cimport Counter, Histogram
from router.policy.budget cimport RetryBudget

cdef class ServicePolicy:
    cdef public object name, classifier, total_timeout_s, timeout_message, backoff
    cdef public object constant_delay_s, buffer_limit, fails_5xx, retry_methods
    cdef public Counter retries_total, budget_exhausted, too_long
    cdef public Histogram per_request
    cdef public RetryBudget budget
    cdef public bint active
    cpdef begin(self, now=*)
    @cython.locals(h=Histogram)
    cpdef completed(self, retries)
