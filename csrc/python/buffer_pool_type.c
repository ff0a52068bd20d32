/* mx8._core.BufferPool and PooledBuffer: recycled batch memory handed to torch through
 * DLPack. The DLPack deleter returns the buffer to the pool when torch frees the last
 * view of the tensor, from whatever thread that happens on: it touches no Python object. */
#include "binding.h"
#include "buffer_pool.h"
#include "dlpack_abi.h"

#define MAX_DIMS 8

typedef struct {
    PyObject_HEAD
    mx8_buffer_pool *pool;
} BufferPoolObject;

typedef struct {
    PyObject_HEAD
    mx8_buffer_pool *pool; /* holds a pool reference while buf is owned here */
    void *buf;             /* NULL once exported */
} PooledBufferObject;

typedef struct {
    DLManagedTensor managed;
    mx8_buffer_pool *pool;
    int64_t shape[MAX_DIMS];
} export_ctx;

static void export_deleter(DLManagedTensor *self) {
    export_ctx *ctx = (export_ctx *)self;
    mx8_pool_release(ctx->pool, self->dl_tensor.data);
    free(ctx);
}

static void capsule_destructor(PyObject *capsule) {
    /* Never consumed by a framework: we still own it. */
    if (PyCapsule_IsValid(capsule, "dltensor")) {
        DLManagedTensor *m = PyCapsule_GetPointer(capsule, "dltensor");
        if (m && m->deleter)
            m->deleter(m);
    }
}

/* export(shape, float32=False): the capsule's dtype is uint8 or float32; shape counts elements. */
static PyObject *PooledBuffer_export(PooledBufferObject *self, PyObject *args) {
    PyObject *shape_arg;
    int is_float = 0;
    if (!PyArg_ParseTuple(args, "O|p:export", &shape_arg, &is_float))
        return NULL;
    if (!self->buf) {
        PyErr_SetString(PyExc_ValueError, "buffer already exported");
        return NULL;
    }
    PyObject *shape = PySequence_Fast(shape_arg, "shape must be a sequence of ints");
    if (!shape)
        return NULL;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(shape);
    export_ctx *ctx = nd >= 1 && nd <= MAX_DIMS ? calloc(1, sizeof *ctx) : NULL;
    uint64_t total = is_float ? 4 : 1;
    for (Py_ssize_t i = 0; ctx && i < nd; i++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(shape, i));
        if (v < 0 || (v == -1 && PyErr_Occurred())) {
            free(ctx);
            ctx = NULL;
            break;
        }
        ctx->shape[i] = v;
        total *= (uint64_t)v;
    }
    Py_DECREF(shape);
    if (!ctx || total > mx8_pool_buf_bytes(self->pool)) {
        free(ctx);
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "shape of %zd dims does not fit the %zu-byte buffer", nd,
                         mx8_pool_buf_bytes(self->pool));
        return NULL;
    }
    ctx->pool = self->pool;
    DLTensor *t = &ctx->managed.dl_tensor;
    t->data = self->buf;
    t->device.device_type = MX8_DL_CPU;
    t->ndim = (int32_t)nd;
    t->dtype.code = is_float ? MX8_DL_FLOAT : MX8_DL_UINT;
    t->dtype.bits = is_float ? 32 : 8;
    t->dtype.lanes = 1;
    t->shape = ctx->shape;
    ctx->managed.deleter = export_deleter;
    PyObject *cap = PyCapsule_New(&ctx->managed, "dltensor", capsule_destructor);
    if (!cap) {
        free(ctx);
        return NULL;
    }
    /* The pool reference and the buffer now belong to the capsule (then to torch). */
    self->buf = NULL;
    self->pool = NULL;
    return cap;
}

static void PooledBuffer_dealloc(PooledBufferObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->buf)
        mx8_pool_release(self->pool, self->buf);
    tp->tp_free(self);
    Py_DECREF(tp);
}

