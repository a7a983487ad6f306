/*
 * ps_guard.c - ps_guard.h: in-flight counting around a ps_store, and sinks
 * that deliver into malloc'd buffers.
 *
 * Entering and closing follow the store-then-load pattern of Dekker's
 * algorithm, with sequentially consistent atomics: a call adds itself to
 * `busy` and then reads `closing`; close sets `closing` and then reads
 * `busy`. Whichever comes second sees the other, so either the call backs
 * out or close waits for it; no call can be inside the store when it is
 * freed. The common path is one atomic add, one load and one subtract.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "ps_guard.h"

struct psg {
    ps_store *st;
    atomic_int busy;    /* calls inside the store */
    atomic_int closing; /* set once by psg_close */
};

/* ---- sinks -------------------------------------------------------------- */

static void *buf_alloc(void *ctx, size_t n)
{
    psg_buf *b = ctx;
    size_t want = n ? n : 1;
    if (want > b->cap) {
        /* Nothing to keep: free and allocate rather than realloc's copy. */
        free(b->data);
        b->data = malloc(want);
        b->cap = b->data ? want : 0;
        if (!b->data)
            return NULL;
    }
    b->len = n;
    b->filled = 1;
    return b->data;
}

typedef struct inline_ctx {
    psg_inline *in;
    psg_buf *spill;
} inline_ctx;

static void *inline_alloc(void *ctx, size_t n)
{
    inline_ctx *c = ctx;
    c->in->len = n;
    return n <= PSG_INLINE ? c->in->data : buf_alloc(c->spill, n);
}

/* Every call that delivers into a buf starts by marking it empty. */
static inline psg_buf *empty(psg_buf *b)
{
    if (b) {
        b->len = 0;
        b->filled = 0;
    }
    return b;
}

static void *bufs_alloc(void *ctx, size_t n)
{
    psg_bufs *v = ctx;
    if (v->count == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        psg_buf *items = realloc(v->items, cap * sizeof *items);
        if (!items)
            return NULL;
        v->items = items;
        v->cap = cap;
    }
    char *p = malloc(n ? n : 1);
    if (!p)
        return NULL;
    v->items[v->count].data = p;
    v->items[v->count].len = n;
    v->count++;
    return p;
}

void psg_buf_free(psg_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->filled = 0;
}

void psg_bufs_free(psg_bufs *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->count; i++)
        free(v->items[i].data);
    free(v->items);
    v->items = NULL;
    v->count = v->cap = 0;
}

/* ---- lifecycle ---------------------------------------------------------- */

int psg_open(psg **out, const ps_options *opts, ps_report *report)
{
    psg *g = malloc(sizeof *g);
    if (!g)
        return ENOMEM;
    int rc = ps_store_open(&g->st, opts, report);
    if (rc) {
        free(g);
        return rc;
    }
    atomic_init(&g->busy, 0);
    atomic_init(&g->closing, 0);
    *out = g;
    return PS_OK;
}

int psg_close(psg *g)
{
    if (atomic_exchange(&g->closing, 1))
        return PSG_CLOSED;
    /* Calls in flight are store calls: microseconds in memory, one write
     * or sync on disk. Yielding is enough; nothing to sleep on. */
    while (atomic_load(&g->busy))
        sched_yield();
    int rc = ps_store_close(g->st);
    g->st = NULL;
    return rc;
}

void psg_after_fork(psg *g)
{
    atomic_store(&g->busy, 0);
}

void psg_free(psg *g)
{
    if (!g)
        return;
    psg_close(g);
    free(g);
}

static inline int enter(psg *g)
{
    atomic_fetch_add(&g->busy, 1);
    if (atomic_load(&g->closing)) {
        atomic_fetch_sub(&g->busy, 1);
        return 0;
    }
    return 1;
}

static inline void leave(psg *g)
{
    atomic_fetch_sub(&g->busy, 1);
}

