/*
 * harness.h - a minimal unit-test harness for the C core, plus an
 * allocator that counts blocks and can be told to fail.
 *
 * TEST(name) { ... } defines a test; CHECK(cond) records a failure and
 * continues; REQUIRE(cond) stops the test. main() comes from RUN_TESTS().
 */
#ifndef PS_TEST_HARNESS_H
#define PS_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pystate.h"

typedef void (*test_fn)(void);

struct test_case {
    const char *name;
    test_fn fn;
};

#define MAX_TESTS 128
static struct test_case tests[MAX_TESTS];
static int n_tests;
static int failures;
static const char *current_test;

#define TEST(fn_)                                                         \
    static void fn_(void);                                                \
    __attribute__((constructor)) static void register_##fn_(void)         \
    {                                                                     \
        tests[n_tests].name = #fn_;                                       \
        tests[n_tests++].fn = fn_;                                        \
    }                                                                     \
    static void fn_(void)

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__,    \
                    __LINE__, current_test, #cond);                       \
            failures++;                                                   \
        }                                                                 \
    } while (0)

#define REQUIRE(cond)                                                     \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: %s: REQUIRE(%s) failed\n", __FILE__,  \
                    __LINE__, current_test, #cond);                       \
            failures++;                                                   \
            return;                                                       \
        }                                                                 \
    } while (0)

#define CHECK_RC(expr, want)                                              \
    do {                                                                  \
        int rc_ = (expr);                                                 \
        if (rc_ != (want)) {                                              \
            fprintf(stderr, "%s:%d: %s: %s returned %d (%s), want %d\n",  \
                    __FILE__, __LINE__, current_test, #expr, rc_,         \
                    ps_strerror(rc_), (int)(want));                       \
            failures++;                                                   \
        }                                                                 \
    } while (0)

#define RUN_TESTS()                                                       \
    int main(void)                                                        \
    {                                                                     \
        for (int i = 0; i < n_tests; i++) {                               \
            int before = failures;                                        \
            current_test = tests[i].name;                                 \
            tests[i].fn();                                                \
            printf("%s %s\n", failures == before ? "ok  " : "FAIL",       \
                   tests[i].name);                                        \
        }                                                                 \
        printf("%d tests, %d failures\n", n_tests, failures);             \
        return failures ? 1 : 0;                                          \
    }

/* ---- counting, failing allocator ----------------------------------------- */

typedef struct test_alloc {
    long live;       /* blocks currently allocated */
    long calls;      /* malloc + realloc calls so far */
    long fail_at;    /* fail the call with this number (1-based); 0: never */
} test_alloc;

static int ta_should_fail(test_alloc *t)
{
    return ++t->calls == t->fail_at;
}

static void *ta_malloc(void *ctx, size_t n)
{
    test_alloc *t = ctx;
    if (ta_should_fail(t))
        return NULL;
    void *p = malloc(n);
    if (p)
        t->live++;
    return p;
}

static void *ta_realloc(void *ctx, void *p, size_t n)
{
    test_alloc *t = ctx;
    if (ta_should_fail(t))
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        t->live++;
    return q;
}

static void ta_free(void *ctx, void *p)
{
    test_alloc *t = ctx;
    if (p)
        t->live--;
    free(p);
}

static inline ps_allocator ta_allocator(test_alloc *t)
{
    ps_allocator a = {ta_malloc, ta_realloc, ta_free, t};
    return a;
}

/* ---- sinks ------------------------------------------------------------------ */

typedef struct buf_sink {
    char *data;
    size_t len;
    int calls;
    int refuse; /* return NULL */
} buf_sink;

static void *buf_alloc(void *ctx, size_t n)
{
    buf_sink *b = ctx;
    b->calls++;
    if (b->refuse)
        return NULL;
    free(b->data);
    b->data = malloc(n + 1);
    b->len = n;
    if (b->data)
        b->data[n] = 0;
    return b->data;
}

static inline ps_sink sink_of(buf_sink *b)
{
    ps_sink s = {buf_alloc, b};
    return s;
}

static inline void buf_reset(buf_sink *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* String helpers: a NUL-terminated literal as (pointer, length). */
#define S(lit) (lit), (sizeof(lit) - 1)

#endif /* PS_TEST_HARNESS_H */
