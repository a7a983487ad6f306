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
 *   chunk:  [next|used|cap][item][item][item]...........free.........
 *   item:   [u32 klen][u32 vlen][key bytes][value bytes]
 *
 * Items are never freed one by one. Overwriting or deleting a key only
 * moves its item's size from `live` to `dead`; once dead space outweighs a
 * fraction of live space, the table copies its live items into one fresh
 * chunk and drops the old chunks (compaction), so memory stays within
 * about 1.5x of live data and each freed byte is copied at most twice.
 */
#ifndef PS_ARENA_H
#define PS_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "ps_mem.h"

typedef struct ps_chunk ps_chunk;

typedef struct ps_arena {
    ps_chunk *head;  /* chunk receiving new items; older chunks follow */
    uint64_t live;   /* bytes of items still in use */
    uint64_t dead;   /* bytes of released items not yet reclaimed */
    size_t next_cap; /* capacity of the next chunk to allocate */
} ps_arena;

void ps_arena_init(ps_arena *a);

/* n bytes of fresh space, counted as live, or NULL when the allocator
 * fails (the arena is then unchanged). */
void *ps_arena_alloc(ps_arena *a, ps_mem *m, size_t n);

/* Mark n bytes of a previously allocated item as dead. */
static inline void ps_arena_release(ps_arena *a, size_t n)
{
    a->live -= n;
    a->dead += n;
}

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

#endif /* PS_ARENA_H */
