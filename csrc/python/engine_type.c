/* mx8._core.Engine: drives a core engine from Python. The Python layer (mx8/stream.py)
 * submits orders, allocates each batch's memory and provides it as objects: PooledBuffers,
 * or DLPack capsules of tensors (tensor.__dlpack__()). This type takes the pointers from
 * those very objects and holds references to them until the batch is taken or the engine
 * is closed, so the C threads never write into freed memory (the one place that
 * guarantee lives).
 *
 * A close() whose stop abandons threads (blocked in a read that does not return: a hung
 * network mount) puts the engine on the module's `abandoned` list instead: the engine, its
 * manifest, paths and the owners of untaken batches stay alive until those threads leave.
 * Each later Engine() or close() sweeps the list, so the memory goes once the reads return. */
#include "binding.h"
#include "dlpack_abi.h"

#include <unistd.h>

typedef struct {
    PyObject_HEAD
    mx8_engine *e;
    PyObject *manifest;  /* ManifestObject, outlives e */
    char **paths;        /* resolved path per location, outlives e */
    size_t n_paths;
    PyObject **owners;   /* depth entries: owner of the buffers of the batch in that slot */
    int depth;
    int closed;
    pid_t pid;           /* the process whose threads e has: a fork()ed child must not join them */
    mx8_s3_options s3;   /* used when has_s3; its strings are owned by s3_strings */
    char *s3_strings[6];
    int has_s3;
    int abandoned;       /* a stop let threads go: see the top of this file */
    PyObject *s3_credentials; /* S3Credentials the engine's clients share, or NULL */
} EngineObject;

/* Drops the abandoned engines whose threads have all left (they are then freed normally). */
static int sweep_abandoned(mx8_state *st) {
    PyObject *list = st->abandoned_engines;
    for (Py_ssize_t i = PyList_GET_SIZE(list) - 1; i >= 0; i--) {
        EngineObject *eo = (EngineObject *)PyList_GET_ITEM(list, i);
        if (mx8_engine_running(eo->e) == 0 && PySequence_DelItem(list, i) < 0)
            return -1;
    }
    return 0;
}

/* Optional non-negative integer d[name] into *out (absent or None: left as is). */
static int opt_u64(PyObject *d, const char *name, uint64_t *out) {
    PyObject *v = PyDict_GetItemString(d, name);
    if (!v || v == Py_None)
        return 0;
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Format(PyExc_ValueError, "s3 option '%s' must be a non-negative integer", name);
        return -1;
    }
    *out = x;
    return 0;
}

/* {"endpoint", "region", "access_key", "secret_key", "session_token", "ca_file" (None ok),
 * "credentials" (an S3Credentials, which then replaces the three keys),
 * "virtual_host", "prefetch_bytes", "max_connections", "io_threads", "max_attempts" (optional)}: where the S3 locations
 * live and how hard to read them (mx8/dataset.py builds it from the snapshot). */
