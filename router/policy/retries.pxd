# Cython declarations for retries.py (setup.py; router/_native.py). retries.py stays plain
# Python, the tested reference.
from router.policy.budget cimport RetryBudget

cdef class ServicePolicy:
    cdef public object name, classifier, total_timeout_s, timeout_message, backoff
    cdef public object constant_delay_s, buffer_limit, retries_total, budget_exhausted
    cdef public object per_request, too_long, fails_5xx, retry_methods
    cdef public RetryBudget budget
    cdef public bint active
    cpdef begin(self, now=*)
    cpdef completed(self, retries)