/* Return what `call` returns, run inside the guard; PSG_CLOSED if closed. */
#define GUARDED(g, call)            \
    do {                            \
        if (!enter(g))              \
            return PSG_CLOSED;      \
        int rc_ = (call);           \
        leave(g);                   \
        return rc_;                 \
    } while (0)

/* ---- the calls ---------------------------------------------------------- */

int psg_get(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
            psg_buf *value)
{
    ps_sink sink = {buf_alloc, empty(value)};
    GUARDED(g, ps_get(g->st, scope, slen, key, klen, &sink));
}

int psg_get_inline(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
                   psg_inline *in, psg_buf *spill)
{
    inline_ctx c = {in, empty(spill)};
    ps_sink sink = {inline_alloc, &c};
    GUARDED(g, ps_get_seen(g->st, scope, slen, key, klen, &sink, &in->seen));
}

int psg_has(psg *g, const char *scope, size_t slen, const char *key, size_t klen)
{
    GUARDED(g, ps_get(g->st, scope, slen, key, klen, NULL));
}

int psg_put(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
            const char *value, size_t vlen, psg_buf *old, int *existed)
{
    ps_sink sink = {buf_alloc, empty(old)};
    GUARDED(g, ps_put(g->st, scope, slen, key, klen, value, vlen, old ? &sink : NULL,
                      existed));
}

int psg_put_if(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
               const char *value, size_t vlen, const char *expect, size_t elen)
{
    GUARDED(g, ps_put_if(g->st, scope, slen, key, klen, value, vlen, expect, elen));
}

int psg_put_seen(psg *g, uint64_t seen, const char *value, size_t vlen)
{
    GUARDED(g, ps_put_seen(g->st, seen, value, vlen));
}

int psg_del(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
            psg_buf *old)
{
    ps_sink sink = {buf_alloc, empty(old)};
    GUARDED(g, ps_del(g->st, scope, slen, key, klen, old ? &sink : NULL));
}

int psg_list(psg *g, const char *scope, size_t slen, size_t batch, psg_bufs *out)
{
    ps_sink sink = {bufs_alloc, out};
    GUARDED(g, ps_list(g->st, scope, slen, batch, &sink));
}

int psg_items(psg *g, const char *scope, size_t slen, uint32_t *pos, size_t max,
              psg_buf *out, size_t *count)
{
    ps_sink sink = {buf_alloc, empty(out)};
    GUARDED(g, ps_items(g->st, scope, slen, pos, max, &sink, count));
}

int psg_keys(psg *g, const char *scope, size_t slen, psg_buf *out, size_t *count)
{
    ps_sink sink = {buf_alloc, empty(out)};
    GUARDED(g, ps_keys(g->st, scope, slen, &sink, count));
}

int psg_groups(psg *g, psg_buf *out, size_t *count)
{
    ps_sink sink = {buf_alloc, empty(out)};
    GUARDED(g, ps_groups(g->st, &sink, count));
}

int psg_events(psg *g, psg_buf *out, size_t *count)
{
    ps_sink sink = {buf_alloc, empty(out)};
    GUARDED(g, ps_events(g->st, &sink, count));
}

int psg_scope_stats(psg *g, psg_buf *out, size_t *count)
{
    ps_sink sink = {buf_alloc, empty(out)};
    GUARDED(g, ps_scope_stats(g->st, &sink, count));
}

int psg_stats(psg *g, ps_stats *out)
{
    GUARDED(g, (ps_stats_get(g->st, out), PS_OK));
}

int psg_recovery(psg *g, ps_report *out)
{
    GUARDED(g, (ps_recovery_get(g->st, out), PS_OK));
}

int psg_sync(psg *g)
{
    GUARDED(g, ps_sync(g->st));
}

int psg_compact(psg *g, const char *scope, size_t slen)
{
    GUARDED(g, ps_compact(g->st, scope, slen));
}

int psg_check(psg *g, ps_report *report)
{
    GUARDED(g, ps_check(g->st, report));
}
