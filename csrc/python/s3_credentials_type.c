/* mx8._core.S3Credentials: keys that S3 clients and engines share and that Python may
 * replace while they run (mx8/s3creds.py pushes each refresh of temporary credentials with
 * set()). Wraps the core's reference-counted mx8_s3_credentials; the secret is never readable
 * back from Python. */
#include "binding.h"
#include "s3_credentials.h"

typedef struct {
    PyObject_HEAD
    mx8_s3_credentials *c;
} S3CredentialsObject;

static PyObject *S3Credentials_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"access_key", "secret_key", "session_token", "refreshable", NULL};
    const char *ak, *sk, *tok = NULL;
    int refreshable = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ss|z$p:S3Credentials", kwlist, &ak, &sk, &tok, &refreshable))
        return NULL;
    S3CredentialsObject *self = (S3CredentialsObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    if (!(self->c = mx8_s3_credentials_new(ak, sk, tok, &err))) {
        Py_DECREF(self);
        return mx8_raise(mx8_state_from_type(type), &err);
    }
    mx8_s3_credentials_set_refreshable(self->c, refreshable);
    return (PyObject *)self;
}

static void S3Credentials_dealloc(S3CredentialsObject *self) {
    PyTypeObject *tp = Py_TYPE(self);
    mx8_s3_credentials_unref(self->c); /* clients and engines keep their own references */
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *S3Credentials_set(S3CredentialsObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"access_key", "secret_key", "session_token", NULL};
    const char *ak, *sk, *tok = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ss|z:set", kwlist, &ak, &sk, &tok))
        return NULL;
    mx8_error err;
    mx8_error_clear(&err);
    if (mx8_s3_credentials_set(self->c, ak, sk, tok, &err))
        return mx8_raise(mx8_state_from_type(Py_TYPE(self)), &err);
    Py_RETURN_NONE;
}

static PyObject *S3Credentials_get_generation(S3CredentialsObject *self, void *c) {
    (void)c;
    return PyLong_FromUnsignedLongLong(mx8_s3_credentials_generation(self->c));
}

static PyObject *S3Credentials_repr(S3CredentialsObject *self) {
    return PyUnicode_FromFormat("<mx8._core.S3Credentials generation %llu (keys not shown)>",
                                (unsigned long long)mx8_s3_credentials_generation(self->c));
}

mx8_s3_credentials *mx8_s3_credentials_of(PyObject *obj) {
    mx8_state *st = mx8_state_from_type(Py_TYPE(obj));
    if (!st || !PyObject_TypeCheck(obj, st->S3CredentialsType)) {
        PyErr_Format(PyExc_TypeError, "credentials must be mx8._core.S3Credentials, not %s", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return ((S3CredentialsObject *)obj)->c;
}

static PyMethodDef S3Credentials_methods[] = {
    {"set", (PyCFunction)(void (*)(void))S3Credentials_set, METH_VARARGS | METH_KEYWORDS,
     "set(access_key, secret_key, session_token=None): replace the keys; later requests sign with them"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef S3Credentials_getset[] = {
    {"generation", (getter)S3Credentials_get_generation, NULL, "how many times keys were set (1 at first)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot S3Credentials_slots[] = {
    {Py_tp_new, S3Credentials_new},
    {Py_tp_dealloc, S3Credentials_dealloc},
    {Py_tp_methods, S3Credentials_methods},
    {Py_tp_getset, S3Credentials_getset},
    {Py_tp_repr, S3Credentials_repr},
    {Py_tp_doc, "S3Credentials(access_key, secret_key, session_token=None, *, refreshable=False): keys shared "
                "by S3 clients and engines, replaceable with set() while they run; refreshable: requests refused "
                "for their keys are retried, re-signed (internal; see mx8/s3creds.py)."},
    {0, NULL},
};

static PyType_Spec S3Credentials_spec = {
    .name = "mx8._core.S3Credentials",
    .basicsize = sizeof(S3CredentialsObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = S3Credentials_slots,
};

int mx8_s3_credentials_type_init(PyObject *module, mx8_state *st) {
    st->S3CredentialsType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &S3Credentials_spec, NULL);
    if (!st->S3CredentialsType)
        return -1;
    return PyModule_AddType(module, st->S3CredentialsType);
}
