/*
 * ps_table.h - an insertion-ordered hash table of byte-string keys to
 * byte-string values. No I/O, no locking: ps_store.c does both.
 *
 * Layout (the "compact dict" shape CPython uses for dict, for the same
 * reasons: order for free, and a small index):
 *
 *   index    u32 slots, 2^bits of them, linear probing. A slot is 0 (empty),
 *            DUMMY (deleted), or  tag | (pos + 1)  where pos is a position
 *            in `entries` and tag holds hash bits the slot number does not
 *            use, so most mismatches are rejected without touching the item.
 *   entries  item pointers in insertion order; NULL where a key was deleted.
 *            Overwriting a key keeps its position: a value that fits is
 *            written over the old one, a longer one gets a new item whose
 *            pointer replaces the old. A deleted key leaves a hole that the
 *            next rebuild squeezes out, keeping everyone else's order.
 *   arena    the items themselves (see ps_arena.h).
 *
 * At most two thirds of the index is ever in use, holes and dummies
 * included, so probe chains stay short; the index doubles when that fills
 * and shrinks when the table drops below one eighth of it.
 *
 * Lookups go through a ps_where: find() says where the key is, or where it
 * would go, and replace/insert/remove act on that place without probing
 * again. A ps_where is valid until the next change to the table.
 */
#ifndef PS_TABLE_H
#define PS_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ps_arena.h"
#include "ps_hash.h"
#include "ps_mem.h"

typedef struct ps_table {
    uint32_t *index;          /* 2^bits slots, or NULL while empty */
    unsigned bits;            /* log2 of the index size; 0 while empty */
    unsigned char **entries;  /* items by insertion order; NULL = hole */
    uint32_t n_entries;       /* positions in use, holes included */
    uint32_t cap_entries;     /* allocated positions */
    uint32_t n_live;          /* keys */
    uint32_t n_filled;        /* index slots not empty: keys plus dummies */
    uint64_t key_bytes;       /* sum of key lengths */
    uint64_t value_bytes;     /* sum of value lengths */
    ps_arena arena;
} ps_table;

typedef struct ps_where {
    uint64_t hash;
    uint32_t slot; /* slot of the key, or the slot an insert should use */
    uint32_t pos;  /* position of the key in entries (when found) */
} ps_where;

/* ---- items ------------------------------------------------------------ */

#define PS_ITEM_HEADER 8

static inline uint32_t ps_item_klen(const unsigned char *it)
{
    uint32_t n;
    memcpy(&n, it, 4);
    return n;
}

static inline uint32_t ps_item_vlen(const unsigned char *it)
{
    uint32_t n;
    memcpy(&n, it + 4, 4);
    return n;
}

static inline const unsigned char *ps_item_key(const unsigned char *it)
{
    return it + PS_ITEM_HEADER;
}

static inline const unsigned char *ps_item_value(const unsigned char *it)
{
    return it + PS_ITEM_HEADER + ps_item_klen(it);
}

static inline size_t ps_item_size(const unsigned char *it)
{
    return PS_ITEM_HEADER + (size_t)ps_item_klen(it) + ps_item_vlen(it);
}

/* ---- table ------------------------------------------------------------ */

void ps_table_init(ps_table *t);

/* Free everything the table holds; it is then empty and reusable. */
void ps_table_free(ps_table *t, ps_mem *m);

/* Look key up. Returns its item (owned by the table: valid until the next
 * change to it) or NULL; either way *w is filled for a following
 * replace/insert/remove. h must be ps_hash() of the key. */
const unsigned char *ps_table_find(const ps_table *t, const void *key,
                                   size_t klen, uint64_t h, ps_where *w);

/* Start loading the index slot a lookup of hash h begins at. */
static inline void ps_table_prefetch(const ps_table *t, uint64_t h)
{
    if (t->index)
        __builtin_prefetch(&t->index[(uint32_t)h & (((uint32_t)1 << t->bits) - 1)]);
}

/* Give the key found at *w a new value. Returns 0 or ENOMEM (unchanged). */
int ps_table_replace(ps_table *t, ps_mem *m, const ps_where *w,
                     const void *value, size_t vlen);

/* Add a key that find() did not find, at the end of the order.
 * Returns 0 or ENOMEM (unchanged). */
int ps_table_insert(ps_table *t, ps_mem *m, const ps_hasher *hs,
                    const ps_where *w, const void *key, size_t klen,
                    const void *value, size_t vlen);

/* The same two writes in two steps, for callers that must do something
 * that can fail in between (a file-based store appends to its log): first
 * everything that can fail (allocation), then the change, which cannot.
 * Between prepare and commit nothing else may touch the table; abort
 * instead of commit gives the prepared space back. */
typedef struct ps_pending {
    unsigned char *item; /* a new item, or NULL: write over the old value */
} ps_pending;

int ps_table_prepare_replace(ps_table *t, ps_mem *m, const ps_where *w,
                             const void *value, size_t vlen, ps_pending *p);
void ps_table_commit_replace(ps_table *t, ps_mem *m, const ps_where *w, const ps_pending *p,
                             const void *value, size_t vlen);
/* May move the table around: updates *w. */
int ps_table_prepare_insert(ps_table *t, ps_mem *m, const ps_hasher *hs, ps_where *w,
                            const void *key, size_t klen, const void *value, size_t vlen,
                            ps_pending *p);
void ps_table_commit_insert(ps_table *t, const ps_where *w, const ps_pending *p);
void ps_table_abort(ps_table *t, ps_mem *m, ps_pending *p);

/* Remove the key found at *w. Cannot fail. */
void ps_table_remove(ps_table *t, ps_mem *m, const ps_hasher *hs,
                     const ps_where *w);

/* Items in order: for (i = 0; i < t->n_entries; i++) if (t->entries[i]) ...
 * Consistency check for tests: 0 when every invariant holds, else the
 * number of the first one found broken. */
int ps_table_check(const ps_table *t, const ps_hasher *hs);

#endif /* PS_TABLE_H */
