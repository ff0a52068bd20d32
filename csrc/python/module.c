/* mx8._core: module definition with PEP 489 multi-phase init and per-module state. */
#include "binding.h"

static struct PyModuleDef mx8_module;

mx8_state *mx8_get_state(PyObject *module) { return (mx8_state *)PyModule_GetState(module); }

mx8_state *mx8_state_from_type(PyTypeObject *tp) {
    PyObject *module = PyType_GetModuleByDef(tp, &mx8_module);
    return module ? mx8_get_state(module) : NULL;
}

static int mx8_exec(PyObject *module) {
    mx8_state *st = mx8_get_state(module);
    if (PyModule_AddFunctions(module, mx8_s3_methods) < 0 || PyModule_AddFunctions(module, mx8_epoch_methods) < 0 ||
        PyModule_AddFunctions(module, mx8_manifest_functions) < 0 || mx8_s3_init(module) < 0 ||
        PyModule_AddFunctions(module, mx8_engine_functions) < 0 || mx8_transform_constants_init(module) < 0)
        return -1;
    if (!(st->abandoned_engines = PyList_New(0)))
        return -1;
    if (mx8_errors_init(module, st) < 0 || mx8_manifest_type_init(module, st) < 0 ||
        mx8_engine_type_init(module, st) < 0 || mx8_tar_writer_type_init(module, st) < 0 ||
        mx8_buffer_pool_type_init(module, st) < 0 || mx8_s3_credentials_type_init(module, st) < 0)
        return -1;
    return 0;
}

static int mx8_traverse(PyObject *module, visitproc visit, void *arg) {
    mx8_state *st = mx8_get_state(module);
    Py_VISIT(st->Error);
    Py_VISIT(st->ManifestError);
    Py_VISIT(st->ReadError);
    Py_VISIT(st->RangeError);
    Py_VISIT(st->DecodeError);
    Py_VISIT(st->ImageTooLargeError);
    Py_VISIT(st->ManifestType);
    Py_VISIT(st->EngineType);
    Py_VISIT(st->TarWriterType);
    Py_VISIT(st->BufferPoolType);
    Py_VISIT(st->PooledBufferType);
    Py_VISIT(st->S3CredentialsType);
    Py_VISIT(st->abandoned_engines);
    return 0;
}

static int mx8_clear(PyObject *module) {
    mx8_state *st = mx8_get_state(module);
    Py_CLEAR(st->Error);
    Py_CLEAR(st->ManifestError);
    Py_CLEAR(st->ReadError);
    Py_CLEAR(st->RangeError);
    Py_CLEAR(st->DecodeError);
    Py_CLEAR(st->ImageTooLargeError);
    Py_CLEAR(st->ManifestType);
    Py_CLEAR(st->EngineType);
    Py_CLEAR(st->TarWriterType);
    Py_CLEAR(st->BufferPoolType);
    Py_CLEAR(st->PooledBufferType);
    Py_CLEAR(st->S3CredentialsType);
    Py_CLEAR(st->abandoned_engines);
    return 0;
}

static void mx8_free(void *module) { mx8_clear((PyObject *)module); }

static PyModuleDef_Slot mx8_slots[] = {
    {Py_mod_exec, mx8_exec},
    {0, NULL},
};

static struct PyModuleDef mx8_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mx8._core",
    .m_doc = "mx8's native core: manifest index, tar writer, decode/transform, batch engine.",
    .m_size = sizeof(mx8_state),
    .m_methods = mx8_image_methods,
    .m_slots = mx8_slots,
    .m_traverse = mx8_traverse,
    .m_clear = mx8_clear,
    .m_free = mx8_free,
};

PyMODINIT_FUNC PyInit__core(void) { return PyModuleDef_Init(&mx8_module); }
