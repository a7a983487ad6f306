/*
 * ps_arena.c - chunked bump allocator for table items (see ps_arena.h).
 *
 * Chunk sizes start small and double up to PS_CHUNK_MAX, so a scope with a
 * handful of keys costs a few hundred bytes while a big scope allocates in
 * 64 KiB steps. An item bigger than the next chunk gets a chunk of its own.
 */
#include "ps_arena.h"

#include <errno.h>
#include <string.h>

#define PS_CHUNK_MIN 256
#define PS_CHUNK_MAX (64 * 1024)

struct ps_chunk {
    size_t used; /* bytes handed out */
    size_t cap;
    size_t live; /* bytes handed out and not released */
    unsigned char data[];
};

void ps_arena_init(ps_arena *a)
{
    memset(a, 0, sizeof *a);
    a->next_cap = PS_CHUNK_MIN;
}

static ps_chunk *chunk_new(ps_mem *m, size_t cap)
{
    ps_chunk *c = ps_mem_alloc(m, sizeof *c + cap);
    if (!c)
        return NULL;
    c->used = 0;
    c->cap = cap;
    c->live = 0;
    return c;
}

static void chunk_free(ps_mem *m, ps_chunk *c)
{
    ps_mem_free(m, c, sizeof *c + c->cap);
}

/* Index of the chunk holding p: the last one starting at or before it. */
static uint32_t chunk_index(const ps_arena *a, const void *p)
{
    uint32_t lo = 0, hi = a->n_chunks; /* answer in [lo, hi) */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if ((const void *)a->chunks[mid] <= p)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Add c to the sorted list. Returns 0 or ENOMEM (list unchanged). */
static int chunk_add(ps_arena *a, ps_mem *m, ps_chunk *c)
{
    if (a->n_chunks == a->cap_chunks) {
        uint32_t cap = a->cap_chunks ? a->cap_chunks * 2 : 4;
        ps_chunk **v = ps_mem_realloc(m, a->chunks, (size_t)a->cap_chunks * sizeof *v,
                                      (size_t)cap * sizeof *v);
        if (!v)
            return ENOMEM;
        a->chunks = v;
        a->cap_chunks = cap;
    }
    uint32_t i = a->n_chunks;
    while (i > 0 && (const void *)a->chunks[i - 1] > (const void *)c)
        i--;
    memmove(a->chunks + i + 1, a->chunks + i, (size_t)(a->n_chunks - i) * sizeof *a->chunks);
    a->chunks[i] = c;
    a->n_chunks++;
    return 0;
}

/* Take the chunk at index i out of the list and free it. */
static void chunk_remove(ps_arena *a, ps_mem *m, uint32_t i)
{
    ps_chunk *c = a->chunks[i];
    memmove(a->chunks + i, a->chunks + i + 1, (size_t)(a->n_chunks - i - 1) * sizeof *a->chunks);
    a->n_chunks--;
    chunk_free(m, c);
}

void *ps_arena_alloc(ps_arena *a, ps_mem *m, size_t n)
{
    ps_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > a->next_cap ? n : a->next_cap;
        c = chunk_new(m, cap);
        if (!c)
            return NULL;
        if (chunk_add(a, m, c) != 0) {
            chunk_free(m, c);
            return NULL;
        }
        /* Grow even when this item outgrew next_cap: otherwise a scope of
         * values bigger than the first chunk would get a chunk per item. */
        if (a->next_cap < PS_CHUNK_MAX)
            a->next_cap *= 2;
        /* The old head keeps its unused tail; that space is never handed
         * out, so it is not counted as dead either. A head emptied by
         * releases holds nothing at all and goes. */
        ps_chunk *old = a->head;
        a->head = c;
        if (old && old->live == 0)
            chunk_remove(a, m, chunk_index(a, old));
    }
    void *p = c->data + c->used;
    c->used += n;
    c->live += n;
    a->live += n;
    return p;
}

void ps_arena_prefetch(const ps_arena *a, size_t n)
{
    const ps_chunk *c = a->head;
    if (!c || c->cap - c->used < n)
        return;
    for (size_t i = 0; i < n; i += 64)
        __builtin_prefetch(c->data + c->used + i, 1);
}

void ps_arena_release(ps_arena *a, ps_mem *m, const void *p, size_t n)
{
    uint32_t i = chunk_index(a, p);
    ps_chunk *c = a->chunks[i];
    c->live -= n;
    a->live -= n;
    a->dead += n;
    if (c->live)
        return;
    if (c == a->head) {
        /* Nothing in the head is used: start it over instead of freeing. */
        a->dead -= c->used;
        c->used = 0;
        return;
    }
    a->dead -= c->used;
    chunk_remove(a, m, i);
}

int ps_arena_reserve(ps_arena *a, ps_mem *m, size_t n)
{
    ps_arena_init(a);
    if (n == 0)
        return 0;
    ps_chunk *c = chunk_new(m, n);
    if (!c)
        return ENOMEM;
    if (chunk_add(a, m, c) != 0) {
        chunk_free(m, c);
        return ENOMEM;
    }
    a->head = c;
    /* Later writes get chunks in proportion to the data kept, so a small
     * scope stays small after compaction and a big one grows in big steps. */
    a->next_cap = n < PS_CHUNK_MIN ? PS_CHUNK_MIN : n > PS_CHUNK_MAX ? PS_CHUNK_MAX : n;
    return 0;
}

void ps_arena_free(ps_arena *a, ps_mem *m)
{
    for (uint32_t i = 0; i < a->n_chunks; i++)
        chunk_free(m, a->chunks[i]);
    ps_mem_free(m, a->chunks, (size_t)a->cap_chunks * sizeof *a->chunks);
    ps_arena_init(a);
}

int ps_arena_check(const ps_arena *a)
{
    uint64_t live = 0, dead = 0;
    int head_seen = a->head == NULL;
    for (uint32_t i = 0; i < a->n_chunks; i++) {
        const ps_chunk *c = a->chunks[i];
        if (i && (const void *)a->chunks[i - 1] >= (const void *)c)
            return 1;
        if (c->live > c->used || c->used > c->cap)
            return 2;
        if (c->live == 0 && c != a->head)
            return 3; /* an empty chunk should have been freed */
        live += c->live;
        dead += c->used - c->live;
        head_seen |= c == a->head;
    }
    if (!head_seen)
        return 4;
    if (live != a->live || dead != a->dead)
        return 5;
    return 0;
}
