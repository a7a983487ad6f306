/*
 * ps_table.c - insertion-ordered hash table (design in ps_table.h).
 *
 * Conventions: functions named ps_table_* are the interface; static helpers
 * carry no prefix. Every operation that can fail allocates before it
 * changes anything, so ENOMEM always leaves the table as it was.
 */
#include "ps_table.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#define MIN_BITS 3  /* 8 slots; also keeps DUMMY distinct from real slots */
#define MAX_BITS 31 /* u32 slots: positions must fit below the tag bits */

static inline uint32_t pos_mask(unsigned bits)
{
    return ((uint32_t)1 << bits) - 1;
}

/* A slot whose position field is all ones. Never a real position, because
 * at most two thirds of 2^bits positions are ever handed out. */
static inline int is_dummy(uint32_t v, uint32_t mask)
{
    return (v & mask) == mask;
}

static inline uint32_t tag_of(uint64_t h, uint32_t mask)
{
    return (uint32_t)(h >> 32) & ~mask;
}

/* Positions the index can address before it must grow. */
static inline uint32_t usable(unsigned bits)
{
    return (uint32_t)(((uint64_t)1 << bits) * 2 / 3);
}

void ps_table_init(ps_table *t)
{
    memset(t, 0, sizeof *t);
    ps_arena_init(&t->arena);
}

void ps_table_free(ps_table *t, ps_mem *m)
{
    if (t->index)
        ps_mem_free(m, t->index, ((size_t)1 << t->bits) * sizeof *t->index);
    ps_mem_free(m, t->entries, (size_t)t->cap_entries * sizeof *t->entries);
    ps_arena_free(&t->arena, m);
    ps_table_init(t);
}

const unsigned char *ps_table_find(const ps_table *t, const void *key,
                                   size_t klen, uint64_t h, ps_where *w)
{
    w->hash = h;
    w->slot = 0;
    w->pos = 0;
    if (!t->index)
        return NULL;
    const uint32_t mask = pos_mask(t->bits);
    const uint32_t tag = tag_of(h, mask);
    uint32_t i = (uint32_t)h & mask;
    uint32_t reuse = UINT32_MAX; /* first dummy seen: where an insert goes */
    for (;;) {
        uint32_t v = t->index[i];
        if (v == 0) {
            w->slot = reuse != UINT32_MAX ? reuse : i;
            return NULL;
        }
        if (is_dummy(v, mask)) {
            if (reuse == UINT32_MAX)
                reuse = i;
        } else if ((v & ~mask) == tag) {
            uint32_t pos = (v & mask) - 1;
            const unsigned char *it = t->entries[pos];
            if (ps_item_klen(it) == klen && memcmp(ps_item_key(it), key, klen) == 0) {
                w->slot = i;
                w->pos = pos;
                return it;
            }
        }
        i = (i + 1) & mask;
    }
}

static unsigned char *new_item(ps_table *t, ps_mem *m, const void *key,
                               size_t klen, const void *value, size_t vlen)
{
    unsigned char *it = ps_arena_alloc(&t->arena, m, PS_ITEM_HEADER + klen + vlen);
    if (!it)
        return NULL;
    uint32_t k32 = (uint32_t)klen, v32 = (uint32_t)vlen;
    memcpy(it, &k32, 4);
    memcpy(it + 4, &v32, 4);
    if (klen)
        memcpy(it + PS_ITEM_HEADER, key, klen);
    if (vlen)
        memcpy(it + PS_ITEM_HEADER + klen, value, vlen);
    return it;
}

static void drop_item(ps_table *t, ps_mem *m, const unsigned char *it)
{
    t->key_bytes -= ps_item_klen(it);
    t->value_bytes -= ps_item_vlen(it);
    ps_arena_release(&t->arena, m, it, ps_item_size(it));
}

/* Copy live items into one fresh chunk, in order, and free the old
 * chunks. Skipped (not an error) when memory for the copy is short. */
static void compact_arena(ps_table *t, ps_mem *m)
{
    ps_arena fresh;
    if (ps_arena_reserve(&fresh, m, t->arena.live) != 0)
        return;
    for (uint32_t i = 0; i < t->n_entries; i++) {
        unsigned char *it = t->entries[i];
        if (!it)
            continue;
        size_t n = ps_item_size(it);
        unsigned char *copy = ps_arena_alloc(&fresh, m, n); /* reserved: cannot fail */
        memcpy(copy, it, n);
        t->entries[i] = copy;
    }
    ps_arena_free(&t->arena, m);
    t->arena = fresh;
}

static void after_write(ps_table *t, ps_mem *m)
{
    if (ps_arena_wants_compaction(&t->arena))
        compact_arena(t, m);
}