static int parse_s3(EngineObject *self, PyObject *d, mx8_engine_config *cfg) {
    static const char *names[] = {"endpoint", "region", "access_key", "secret_key", "session_token", "ca_file"};
    PyObject *shared = PyDict_GetItemString(d, "credentials");
    PyObject *anon = PyDict_GetItemString(d, "unsigned"), *rp = PyDict_GetItemString(d, "requester_pays");
    int is_anon = anon && PyObject_IsTrue(anon) == 1;
    int has_shared = (shared && shared != Py_None) || is_anon; /* either way no keys are needed here */
    for (int i = 0; i < 6; i++) {
        PyObject *v = PyDict_GetItemString(d, names[i]);
        if (!v || v == Py_None) {
            if (i < 2 || (i < 4 && !has_shared)) {
                PyErr_Format(PyExc_ValueError, "s3 options need '%s'", names[i]);
                return -1;
            }
            continue;
        }
        const char *str = PyUnicode_AsUTF8(v);
        if (!str || !(self->s3_strings[i] = strdup(str))) {
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            return -1;
        }
    }
    PyObject *vh = PyDict_GetItemString(d, "virtual_host");
    PyObject *creds = PyDict_GetItemString(d, "credentials");
    memset(&self->s3, 0, sizeof self->s3);
    if (creds && creds != Py_None) {
        if (!(self->s3.credentials = mx8_s3_credentials_of(creds)))
            return -1;
        Py_XSETREF(self->s3_credentials, Py_NewRef(creds)); /* its core object outlives the engine's clients */
    }
    self->s3.endpoint = self->s3_strings[0];
    self->s3.region = self->s3_strings[1];
    self->s3.access_key = self->s3_strings[2];
    self->s3.secret_key = self->s3_strings[3];
    self->s3.session_token = self->s3_strings[4];
    self->s3.ca_file = self->s3_strings[5];
    self->s3.virtual_host = vh && PyObject_IsTrue(vh);
    self->s3.unsigned_requests = is_anon;
    self->s3.requester_pays = rp && PyObject_IsTrue(rp) == 1;
    self->has_s3 = 1;
    uint64_t conns = 0, io = 0, attempts = 0;
    if (opt_u64(d, "prefetch_bytes", &cfg->fetch_budget) < 0 || opt_u64(d, "max_connections", &conns) < 0 ||
        opt_u64(d, "io_threads", &io) < 0 || opt_u64(d, "max_attempts", &attempts) < 0)
        return -1;
    if (conns > 1024 || io > 64 || attempts > 100) {
        PyErr_SetString(PyExc_ValueError,
                        "s3 options: 'max_connections' must be at most 1024, 'io_threads' 64, 'max_attempts' 100");
        return -1;
    }
    self->s3.io_threads = (int)io;
    self->s3.max_attempts = (int)attempts; /* 0: the transport's default */
    cfg->max_connections = (int)conns;
    cfg->s3 = &self->s3;
    return 0;
}

static void free_paths(EngineObject *self) {
    for (size_t i = 0; self->paths && i < self->n_paths; i++)
        free(self->paths[i]);
    free(self->paths);
    self->paths = NULL;
}

static int copy_paths(EngineObject *self, PyObject *seq, size_t expect) {
    PyObject *fast = PySequence_Fast(seq, "paths must be a sequence of str");
    if (!fast)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if ((size_t)n != expect) {
        PyErr_Format(PyExc_ValueError, "paths has %zd entries, the manifest has %zu locations", n, expect);
        Py_DECREF(fast);
        return -1;
    }
    self->paths = calloc(n ? (size_t)n : 1, sizeof(char *));
    self->n_paths = (size_t)n;
    for (Py_ssize_t i = 0; self->paths && i < n; i++) {
        PyObject *b = PyUnicode_EncodeFSDefault(PySequence_Fast_GET_ITEM(fast, i));
        if (!b) {
            Py_DECREF(fast);
            return -1;
        }
        self->paths[i] = strdup(PyBytes_AS_STRING(b));
        Py_DECREF(b);
        if (!self->paths[i])
            break;
    }
    Py_DECREF(fast);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!self->paths || !self->paths[i]) {
            PyErr_NoMemory();
            return -1;
        }
    return 0;
}

/* "out_float": bool, "mean"/"std": 3 floats each (torchvision Normalize, [0, 1] units). */
static int parse_normalize(PyObject *kw, mx8_engine_config *cfg) {
    PyObject *v = PyDict_GetItemString(kw, "out_float");
    if (!v || !PyObject_IsTrue(v))
        return 0;
    cfg->out_float = 1;
    const char *names[] = {"mean", "std"};
    float *dst[] = {cfg->mean, cfg->std};
    for (int k = 0; k < 2; k++) {
        PyObject *seq = PyDict_GetItemString(kw, names[k]);
        PyObject *fast = seq ? PySequence_Fast(seq, "mean and std must be sequences of 3 floats") : NULL;
        if (!fast || PySequence_Fast_GET_SIZE(fast) != 3) {
            Py_XDECREF(fast);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "%s must hold 3 floats", names[k]);
            return -1;
        }
        for (int c = 0; c < 3; c++) {
            double d = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, c));
            if (d == -1.0 && PyErr_Occurred()) {
                Py_DECREF(fast);
                return -1;
            }
            dst[k][c] = (float)d;
        }
        Py_DECREF(fast);
    }
    return 0;
}

