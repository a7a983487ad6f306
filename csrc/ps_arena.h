/*
 * ps_arena.h - bump allocation of a table's items.
 *
 * A table stores each key and value as one "item" (ps_table.c). Giving
 * every item its own malloc block costs 8 to 24 bytes of allocator overhead
 * and a malloc/free pair per write; at ~230-byte items that is the
 * difference between meeting our memory budget and missing it. So items
 * are packed back to back, unaligned, into chunks owned by the table's
 * arena:
 *
 *   chunk:  [used|cap|live][item][item][item]...........free.........
 *   item:   [u32 klen][u32 vlen][key bytes][value bytes]
 *
 * Items are never freed one by one. Releasing an item (its key was
 * overwritten by a longer value or deleted) only lowers its chunk's live
 * count; a chunk whose items are all released goes back to the allocator
 * at once, with no copying, which is what keeps first-in-first-out
 * workloads (expiring sessions, queues) cheap. Space that stays dead inside
 * partly used chunks is reclaimed by compaction: once dead space outweighs
 * half the live space, the table copies its live items into one fresh
 * chunk and drops the old ones, so memory stays within about 1.5x of live
 * data and each freed byte is copied at most twice.
 *
 * To find an item's chunk the arena keeps its chunks sorted by address and
 * bisects: a few comparisons, and no per-item pointer.
 */
#ifndef PS_ARENA_H
#define PS_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "ps_mem.h"

typedef struct ps_chunk ps_chunk;

typedef struct ps_arena {
    ps_chunk **chunks; /* every chunk, sorted by address */
    uint32_t n_chunks;
    uint32_t cap_chunks;
    ps_chunk *head;    /* chunk receiving new items, or NULL */
    uint64_t live;     /* bytes of items in use */
    uint64_t dead;     /* bytes of released items not yet given back */
    size_t next_cap;   /* capacity of the next chunk to allocate */
} ps_arena;

void ps_arena_init(ps_arena *a);

/* n bytes of fresh space, counted as live, or NULL when the allocator
 * fails (the arena is then unchanged). */
void *ps_arena_alloc(ps_arena *a, ps_mem *m, size_t n);

/* Start loading, for writing, the n bytes the next allocation of at most n
 * bytes would return (nothing when it would need a new chunk): an update
 * that outgrows its item writes the new one there. Changes nothing. */
void ps_arena_prefetch(const ps_arena *a, size_t n);

/* Mark n bytes at p, inside one earlier allocation, as no longer used.
 * Frees p's chunk when nothing in it is used any more. Cannot fail. */
void ps_arena_release(ps_arena *a, ps_mem *m, const void *p, size_t n);

/* True when compaction would pay for itself. */
static inline int ps_arena_wants_compaction(const ps_arena *a)
{
    return a->dead > (a->live >> 1) + 1024;
}

/* Start an empty arena whose first chunk holds exactly `n` bytes, so that
 * the next allocations totalling at most n bytes cannot fail. Used as the
 * destination of a compaction. Returns 0 or ENOMEM (arena left empty). */
int ps_arena_reserve(ps_arena *a, ps_mem *m, size_t n);

/* Return every chunk to the allocator and leave the arena empty. */
void ps_arena_free(ps_arena *a, ps_mem *m);

/* Consistency check for tests: 0 when the chunk list and the counters
 * agree, else the number of the first broken invariant. */
int ps_arena_check(const ps_arena *a);

#endif /* PS_ARENA_H */
