/* The JSON decoder of pystate's hot reads (pystate/_decode.c), for the
 * codec (pystate/_codec.py) on CPython. */
#ifndef PYSTATE_DECODE_H
#define PYSTATE_DECODE_H

#include <Python.h>

/* The value of the JSON text text[0..n), when the text is in the common
 * form this decoder takes on (see _decode.c); otherwise Py_NotImplemented,
 * and the caller decodes the text with orjson, which decides.
 * Returns a new reference; NULL, with an exception set, only on MemoryError.
 * `text` is the caller's, read during the call only; text[n] must be 0 (as
 * in a bytes object): scans stop there instead of testing for the end. */
PyObject *ps_json_decode(const char *text, Py_ssize_t n);

#endif