static int check_open(EngineObject *self) {
    if (self->closed) {
        PyErr_SetString(mx8_state_from_type(Py_TYPE(self))->Error, "the engine is closed");
        return -1;
    }
    return 0;
}

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"manifest", "paths", "threads", "batch_size", "depth", "raw", "skip_errors",
                             "transform", "s3", NULL};
    mx8_state *st = mx8_state_from_type(type);
    PyObject *manifest, *paths, *transform = NULL, *s3 = NULL;
    int threads, batch_size, depth, raw = 0, skip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!Oiii|ppO!O:Engine", kwlist, st->ManifestType, &manifest,
                                     &paths, &threads, &batch_size, &depth, &raw, &skip, &PyDict_Type, &transform,
                                     &s3))
        return NULL;
    EngineObject *self = NULL;
    mx8_engine_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.threads = threads;
    cfg.batch_size = batch_size;
    cfg.depth = depth;
    cfg.output = raw ? MX8_OUTPUT_RAW : MX8_OUTPUT_DECODED;
    cfg.skip_errors = skip;
    if (transform && (mx8_transform_from_dict(transform, &cfg.transform, "Engine") < 0 ||
                      parse_normalize(transform, &cfg) < 0))
        return NULL;
    self = (EngineObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->manifest = Py_NewRef(manifest);
    self->depth = depth > 0 ? depth : 1;
    self->owners = calloc((size_t)self->depth, sizeof(PyObject *));
    if (!self->owners) {
        PyErr_NoMemory();
        goto fail;
    }
    const mx8_manifest *m = ((ManifestObject *)manifest)->m;
    if (copy_paths(self, paths, m->n_locations) < 0)
        goto fail;
    if (s3 && s3 != Py_None) {
        if (!PyDict_Check(s3)) {
            PyErr_SetString(PyExc_TypeError, "s3 must be a dict of options");
            goto fail;
        }
        if (parse_s3(self, s3, &cfg) < 0)
            goto fail;
    }
    if (sweep_abandoned(st) < 0)
        goto fail;
    mx8_error err;
    mx8_error_clear(&err);
    self->pid = getpid();
    self->e = mx8_engine_new(m, (const char *const *)self->paths, &cfg, &err);
    if (!self->e) {
        mx8_raise(st, &err);
        goto fail;
    }
    return (PyObject *)self;
fail:
    Py_XDECREF(self);
    return NULL;
}

/* submit(order, aug_seed, cuts=b"") -> (run, first_batch, n_batches): queues an order (int64
 * sample ids, any buffer) as a run after the runs queued before; cuts: uint64 offsets where
 * S3 request planning restarts (the share's piece boundaries). */
static PyObject *Engine_submit(EngineObject *self, PyObject *args) {
    Py_buffer order, cuts = {0};
    unsigned long long aug_seed = 0;
    if (!PyArg_ParseTuple(args, "y*K|y*:submit", &order, &aug_seed, &cuts))
        return NULL;
    PyObject *out = NULL;
    if (order.len % (Py_ssize_t)sizeof(int64_t) != 0 || cuts.len % (Py_ssize_t)sizeof(uint64_t) != 0) {
        PyErr_SetString(PyExc_ValueError, "order must hold int64 sample ids and cuts uint64 offsets");
    } else if (check_open(self) == 0) {
        mx8_error err;
        mx8_error_clear(&err);
        uint64_t run = 0;
        size_t first = 0, n = 0;
        if (mx8_engine_submit(self->e, order.buf, (size_t)order.len / sizeof(int64_t), cuts.buf,
                              (size_t)cuts.len / sizeof(uint64_t), aug_seed, &run, &first, &n, &err))
            mx8_raise(mx8_state_from_type(Py_TYPE(self)), &err);
        else
            out = Py_BuildValue("(Knn)", (unsigned long long)run, (Py_ssize_t)first, (Py_ssize_t)n);
    }
    PyBuffer_Release(&order);
    if (cuts.obj)
        PyBuffer_Release(&cuts);
    return out;
}

