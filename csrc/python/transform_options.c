/* The transform options, named once for every binding that takes them: the engine's
 * (mx8/spec.py builds the dict from a ReadSpec) and transform_image's (tests, custom
 * pipelines). A key this parser does not know is refused, so a misspelt option fails loudly
 * instead of falling back to a default; the values are checked by the core
 * (mx8_decode_transform, mx8_engine_new). */
#include "binding.h"

#include <string.h>

static const char *const INT_KEYS[] = {"out_h", "out_w", "crop_mode", "resize_short", "flip", "layout",
                                       "crop_aware", "dct_scaling", NULL};
static const char *const REAL_KEYS[] = {"scale_min", "scale_max", "ratio_min", "ratio_max", NULL};
static const char *const PIXEL_KEYS[] = {"max_pixels", "max_buffered_pixels", NULL};
/* Not transform fields, but allowed beside them: the engine's normalisation (engine_type.c). */
static const char *const OTHER_KEYS[] = {"out_float", "mean", "std", NULL};

static int known(const char *const *keys, const char *k) {
    for (int i = 0; keys[i]; i++)
        if (strcmp(keys[i], k) == 0)
            return 1;
    return 0;
}

int mx8_transform_from_dict(PyObject *d, mx8_transform *t, const char *who) {
    int *ints[] = {&t->out_h, &t->out_w, &t->crop_mode, &t->resize_short, &t->flip, &t->layout,
                   &t->crop_aware, &t->dct_scaling};
    double *reals[] = {&t->scale_min, &t->scale_max, &t->ratio_min, &t->ratio_max};
    uint64_t *pixels[] = {&t->max_pixels, &t->max_buffered_pixels};
    PyObject *key, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(d, &pos, &key, &v)) {
        const char *k = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (!k || !(known(INT_KEYS, k) || known(REAL_KEYS, k) || known(PIXEL_KEYS, k) || known(OTHER_KEYS, k))) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s: unknown transform option %R", who, key);
            return -1;
        }
    }
    for (int i = 0; INT_KEYS[i]; i++)
        if ((v = PyDict_GetItemString(d, INT_KEYS[i])) && (*ints[i] = (int)PyLong_AsLong(v)) == -1 && PyErr_Occurred())
            return -1;
    for (int i = 0; REAL_KEYS[i]; i++)
        if ((v = PyDict_GetItemString(d, REAL_KEYS[i])) && (*reals[i] = PyFloat_AsDouble(v)) == -1.0 && PyErr_Occurred())
            return -1;
    for (int i = 0; PIXEL_KEYS[i]; i++)
        if ((v = PyDict_GetItemString(d, PIXEL_KEYS[i])) &&
            (*pixels[i] = PyLong_AsUnsignedLongLong(v)) == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
    return 0;
}

/* The codes the options use, so Python names them from here instead of repeating them. */
int mx8_transform_constants_init(PyObject *module) {
    PyObject *crop = Py_BuildValue("{sisisi}", "none", MX8_CROP_NONE, "center", MX8_CROP_CENTER, "random",
                                   MX8_CROP_RANDOM);
    PyObject *layout = Py_BuildValue("{sisi}", "NCHW", MX8_LAYOUT_NCHW, "NHWC", MX8_LAYOUT_NHWC);
    if (!crop || !layout || PyModule_AddObjectRef(module, "CROP_MODES", crop) < 0 ||
        PyModule_AddObjectRef(module, "LAYOUTS", layout) < 0) {
        Py_XDECREF(crop);
        Py_XDECREF(layout);
        return -1;
    }
    Py_DECREF(crop);
    Py_DECREF(layout);
    return 0;
}
