/* mx8._core.S3Client: blocking S3 operations (HEAD, ranged GET, GET, PUT, one LIST page) on
 * a native client; the GIL is released around every network call. */
#include "binding.h"
#include "s3_client.h"
#include "s3_multipart.h"

typedef struct {
    PyObject_HEAD
    mx8_s3_client *c;
} S3ClientObject;

static PyObject *raise_for(S3ClientObject *self, const mx8_error *err) {
    return mx8_raise(mx8_state_from_type(Py_TYPE(self)), err);
}

static PyObject *S3Client_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"endpoint", "region", "access_key", "secret_key", "session_token", "virtual_host",
                             "connect_timeout_ms", "low_speed_time_s", "max_attempts", "backoff_base_ms",
                             "backoff_cap_ms", "ca_file", "credentials", "first_byte_timeout_ms", "unsigned",
                             "requester_pays", "max_connections", "io_threads", NULL};
    mx8_s3_options o;
    memset(&o, 0, sizeof o);
    PyObject *creds = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sszz|zp$llillzOlppii:S3Client", kwlist, &o.endpoint, &o.region,
                                     &o.access_key, &o.secret_key, &o.session_token, &o.virtual_host,
                                     &o.connect_timeout_ms, &o.low_speed_time_s, &o.max_attempts,
                                     &o.backoff_base_ms, &o.backoff_cap_ms, &o.ca_file, &creds,
                                     &o.first_byte_timeout_ms, &o.unsigned_requests, &o.requester_pays,
                                     &o.max_connections, &o.io_threads))
        return NULL;
    if (o.max_connections < 0 || o.max_connections > 1024 || o.io_threads < 0 || o.io_threads > 64) {
        PyErr_SetString(PyExc_ValueError, "S3Client: max_connections must be within 1..1024, io_threads 1..64");
        return NULL;
    }
    if (creds && creds != Py_None && !(o.credentials = mx8_s3_credentials_of(creds)))
        return NULL;
    S3ClientObject *self = (S3ClientObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_s3_client_new(&o, &self->c, &err)) {
        Py_DECREF(self);
        return mx8_raise(mx8_state_from_type(type), &err);
    }
    return (PyObject *)self;
}

static void S3Client_dealloc(S3ClientObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    mx8_s3_client_free(self->c);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *S3Client_head(S3ClientObject *self, PyObject *args) {
    const char *bucket, *key;
    if (!PyArg_ParseTuple(args, "ss:head", &bucket, &key))
        return NULL;
    uint64_t size = 0;
    char etag[128];
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_head(self->c, bucket, key, &size, etag, &err);
    Py_END_ALLOW_THREADS
    if (rc)
        return raise_for(self, &err);
    return Py_BuildValue("(Ks)", (unsigned long long)size, etag);
}

static PyObject *S3Client_get_range(S3ClientObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"bucket", "key", "offset", "length", "into", NULL};
    const char *bucket, *key;
    unsigned long long offset;
    Py_ssize_t length;
    PyObject *into = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ssKn|O:get_range", kwlist, &bucket, &key, &offset, &length,
                                     &into))
        return NULL;
    if (length < 0)
        return PyErr_Format(PyExc_ValueError, "get_range: negative length %zd", length);
    Py_buffer view = {0};
    PyObject *out = NULL;
    void *dst;
    if (into != Py_None) {
        if (PyObject_GetBuffer(into, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
            return NULL;
        if (view.len < length) {
            PyBuffer_Release(&view);
            return PyErr_Format(PyExc_ValueError, "get_range: 'into' holds %zd bytes, %zd needed", view.len, length);
        }
        dst = view.buf;
    } else {
        /* A new bytes object is private until returned, so C may fill it without the GIL. */
        if (!(out = PyBytes_FromStringAndSize(NULL, length)))
            return NULL;
        dst = PyBytes_AS_STRING(out);
    }
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_get_range(self->c, bucket, key, offset, (size_t)length, dst, &err);
    Py_END_ALLOW_THREADS
    if (into != Py_None) {
        PyBuffer_Release(&view);
        out = rc ? NULL : PyLong_FromSsize_t(length);
    } else if (rc) {
        Py_CLEAR(out);
    }
    return rc ? raise_for(self, &err) : out;
}

static PyObject *S3Client_get(S3ClientObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"bucket", "key", "max_bytes", NULL};
    const char *bucket, *key;
    Py_ssize_t max_bytes = PY_SSIZE_T_MAX;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ss|n:get", kwlist, &bucket, &key, &max_bytes))
        return NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_get(self->c, bucket, key, max_bytes < 0 ? 0 : (size_t)max_bytes, &data, &len, &err);
    Py_END_ALLOW_THREADS
    if (rc)
        return raise_for(self, &err);
    PyObject *out = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
    free(data);
    return out;
}

