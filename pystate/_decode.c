/* A JSON decoder for the texts pystate reads most: its own.
 *
 * Every update and read decodes a stored text, and orjson spends about as
 * much of its time on its own machinery (a parsed document, then objects
 * built from it) as on the objects. The texts pystate stores are compact
 * JSON written by orjson: objects, arrays, strings, short numbers. This
 * decoder builds the objects in one pass over such a text, and declines
 * (Py_NotImplemented) at the first thing outside that form: a control
 * character or an escape orjson refuses in a string, invalid UTF-8, an
 * integer of more than 18 digits, a float beyond a double's range,
 * nesting deeper than MAX_DEPTH, or anything that is not JSON. orjson then decodes the whole text and
 * decides, so a declined text gives exactly orjson's value or error; what
 * is accepted decodes to the value orjson gives (tests/test_codec.py
 * compares the two).
 */
#include "_decode.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Deeper values are declined: orjson's own limit (1024) then applies. */
#define MAX_DEPTH 128
/* Digits in a number; more are declined (no overflow of a uint64_t). */
#define MAX_DIGITS 18
/* Object keys of at most this many ASCII bytes are kept in a cache, so the
 * keys a store repeats in every value are made once. */
#define KEY_CACHE_LEN 32
#define KEY_CACHE_SLOTS 1024

typedef struct {
    const unsigned char *p, *end;
    PyObject **stack;  /* the values of the containers being built */
    Py_ssize_t top, cap;
    PyObject *local[64];  /* the stack while it fits */
} decoder;

/* A declined text: no exception is set, and the caller returns
 * Py_NotImplemented. */
#define DECLINE NULL

/* Owned by the module: one reference each, kept for the process's life
 * (under the GIL: no other thread touches it). */
static PyObject *key_cache[KEY_CACHE_SLOTS];

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The bytes that end the plain run of a string: the quote, a backslash,
 * control characters (the text's closing NUL among them) and non-ASCII. */
static const unsigned char STOP[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};

static PyObject *value(decoder *d, int depth);

/* Compact texts have no whitespace: one test, and *end is the NUL. */
static inline void skip_ws(decoder *d)
{
    if (*d->p > ' ')
        return;
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t'))
        d->p++;
}

static int grow(decoder *d)
{
    Py_ssize_t cap = d->cap * 2;
    PyObject **s;
    if (d->stack == d->local) {
        s = PyMem_Malloc((size_t)cap * sizeof *s);
        if (s)
            memcpy(s, d->local, (size_t)d->top * sizeof *s);
    } else {
        s = PyMem_Realloc(d->stack, (size_t)cap * sizeof *s);
    }
    if (!s) {
        PyErr_NoMemory();
        return -1;
    }
    d->stack = s;
    d->cap = cap;
    return 0;
}

static inline int push(decoder *d, PyObject *v)
{
    if (d->top == d->cap && grow(d) < 0) {
        Py_DECREF(v);
        return -1;
    }
    d->stack[d->top++] = v;
    return 0;
}

/* Release the values above `base`. */
static void drop(decoder *d, Py_ssize_t base)
{
    while (d->top > base) {
        d->top--;
        Py_DECREF(d->stack[d->top]);
    }
}

/* d->p is on the opening quote. Sets *start, *n and *ascii to the
 * string's bytes and, if hash is not NULL, *hash to their FNV-1a hash;
 * 0, 1 for a string with escapes (nothing set), or -1 to decline. */
static inline int scan_string(decoder *d, const unsigned char **start, Py_ssize_t *n, int *ascii,
                              uint32_t *hash)
{
    const unsigned char *s = d->p + 1, *p = s;
    uint32_t h = 2166136261u;
    int plain = 1;
    for (;;) {
        if (hash)
            while (!STOP[*p]) {
                h = (h ^ *p) * 16777619u;
                p++;
            }
        else
            while (!STOP[*p])
                p++;
        if (*p == '"')
            break;
        if (*p == '\\')
            return 1;  /* escaped_string() takes it */
        if (*p < 0x80 || p >= d->end)
            return -1;  /* a control character, or the text's end */
        plain = 0;
        hash = NULL;  /* non-ASCII keys are not cached */
        p++;
    }
    *start = s;
    *n = p - s;
    *ascii = plain;
    if (hash)
        *hash = h;
    d->p = p + 1;
    return 0;
}

static PyObject *make_string(const unsigned char *s, Py_ssize_t n, int ascii)
{
    if (ascii) {
        PyObject *u = PyUnicode_New(n, 127);
        if (u && n)
            memcpy(PyUnicode_1BYTE_DATA(u), s, (size_t)n);
        return u;
    }
    PyObject *u = PyUnicode_DecodeUTF8((const char *)s, n, NULL);
    if (!u && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();  /* not UTF-8: orjson says how */
        return DECLINE;
    }
    return u;
}

/* Four hex digits at p (before end): 0 and *cp, or -1. */
static int hex4(const unsigned char *p, const unsigned char *end, uint32_t *cp)
{
    if (end - p < 4)
        return -1;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v |= (uint32_t)((c | 0x20) - 'a' + 10);
        else
            return -1;
    }
    *cp = v;
    return 0;
}

