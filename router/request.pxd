# Cython declarations for request.py (setup.py; router/_native.py): the request head as a
# native class, so the compiled proxy and identifiers read its fields directly.
# request.py stays plain Python, the tested reference.

cimport cython

@cython.locals(table=dict, hit=list)
cpdef object cache_get(object cache, object key)

cdef class RequestHead:
    cdef public object method, target, version, headers, peer

cdef class HeadInfo:
    cdef public object length, conn_tokens, ctx_dtabs, user_dtabs, deadlines
    cdef public Py_ssize_t hops, body_mode
    cdef public bint expect, bad_target
