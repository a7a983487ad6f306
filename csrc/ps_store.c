/*
 * ps_store.c - the public API of pystate.h: a registry of scopes, each a
 * ps_table, behind one mutex.
 *
 * The registry is itself a ps_table mapping a scope name to the address of
 * that scope's table (8 bytes stored as the value), so scopes get the same
 * hashing, order and memory accounting as keys.
 *
 * Why one mutex and not one per scope: every call here is short and never
 * waits on I/O, and the Python binding calls in with the GIL held, so the
 * lock is almost never contended; an uncontended lock costs two atomic
 * operations, a per-scope scheme would cost twice that on every call.
 *
 * Every write follows the same order: look up, hand the old value to the
 * caller's sink, then change the table. A refusing sink or a failed
 * allocation therefore leaves the store exactly as it was.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ps_hash.h"
#include "ps_mem.h"
#include "ps_table.h"
#include "pystate.h"

struct ps_store {
    pthread_mutex_t mu;
    ps_mem mem;
    ps_hasher hasher;
    ps_table scopes; /* scope name -> (ps_table *) */
};

/* ---- helpers ------------------------------------------------------------ */

static inline void lock(ps_store *st)
{
    pthread_mutex_lock(&st->mu);
}

static inline void unlock(ps_store *st)
{
    pthread_mutex_unlock(&st->mu);
}

static inline int too_long(size_t n)
{
    return n > PS_MAX_LEN;
}

static ps_table *scope_table(const unsigned char *item)
{
    ps_table *t;
    memcpy(&t, ps_item_value(item), sizeof t);
    return t;
}

static ps_table *find_scope(ps_store *st, const char *scope, size_t slen, ps_where *w)
{
    const unsigned char *it =
        ps_table_find(&st->scopes, scope, slen, ps_hash(&st->hasher, scope, slen), w);
    return it ? scope_table(it) : NULL;
}

static int deliver(const ps_sink *sink, const void *p, size_t n)
{
    void *buf = sink->alloc(sink->ctx, n);
    if (!buf)
        return ENOMEM;
    if (n)
        memcpy(buf, p, n);
    return 0;
}

static void free_scope_table(ps_store *st, ps_table *t)
{
    ps_table_free(t, &st->mem);
    ps_mem_free(&st->mem, t, sizeof *t);
}

/* Create scope `scope` holding one key. Returns 0 or ENOMEM (no change). */
static int create_scope(ps_store *st, const ps_where *sw, const char *scope, size_t slen,
                        const char *key, size_t klen, const char *value, size_t vlen)
{
    ps_table *t = ps_mem_alloc(&st->mem, sizeof *t);
    if (!t)
        return ENOMEM;
    ps_table_init(t);
    ps_where kw;
    uint64_t h = ps_hash(&st->hasher, key, klen);
    (void)ps_table_find(t, key, klen, h, &kw);
    int rc = ps_table_insert(t, &st->mem, &st->hasher, &kw, key, klen, value, vlen);
    if (rc == 0)
        rc = ps_table_insert(&st->scopes, &st->mem, &st->hasher, sw, scope, slen, &t, sizeof t);
    if (rc)
        free_scope_table(st, t);
    return rc;
}

/* ---- lifecycle ---------------------------------------------------------- */

int ps_store_open(ps_store **out, const ps_options *opts)
{
    const ps_allocator *a = opts && opts->allocator ? opts->allocator : &ps_libc_allocator;
    ps_store *st = a->malloc(a->ctx, sizeof *st);
    if (!st)
        return ENOMEM;
    memset(st, 0, sizeof *st);
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        a->free(a->ctx, st);
        return ENOMEM;
    }
    st->mem.a = a;
    st->mem.bytes = 0; /* the handle itself is not data: heap_bytes counts data */
    ps_hasher_init(&st->hasher, opts ? opts->hash_seed : 0);
    ps_table_init(&st->scopes);
    *out = st;
    return PS_OK;
}