int mx8_pooled_buffer_memory(PyObject *o, void **ptr, size_t *nbytes) {
    PooledBufferObject *self = (PooledBufferObject *)o;
    if (!self->buf) {
        PyErr_SetString(PyExc_ValueError, "buffer already exported");
        return -1;
    }
    *ptr = self->buf;
    *nbytes = mx8_pool_buf_bytes(self->pool);
    return 0;
}

static PyObject *PooledBuffer_get_nbytes(PooledBufferObject *self, void *c) {
    (void)c;
    return PyLong_FromSize_t(self->buf ? mx8_pool_buf_bytes(self->pool) : 0);
}

static PyMethodDef PooledBuffer_methods[] = {
    {"export", (PyCFunction)PooledBuffer_export, METH_VARARGS,
     "export(shape, float32=False) -> DLPack capsule (CPU); torch.from_dlpack(capsule) takes it over"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef PooledBuffer_getset[] = {
    {"nbytes", (getter)PooledBuffer_get_nbytes, NULL, "size in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot PooledBuffer_slots[] = {
    {Py_tp_dealloc, PooledBuffer_dealloc},
    {Py_tp_methods, PooledBuffer_methods},
    {Py_tp_getset, PooledBuffer_getset},
    {Py_tp_doc, "A batch buffer from a BufferPool; returns to the pool when dropped or when the "
                "tensor it was exported to is freed."},
    {0, NULL},
};

static PyType_Spec PooledBuffer_spec = {
    .name = "mx8._core.PooledBuffer",
    .basicsize = sizeof(PooledBufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = PooledBuffer_slots,
};

static PyObject *BufferPool_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"nbytes", "keep", NULL};
    Py_ssize_t nbytes;
    int keep;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ni:BufferPool", kwlist, &nbytes, &keep))
        return NULL;
    if (nbytes <= 0 || keep < 0)
        return PyErr_Format(PyExc_ValueError, "bad pool size %zd / keep %d", nbytes, keep);
    BufferPoolObject *self = (BufferPoolObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->pool = mx8_pool_new((size_t)nbytes, keep);
    if (!self->pool) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void BufferPool_dealloc(BufferPoolObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->pool)
        mx8_pool_close(self->pool);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *BufferPool_acquire(BufferPoolObject *self, PyObject *unused) {
    (void)unused;
    mx8_state *st = mx8_state_from_type(Py_TYPE(self));
    PooledBufferObject *b = PyObject_New(PooledBufferObject, st->PooledBufferType);
    if (!b)
        return NULL;
    b->pool = self->pool;
    b->buf = mx8_pool_acquire(self->pool); /* takes a pool reference for the buffer */
    if (!b->buf) {
        b->pool = NULL;
        Py_DECREF(b);
        return PyErr_NoMemory();
    }
    return (PyObject *)b;
}

static PyMethodDef BufferPool_methods[] = {
    {"acquire", (PyCFunction)BufferPool_acquire, METH_NOARGS, "acquire() -> PooledBuffer"},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot BufferPool_slots[] = {
    {Py_tp_new, BufferPool_new},
    {Py_tp_dealloc, BufferPool_dealloc},
    {Py_tp_methods, BufferPool_methods},
    {Py_tp_doc, "BufferPool(nbytes, keep): recycled page-aligned batch buffers."},
    {0, NULL},
};

static PyType_Spec BufferPool_spec = {
    .name = "mx8._core.BufferPool",
    .basicsize = sizeof(BufferPoolObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = BufferPool_slots,
};

int mx8_buffer_pool_type_init(PyObject *module, mx8_state *st) {
    st->PooledBufferType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &PooledBuffer_spec, NULL);
    if (!st->PooledBufferType || PyModule_AddType(module, st->PooledBufferType) < 0)
        return -1;
    st->BufferPoolType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &BufferPool_spec, NULL);
    if (!st->BufferPoolType)
        return -1;
    return PyModule_AddType(module, st->BufferPoolType);
}
