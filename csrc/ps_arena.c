/*
 * ps_arena.c - chunked bump allocator for table items (see ps_arena.h).
 *
 * Chunk sizes start small and double up to PS_CHUNK_MAX, so a scope with a
 * handful of keys costs a few hundred bytes while a big scope allocates in
 * 64 KiB steps. An item bigger than the next chunk gets a chunk of its own.
 */
#include "ps_arena.h"

#include <errno.h>

#define PS_CHUNK_MIN 256
#define PS_CHUNK_MAX (64 * 1024)

struct ps_chunk {
    ps_chunk *next;
    size_t used;
    size_t cap;
    unsigned char data[];
};

void ps_arena_init(ps_arena *a)
{
    a->head = NULL;
    a->live = 0;
    a->dead = 0;
    a->next_cap = PS_CHUNK_MIN;
}

static ps_chunk *chunk_new(ps_mem *m, size_t cap)
{
    ps_chunk *c = ps_mem_alloc(m, sizeof *c + cap);
    if (!c)
        return NULL;
    c->next = NULL;
    c->used = 0;
    c->cap = cap;
    return c;
}

void *ps_arena_alloc(ps_arena *a, ps_mem *m, size_t n)
{
    ps_chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = a->next_cap;
        if (n > cap) {
            cap = n;
        } else if (a->next_cap < PS_CHUNK_MAX) {
            a->next_cap *= 2;
        }
        c = chunk_new(m, cap);
        if (!c)
            return NULL;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    a->live += n;
    return p;
}

int ps_arena_reserve(ps_arena *a, ps_mem *m, size_t n)
{
    ps_arena_init(a);
    if (n == 0)
        return 0;
    ps_chunk *c = chunk_new(m, n);
    if (!c)
        return ENOMEM;
    a->head = c;
    /* Later writes get chunks in proportion to the data kept, so a small
     * scope stays small after compaction and a big one grows in big steps. */
    a->next_cap = n < PS_CHUNK_MIN ? PS_CHUNK_MIN : n > PS_CHUNK_MAX ? PS_CHUNK_MAX : n;
    return 0;
}

void ps_arena_free(ps_arena *a, ps_mem *m)
{
    ps_chunk *c = a->head;
    while (c) {
        ps_chunk *next = c->next;
        ps_mem_free(m, c, sizeof *c + c->cap);
        c = next;
    }
    ps_arena_init(a);
}