void ps_store_close(ps_store *st)
{
    if (!st)
        return;
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++)
        if (s->entries[i])
            free_scope_table(st, scope_table(s->entries[i]));
    ps_table_free(s, &st->mem);
    pthread_mutex_destroy(&st->mu);
    const ps_allocator *a = st->mem.a;
    a->free(a->ctx, st);
}

/* ---- reads ---------------------------------------------------------------- */

int ps_get(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
           const ps_sink *value)
{
    int rc = PS_NOTFOUND;
    ps_where w;
    lock(st);
    ps_table *t = find_scope(st, scope, slen, &w);
    if (t) {
        const unsigned char *it = ps_table_find(t, key, klen, ps_hash(&st->hasher, key, klen), &w);
        if (it)
            rc = deliver(value, ps_item_value(it), ps_item_vlen(it));
    }
    unlock(st);
    return rc;
}

/* Write "[" values[i..j) "]" into buf, skipping holes. */
static void write_array(const ps_table *t, uint32_t i, uint32_t j, unsigned char *buf)
{
    unsigned char *p = buf;
    *p++ = '[';
    for (; i < j; i++) {
        const unsigned char *it = t->entries[i];
        if (!it)
            continue;
        if (p != buf + 1)
            *p++ = ',';
        uint32_t vlen = ps_item_vlen(it);
        memcpy(p, ps_item_value(it), vlen);
        p += vlen;
    }
    *p = ']';
}

int ps_list(ps_store *st, const char *scope, size_t slen, size_t batch, const ps_sink *out)
{
    int rc = 0;
    ps_where w;
    lock(st);
    ps_table *t = find_scope(st, scope, slen, &w);
    /* Values are JSON texts, so "[" v1 "," v2 ... "]" is a JSON array the
     * caller decodes in one call. Several moderate arrays rather than one
     * huge one: a decoder's working set then stays in cache, which
     * measured faster than both one call per value and one call in all. */
    uint32_t i = 0, end = t ? t->n_entries : 0;
    int sent = 0;
    while (rc == 0 && (i < end || !sent)) {
        size_t size = 2, count = 0;
        uint32_t j = i;
        for (; j < end; j++) {
            const unsigned char *it = t->entries[j];
            if (!it)
                continue;
            size_t add = ps_item_vlen(it) + (count ? 1 : 0);
            if (count && batch && size + add > batch)
                break;
            size += add;
            count++;
        }
        if (!count && sent)
            break; /* only holes were left */
        unsigned char *buf = out->alloc(out->ctx, size);
        if (!buf) {
            rc = ENOMEM;
            break;
        }
        if (count)
            write_array(t, i, j, buf);
        else
            memcpy(buf, "[]", 2);
        sent = 1;
        i = j;
    }
    unlock(st);
    return rc;
}

typedef struct name_ref {
    const unsigned char *p;
    uint32_t n;
} name_ref;

static int cmp_names(const void *a, const void *b)
{
    const name_ref *x = a, *y = b;
    uint32_t n = x->n < y->n ? x->n : y->n;
    int c = n ? memcmp(x->p, y->p, n) : 0;
    if (c)
        return c;
    return (x->n > y->n) - (x->n < y->n);
}

int ps_groups(ps_store *st, const ps_sink *out, size_t *count)
{
    int rc = 0;
    lock(st);
    ps_table *s = &st->scopes;
    size_t k = s->n_live, total = 0;
    name_ref *names = NULL;
    if (k) {
        names = ps_mem_alloc(&st->mem, k * sizeof *names);
        if (!names) {
            unlock(st);
            return ENOMEM;
        }
    }
    size_t j = 0;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it)
            continue;
        names[j].p = ps_item_key(it);
        names[j].n = ps_item_klen(it);
        total += 4 + names[j].n;
        j++;
    }
    if (k > 1)
        qsort(names, k, sizeof *names, cmp_names);
    unsigned char *buf = out->alloc(out->ctx, total);
    if (!buf) {
        rc = ENOMEM;
    } else {
        unsigned char *p = buf;
        for (size_t i = 0; i < k; i++) {
            uint32_t n = names[i].n;
            unsigned char le[4] = {(unsigned char)n, (unsigned char)(n >> 8),
                                   (unsigned char)(n >> 16), (unsigned char)(n >> 24)};
            memcpy(p, le, 4);
            memcpy(p + 4, names[i].p, n);
            p += 4 + n;
        }
        if (count)
            *count = k;
    }
    ps_mem_free(&st->mem, names, k * sizeof *names);
    unlock(st);
    return rc;
}