/* cancel(run) -> batches of it still to come out of next(), marked cancelled. */
static PyObject *Engine_cancel(EngineObject *self, PyObject *arg) {
    unsigned long long run = PyLong_AsUnsignedLongLong(arg);
    if (run == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromSize_t(mx8_engine_cancel(self->e, run));
}

static void release_owners(EngineObject *self) {
    for (int i = 0; self->owners && i < self->depth; i++)
        Py_CLEAR(self->owners[i]);
}

/* In a fork()ed child the engine's threads do not exist: joining them would wait forever,
 * and their mutexes may be held by threads that vanished. The child only drops its copy. */
static int forked(const EngineObject *self) { return self->e && self->pid != getpid(); }

/* Stops the threads, waiting up to wait_ms. Returns 0, or the number of threads abandoned
 * (with *stuck naming one's sample); then the owners stay referenced. */
static size_t engine_close(EngineObject *self, int wait_ms, mx8_stuck_sample *stuck) {
    if (forked(self)) {
        self->closed = 1;
        return 0; /* the parent's owners stay referenced: the memory is the child's copy anyway */
    }
    size_t abandoned = 0;
    if (self->e && !self->closed) {
        Py_BEGIN_ALLOW_THREADS
        abandoned = mx8_engine_stop(self->e, wait_ms, stuck);
        Py_END_ALLOW_THREADS
    }
    self->closed = 1;
    if (abandoned)
        self->abandoned = 1;
    else if (!self->abandoned)
        release_owners(self); /* only after the threads are joined */
    return abandoned;
}

static void Engine_dealloc(EngineObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    engine_close(self, 1000, NULL);
    if (self->e && !forked(self) && mx8_engine_running(self->e) > 0) {
        /* Dropped without close() while a thread is stuck, or at interpreter exit with one
         * still stuck: everything it may touch is leaked rather than freed under it. */
        tp->tp_free(self);
        return;
    }
    release_owners(self);
    if (!forked(self))
        mx8_engine_free(self->e); /* a child leaks its copy rather than touch the threads */
    free_paths(self);
    for (int i = 0; i < 6; i++)
        free(self->s3_strings[i]);
    free(self->owners);
    Py_XDECREF(self->manifest);
    Py_XDECREF(self->s3_credentials);
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* The writable CPU memory of a provided object: a PooledBuffer, or a "dltensor" capsule of a
 * compact CPU (or pinned host) tensor, which stays valid while the capsule lives. */
static int memory_of(mx8_state *st, PyObject *o, const char *what, void **ptr, size_t *nbytes) {
    if (PyObject_TypeCheck(o, st->PooledBufferType))
        return mx8_pooled_buffer_memory(o, ptr, nbytes);
    if (!PyCapsule_IsValid(o, "dltensor")) {
        PyErr_Format(PyExc_TypeError, "provide(): %s must be a PooledBuffer or a tensor's __dlpack__() capsule", what);
        return -1;
    }
    const DLTensor *t = &((DLManagedTensor *)PyCapsule_GetPointer(o, "dltensor"))->dl_tensor;
    if (t->device.device_type != MX8_DL_CPU && t->device.device_type != MX8_DL_CUDA_HOST) {
        PyErr_Format(PyExc_ValueError, "provide(): %s is not in host memory", what);
        return -1;
    }
    uint64_t n = ((uint64_t)t->dtype.bits * t->dtype.lanes + 7) / 8, stride = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] < 0 || (t->strides && t->shape[d] > 1 && t->strides[d] != (int64_t)stride)) {
            PyErr_Format(PyExc_ValueError, "provide(): %s is not contiguous", what);
            return -1;
        }
        stride *= (uint64_t)t->shape[d];
    }
    *ptr = (char *)t->data + t->byte_offset;
    *nbytes = (size_t)(n * stride);
    return 0;
}

/* provide(images, labels, ids, offsets=None): the memory of the next batch that has none. */
static PyObject *Engine_provide(EngineObject *self, PyObject *args) {
    PyObject *o_img, *o_lab, *o_ids, *o_off = Py_None;
    if (!PyArg_ParseTuple(args, "OOO|O:provide", &o_img, &o_lab, &o_ids, &o_off))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    mx8_state *st = mx8_state_from_type(Py_TYPE(self));
    void *img, *lab, *ids, *off = NULL;
    size_t cap, n_lab, n_ids, n_off = 0;
    if (memory_of(st, o_img, "images", &img, &cap) < 0 || memory_of(st, o_lab, "labels", &lab, &n_lab) < 0 ||
        memory_of(st, o_ids, "ids", &ids, &n_ids) < 0 ||
        (o_off != Py_None && memory_of(st, o_off, "offsets", &off, &n_off) < 0))
        return NULL;
    size_t b = mx8_engine_next_to_provide(self->e), n = mx8_engine_batch_len(self->e, b);
    if (n_lab < n * 8 || n_ids < n * 8 || (off && n_off < (n + 1) * 8))
        return PyErr_Format(PyExc_ValueError, "provide(): batch %zu of %zu samples needs labels and ids of %zu "
                            "int64 (and %zu offsets)", b, n, n, n + 1);
    PyObject *held = PyTuple_Pack(4, o_img, o_lab, o_ids, o_off); /* what the threads will write into */
    if (!held)
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_engine_provide(self->e, img, cap, lab, ids, off, &err)) {
        Py_DECREF(held);
        return mx8_raise(st, &err);
    }
    Py_XSETREF(self->owners[b % (size_t)self->depth], held);
    Py_RETURN_NONE;
}