/* A string with escapes, d->p on its opening quote: unescaped into a
 * buffer (never longer than the escaped text), then made a str. What
 * orjson refuses (an unknown escape, a lone surrogate) is declined. */
static PyObject *escaped_string(decoder *d)
{
    const unsigned char *p = d->p + 1, *q = p, *end = d->end;
    while (q < end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= end)
        return DECLINE;
    size_t cap = (size_t)(q - p);
    unsigned char local[256];
    unsigned char *buf = cap <= sizeof local ? local : PyMem_Malloc(cap);
    if (!buf)
        return PyErr_NoMemory();
    unsigned char *o = buf, high = 0;
    PyObject *r = DECLINE;
    while (p < q) {
        unsigned char c = *p++;
        if (c != '\\') {
            if (c < 0x20)
                goto done;
            high |= c;
            *o++ = c;
            continue;
        }
        uint32_t cp, low;
        switch (*p++) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            if (hex4(p, q, &cp) < 0)
                goto done;
            p += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                goto done;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (q - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, q, &low) < 0 || low < 0xDC00 ||
                    low > 0xDFFF)
                    goto done;
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            }
            if (cp < 0x80) {
                *o++ = (unsigned char)cp;
            } else {
                high = 0x80;
                if (cp < 0x800) {
                    *o++ = (unsigned char)(0xC0 | (cp >> 6));
                } else {
                    if (cp < 0x10000) {
                        *o++ = (unsigned char)(0xE0 | (cp >> 12));
                    } else {
                        *o++ = (unsigned char)(0xF0 | (cp >> 18));
                        *o++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
                    }
                    *o++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                }
                *o++ = (unsigned char)(0x80 | (cp & 0x3F));
            }
            break;
        default:
            goto done;
        }
    }
    r = make_string(buf, o - buf, high < 0x80);
    if (r)
        d->p = q + 1;
done:
    if (buf != local)
        PyMem_Free(buf);
    return r;
}

static PyObject *string(decoder *d)
{
    const unsigned char *s;
    Py_ssize_t n;
    int ascii;
    int rc = scan_string(d, &s, &n, &ascii, NULL);
    if (rc)
        return rc > 0 ? escaped_string(d) : DECLINE;
    return make_string(s, n, ascii);
}

static PyObject *key(decoder *d)
{
    const unsigned char *s;
    Py_ssize_t n;
    int ascii;
    uint32_t h = 0;
    int rc = scan_string(d, &s, &n, &ascii, &h);
    if (rc)
        return rc > 0 ? escaped_string(d) : DECLINE;  /* (keys with escapes are not cached) */
    if (!ascii || n > KEY_CACHE_LEN)
        return make_string(s, n, ascii);
    PyObject **slot = &key_cache[(h ^ (h >> 16)) & (KEY_CACHE_SLOTS - 1)];
    PyObject *k = *slot;
    if (k && PyUnicode_GET_LENGTH(k) == n && memcmp(PyUnicode_1BYTE_DATA(k), s, (size_t)n) == 0) {
        Py_INCREF(k);
        return k;
    }
    k = make_string(s, n, 1);
    if (!k)
        return NULL;
    /* Hashed once here: every dict it goes into reads the cached hash. */
    if (PyObject_Hash(k) == -1) {
        Py_DECREF(k);
        return NULL;
    }
    Py_INCREF(k);
    Py_XSETREF(*slot, k);
    return k;
}