static PyObject *S3Client_put(S3ClientObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"bucket", "key", "data", "content_type", NULL};
    const char *bucket, *key, *ctype = NULL;
    Py_buffer data;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ssy*|z:put", kwlist, &bucket, &key, &data, &ctype))
        return NULL;
    char etag[128];
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_put(self->c, bucket, key, data.buf, (size_t)data.len, ctype, etag, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (rc)
        return raise_for(self, &err);
    return PyUnicode_FromString(etag);
}

static PyObject *page_to_python(const mx8_s3_list_page *p) {
    PyObject *entries = PyList_New((Py_ssize_t)p->n), *prefixes = PyList_New((Py_ssize_t)p->n_prefixes);
    if (!entries || !prefixes)
        goto fail;
    for (size_t i = 0; i < p->n; i++) {
        PyObject *e = Py_BuildValue("(sK)", p->entries[i].key, (unsigned long long)p->entries[i].size);
        if (!e)
            goto fail;
        PyList_SET_ITEM(entries, (Py_ssize_t)i, e);
    }
    for (size_t i = 0; i < p->n_prefixes; i++) {
        PyObject *s = PyUnicode_FromString(p->prefixes[i]);
        if (!s)
            goto fail;
        PyList_SET_ITEM(prefixes, (Py_ssize_t)i, s);
    }
    return Py_BuildValue("(NzN)", entries, p->truncated ? p->next_token : NULL, prefixes);
fail:
    Py_XDECREF(entries);
    Py_XDECREF(prefixes);
    return NULL;
}

static PyObject *S3Client_list_page(S3ClientObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"bucket", "prefix", "continuation_token", "max_keys", "delimiter", NULL};
    const char *bucket, *prefix = "", *token = NULL, *delim = NULL;
    int max_keys = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|szi$z:list_page", kwlist, &bucket, &prefix, &token, &max_keys,
                                     &delim))
        return NULL;
    mx8_s3_list_page page;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_list(self->c, bucket, prefix, token, delim, max_keys, &page, &err);
    Py_END_ALLOW_THREADS
    if (rc)
        return raise_for(self, &err);
    PyObject *out = page_to_python(&page);
    mx8_s3_list_page_free(&page);
    return out;
}

static PyObject *S3Client_create_multipart(S3ClientObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"bucket", "key", "content_type", NULL};
    const char *bucket, *key, *ctype = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ss|z:create_multipart", kwlist, &bucket, &key, &ctype))
        return NULL;
    char *id = NULL;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_multipart_create(self->c, bucket, key, ctype, &id, &err);
    Py_END_ALLOW_THREADS
    if (rc)
        return raise_for(self, &err);
    PyObject *out = PyUnicode_FromString(id);
    free(id);
    return out;
}

static PyObject *S3Client_upload_part(S3ClientObject *self, PyObject *args) {
    const char *bucket, *key, *id;
    int part;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "sssiy*:upload_part", &bucket, &key, &id, &part, &data))
        return NULL;
    char etag[128];
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_upload_part(self->c, bucket, key, id, part, data.buf, (size_t)data.len, etag, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return rc ? raise_for(self, &err) : PyUnicode_FromString(etag);
}

/* parts: a sequence of (part_number, etag); the etag strings live as long as the list. */
static PyObject *S3Client_complete_multipart(S3ClientObject *self, PyObject *args) {
    const char *bucket, *key, *id;
    PyObject *seq;
    if (!PyArg_ParseTuple(args, "sssO:complete_multipart", &bucket, &key, &id, &seq))
        return NULL;
    PyObject *list = PySequence_List(seq);
    if (!list)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(list);
    mx8_s3_part *parts = PyMem_Calloc((size_t)n + 1, sizeof *parts);
    PyObject *out = NULL;
    if (!parts) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (!PyArg_ParseTuple(PyList_GET_ITEM(list, i), "is;complete_multipart: parts are (part_number, etag)",
                              &parts[i].part_number, &parts[i].etag))
            goto done;
    char etag[128];
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_multipart_complete(self->c, bucket, key, id, parts, (size_t)n, etag, &err);
    Py_END_ALLOW_THREADS
    out = rc ? raise_for(self, &err) : PyUnicode_FromString(etag);
done:
    PyMem_Free(parts);
    Py_DECREF(list);
    return out;
}

