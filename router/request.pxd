# Cython declarations for request.py (setup.py; router/_native.py): the request head as a
# native class, so the compiled proxy and identifiers read its fields directly.
# request.py stays plain Python, the tested reference.

cdef class RequestHead:
    cdef public object method, target, version, headers, peer
