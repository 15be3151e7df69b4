# Cython declarations for budget.py (setup.py; router/_native.py). budget.py stays plain
# Python, the tested reference.

cdef class RetryBudget:
    cdef public object min_retries_per_sec, deposit_amount, withdrawal_amount, reserve
    cdef public object _ring, _slot, _sum, _clock
    cdef public double ttl_s, percent_can_retry, _slot_s, _slot_end
    cdef public bint empty
    cpdef deposit(self, now=*)