int ps_table_prepare_replace(ps_table *t, ps_mem *m, const ps_where *w,
                             const void *value, size_t vlen, ps_pending *p)
{
    const unsigned char *old = t->entries[w->pos];
    p->item = NULL;
    /* Values are often rewritten at the same size (counters, status
     * fields): a value that fits is written over the old one at commit.
     * Its cache lines are hot from the lookup, and no arena space is used. */
    if (vlen <= ps_item_vlen(old))
        return 0;
    p->item = new_item(t, m, ps_item_key(old), ps_item_klen(old), value, vlen);
    return p->item ? 0 : ENOMEM;
}

void ps_table_commit_replace(ps_table *t, ps_mem *m, const ps_where *w, const ps_pending *p,
                             const void *value, size_t vlen)
{
    unsigned char *old = t->entries[w->pos];
    uint32_t klen = ps_item_klen(old), old_vlen = ps_item_vlen(old);
    if (!p->item) {
        uint32_t v32 = (uint32_t)vlen;
        if (vlen)
            memcpy(old + PS_ITEM_HEADER + klen, value, vlen);
        memcpy(old + 4, &v32, 4);
        /* A shorter value leaves its old tail as dead space. */
        if (vlen < old_vlen)
            ps_arena_release(&t->arena, m, old + PS_ITEM_HEADER + klen + vlen, old_vlen - vlen);
        t->value_bytes -= old_vlen - vlen;
    } else {
        drop_item(t, m, old);
        t->entries[w->pos] = p->item;
        t->key_bytes += klen;
        t->value_bytes += vlen;
    }
    after_write(t, m);
}

int ps_table_replace(ps_table *t, ps_mem *m, const ps_where *w,
                     const void *value, size_t vlen)
{
    ps_pending p;
    int rc = ps_table_prepare_replace(t, m, w, value, vlen, &p);
    if (rc == 0)
        ps_table_commit_replace(t, m, w, &p, value, vlen);
    return rc;
}

void ps_table_abort(ps_table *t, ps_mem *m, ps_pending *p)
{
    if (p->item)
        ps_arena_release(&t->arena, m, p->item, ps_item_size(p->item));
    p->item = NULL;
}

/* Smallest index size that leaves room for twice `n` keys. */
static unsigned bits_for(uint64_t n)
{
    unsigned bits = MIN_BITS;
    while (bits < MAX_BITS && usable(bits) < 2 * n)
        bits++;
    return bits;
}

static uint32_t empty_slot(const uint32_t *index, unsigned bits, uint64_t h)
{
    const uint32_t mask = pos_mask(bits);
    uint32_t i = (uint32_t)h & mask;
    while (index[i] != 0)
        i = (i + 1) & mask;
    return i;
}

/* Build a new index of 2^bits slots, squeezing the holes out of entries.
 * Returns 0 or ENOMEM (table unchanged). */
static int rebuild(ps_table *t, ps_mem *m, const ps_hasher *hs, unsigned bits)
{
    size_t slots = (size_t)1 << bits;
    uint32_t *index = ps_mem_alloc(m, slots * sizeof *index);
    if (!index)
        return ENOMEM;
    memset(index, 0, slots * sizeof *index);

    uint32_t n = 0;
    for (uint32_t i = 0; i < t->n_entries; i++) {
        unsigned char *it = t->entries[i];
        if (!it)
            continue;
        t->entries[n] = it;
        uint64_t h = ps_hash(hs, ps_item_key(it), ps_item_klen(it));
        const uint32_t mask = pos_mask(bits);
        index[empty_slot(index, bits, h)] = tag_of(h, mask) | (n + 1);
        n++;
    }
    if (t->index)
        ps_mem_free(m, t->index, ((size_t)1 << t->bits) * sizeof *t->index);
    t->index = index;
    t->bits = bits;
    t->n_entries = n;
    t->n_filled = n;

    /* The index bounds how many positions can be used; give back the rest. */
    uint32_t cap = usable(bits);
    if (t->cap_entries > cap) {
        unsigned char **e = ps_mem_realloc(m, t->entries,
                                           (size_t)t->cap_entries * sizeof *e,
                                           (size_t)cap * sizeof *e);
        if (e) {
            t->entries = e;
            t->cap_entries = cap;
        }
    }
    return 0;
}

/* Make room for one more position. Growing the entries array keeps *w
 * valid; a rebuild moves everything, so it finds a fresh slot for w. */