/* A float's text that the fast path does not take, read by CPython's
 * correctly rounded strtod (what orjson's reader gives too); an infinity
 * (orjson refuses it) or a text too long to copy is declined. */
static PyObject *slow_float(const unsigned char *s, const unsigned char *p)
{
    char buf[64];
    size_t n = (size_t)(p - s);
    if (n >= sizeof buf)
        return DECLINE;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *stop;
    double x = PyOS_string_to_double(buf, &stop, NULL);
    if (x == -1.0 && PyErr_Occurred())
        return NULL;
    if (stop != buf + n || !isfinite(x))
        return DECLINE;
    return PyFloat_FromDouble(x);
}

static PyObject *number(decoder *d)
{
    const unsigned char *s = d->p, *p = s, *end = d->end;
    int neg = 0, digits = 0, frac = 0, is_float = 0;
    uint64_t m = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (p == end || *p < '0' || *p > '9')
        return DECLINE;
    /* Digits past MAX_DIGITS are counted, not added: such an integer is
     * left to orjson, such a float read by slow_float(). */
    if (*p == '0') {
        p++;
        digits = 1;
        if (p < end && *p >= '0' && *p <= '9')
            return DECLINE;  /* a leading zero */
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            if (++digits <= MAX_DIGITS)
                m = m * 10 + (uint64_t)(*p - '0');
            p++;
        }
    }
    if (p < end && *p == '.') {
        is_float = 1;
        p++;
        if (p == end || *p < '0' || *p > '9')
            return DECLINE;
        while (p < end && *p >= '0' && *p <= '9') {
            if (++digits <= MAX_DIGITS) {
                m = m * 10 + (uint64_t)(*p - '0');
                frac++;
            }
            p++;
        }
    }
    int exp = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        int eneg = 0;
        is_float = 1;
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        if (p == end || *p < '0' || *p > '9')
            return DECLINE;
        while (p < end && *p >= '0' && *p <= '9') {
            if (exp <= 100000)
                exp = exp * 10 + (*p - '0');
            p++;
        }
        if (eneg)
            exp = -exp;
    }
    if (!is_float) {
        if (digits > MAX_DIGITS)
            return DECLINE;
        d->p = p;
        return PyLong_FromLongLong(neg ? -(long long)m : (long long)m);
    }
    d->p = p;
    /* Both m and 10^|e| are exact doubles, so one multiplication or
     * division rounds correctly (Clinger's fast path). */
    int e = exp - frac;
    if (digits > MAX_DIGITS || m > ((uint64_t)1 << 53) || e < -22 || e > 22)
        return slow_float(s, p);
    double x = e < 0 ? (double)m / POW10[-e] : (double)m * POW10[e];
    return PyFloat_FromDouble(neg ? -x : x);
}

static PyObject *literal(decoder *d, const char *word, size_t n, PyObject *v)
{
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
        return DECLINE;
    d->p += n;
    Py_INCREF(v);
    return v;
}

/* A member's value, onto the stack: 0, or -1 to decline. */
static int member(decoder *d, int depth)
{
    PyObject *v = value(d, depth + 1);
    return v ? push(d, v) : -1;
}

/* After a member: 1 past the container's `closer`, 0 past a comma (and the
 * whitespace after it), -1 to decline. */
static int next(decoder *d, unsigned char closer)
{
    skip_ws(d);
    if (d->p == d->end)
        return -1;
    if (*d->p == closer) {
        d->p++;
        return 1;
    }
    if (*d->p != ',')
        return -1;
    d->p++;
    skip_ws(d);
    return 0;
}

/* Steps over a container's opening bracket; 1 (and past `close`) when the
 * container is empty, so callers build nothing for it. */
