# Cython declarations for request.py (setup.py; router/_native.py): the request head as a
# native class, so the compiled proxy and identifiers read its fields directly.
# request.py stays plain Python, the tested reference.

cimport cython

cdef extern from *:
    """
    /* head_bytes in C: one allocation, one copy per part. Py_None (no exception) when a
       header is not a 2-tuple of exact bytes or a tail part is not exact bytes, so that
       the caller joins instead (and so reports a wrong type); NULL only when the allocation fails. */
    static PyObject *l5d_c_head_bytes(PyObject *first, PyObject *headers, PyObject *tail) {
        Py_ssize_t n, i, m, nh, nt;
        PyObject *it, *k, *v, *out;
        char *p;
        if (!PyBytes_CheckExact(first) || !PyList_CheckExact(headers)
                || !PyList_CheckExact(tail)) Py_RETURN_NONE;
        n = PyBytes_GET_SIZE(first);
        nh = PyList_GET_SIZE(headers);
        nt = PyList_GET_SIZE(tail);
        for (i = 0; i < nh; i++) {
            it = PyList_GET_ITEM(headers, i);
            if (!PyTuple_CheckExact(it) || PyTuple_GET_SIZE(it) != 2) Py_RETURN_NONE;
            k = PyTuple_GET_ITEM(it, 0);
            v = PyTuple_GET_ITEM(it, 1);
            if (!PyBytes_CheckExact(k) || !PyBytes_CheckExact(v)) Py_RETURN_NONE;
            n += PyBytes_GET_SIZE(k) + PyBytes_GET_SIZE(v) + 4;
        }
        for (i = 0; i < nt; i++) {
            it = PyList_GET_ITEM(tail, i);
            if (!PyBytes_CheckExact(it)) Py_RETURN_NONE;
            n += PyBytes_GET_SIZE(it);
        }
        out = PyBytes_FromStringAndSize(NULL, n);
        if (out == NULL) return NULL;
        p = PyBytes_AS_STRING(out);
        m = PyBytes_GET_SIZE(first);
        memcpy(p, PyBytes_AS_STRING(first), m);
        p += m;
        for (i = 0; i < nh; i++) {
            it = PyList_GET_ITEM(headers, i);
            k = PyTuple_GET_ITEM(it, 0);
            v = PyTuple_GET_ITEM(it, 1);
            m = PyBytes_GET_SIZE(k);
            memcpy(p, PyBytes_AS_STRING(k), m);
            p += m;
            *p++ = ':';
            *p++ = ' ';
            m = PyBytes_GET_SIZE(v);
            memcpy(p, PyBytes_AS_STRING(v), m);
            p += m;
            *p++ = '\\r';
            *p++ = '\\n';
        }
        for (i = 0; i < nt; i++) {
            it = PyList_GET_ITEM(tail, i);
            m = PyBytes_GET_SIZE(it);
            memcpy(p, PyBytes_AS_STRING(it), m);
            p += m;
        }
        return out;
    }
    """
    object _c_head_bytes "l5d_c_head_bytes" (object first, object headers, object tail)

cpdef bytes head_bytes(object first, object headers, object tail)

@cython.locals(table=dict, hit=list)
cpdef object cache_get(object cache, object key)

cdef class RequestHead:
    cdef public object method, target, version, headers, peer

cdef class HeadInfo:
    cdef public object length, conn_tokens, ctx_dtabs, user_dtabs, deadlines
    cdef public Py_ssize_t hops, body_mode
    cdef public bint expect, bad_target
