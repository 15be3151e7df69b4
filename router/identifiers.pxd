# Cython declarations for identifiers.py (setup.py; router/_native.py): the default
# identifier (io.l5d.header.token) as a native class. identifiers.py stays plain Python,
# the tested reference.

from router.request cimport cache_get

cdef class HeaderToken:
    cdef public object prefix, absent, names
    cdef public bytes key, spelled