static int opens_empty(decoder *d, unsigned char close)
{
    d->p++;
    skip_ws(d);
    if (d->p < d->end && *d->p == close) {
        d->p++;
        return 1;
    }
    return 0;
}

static PyObject *array(decoder *d, int depth)
{
    Py_ssize_t base = d->top;
    if (opens_empty(d, ']'))
        return PyList_New(0);
    int end;
    do {
        if (member(d, depth) < 0 || (end = next(d, ']')) < 0)
            goto fail;
    } while (!end);
    Py_ssize_t n = d->top - base;
    PyObject *list = PyList_New(n);
    if (!list)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyList_SET_ITEM(list, i, d->stack[base + i]);  /* the list takes the references */
    d->top = base;
    return list;
fail:
    drop(d, base);
    return NULL;
}

static int insert(PyObject *dict, PyObject *k, PyObject *v)
{
#if PY_VERSION_HEX < 0x030D0000
    /* Every key is an exact str, hashed already (cached keys) or now. */
    Py_hash_t h = ((PyASCIIObject *)k)->hash;
    if (h == -1 && (h = PyObject_Hash(k)) == -1)
        return -1;
    return _PyDict_SetItem_KnownHash(dict, k, v, h);
#else
    return PyDict_SetItem(dict, k, v);  /* 3.13 made the known-hash call private */
#endif
}

static PyObject *object(decoder *d, int depth)
{
    Py_ssize_t base = d->top;
    if (opens_empty(d, '}'))
        return PyDict_New();
    for (;;) {
        if (d->p == d->end || *d->p != '"')
            goto fail;
        PyObject *k = key(d);
        if (!k || push(d, k) < 0)
            goto fail;
        skip_ws(d);
        if (d->p == d->end || *d->p != ':')
            goto fail;
        d->p++;
        skip_ws(d);
        int end;
        if (member(d, depth) < 0 || (end = next(d, '}')) < 0)
            goto fail;
        if (end)
            break;
    }
#if PY_VERSION_HEX >= 0x030B0000
    /* An empty dict that gets only exact str keys keeps the str-only key
     * table of 3.11 on: a third smaller per entry, and every lookup in it
     * (the ops', the caller's) compares keys without the generic path.
     * Presizing would make the generic kind, for any keys. */
    PyObject *dict = PyDict_New();
#else
    PyObject *dict = _PyDict_NewPresized((d->top - base) / 2);
#endif
    if (!dict)
        goto fail;
    /* In text order: a repeated key keeps its last value, as in orjson. */
    for (Py_ssize_t i = base; i < d->top; i += 2) {
        if (insert(dict, d->stack[i], d->stack[i + 1]) < 0) {
            Py_DECREF(dict);
            goto fail;
        }
    }
    drop(d, base);
    return dict;
fail:
    drop(d, base);
    return NULL;
}

static PyObject *value(decoder *d, int depth)
{
    if (d->p == d->end || depth > MAX_DEPTH)
        return DECLINE;
    switch (*d->p) {
    case '{':
        return object(d, depth);
    case '[':
        return array(d, depth);
    case '"':
        return string(d);
    case 't':
        return literal(d, "true", 4, Py_True);
    case 'f':
        return literal(d, "false", 5, Py_False);
    case 'n':
        return literal(d, "null", 4, Py_None);
    default:
        return number(d);
    }
}

PyObject *ps_json_decode(const char *text, Py_ssize_t n)
{
    if (text[n] != '\0')
        return PyErr_Format(PyExc_SystemError, "ps_json_decode: the text must end in a NUL byte");
    decoder d;
    d.p = (const unsigned char *)text;
    d.end = d.p + n;
    d.stack = d.local;
    d.top = 0;
    d.cap = (Py_ssize_t)(sizeof d.local / sizeof d.local[0]);
    skip_ws(&d);
    PyObject *v = value(&d, 0);
    if (v) {
        skip_ws(&d);
        if (d.p != d.end)
            Py_CLEAR(v);  /* something after the value */
    }
    if (d.stack != d.local)
        PyMem_Free(d.stack);
    if (!v && !PyErr_Occurred()) {
        Py_INCREF(Py_NotImplemented);
        return Py_NotImplemented;
    }
    return v;
}
