# Cython declarations for metrics.py (setup.py; router/_native.py): the two metric kinds
# every request bumps, as native classes, so router/stats.py's bumps are C-level.
# metrics.py stays plain Python, the tested reference.

cdef class Counter:
    cdef public Py_ssize_t value

cdef class Histogram:
    cdef public object counts, total_count, last, last_counts
    cdef public Py_ssize_t count
    cdef public double sum, min, max, total_sum
    cpdef add_at(self, Py_ssize_t bucket, double value)

cpdef Py_ssize_t bucket_index(double value) except -1