void ps_stats_get(ps_store *st, ps_stats *out)
{
    memset(out, 0, sizeof *out);
    lock(st);
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        if (!s->entries[i])
            continue;
        const ps_table *t = scope_table(s->entries[i]);
        out->scopes++;
        out->keys += t->n_live;
        out->key_bytes += t->key_bytes;
        out->value_bytes += t->value_bytes;
        out->dead_bytes += t->arena.dead;
    }
    out->heap_bytes = st->mem.bytes;
    unlock(st);
}

/* ---- writes -------------------------------------------------------------- */

int ps_put(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
           const char *value, size_t vlen, const ps_sink *old, int *existed)
{
    if (too_long(slen) || too_long(klen) || too_long(vlen))
        return PS_TOOBIG;
    int rc, had = 0;
    ps_where sw, kw;
    lock(st);
    ps_table *t = find_scope(st, scope, slen, &sw);
    if (!t) {
        rc = create_scope(st, &sw, scope, slen, key, klen, value, vlen);
    } else {
        const unsigned char *it =
            ps_table_find(t, key, klen, ps_hash(&st->hasher, key, klen), &kw);
        if (!it) {
            rc = ps_table_insert(t, &st->mem, &st->hasher, &kw, key, klen, value, vlen);
        } else {
            had = 1;
            rc = old ? deliver(old, ps_item_value(it), ps_item_vlen(it)) : 0;
            if (rc == 0)
                rc = ps_table_replace(t, &st->mem, &kw, value, vlen);
        }
    }
    unlock(st);
    if (rc == 0 && existed)
        *existed = had;
    return rc;
}

int ps_put_if(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
              const char *value, size_t vlen, const char *expect, size_t elen)
{
    if (too_long(slen) || too_long(klen) || too_long(vlen))
        return PS_TOOBIG;
    int rc;
    ps_where sw, kw;
    lock(st);
    ps_table *t = find_scope(st, scope, slen, &sw);
    if (!t) {
        rc = expect ? PS_CONFLICT
                    : create_scope(st, &sw, scope, slen, key, klen, value, vlen);
    } else {
        const unsigned char *it =
            ps_table_find(t, key, klen, ps_hash(&st->hasher, key, klen), &kw);
        if (!it) {
            rc = expect ? PS_CONFLICT
                        : ps_table_insert(t, &st->mem, &st->hasher, &kw, key, klen, value, vlen);
        } else if (!expect || ps_item_vlen(it) != elen ||
                   (elen && memcmp(ps_item_value(it), expect, elen) != 0)) {
            rc = PS_CONFLICT;
        } else {
            rc = ps_table_replace(t, &st->mem, &kw, value, vlen);
        }
    }
    unlock(st);
    return rc;
}

int ps_del(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
           const ps_sink *old)
{
    int rc = PS_NOTFOUND;
    ps_where sw, kw;
    lock(st);
    ps_table *t = find_scope(st, scope, slen, &sw);
    if (t) {
        const unsigned char *it =
            ps_table_find(t, key, klen, ps_hash(&st->hasher, key, klen), &kw);
        if (it) {
            rc = old ? deliver(old, ps_item_value(it), ps_item_vlen(it)) : 0;
            if (rc == 0) {
                ps_table_remove(t, &st->mem, &st->hasher, &kw);
                if (t->n_live == 0) {
                    /* A scope exists exactly while it holds a key. */
                    ps_table_remove(&st->scopes, &st->mem, &st->hasher, &sw);
                    free_scope_table(st, t);
                }
            }
        }
    }
    unlock(st);
    return rc;
}
