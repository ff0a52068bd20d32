/* Module-level functions: single-image decode/transform (tests, custom pipelines). */
#include "binding.h"
#include "image_transform.h"

static const char *format_name(int f) { return f == MX8_FMT_JPEG ? "jpeg" : f == MX8_FMT_PNG ? "png" : "unknown"; }

static PyObject *probe_image(PyObject *module, PyObject *arg) {
    Py_buffer data;
    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    int fmt = 0, w = 0, h = 0;
    mx8_error err;
    mx8_error_clear(&err);
    int rc = mx8_image_probe(data.buf, (size_t)data.len, &fmt, &w, &h, &err);
    PyBuffer_Release(&data);
    if (rc)
        return mx8_raise(mx8_get_state(module), &err);
    return Py_BuildValue("(sii)", format_name(fmt), w, h);
}

static PyObject *decode_image(PyObject *module, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"data", "max_pixels", NULL};
    Py_buffer data;
    unsigned long long max_pixels = 100000000ULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|K:decode_image", kwlist, &data, &max_pixels))
        return NULL;
    mx8_decoder *dec = mx8_decoder_new();
    if (!dec) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    const uint8_t *rgb = NULL;
    int w = 0, h = 0, rc;
    mx8_error err;
    mx8_error_clear(&err);
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_decode_rgb(dec, data.buf, (size_t)data.len, max_pixels, &rgb, &w, &h, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyObject *out = rc ? mx8_raise(mx8_get_state(module), &err)
                       : Py_BuildValue("(iiy#)", w, h, (const char *)rgb, (Py_ssize_t)3 * w * h);
    mx8_decoder_free(dec);
    return out;
}

/* transform_image(data, out_h, out_w, seed=0, **options): one image through the engine's
 * decode + transform, the options named as the engine's (transform_options.c). */
static PyObject *transform_image(PyObject *module, PyObject *args, PyObject *kwds) {
    Py_buffer data;
    /* This low-level helper's starting point: RandomResizedCrop's scale/ratio, but no crop and
     * no flip unless asked, and one pixel limit (max_pixels) for both formats. */
    mx8_transform t = mx8_transform_random_crop(0, 0);
    t.crop_mode = MX8_CROP_NONE;
    t.flip = 0;
    t.max_buffered_pixels = 0;
    unsigned long long seed = 0;
    if (!PyArg_ParseTuple(args, "y*ii|K:transform_image", &data, &t.out_h, &t.out_w, &seed))
        return NULL;
    PyObject *opts = kwds ? PyDict_Copy(kwds) : PyDict_New();
    PyObject *s = opts ? PyDict_GetItemString(opts, "seed") : NULL;
    if (s && ((seed = PyLong_AsUnsignedLongLong(s)) == (unsigned long long)-1 && PyErr_Occurred()))
        Py_CLEAR(opts);
    if (opts && s && PyDict_DelItemString(opts, "seed") < 0)
        Py_CLEAR(opts);
    int bad = !opts || mx8_transform_from_dict(opts, &t, "transform_image") < 0;
    Py_XDECREF(opts);
    if (bad) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (t.out_h <= 0 || t.out_w <= 0 || t.out_h > 65535 || t.out_w > 65535) {
        PyBuffer_Release(&data);
        return PyErr_Format(PyExc_ValueError, "output size %dx%d is out of range", t.out_h, t.out_w);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)3 * t.out_h * t.out_w);
    mx8_decoder *dec = out ? mx8_decoder_new() : NULL;
    if (!dec) {
        PyBuffer_Release(&data);
        Py_XDECREF(out);
        return out ? PyErr_NoMemory() : NULL;
    }
    mx8_error err;
    mx8_error_clear(&err);
    int rc;
    uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    rc = mx8_decode_transform(dec, data.buf, (size_t)data.len, &t, seed, dst, &err);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    mx8_decoder_free(dec);
    if (rc) {
        Py_DECREF(out);
        return mx8_raise(mx8_get_state(module), &err);
    }
    return out;
}

PyMethodDef mx8_image_methods[] = {
    {"probe_image", (PyCFunction)probe_image, METH_O, "probe_image(data) -> (format, width, height)"},
    {"decode_image", (PyCFunction)(void (*)(void))decode_image, METH_VARARGS | METH_KEYWORDS,
     "decode_image(data, max_pixels=100_000_000) -> (width, height, rgb bytes)"},
    {"transform_image", (PyCFunction)(void (*)(void))transform_image, METH_VARARGS | METH_KEYWORDS,
     "transform_image(data, out_h, out_w, seed=0, **options) -> uint8 bytes of 3*out_h*out_w (options as the "
     "engine's: crop_mode, resize_short, scale_min, ..., layout, max_pixels, crop_aware, dct_scaling)"},
    {NULL, NULL, 0, NULL},
};
