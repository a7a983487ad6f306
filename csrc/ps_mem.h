/*
 * ps_mem.h - the store's view of its allocator.
 *
 * Every allocation in the core goes through these three calls so that
 * (1) a ps_allocator given at open time is honoured everywhere, which lets
 * the unit tests fail any single allocation on purpose, and (2) the store
 * knows exactly how many bytes it holds (ps_stats.heap_bytes). Callers pass
 * the size of the block they free; every structure in the core knows it.
 */
#ifndef PS_MEM_H
#define PS_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "pystate.h"

typedef struct ps_mem {
    const ps_allocator *a; /* never NULL once initialised */
    uint64_t bytes;        /* currently held */
} ps_mem;

/* The allocator used when ps_options gives none. */
extern const ps_allocator ps_libc_allocator;

static inline void *ps_mem_alloc(ps_mem *m, size_t n)
{
    void *p = m->a->malloc(m->a->ctx, n ? n : 1);
    if (p)
        m->bytes += n;
    return p;
}

static inline void *ps_mem_realloc(ps_mem *m, void *p, size_t old, size_t n)
{
    void *q = m->a->realloc(m->a->ctx, p, n ? n : 1);
    if (q)
        m->bytes = m->bytes - old + n;
    return q;
}

static inline void ps_mem_free(ps_mem *m, void *p, size_t n)
{
    if (!p)
        return;
    m->a->free(m->a->ctx, p);
    m->bytes -= n;
}

#endif /* PS_MEM_H */