static PyObject *Engine_start(EngineObject *self, PyObject *unused) {
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_engine_start(self->e, &err))
        return mx8_raise(mx8_state_from_type(Py_TYPE(self)), &err);
    Py_RETURN_NONE;
}

/* next(timeout_ms=-1) -> None when every queued batch was delivered, False when timeout_ms
 * passed first, else (batch, count, skipped, run, cancelled). Waits in short slices
 * with the GIL released so Ctrl-C still interrupts a long wait. */
static PyObject *Engine_next(EngineObject *self, PyObject *args) {
    int timeout_ms = -1;
    if (!PyArg_ParseTuple(args, "|i:next", &timeout_ms))
        return NULL;
    if (check_open(self) < 0)
        return NULL;
    mx8_state *st = mx8_state_from_type(Py_TYPE(self));
    mx8_batch_info info;
    mx8_error err;
    int has = -1, rc = 0, waited = 0;
    while (has == -1) {
        int slice = timeout_ms >= 0 && timeout_ms - waited < 100 ? timeout_ms - waited : 100;
        mx8_error_clear(&err);
        Py_BEGIN_ALLOW_THREADS
        rc = mx8_engine_next(self->e, slice, &has, &info, &err);
        Py_END_ALLOW_THREADS
        if (rc)
            return mx8_raise(st, &err);
        waited += slice;
        if (has == -1 && PyErr_CheckSignals() < 0)
            return NULL;
        if (has == -1 && timeout_ms >= 0 && waited >= timeout_ms)
            Py_RETURN_FALSE;
    }
    if (!has)
        Py_RETURN_NONE;
    Py_CLEAR(self->owners[info.batch % (size_t)self->depth]);
    if (info.failed) {
        const mx8_manifest *m = ((ManifestObject *)self->manifest)->m;
        return mx8_raise_sample(st, &info.error, m->locations[info.error.location]);
    }
    return Py_BuildValue("(nnnKO)", (Py_ssize_t)info.batch, (Py_ssize_t)info.count, (Py_ssize_t)info.skipped,
                         (unsigned long long)info.run, info.cancelled ? Py_True : Py_False);
}

/* close(wait_ms=1000) -> None when every thread stopped; else (abandoned, sample_id,
 * location, offset, length) naming the sample one abandoned thread is stuck on (offset and
 * length None for a whole-object record, sample_id -1 when unknown). */
static PyObject *Engine_close(EngineObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"wait_ms", NULL};
    int wait_ms = 1000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i:close", kwlist, &wait_ms))
        return NULL;
    mx8_state *st = mx8_state_from_type(Py_TYPE(self));
    mx8_stuck_sample stuck;
    size_t n = engine_close(self, wait_ms, &stuck);
    if (sweep_abandoned(st) < 0)
        return NULL;
    if (!n)
        Py_RETURN_NONE;
    if (PyList_Append(st->abandoned_engines, (PyObject *)self) < 0)
        return NULL;
    if (stuck.sample_id < 0)
        return Py_BuildValue("(nLOOO)", (Py_ssize_t)n, -1LL, Py_None, Py_None, Py_None);
    const char *loc = ((ManifestObject *)self->manifest)->m->locations[stuck.location];
    if (stuck.length == MX8_LENGTH_WHOLE)
        return Py_BuildValue("(nLO&OO)", (Py_ssize_t)n, (long long)stuck.sample_id, PyUnicode_DecodeFSDefault,
                             loc, Py_None, Py_None);
    return Py_BuildValue("(nLO&KK)", (Py_ssize_t)n, (long long)stuck.sample_id, PyUnicode_DecodeFSDefault, loc,
                         (unsigned long long)stuck.offset, (unsigned long long)stuck.length);
}

