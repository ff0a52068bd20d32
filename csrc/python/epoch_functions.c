/* Module-level functions on epoch orders (csrc/core/epoch_order.h, epoch_deal.h): pack's
 * record order, a consumer's share of an epoch and an epoch's progress. A progress crosses
 * as (top, bytes of uint64 (lo, hi, used) triples). */
#include "binding.h"
#include "epoch_deal.h"
#include "epoch_order.h"

static PyObject *epoch_order(PyObject *module, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"n", "seed", "shuffle", "block", "window", NULL};
    unsigned long long n, seed, block = 64, window = 16;
    int shuffle;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKp|KK:epoch_order", kwlist, &n, &seed, &shuffle, &block,
                                     &window))
        return NULL;
    if (n > (unsigned long long)(PY_SSIZE_T_MAX / 8))
        return PyErr_NoMemory();
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * 8));
    if (!out)
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    int64_t *dst = (int64_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_epoch_order(n, seed, shuffle, block, window, dst, &err);
    Py_END_ALLOW_THREADS
    if (rc) {
        Py_DECREF(out);
        return mx8_raise(mx8_get_state(module), &err);
    }
    return out;
}

/* The deal's arguments common to both functions: the epoch, its progress and the world.
 * s->done.pieces is a malloc'd copy of the progress (free it). */
static int parse_deal(PyObject *args, Py_ssize_t first, mx8_deal_spec *s) {
    Py_buffer view, *pieces = &view;
    unsigned long long n, seed, block, piece, top, world, batch;
    int shuffle, drop_last;
    PyObject *rest = PyTuple_GetSlice(args, 0, first);
    if (!rest)
        return -1;
    int ok = PyArg_ParseTuple(rest, "KKpKKKy*KKp:epoch deal", &n, &seed, &shuffle, &block, &piece, &top, pieces,
                              &world, &batch, &drop_last);
    Py_DECREF(rest);
    if (!ok)
        return -1;
    if (pieces->len % (Py_ssize_t)sizeof(mx8_piece)) {
        PyBuffer_Release(pieces);
        PyErr_Format(PyExc_ValueError, "progress pieces: %zd bytes is not a whole number of (lo, hi, used) triples",
                     pieces->len);
        return -1;
    }
    /* A private copy: the C reads the pieces again after the GIL is released, when another
     * thread could change a bytearray; and a memoryview slice may be misaligned. */
    size_t n_pieces = (size_t)pieces->len / sizeof(mx8_piece);
    mx8_piece *copy = malloc((n_pieces ? n_pieces : 1) * sizeof *copy);
    if (!copy) {
        PyBuffer_Release(pieces);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, pieces->buf, n_pieces * sizeof *copy);
    PyBuffer_Release(pieces);
    memset(s, 0, sizeof *s);
    s->n = n, s->seed = seed, s->shuffle = shuffle, s->block = block, s->piece = piece;
    s->done = (mx8_progress){copy, n_pieces, top};
    s->world = world, s->batch = batch, s->drop_last = drop_last;
    return 0;
}

/* epoch_share(n, seed, shuffle, block, piece, top, pieces, world, batch, drop_last, rank,
 * worker, workers) -> (bytes of int64 ids, bytes of uint64 cuts, per_rank, padded, dropped) */
static PyObject *epoch_share(PyObject *module, PyObject *args) {
    mx8_deal_spec s;
    unsigned long long rank, worker, workers;
    PyObject *tail = PyTuple_GetSlice(args, 10, PY_SSIZE_T_MAX);
    int ok = tail && PyArg_ParseTuple(tail, "KKK:epoch_share (rank, worker, workers)", &rank, &worker, &workers);
    Py_XDECREF(tail);
    if (!ok || parse_deal(args, 10, &s) < 0)
        return NULL;
    mx8_share sh;
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_deal_share(&s, rank, worker, workers, &sh, &err);
    Py_END_ALLOW_THREADS
    free((void *)s.done.pieces);
    if (rc)
        return mx8_raise(mx8_get_state(module), &err);
    PyObject *out = Py_BuildValue("(y#y#KKK)", (const char *)sh.ids, (Py_ssize_t)(sh.count * 8), (const char *)sh.cuts,
                                  (Py_ssize_t)(sh.n_cuts * 8), (unsigned long long)sh.per_rank,
                                  (unsigned long long)sh.padded, (unsigned long long)sh.dropped);
    free(sh.ids);
    free(sh.cuts);
    return out;
}

/* epoch_after(n, seed, shuffle, block, piece, top, pieces, world, batch, drop_last, read)
 * -> (top, bytes of pieces, position): the progress once every rank read `read` samples. */
static PyObject *epoch_after(PyObject *module, PyObject *args) {
    mx8_deal_spec s;
    unsigned long long read;
    PyObject *tail = PyTuple_GetSlice(args, 10, PY_SSIZE_T_MAX);
    int ok = tail && PyArg_ParseTuple(tail, "K:epoch_after (read)", &read);
    Py_XDECREF(tail);
    if (!ok || parse_deal(args, 10, &s) < 0)
        return NULL;
    mx8_progress_out p;
    mx8_error err;
    mx8_error_clear(&err);
    int rc = mx8_deal_after(&s, read, &p, &err);
    free((void *)s.done.pieces);
    if (rc)
        return mx8_raise(mx8_get_state(module), &err);
    PyObject *out = Py_BuildValue("(Ky#K)", (unsigned long long)p.top, (const char *)p.pieces,
                                  (Py_ssize_t)(p.n_pieces * sizeof *p.pieces), (unsigned long long)p.position);
    free(p.pieces);
    return out;
}

PyMethodDef mx8_epoch_methods[] = {
    {"epoch_order", (PyCFunction)(void (*)(void))epoch_order, METH_VARARGS | METH_KEYWORDS,
     "epoch_order(n, seed, shuffle, block=64, window=16) -> bytes of n int64 sample ids"},
    {"epoch_share", (PyCFunction)epoch_share, METH_VARARGS,
     "epoch_share(n, seed, shuffle, block, piece, top, pieces, world, batch, drop_last, rank, worker, workers) "
     "-> (ids, cuts, per_rank, padded, dropped)"},
    {"epoch_after", (PyCFunction)epoch_after, METH_VARARGS,
     "epoch_after(n, seed, shuffle, block, piece, top, pieces, world, batch, drop_last, read) "
     "-> (top, pieces, position)"},
    {NULL, NULL, 0, NULL},
};
