# Cython declarations for budget.py (setup.py; router/_native.py). budget.py stays plain
# Python, the tested reference.

cdef Py_ssize_t _SCALE, _SLICES

cdef class RetryBudget:
    cdef public object min_retries_per_sec, deposit_amount, withdrawal_amount, reserve
    cdef public object _clock
    cdef public list _ring
    cdef public Py_ssize_t _slot, _sum
    cdef public double ttl_s, percent_can_retry, _slot_s, _slot_end
    cdef public bint empty
    cpdef deposit(self, now=*)