/* abandoned_engines() -> engines whose stop abandoned threads that have not left yet. */
static PyObject *abandoned_engines(PyObject *module, PyObject *unused) {
    (void)unused;
    mx8_state *st = mx8_get_state(module);
    if (sweep_abandoned(st) < 0)
        return NULL;
    return PyLong_FromSsize_t(PyList_GET_SIZE(st->abandoned_engines));
}

PyMethodDef mx8_engine_functions[] = {
    {"abandoned_engines", abandoned_engines, METH_NOARGS,
     "abandoned_engines() -> number of closed engines still waiting for a stuck worker thread to leave"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Engine_stats(EngineObject *self, PyObject *unused) {
    (void)unused;
    mx8_engine_stats s;
    mx8_engine_get_stats(self->e, &s);
    PyObject *d = Py_BuildValue("{sKsKsKsKsKsdsdsdsdsKsKsK}", "images", s.images, "bytes_read", s.bytes_read,
                                "errors", s.errors, "skipped", s.skipped, "batches", s.batches, "read_s",
                                s.read_ns / 1e9, "decode_s", s.decode_ns / 1e9, "wait_s", s.wait_ns / 1e9,
                                "starve_s", s.starve_ns / 1e9, "reads", s.reads, "s3_requests", s.s3_requests,
                                "s3_retries", s.s3_retries);
    if (!d || !self->has_s3)
        return d;
    const mx8_s3_stats *f = &s.s3_latency;
    PyObject *lat = Py_BuildValue("{sdsdsdsd}", "mean", f->requests ? f->latency_sum_ns / 1e6 / (double)f->requests : 0.0,
                                  "p50", mx8_s3_latency_quantile_ms(f, 0.5), "p99", mx8_s3_latency_quantile_ms(f, 0.99),
                                  "max", f->latency_max_ns / 1e6);
    PyObject *held = PyLong_FromUnsignedLongLong(s.s3_held_max);
    PyObject *conns = PyLong_FromUnsignedLongLong(f->connections);
    if (!lat || !held || !conns || PyDict_SetItemString(d, "s3_latency_ms", lat) < 0 ||
        PyDict_SetItemString(d, "s3_held_max_bytes", held) < 0 || PyDict_SetItemString(d, "s3_connections_opened", conns) < 0)
        Py_CLEAR(d);
    Py_XDECREF(lat);
    Py_XDECREF(held);
    Py_XDECREF(conns);
    return d;
}

/* run_costs(run, n_batches) -> bytes: per batch, int64 (samples, manifest bytes). */
static PyObject *Engine_run_costs(EngineObject *self, PyObject *args) {
    unsigned long long run;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "Kn:run_costs", &run, &n))
        return NULL;
    if (n < 0 || (size_t)n > PY_SSIZE_T_MAX / 16)
        return PyErr_Format(PyExc_ValueError, "bad batch count %zd", n);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 16);
    if (!out)
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_engine_run_costs(self->e, run, (int64_t *)PyBytes_AS_STRING(out), (size_t)n, &err)) {
        Py_DECREF(out);
        return mx8_raise(mx8_state_from_type(Py_TYPE(self)), &err);
    }
    return out;
}

static PyObject *Engine_required_bytes(EngineObject *self, PyObject *arg) {
    Py_ssize_t b = PyLong_AsSsize_t(arg);
    if (b == -1 && PyErr_Occurred())
        return NULL;
    uint64_t n = 0;
    mx8_error err;
    mx8_error_clear(&err);
    if (b < 0 || mx8_engine_required_bytes(self->e, (size_t)b, &n, &err))
        return PyErr_Format(PyExc_ValueError, "bad batch index %zd", b);
    return PyLong_FromUnsignedLongLong(n);
}

