/* mx8._core.TarWriter: appends sample files to a tar shard (used by mx8.pack). */
#include "binding.h"
#include "tar_writer.h"

typedef struct {
    PyObject_HEAD
    mx8_tar_writer w;
    int open;
} TarWriterObject;

static PyObject *TarWriter_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"path", NULL};
    PyObject *path;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:TarWriter", kwlist, PyUnicode_FSConverter, &path))
        return NULL;
    TarWriterObject *self = (TarWriterObject *)type->tp_alloc(type, 0);
    if (!self) {
        Py_DECREF(path);
        return NULL;
    }
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_tar_open(&self->w, PyBytes_AS_STRING(path), &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc) {
        Py_DECREF(self);
        return mx8_raise(mx8_state_from_type(type), &err);
    }
    self->open = 1;
    return (PyObject *)self;
}

static void TarWriter_dealloc(TarWriterObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->open)
        mx8_tar_abort(&self->w);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static int check_open(TarWriterObject *self) {
    if (!self->open) {
        PyErr_SetString(PyExc_ValueError, "the tar writer is closed");
        return -1;
    }
    return 0;
}

static PyObject *TarWriter_add(TarWriterObject *self, PyObject *args) {
    PyObject *name;
    Py_buffer data;
    unsigned long long mtime = 0;
    if (!PyArg_ParseTuple(args, "O&y*|K:add", PyUnicode_FSConverter, &name, &data, &mtime))
        return NULL;
    PyObject *result = NULL;
    if (check_open(self) == 0) {
        uint64_t off = 0;
        mx8_error err;
        mx8_error_clear(&err);
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = mx8_tar_add(&self->w, PyBytes_AS_STRING(name), data.buf, (size_t)data.len, mtime, &off, &err);
        Py_END_ALLOW_THREADS
        result = rc ? mx8_raise(mx8_state_from_type(Py_TYPE(self)), &err) : PyLong_FromUnsignedLongLong(off);
    }
    Py_DECREF(name);
    PyBuffer_Release(&data);
    return result;
}

static PyObject *TarWriter_finish(TarWriterObject *self, PyObject *unused) {
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    self->open = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_tar_finish(&self->w, &err);
    Py_END_ALLOW_THREADS
    if (rc)
        return mx8_raise(mx8_state_from_type(Py_TYPE(self)), &err);
    Py_RETURN_NONE;
}

static PyObject *TarWriter_abort(TarWriterObject *self, PyObject *unused) {
    (void)unused;
    if (self->open)
        mx8_tar_abort(&self->w);
    self->open = 0;
    Py_RETURN_NONE;
}

static PyObject *TarWriter_get_pos(TarWriterObject *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(self->w.pos);
}

static PyObject *tar_member_size(PyObject *cls, PyObject *args) {
    (void)cls;
    PyObject *name;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "O&n:member_size", PyUnicode_FSConverter, &name, &len))
        return NULL;
    uint64_t n = mx8_tar_member_size(PyBytes_AS_STRING(name), (size_t)len);
    Py_DECREF(name);
    return PyLong_FromUnsignedLongLong(n);
}

static PyMethodDef TarWriter_methods[] = {
    {"add", (PyCFunction)TarWriter_add, METH_VARARGS, "add(name, data, mtime=0) -> offset of the data"},
    {"finish", (PyCFunction)TarWriter_finish, METH_NOARGS, "write the end blocks, fsync, close"},
    {"abort", (PyCFunction)TarWriter_abort, METH_NOARGS, "close without finishing"},
    {"member_size", (PyCFunction)tar_member_size, METH_VARARGS | METH_STATIC,
     "member_size(name, nbytes) -> bytes the member takes in the archive"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef TarWriter_getset[] = {
    {"pos", (getter)TarWriter_get_pos, NULL, "bytes written so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot TarWriter_slots[] = {
    {Py_tp_new, TarWriter_new},
    {Py_tp_dealloc, TarWriter_dealloc},
    {Py_tp_methods, TarWriter_methods},
    {Py_tp_getset, TarWriter_getset},
    {Py_tp_doc, "TarWriter(path): writes a POSIX tar shard member by member."},
    {0, NULL},
};

static PyType_Spec TarWriter_spec = {
    .name = "mx8._core.TarWriter",
    .basicsize = sizeof(TarWriterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = TarWriter_slots,
};

int mx8_tar_writer_type_init(PyObject *module, mx8_state *st) {
    st->TarWriterType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &TarWriter_spec, NULL);
    if (!st->TarWriterType)
        return -1;
    return PyModule_AddType(module, st->TarWriterType);
}