static int reserve_position(ps_table *t, ps_mem *m, const ps_hasher *hs, ps_where *w)
{
    /* Dummies count against the load too: a probe only stops at an empty
     * slot, so at least a third of the slots must stay empty. */
    if (!t->index || t->n_filled >= usable(t->bits) || t->n_entries == usable(t->bits)) {
        unsigned bits = bits_for((uint64_t)t->n_live + 1);
        if (bits == MAX_BITS && usable(bits) <= t->n_live)
            return ENOMEM;
        int rc = rebuild(t, m, hs, bits);
        if (rc)
            return rc;
        w->slot = empty_slot(t->index, t->bits, w->hash);
    }
    if (t->n_entries == t->cap_entries) {
        uint32_t limit = usable(t->bits);
        uint64_t cap = t->cap_entries < 4 ? 4 : (uint64_t)t->cap_entries * 3 / 2;
        if (cap > limit)
            cap = limit;
        unsigned char **e = ps_mem_realloc(m, t->entries,
                                           (size_t)t->cap_entries * sizeof *e,
                                           (size_t)cap * sizeof *e);
        if (!e)
            return ENOMEM;
        t->entries = e;
        t->cap_entries = (uint32_t)cap;
    }
    return 0;
}

int ps_table_prepare_insert(ps_table *t, ps_mem *m, const ps_hasher *hs, ps_where *w,
                            const void *key, size_t klen, const void *value, size_t vlen,
                            ps_pending *p)
{
    p->item = NULL;
    int rc = reserve_position(t, m, hs, w);
    if (rc)
        return rc;
    p->item = new_item(t, m, key, klen, value, vlen);
    return p->item ? 0 : ENOMEM;
}

void ps_table_commit_insert(ps_table *t, const ps_where *w, const ps_pending *p)
{
    uint32_t pos = t->n_entries++;
    t->entries[pos] = p->item;
    if (t->index[w->slot] == 0)
        t->n_filled++;
    t->index[w->slot] = tag_of(w->hash, pos_mask(t->bits)) | (pos + 1);
    t->n_live++;
    t->key_bytes += ps_item_klen(p->item);
    t->value_bytes += ps_item_vlen(p->item);
}

int ps_table_insert(ps_table *t, ps_mem *m, const ps_hasher *hs,
                    const ps_where *where, const void *key, size_t klen,
                    const void *value, size_t vlen)
{
    ps_where w = *where;
    ps_pending p;
    int rc = ps_table_prepare_insert(t, m, hs, &w, key, klen, value, vlen, &p);
    if (rc == 0)
        ps_table_commit_insert(t, &w, &p);
    return rc;
}

void ps_table_remove(ps_table *t, ps_mem *m, const ps_hasher *hs, const ps_where *w)
{
    drop_item(t, m, t->entries[w->pos]);
    t->entries[w->pos] = NULL;
    t->index[w->slot] = pos_mask(t->bits); /* DUMMY */
    t->n_live--;
    /* Holes at the end cost nothing to take back, and deleting the newest
     * keys first is a common pattern (stacks, undo logs). */
    while (t->n_entries && !t->entries[t->n_entries - 1])
        t->n_entries--;

    if (t->n_live == 0) {
        ps_table_free(t, m);
        return;
    }
    if (t->bits > MIN_BITS && (uint64_t)t->n_live * 8 < usable(t->bits)) {
        /* Best effort: a table that cannot shrink for lack of memory is
         * still correct. */
        (void)rebuild(t, m, hs, bits_for(t->n_live));
    }
    after_write(t, m);
}

int ps_table_check(const ps_table *t, const ps_hasher *hs)
{
    uint32_t live = 0;
    uint64_t kb = 0, vb = 0, bytes = 0;
    if (t->n_entries > t->cap_entries)
        return 1;
    if (t->index && t->cap_entries > usable(t->bits))
        return 2;
    for (uint32_t i = 0; i < t->n_entries; i++) {
        const unsigned char *it = t->entries[i];
        if (!it)
            continue;
        live++;
        kb += ps_item_klen(it);
        vb += ps_item_vlen(it);
        bytes += ps_item_size(it);
        ps_where w;
        const unsigned char *found = ps_table_find(t, ps_item_key(it), ps_item_klen(it),
                                                   ps_hash(hs, ps_item_key(it), ps_item_klen(it)), &w);
        if (found != it || w.pos != i)
            return 3;
    }
    if (live != t->n_live || kb != t->key_bytes || vb != t->value_bytes)
        return 4;
    if (bytes != t->arena.live || ps_arena_check(&t->arena) != 0)
        return 5;
    if (t->index) {
        uint32_t used = 0, mask = pos_mask(t->bits);
        for (size_t i = 0; i < ((size_t)1 << t->bits); i++) {
            uint32_t v = t->index[i];
            if (v && !is_dummy(v, mask)) {
                used++;
                uint32_t pos = (v & mask) - 1;
                if (pos >= t->n_entries || !t->entries[pos])
                    return 6;
            }
        }
        if (used != t->n_live)
            return 7;
        uint32_t filled = 0;
        for (size_t i = 0; i < ((size_t)1 << t->bits); i++)
            filled += t->index[i] != 0;
        if (filled != t->n_filled || filled >= ((size_t)1 << t->bits))
            return 8;
    }
    return 0;
}
