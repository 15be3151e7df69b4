# Cython declarations for request.py (setup.py; router/_native.py): the request head as a
# native class, so the compiled proxy and identifiers read its fields directly.
# request.py stays plain Python, the tested reference.

cimport cython

cdef extern from *:
    """
    /* head_bytes in C: one allocation, one copy per part. Py_None (no exception) when a
       header is not a 2-tuple of exact bytes or a tail part is not exact bytes, so that
       the caller joins instead (and so reports a wrong type); NULL only when the
       allocation fails. */
    static PyObject *l5d_head_parts(const char **pre, const Py_ssize_t *prelen, int npre,
                                    PyObject *headers, PyObject *tail) {
        Py_ssize_t n = 0, i, m, nh, nt;
        PyObject *it, *k, *v, *out;
        char *p;
        int j;
        if (!PyList_CheckExact(headers) || !PyList_CheckExact(tail)) Py_RETURN_NONE;
        for (j = 0; j < npre; j++) n += prelen[j];
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
        for (j = 0; j < npre; j++) {
            memcpy(p, pre[j], prelen[j]);
            p += prelen[j];
        }
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
    static PyObject *l5d_c_head_bytes(PyObject *first, PyObject *headers, PyObject *tail) {
        const char *pre[1];
        Py_ssize_t prelen[1];
        if (!PyBytes_CheckExact(first)) Py_RETURN_NONE;
        pre[0] = PyBytes_AS_STRING(first);
        prelen[0] = PyBytes_GET_SIZE(first);
        return l5d_head_parts(pre, prelen, 1, headers, tail);
    }
    /* The request line `<method> <target> HTTP/1.1\\r\\n` from two str, encoded as
       latin-1 by copying: Py_None unless both are exact str of one-byte (latin-1) kind. */
    static PyObject *l5d_c_request_head_bytes(PyObject *method, PyObject *target,
                                              PyObject *headers, PyObject *tail) {
        const char *pre[4];
        Py_ssize_t prelen[4];
        if (!PyUnicode_CheckExact(method) || !PyUnicode_CheckExact(target)
                || PyUnicode_KIND(method) != PyUnicode_1BYTE_KIND
                || PyUnicode_KIND(target) != PyUnicode_1BYTE_KIND) Py_RETURN_NONE;
        pre[0] = (const char *)PyUnicode_1BYTE_DATA(method);
        prelen[0] = PyUnicode_GET_LENGTH(method);
        pre[1] = " ";
        prelen[1] = 1;
        pre[2] = (const char *)PyUnicode_1BYTE_DATA(target);
        prelen[2] = PyUnicode_GET_LENGTH(target);
        pre[3] = " HTTP/1.1\\r\\n";
        prelen[3] = 11;
        return l5d_head_parts(pre, prelen, 4, headers, tail);
    }
    """
    object _c_head_bytes "l5d_c_head_bytes" (object first, object headers, object tail)
    object _c_request_head_bytes "l5d_c_request_head_bytes" (object method, object target,
                                                              object headers, object tail)

cdef extern from *:
    """
    /* NameCodes in C: `keys` a list of NAME_CODES_SLOTS (a power of two) names or None,
       `codes` a bytearray beside it; linear probing over at most 8 slots. */
    static uint64_t l5d_names_hash(const char *s, Py_ssize_t n, uint64_t seed) {
        uint64_t h = seed ^ 0xcbf29ce484222325ULL ^ (uint64_t)n;
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            h ^= (unsigned char)s[i];
            h *= 0x100000001b3ULL;
        }
        return h ^ (h >> 29);
    }
    /* The slot holding `name`, or -(1 + the first free slot), or -(1 + size) if neither. */
    static Py_ssize_t l5d_names_find(PyObject *keys, PyObject *name, uint64_t seed) {
        Py_ssize_t n = PyBytes_GET_SIZE(name), mask = PyList_GET_SIZE(keys) - 1, p, i;
        const char *s = PyBytes_AS_STRING(name);
        uint64_t h = l5d_names_hash(s, n, seed);
        PyObject *k;
        for (p = 0; p < 8; p++) {
            i = (Py_ssize_t)((h + (uint64_t)p) & (uint64_t)mask);
            k = PyList_GET_ITEM(keys, i);
            if (k == Py_None) return -(1 + i);
            if (PyBytes_GET_SIZE(k) == n && memcmp(PyBytes_AS_STRING(k), s, (size_t)n) == 0)
                return i;
        }
        return -(1 + PyList_GET_SIZE(keys));
    }
    static int l5d_names_get(PyObject *keys, PyObject *codes, PyObject *name, uint64_t seed) {
        Py_ssize_t i;
        if (!PyBytes_CheckExact(name) || PyBytes_GET_SIZE(name) > 64) return -1;
        i = l5d_names_find(keys, name, seed);
        return i < 0 ? -1 : (int)(unsigned char)PyByteArray_AS_STRING(codes)[i];
    }
    /* 1 when `name` took a new slot, else 0 (known: its code updated; or no room). */
    static int l5d_names_put(PyObject *keys, PyObject *codes, PyObject *name, int code,
                             uint64_t seed) {
        Py_ssize_t i;
        PyObject *old;
        if (!PyBytes_CheckExact(name) || PyBytes_GET_SIZE(name) > 64) return 0;
        i = l5d_names_find(keys, name, seed);
        if (i >= 0) {
            PyByteArray_AS_STRING(codes)[i] = (char)code;
            return 0;
        }
        i = -(i + 1);
        if (i >= PyList_GET_SIZE(keys)) return 0;
        old = PyList_GET_ITEM(keys, i);
        Py_INCREF(name);
        PyList_SET_ITEM(keys, i, name);
        Py_DECREF(old);
        PyByteArray_AS_STRING(codes)[i] = (char)code;
        return 1;
    }
    """
    int _c_names_get "l5d_names_get" (list keys, bytearray codes, object name,
                                      unsigned long long seed)
    int _c_names_put "l5d_names_put" (list keys, bytearray codes, object name, int code,
                                      unsigned long long seed)

cpdef bytes head_bytes(object first, object headers, object tail)
cpdef bytes request_head_bytes(object method, object target, object headers, object tail)

@cython.locals(table=dict, hit=list)
cpdef object cache_get(object cache, object key)

cdef class NameCodes:
    cdef public Py_ssize_t limit
    cdef dict _dict
    cdef list _keys
    cdef bytearray _codes
    cdef Py_ssize_t _used
    cdef unsigned long long _seed
    cpdef int get(self, object name) except -2
    cpdef put(self, object name, int code)

cdef class RequestHead:
    cdef public object method, target, version, headers, peer

cdef class HeadInfo:
    cdef public object length, conn_tokens, ctx_dtabs, user_dtabs, deadlines
    cdef public Py_ssize_t hops, body_mode
    cdef public bint expect, bad_target
