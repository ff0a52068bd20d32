/* mx8._core.Manifest: the parsed, immutable index of a manifest.tsv, held in memory or
 * mapped from its binary index file (build_index / open_index). */
#include "binding.h"
#include "manifest_index.h"

static PyObject *wrap(PyTypeObject *type, mx8_manifest *m);

static PyObject *Manifest_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"data", NULL};
    Py_buffer buf;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*:Manifest", kwlist, &buf))
        return NULL;
    mx8_manifest *m = NULL;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_manifest_parse(buf.buf, (size_t)buf.len, &m, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    if (rc)
        return mx8_raise(mx8_state_from_type(type), &err);
    return wrap(type, m);
}

static void Manifest_dealloc(ManifestObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    mx8_manifest_free(self->m);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *wrap(PyTypeObject *type, mx8_manifest *m) {
    ManifestObject *self = (ManifestObject *)type->tp_alloc(type, 0);
    if (!self) {
        mx8_manifest_free(m);
        return NULL;
    }
    self->m = m;
    return (PyObject *)self;
}

/* build_index(manifest_path, index_path): one streaming pass, bounded memory. */
static PyObject *build_index(PyObject *module, PyObject *args) {
    PyObject *src, *dst;
    if (!PyArg_ParseTuple(args, "O&O&:build_index", PyUnicode_FSConverter, &src, PyUnicode_FSConverter, &dst))
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_index_build(PyBytes_AS_STRING(src), PyBytes_AS_STRING(dst), &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(src);
    Py_DECREF(dst);
    if (rc)
        return mx8_raise(mx8_get_state(module), &err);
    Py_RETURN_NONE;
}

/* open_index(index_path) -> (Manifest, (source_size, source_mtime_ns, source_inode)) */
static PyObject *open_index(PyObject *module, PyObject *arg) {
    PyObject *path;
    if (!PyUnicode_FSConverter(arg, &path))
        return NULL;
    mx8_manifest *m = NULL;
    mx8_index_source src;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_index_open(PyBytes_AS_STRING(path), &m, &src, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc)
        return mx8_raise(mx8_get_state(module), &err);
    PyObject *manifest = wrap(mx8_get_state(module)->ManifestType, m);
    if (!manifest)
        return NULL;
    return Py_BuildValue("(N(KLKLL))", manifest, (unsigned long long)src.size, (long long)src.mtime_ns,
                         (unsigned long long)src.inode, (long long)src.ctime_ns, (long long)src.built_ns);
}

PyMethodDef mx8_manifest_functions[] = {
    {"build_index", build_index, METH_VARARGS,
     "build_index(manifest_path, index_path): the binary index of a manifest.tsv (csrc/core/manifest_index.h)"},
    {"open_index", open_index, METH_O,
     "open_index(index_path) -> (Manifest, (size, mtime_ns, inode, ctime_ns, built_ns): the manifest file it was "
     "built from, and when)"},
    {NULL, NULL, 0, NULL},
};

static Py_ssize_t Manifest_len(ManifestObject *self) { return (Py_ssize_t)self->m->n_records; }

static PyObject *Manifest_get_hash(ManifestObject *self, void *c) {
    (void)c;
    return PyUnicode_FromString(self->m->hash_hex);
}

static PyObject *Manifest_get_locations(ManifestObject *self, void *c) {
    (void)c;
    PyObject *t = PyTuple_New((Py_ssize_t)self->m->n_locations);
    for (size_t i = 0; t && i < self->m->n_locations; i++) {
        PyObject *s = PyUnicode_DecodeFSDefault(self->m->locations[i]);
        if (!s) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, s);
    }
    return t;
}

static PyObject *Manifest_get_max_label(ManifestObject *self, void *c) {
    (void)c;
    return PyLong_FromLong(self->m->max_label);
}

static PyObject *Manifest_get_index_bytes(ManifestObject *self, void *c) {
    (void)c;
    size_t n = self->m->n_records * sizeof(mx8_record) + self->m->n_locations * sizeof(char *);
    if (self->m->map) /* mapped: the records are the page cache's, shared; only the pointers are ours */
        n = self->m->n_locations * sizeof(char *);
    for (size_t i = 0; i < self->m->n_locations; i++)
        n += strlen(self->m->locations[i]) + 1;
    return PyLong_FromSize_t(n);
}

static PyObject *Manifest_get_mapped(ManifestObject *self, void *c) {
    (void)c;
    return PyBool_FromLong(self->m->map != NULL);
}

static PyObject *Manifest_record(ManifestObject *self, PyObject *arg) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0 || (size_t)i >= self->m->n_records) {
        PyErr_Format(PyExc_IndexError, "sample id %zd out of range (0..%zu)", i, self->m->n_records);
        return NULL;
    }
    const mx8_record *r = &self->m->records[i];
    PyObject *len = r->length == MX8_LENGTH_WHOLE ? Py_NewRef(Py_None) : PyLong_FromUnsignedLongLong(r->length);
    if (!len)
        return NULL;
    return Py_BuildValue("(IKNi)", r->location, (unsigned long long)r->offset, len, r->label);
}

static PyObject *Manifest_labels(ManifestObject *self, PyObject *unused) {
    (void)unused;
    /* int64 label per sample as bytes (memoryview(...).cast('q') on the Python side). */
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(self->m->n_records * sizeof(int64_t)));
    if (!out)
        return NULL;
    int64_t *p = (int64_t *)PyBytes_AS_STRING(out);
    for (size_t i = 0; i < self->m->n_records; i++)
        p[i] = self->m->records[i].label;
    return out;
}

static PyMethodDef Manifest_methods[] = {
    {"record", (PyCFunction)Manifest_record, METH_O,
     "record(sample_id) -> (location_index, offset, length or None, label)"},
    {"labels", (PyCFunction)Manifest_labels, METH_NOARGS, "labels() -> bytes of int64 labels, one a sample"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Manifest_getset[] = {
    {"hash", (getter)Manifest_get_hash, NULL, "manifest_hash: hex SHA-256 of the canonical bytes", NULL},
    {"locations", (getter)Manifest_get_locations, NULL, "unique locations, as written", NULL},
    {"max_label", (getter)Manifest_get_max_label, NULL, "largest label id, or -1", NULL},
    {"index_bytes", (getter)Manifest_get_index_bytes, NULL, "private memory held by the index", NULL},
    {"mapped", (getter)Manifest_get_mapped, NULL, "True when read from a mapped index file", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Manifest_slots[] = {
    {Py_tp_new, Manifest_new},
    {Py_tp_dealloc, Manifest_dealloc},
    {Py_sq_length, Manifest_len},
    {Py_tp_methods, Manifest_methods},
    {Py_tp_getset, Manifest_getset},
    {Py_tp_doc, "Manifest(data: bytes): a parsed _mx8/manifest.tsv (raises ManifestError with the line)."},
    {0, NULL},
};

static PyType_Spec Manifest_spec = {
    .name = "mx8._core.Manifest",
    .basicsize = sizeof(ManifestObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Manifest_slots,
};

int mx8_manifest_type_init(PyObject *module, mx8_state *st) {
    st->ManifestType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Manifest_spec, NULL);
    if (!st->ManifestType)
        return -1;
    return PyModule_AddType(module, st->ManifestType);
}
