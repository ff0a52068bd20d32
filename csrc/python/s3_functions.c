/* Module-level S3 functions: request signing (tests compare it with botocore; Python code
 * that needs a one-off signed URL can use it too). */
#include "binding.h"
#include "s3_sign.h"

/* Reads a sequence of (str, str) pairs into out[0..n). The UTF-8 pointers stay valid while
 * *keep (a list holding the pairs) is alive. */
static int read_pairs(PyObject *seq_in, const char *what, const char ***out, size_t *n, PyObject **keep) {
    *out = NULL;
    *n = 0;
    *keep = PySequence_List(seq_in);
    if (!*keep)
        return -1;
    Py_ssize_t len = PyList_GET_SIZE(*keep);
    const char **v = PyMem_Calloc((size_t)len * 2 + 1, sizeof *v);
    if (!v) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *pair = PyList_GET_ITEM(*keep, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_Format(PyExc_TypeError, "s3_sign: %s must hold (str, str) pairs; item %zd is %R", what, i, pair);
            PyMem_Free(v);
            return -1;
        }
        v[2 * i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 0));
        v[2 * i + 1] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 1));
        if (!v[2 * i] || !v[2 * i + 1]) {
            PyMem_Free(v);
            return -1;
        }
    }
    *out = v;
    *n = (size_t)len;
    return 0;
}

static PyObject *signed_to_python(const mx8_s3_signed *s) {
    PyObject *lines = PyList_New((Py_ssize_t)s->n_headers);
    if (!lines)
        return NULL;
    for (size_t i = 0; i < s->n_headers; i++) {
        PyObject *l = PyUnicode_FromString(s->headers[i]);
        if (!l) {
            Py_DECREF(lines);
            return NULL;
        }
        PyList_SET_ITEM(lines, (Py_ssize_t)i, l);
    }
    PyObject *out = Py_BuildValue("(sN)", s->url, lines);
    return out;
}

PyDoc_STRVAR(s3_sign_doc,
             "s3_sign(method, endpoint, region, bucket, key, *, query=None, headers=None,\n"
             "        payload_sha256='UNSIGNED-PAYLOAD', access_key, secret_key, session_token=None,\n"
             "        amz_date, virtual_host=False) -> (url, [header lines])\n\n"
             "Signs an S3 request with SigV4. query: (key, value) pairs, raw; headers: a dict of extra\n"
             "headers to sign (e.g. range). Send the returned URL unchanged and every header line.");

static PyObject *s3_sign(PyObject *module, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"method", "endpoint", "region", "bucket", "key", "query", "headers",
                             "payload_sha256", "access_key", "secret_key", "session_token", "amz_date",
                             "virtual_host", NULL};
    mx8_s3_request r;
    memset(&r, 0, sizeof r);
    PyObject *query = Py_None, *headers = Py_None;
    r.payload_sha256 = MX8_S3_UNSIGNED_PAYLOAD;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sssss|$OOsssz" "sp:s3_sign", kwlist, &r.method, &r.endpoint,
                                     &r.region, &r.bucket, &r.key, &query, &headers, &r.payload_sha256,
                                     &r.access_key, &r.secret_key, &r.session_token, &r.amz_date, &r.virtual_host))
        return NULL;
    if (!r.access_key || !r.secret_key || !r.amz_date) {
        PyErr_SetString(PyExc_TypeError, "s3_sign: access_key, secret_key and amz_date are required");
        return NULL;
    }
    PyObject *qkeep = NULL, *hkeep = NULL, *hitems = NULL, *out = NULL;
    const char **qv = NULL, **hv = NULL;
    size_t nq = 0, nh = 0;
    if (query != Py_None && read_pairs(query, "query", &qv, &nq, &qkeep) < 0)
        goto done;
    if (headers != Py_None) {
        hitems = PyMapping_Items(headers);
        if (!hitems || read_pairs(hitems, "headers", &hv, &nh, &hkeep) < 0)
            goto done;
    }
    /* The pair arrays are laid out as the structs' (name, value) fields. */
    mx8_s3_param *params = PyMem_Calloc(nq + 1, sizeof *params);
    mx8_s3_header *hdrs = PyMem_Calloc(nh + 1, sizeof *hdrs);
    if (!params || !hdrs) {
        PyErr_NoMemory();
    } else {
        for (size_t i = 0; i < nq; i++)
            params[i] = (mx8_s3_param){qv[2 * i], qv[2 * i + 1]};
        for (size_t i = 0; i < nh; i++)
            hdrs[i] = (mx8_s3_header){hv[2 * i], hv[2 * i + 1]};
        r.query = params;
        r.n_query = nq;
        r.headers = hdrs;
        r.n_headers = nh;
        mx8_s3_signed s;
        mx8_error err;
        mx8_error_clear(&err);
        if (mx8_s3_sign(&r, &s, &err))
            mx8_raise(mx8_get_state(module), &err);
        else
            out = signed_to_python(&s);
        mx8_s3_signed_free(&s);
    }
    PyMem_Free(params);
    PyMem_Free(hdrs);
done:
    PyMem_Free(qv);
    PyMem_Free(hv);
    Py_XDECREF(qkeep);
    Py_XDECREF(hkeep);
    Py_XDECREF(hitems);
    return out;
}

PyMethodDef mx8_s3_methods[] = {
    {"s3_sign", (PyCFunction)(void (*)(void))s3_sign, METH_VARARGS | METH_KEYWORDS, s3_sign_doc},
    {NULL, NULL, 0, NULL},
};