/* largest_sample(b) -> (sample_id, location, offset, length) of batch b's longest sample. */
static PyObject *Engine_largest_sample(EngineObject *self, PyObject *arg) {
    size_t b = PyLong_AsSize_t(arg);
    if (b == (size_t)-1 && PyErr_Occurred())
        return NULL;
    int64_t id = mx8_engine_largest_sample(self->e, b);
    if (id < 0)
        return PyErr_Format(PyExc_IndexError, "batch %zu is not queued, or empty", b);
    const mx8_manifest *m = ((ManifestObject *)self->manifest)->m;
    const mx8_record *r = &m->records[id];
    return Py_BuildValue("(LO&KK)", (long long)(r - m->records), PyUnicode_DecodeFSDefault,
                         m->locations[r->location], (unsigned long long)r->offset, (unsigned long long)r->length);
}

static PyObject *Engine_batch_len(EngineObject *self, PyObject *arg) {
    Py_ssize_t b = PyLong_AsSsize_t(arg);
    if (b == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromSize_t(b < 0 ? 0 : mx8_engine_batch_len(self->e, (size_t)b));
}

static PyObject *Engine_get_queued(EngineObject *self, void *c) {
    (void)c;
    return PyLong_FromSize_t(mx8_engine_queued_batches(self->e));
}

static PyObject *Engine_get_next_to_provide(EngineObject *self, void *c) {
    (void)c;
    return PyLong_FromSize_t(mx8_engine_next_to_provide(self->e));
}

static PyMethodDef Engine_methods[] = {
    {"provide", (PyCFunction)Engine_provide, METH_VARARGS,
     "provide(images, labels, ids, offsets=None): the next batch's memory, each a PooledBuffer or a "
     "tensor.__dlpack__() capsule, held until the batch is taken"},
    {"start", (PyCFunction)Engine_start, METH_NOARGS, "start the worker threads"},
    {"submit", (PyCFunction)Engine_submit, METH_VARARGS,
     "submit(order, aug_seed) -> (run, first_batch, n_batches): queue an order of int64 sample ids"},
    {"cancel", (PyCFunction)Engine_cancel, METH_O,
     "cancel(run) -> batches of the run still to come out of next(), marked cancelled"},
    {"next", (PyCFunction)Engine_next, METH_VARARGS,
     "next(timeout_ms=-1): the next batch, (batch, count, skipped, run, cancelled); None when none is "
     "queued; False when timeout_ms passed first"},
    {"close", (PyCFunction)(void (*)(void))Engine_close, METH_VARARGS | METH_KEYWORDS,
     "close(wait_ms=1000): stop the threads; None, or (abandoned, sample_id, location, offset, length)"},
    {"stats", (PyCFunction)Engine_stats, METH_NOARGS, "counters as a dict"},
    {"required_bytes", (PyCFunction)Engine_required_bytes, METH_O, "bytes the image buffer of batch b needs"},
    {"run_costs", (PyCFunction)Engine_run_costs, METH_VARARGS,
     "run_costs(run, n_batches) -> bytes of int64 pairs: each batch's samples and manifest bytes"},
    {"batch_len", (PyCFunction)Engine_batch_len, METH_O, "samples in batch b before skips"},
    {"largest_sample", (PyCFunction)Engine_largest_sample, METH_O,
     "(sample_id, location, offset, length) of batch b's sample with the largest byte length"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Engine_getset[] = {
    {"queued", (getter)Engine_get_queued, NULL, "batch numbers queued in all (the end of the sequence)", NULL},
    {"next_to_provide", (getter)Engine_get_next_to_provide, NULL, "index of the next batch without buffers", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Engine_slots[] = {
    {Py_tp_new, Engine_new},
    {Py_tp_dealloc, Engine_dealloc},
    {Py_tp_methods, Engine_methods},
    {Py_tp_getset, Engine_getset},
    {Py_tp_doc, "Engine(manifest, paths, threads, batch_size, depth, raw=False, skip_errors=False, "
                "transform=None, s3=None): a long-lived native batch engine that reads submitted orders one "
                "after another (internal; use mx8.Dataset)."},
    {0, NULL},
};

static PyType_Spec Engine_spec = {
    .name = "mx8._core.Engine",
    .basicsize = sizeof(EngineObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Engine_slots,
};

int mx8_engine_type_init(PyObject *module, mx8_state *st) {
    st->EngineType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Engine_spec, NULL);
    if (!st->EngineType)
        return -1;
    return PyModule_AddType(module, st->EngineType);
}
