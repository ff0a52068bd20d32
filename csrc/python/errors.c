/* Maps core error codes to the exception hierarchy rooted at mx8.Error. */
#include "binding.h"

static PyObject *new_error(PyObject *module, const char *name, PyObject *bases, const char *doc) {
    PyObject *t = PyErr_NewExceptionWithDoc(name, doc, bases, NULL);
    if (t && PyModule_AddObjectRef(module, strrchr(name, '.') + 1, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

int mx8_errors_init(PyObject *module, mx8_state *st) {
    st->Error = new_error(module, "mx8.Error", NULL, "Base class of every error mx8 raises.");
    if (!st->Error)
        return -1;
    PyObject *b;
    b = PyTuple_Pack(2, st->Error, PyExc_ValueError);
    st->ManifestError = b ? new_error(module, "mx8.ManifestError", b,
                                      "A manifest or labels file is malformed (names the line).") : NULL;
    Py_XDECREF(b);
    b = PyTuple_Pack(2, st->Error, PyExc_OSError);
    st->ReadError = b ? new_error(module, "mx8.ReadError", b,
                                  "A location (shard, file, object) cannot be opened or read.") : NULL;
    Py_XDECREF(b);
    if (!st->ManifestError || !st->ReadError)
        return -1;
    st->RangeError = new_error(module, "mx8.RangeError", st->ReadError,
                               "A manifest byte range runs past the end of its object.");
    b = PyTuple_Pack(2, st->Error, PyExc_ValueError);
    st->DecodeError = b ? new_error(module, "mx8.DecodeError", b,
                                    "Bytes are not a decodable JPEG/PNG image (corrupt or truncated).") : NULL;
    Py_XDECREF(b);
    if (!st->RangeError || !st->DecodeError)
        return -1;
    st->ImageTooLargeError = new_error(module, "mx8.ImageTooLargeError", st->DecodeError,
                                       "An image is above the pixel limit (decompression bomb guard).");
    return st->ImageTooLargeError ? 0 : -1;
}

static PyObject *type_for(mx8_state *st, int code) {
    switch (code) {
    case MX8_ERR_NOMEM: return PyExc_MemoryError;
    case MX8_ERR_IO: return st->ReadError;
    case MX8_ERR_RANGE: return st->RangeError;
    case MX8_ERR_FORMAT: return st->ManifestError;
    case MX8_ERR_DECODE: return st->DecodeError;
    case MX8_ERR_TOO_LARGE: return st->ImageTooLargeError;
    case MX8_ERR_ARG: return PyExc_ValueError;
    default: return st->Error;
    }
}

PyObject *mx8_raise(mx8_state *st, const mx8_error *err) {
    PyObject *type = type_for(st, err->code);
    if (err->code == MX8_ERR_IO && err->sys_errno) {
        /* OSError(errno, message) sets .errno so callers can test for ENOENT. */
        PyObject *args = Py_BuildValue("(is)", err->sys_errno, err->msg);
        if (args) {
            PyErr_SetObject(type, args);
            Py_DECREF(args);
        }
        return NULL;
    }
    PyErr_SetString(type, err->msg);
    return NULL;
}

/* The location as a message shows it: a manifest may hold a location of any length, and a
 * log line should not be 64 MB. The exception's location attribute keeps it whole. */
#define SHOWN_LOCATION_MAX 400
static PyObject *shown_location(const char *location) {
    PyObject *loc = PyUnicode_DecodeFSDefault(location);
    if (!loc || PyUnicode_GET_LENGTH(loc) <= SHOWN_LOCATION_MAX)
        return loc;
    Py_ssize_t n = PyUnicode_GET_LENGTH(loc), keep = SHOWN_LOCATION_MAX / 2;
    PyObject *head = PyUnicode_Substring(loc, 0, keep), *tail = PyUnicode_Substring(loc, n - keep, n);
    PyObject *out = head && tail ? PyUnicode_FromFormat("%U...[%zd characters]...%U", head, n, tail) : NULL;
    Py_XDECREF(head);
    Py_XDECREF(tail);
    Py_DECREF(loc);
    return out;
}

PyObject *mx8_raise_sample(mx8_state *st, const mx8_sample_error *se, const char *location) {
    const char *what = se->code == MX8_ERR_DECODE || se->code == MX8_ERR_TOO_LARGE ? "decoding" : "reading";
    PyObject *shown = shown_location(location);
    if (!shown)
        return NULL;
    PyObject *msg;
    if (se->length == MX8_LENGTH_WHOLE)
        msg = PyUnicode_FromFormat("error %s sample %lld (%U): %s", what, (long long)se->sample_id,
                                   shown, se->msg);
    else
        msg = PyUnicode_FromFormat("error %s sample %lld (%U @ %llu+%llu): %s", what,
                                   (long long)se->sample_id, shown,
                                   (unsigned long long)se->offset, (unsigned long long)se->length, se->msg);
    Py_DECREF(shown);
    if (!msg)
        return NULL;
    PyObject *type = type_for(st, se->code);
    PyObject *exc = PyObject_CallOneArg(type, msg);
    Py_DECREF(msg);
    if (!exc)
        return NULL;
    /* Attributes for programmatic handling; failures here only lose the extras. */
    PyObject *v;
    if ((v = PyLong_FromLongLong(se->sample_id))) { PyObject_SetAttrString(exc, "sample_id", v); Py_DECREF(v); }
    if ((v = PyUnicode_DecodeFSDefault(location))) { PyObject_SetAttrString(exc, "location", v); Py_DECREF(v); }
    if (se->length != MX8_LENGTH_WHOLE) {
        if ((v = PyLong_FromUnsignedLongLong(se->offset))) { PyObject_SetAttrString(exc, "offset", v); Py_DECREF(v); }
        if ((v = PyLong_FromUnsignedLongLong(se->length))) { PyObject_SetAttrString(exc, "length", v); Py_DECREF(v); }
    }
    PyErr_Clear();
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
    return NULL;
}