static PyObject *S3Client_abort_multipart(S3ClientObject *self, PyObject *args) {
    const char *bucket, *key, *id;
    if (!PyArg_ParseTuple(args, "sss:abort_multipart", &bucket, &key, &id))
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_multipart_abort(self->c, bucket, key, id, &err);
    Py_END_ALLOW_THREADS
    if (rc)
        return raise_for(self, &err);
    Py_RETURN_NONE;
}

static PyObject *S3Client_delete(S3ClientObject *self, PyObject *args) {
    const char *bucket, *key;
    if (!PyArg_ParseTuple(args, "ss:delete", &bucket, &key))
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_s3_delete(self->c, bucket, key, &err);
    Py_END_ALLOW_THREADS
    if (rc)
        return raise_for(self, &err);
    Py_RETURN_NONE;
}

static PyObject *S3Client_stats(S3ClientObject *self, PyObject *unused) {
    (void)unused;
    mx8_s3_stats s;
    mx8_s3_client_stats(self->c, &s);
    return Py_BuildValue("{sKsKsKsKsK}", "requests", (unsigned long long)s.requests, "retries",
                         (unsigned long long)s.retries, "transfers", (unsigned long long)s.transfers, "bytes_in",
                         (unsigned long long)s.bytes_in, "bytes_out", (unsigned long long)s.bytes_out);
}

static PyMethodDef S3Client_methods[] = {
    {"head", (PyCFunction)S3Client_head, METH_VARARGS, "head(bucket, key) -> (size, etag)"},
    {"get_range", (PyCFunction)(void (*)(void))S3Client_get_range, METH_VARARGS | METH_KEYWORDS,
     "get_range(bucket, key, offset, length, into=None) -> bytes, or length when 'into' (a writable buffer) "
     "is given"},
    {"get", (PyCFunction)(void (*)(void))S3Client_get, METH_VARARGS | METH_KEYWORDS,
     "get(bucket, key, max_bytes=unlimited) -> bytes"},
    {"put", (PyCFunction)(void (*)(void))S3Client_put, METH_VARARGS | METH_KEYWORDS,
     "put(bucket, key, data, content_type=None) -> etag"},
    {"list_page", (PyCFunction)(void (*)(void))S3Client_list_page, METH_VARARGS | METH_KEYWORDS,
     "list_page(bucket, prefix='', continuation_token=None, max_keys=0, *, delimiter=None)\n"
     "-> ([(key, size), ...], next_token or None, [common prefixes])"},
    {"create_multipart", (PyCFunction)(void (*)(void))S3Client_create_multipart, METH_VARARGS | METH_KEYWORDS,
     "create_multipart(bucket, key, content_type=None) -> upload_id"},
    {"upload_part", (PyCFunction)S3Client_upload_part, METH_VARARGS,
     "upload_part(bucket, key, upload_id, part_number, data) -> etag"},
    {"complete_multipart", (PyCFunction)S3Client_complete_multipart, METH_VARARGS,
     "complete_multipart(bucket, key, upload_id, [(part_number, etag), ...]) -> etag of the object"},
    {"abort_multipart", (PyCFunction)S3Client_abort_multipart, METH_VARARGS,
     "abort_multipart(bucket, key, upload_id)"},
    {"delete", (PyCFunction)S3Client_delete, METH_VARARGS, "delete(bucket, key)"},
    {"stats", (PyCFunction)S3Client_stats, METH_NOARGS, "stats() -> {requests, retries, transfers, bytes_in, bytes_out}"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot S3Client_slots[] = {
    {Py_tp_new, S3Client_new},
    {Py_tp_dealloc, S3Client_dealloc},
    {Py_tp_methods, S3Client_methods},
    {Py_tp_doc, "S3Client(endpoint, region, access_key, secret_key, session_token=None, virtual_host=False, *, ca_file=None,\n"
                "         connect_timeout_ms=5000, low_speed_time_s=20, max_attempts=6, backoff_base_ms=100,\n"
                "         backoff_cap_ms=5000)\n"
                "Signed, retrying S3 requests on one connection. Errors are mx8.ReadError (errno ENOENT for\n"
                "404, EACCES for 403) or mx8.RangeError, naming operation, key, range, status, code, request id."},
    {0, NULL},
};

static PyType_Spec S3Client_spec = {
    .name = "mx8._core.S3Client",
    .basicsize = sizeof(S3ClientObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = S3Client_slots,
};

int mx8_s3_init(PyObject *module) {
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_s3_global_init(&err)) {
        PyErr_SetString(PyExc_ImportError, err.msg);
        return -1;
    }
    /* The module's dict keeps the type alive; nothing needs it from the module state. */
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, &S3Client_spec, NULL);
    if (!tp)
        return -1;
    int rc = PyModule_AddType(module, tp);
    Py_DECREF(tp);
    return rc;
}
