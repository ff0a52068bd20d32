/* The CPython binding of mx8's C core: the only code that includes Python.h.
 *
 * Ownership: each type below wraps one core object and owns it; the module state owns the
 * exception types. Worker threads never touch Python objects: the GIL is released around
 * all core work and errors cross back as mx8_error / mx8_sample_error values. */
#ifndef MX8_BINDING_H
#define MX8_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "engine.h"
#include "manifest.h"
#include "mx8_error.h"

typedef struct {
    PyObject *Error;               /* mx8.Error, root of the hierarchy */
    PyObject *ManifestError;       /* (Error, ValueError): malformed manifest/labels */
    PyObject *ReadError;           /* (Error, OSError): cannot open/read a location */
    PyObject *RangeError;          /* (ReadError): byte range past the end of its object */
    PyObject *DecodeError;         /* (Error, ValueError): corrupt/unsupported image */
    PyObject *ImageTooLargeError;  /* (DecodeError): above the pixel limit */
    PyTypeObject *ManifestType;
    PyTypeObject *EngineType;
    PyTypeObject *TarWriterType;
    PyTypeObject *BufferPoolType;
    PyTypeObject *PooledBufferType;
    PyTypeObject *S3CredentialsType;
    PyObject *abandoned_engines;   /* list: closed engines whose stuck threads have not left */
} mx8_state;

mx8_state *mx8_get_state(PyObject *module);
mx8_state *mx8_state_from_type(PyTypeObject *tp);

/* errors.c: sets a Python exception for a core error; returns NULL for `return mx8_raise(...)`. */
PyObject *mx8_raise(mx8_state *st, const mx8_error *err);
/* errors.c: raises for a failed sample, naming sample id, location and byte range. */
PyObject *mx8_raise_sample(mx8_state *st, const mx8_sample_error *se, const char *location);

int mx8_errors_init(PyObject *module, mx8_state *st);

/* manifest_type.c */
typedef struct {
    PyObject_HEAD
    mx8_manifest *m;
} ManifestObject;
int mx8_manifest_type_init(PyObject *module, mx8_state *st);

/* engine_type.c: the Engine type, and abandoned_engines() */
int mx8_engine_type_init(PyObject *module, mx8_state *st);
extern PyMethodDef mx8_engine_functions[];

/* tar_writer_type.c */
int mx8_tar_writer_type_init(PyObject *module, mx8_state *st);

/* buffer_pool_type.c */
int mx8_buffer_pool_type_init(PyObject *module, mx8_state *st);

/* image_functions.c: module-level functions (probe/decode/transform) */
extern PyMethodDef mx8_image_methods[];
/* manifest_type.c: build_index, open_index (the binary index of a manifest) */
extern PyMethodDef mx8_manifest_functions[];
/* epoch_functions.c: epoch orders, a consumer's share, an epoch's progress */
extern PyMethodDef mx8_epoch_methods[];
/* s3_functions.c: module-level S3 functions (request signing, ...) */
extern PyMethodDef mx8_s3_methods[];
/* s3_credentials_type.c: the S3Credentials type; the core object of one (NULL + TypeError) */
int mx8_s3_credentials_type_init(PyObject *module, mx8_state *st);
struct mx8_s3_credentials *mx8_s3_credentials_of(PyObject *obj);

/* s3_client_type.c: curl_global_init (once, at import) and the S3Client type */
int mx8_s3_init(PyObject *module);

/* transform_options.c: a transform options dict into t (fields absent from it keep their
 * value; an unknown key: TypeError naming `who`), and the CROP_MODES / LAYOUTS codes. */
int mx8_transform_from_dict(PyObject *d, mx8_transform *t, const char *who);
int mx8_transform_constants_init(PyObject *module);

/* buffer_pool_type.c: a PooledBuffer's memory (-1 + exception when o is not one, or was
 * exported). */
int mx8_pooled_buffer_memory(PyObject *o, void **ptr, size_t *nbytes);

#endif
