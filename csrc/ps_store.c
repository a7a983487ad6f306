/*
 * ps_store.c - the public API of pystate.h: a registry of scopes, each a
 * ps_table, behind one mutex; for a file-based store, each change is
 * logged by ps_disk.c before it is made.
 *
 * The registry (ps_scope.c) is itself a ps_table mapping a scope name to
 * the address of its ps_scope (8 bytes stored as the value), so scopes get
 * the same hashing, order and memory accounting as keys.
 *
 * Why one mutex and not one per scope: in memory every call is short and
 * never waits on I/O, and the Python binding calls in with the GIL held, so
 * the lock is almost never contended; an uncontended lock costs two atomic
 * operations, a per-scope scheme twice that on every call. A file-based
 * write holds it for one pwrite; the slow part, fdatasync, runs outside it
 * (ps_disk_commit_wait).
 *
 * Every write follows the same order: look up; hand the old value to the
 * caller's sink; allocate what the change will need; log it (file-based);
 * change the table; unlock; wait for durability. Anything that fails before
 * the change leaves the store exactly as it was.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ps_disk.h"
#include "ps_log.h"
#include "ps_scope.h"

/* ---- helpers ------------------------------------------------------------ */

/* ---- fork ----------------------------------------------------------------
 *
 * A child made by fork() has one thread, a copy of every store, and
 * whatever locks other threads of the parent held at that instant,
 * forever held. So around fork every open store is locked (nobody is in
 * the middle of a call, nor holding a slot lock between processes), the
 * parent carries on, and the child makes its locks anew, takes the
 * directory's lock through a file description of its own and, on its
 * first call, starts its own maintenance thread. From then on it is one
 * more process sharing the directory. */

static pthread_mutex_t open_mu = PTHREAD_MUTEX_INITIALIZER;
static ps_store *open_stores;
static _Atomic unsigned long ps_forks;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void before_fork(void)
{
    pthread_mutex_lock(&open_mu);
    for (ps_store *st = open_stores; st; st = st->next_open) {
        pthread_mutex_lock(&st->mu);
        if (st->disk)
            ps_disk_lock_sync(st);
    }
}

static void parent_after_fork(void)
{
    for (ps_store *st = open_stores; st; st = st->next_open) {
        if (st->disk)
            ps_disk_unlock_sync(st);
        pthread_mutex_unlock(&st->mu);
    }
    pthread_mutex_unlock(&open_mu);
}

static void child_after_fork(void)
{
    pthread_mutex_init(&open_mu, NULL);
    for (ps_store *st = open_stores; st; st = st->next_open) {
        pthread_mutex_init(&st->mu, NULL);
        if (st->disk)
            ps_disk_after_fork(st);
    }
    atomic_fetch_add(&ps_forks, 1);
}

static void install_atfork(void)
{
    pthread_atfork(before_fork, parent_after_fork, child_after_fork);
}

static void register_open(ps_store *st)
{
    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&open_mu);
    st->forks = atomic_load(&ps_forks);
    st->prev_open = NULL;
    st->next_open = open_stores;
    if (open_stores)
        open_stores->prev_open = st;
    open_stores = st;
    pthread_mutex_unlock(&open_mu);
}

static void unregister_open(ps_store *st)
{
    pthread_mutex_lock(&open_mu);
    if (st->prev_open)
        st->prev_open->next_open = st->next_open;
    else
        open_stores = st->next_open;
    if (st->next_open)
        st->next_open->prev_open = st->prev_open;
    pthread_mutex_unlock(&open_mu);
}

static inline void lock(ps_store *st)
{
    if (!st->nolock)
        pthread_mutex_lock(&st->mu);
    st->calls++;
    if (__builtin_expect(st->forks != atomic_load_explicit(&ps_forks, memory_order_relaxed), 0)) {
        st->forks = atomic_load(&ps_forks);
        ps_disk_resume(st);
    }
}

static inline void unlock(ps_store *st)
{
    if (!st->nolock)
        pthread_mutex_unlock(&st->mu);
}

static int too_long(const ps_store *st, size_t slen, size_t klen, size_t vlen)
{
    if (slen > PS_MAX_LEN || klen > PS_MAX_LEN || vlen > PS_MAX_LEN)
        return 1;
    /* A log record holds key and value in one u32-sized payload. */
    return st->disk && (uint64_t)ps_varint_size(klen) + klen + vlen > PS_REC_MAX_PAYLOAD;
}

/* Remove an empty in-memory scope from the registry (w from its lookup).
 * File-based scopes stay: their log outlives their keys until compaction
 * removes it. */
static void drop_if_empty(ps_store *st, ps_scope *sc, const ps_where *w)
{
    if (st->disk || sc->table.n_live)
        return;
    ps_table_remove(&st->scopes, &st->mem, &st->hasher, w);
    ps_scope_free(st, sc);
}

/* The scope for a read, up to date with what other processes wrote (a
 * scope this process has not seen yet is looked for among theirs). */
static ps_scope *scope_for_read(ps_store *st, const char *scope, size_t slen, ps_where *w, int *rc)
{
    ps_scope *sc = ps_scope_find(st, scope, slen, w);
    *rc = 0;
    if (!st->disk)
        return sc;
    if (sc)
        *rc = ps_disk_follow(st, sc);
    else
        sc = ps_disk_discover(st, scope, slen, w, rc);
    return sc;
}

/* ---- the last lookup -----------------------------------------------------
 *
 * An update is two calls on one key: a read, then a compare-and-set of the
 * value computed from it, and each call would find the scope and the key
 * again. So an in-memory call leaves its lookup in st->last, and the next
 * call takes it over when it names the same scope and key and nobody took
 * mu in between: then nothing changed, since in memory every change takes
 * mu through lock(). Names are compared with the items the lookup found,
 * so a lookup is never taken for another key. File-based stores keep none:
 * their tables also change with what other processes write. */

/* Keep the lookup of this call: sw the scope's (NULL: the one recalled),
 * kw the key's (NULL: none made), found whether kw found the key. */
static void remember(ps_store *st, const ps_where *sw, const ps_where *kw, int found)
{
    if (st->disk)
        return;
    if (sw)
        st->last.scope = st->scopes.entries[sw->pos];
    st->last.calls = st->calls;
    if (kw)
        st->last.key = *kw;
    st->last.found = kw && found;
}

/* The scope named, when the last call found it and nobody came since. */
static ps_scope *recall_scope(const ps_store *st, const char *scope, size_t slen)
{
    const unsigned char *it = st->last.scope;
    if (st->last.calls + 1 != st->calls || !it || st->disk)
        return NULL;
    if (ps_item_klen(it) != slen || memcmp(ps_item_key(it), scope, slen) != 0)
        return NULL;
    return ps_scope_of(it);
}

/* The key's item and lookup in sc (from recall_scope), when the last call
 * found that key. */
static const unsigned char *recall_key(const ps_store *st, const ps_scope *sc, const char *key,
                                       size_t klen, ps_where *kw)
{
    if (!st->last.found)
        return NULL;
    const unsigned char *it = sc->table.entries[st->last.key.pos];
    if (ps_item_klen(it) != klen || memcmp(ps_item_key(it), key, klen) != 0)
        return NULL;
    *kw = st->last.key;
    return it;
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

/* ---- lifecycle ---------------------------------------------------------- */

int ps_store_open(ps_store **out, const ps_options *opts, ps_report *report)
{
    if (report)
        memset(report, 0, sizeof *report);
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
    ps_hasher_init(&st->hasher, opts ? opts->hash_seed : 0);
    ps_table_init(&st->scopes);
    if (opts && opts->path) {
        st->read_only = opts->read_only != 0;
        int rc = ps_disk_open(st, opts, report);
        if (rc) {
            pthread_mutex_destroy(&st->mu);
            a->free(a->ctx, st);
            return rc;
        }
    } else {
        st->nolock = opts && opts->serialized;
    }
    register_open(st);
    *out = st;
    return PS_OK;
}

int ps_store_inspect(const ps_options *opts, ps_report *report)
{
    if (!opts || !opts->path) {
        if (report)
            memset(report, 0, sizeof *report);
        return EINVAL;
    }
    /* Exactly what a read-only open finds, which changes nothing. */
    ps_options ro = *opts;
    ro.read_only = 1;
    ps_store *st = NULL;
    int rc = ps_store_open(&st, &ro, report);
    /* Others have the store open, so it was not recovered, nor need be:
     * what can be checked is that every log reads as they published it. */
    if (rc == PS_OK && ps_disk_joined(st))
        rc = ps_check(st, report);
    if (rc == PS_OK || st)
        ps_store_close(st);
    return rc;
}

int ps_store_close(ps_store *st)
{
    if (!st)
        return PS_OK;
    unregister_open(st);
    int rc = st->disk ? ps_disk_close(st) : PS_OK;
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++)
        if (s->entries[i])
            ps_scope_free(st, ps_scope_of(s->entries[i]));
    ps_table_free(s, &st->mem);
    pthread_mutex_destroy(&st->mu);
    const ps_allocator *a = st->mem.a;
    a->free(a->ctx, st);
    return rc;
}

/* ---- reads ---------------------------------------------------------------- */

int ps_get(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
           const ps_sink *value)
{
    return ps_get_seen(st, scope, slen, key, klen, value, NULL);
}

int ps_get_seen(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
                const ps_sink *value, uint64_t *seen)
{
    int rc = 0;
    ps_where sw, kw;
    lock(st);
    ps_scope *sc = recall_scope(st, scope, slen);
    const int recalled = sc != NULL;
    if (!recalled)
        sc = scope_for_read(st, scope, slen, &sw, &rc);
    if (sc && rc == 0) {
        const unsigned char *it = recalled ? recall_key(st, sc, key, klen, &kw) : NULL;
        if (!it)
            it = ps_table_find(&sc->table, key, klen, ps_hash(&st->hasher, key, klen), &kw);
        remember(st, recalled ? NULL : &sw, &kw, it != NULL);
        if (it)
            rc = value ? deliver(value, ps_item_value(it), ps_item_vlen(it)) : PS_OK;
        else
            rc = PS_NOTFOUND;
    } else if (rc == 0) {
        rc = PS_NOTFOUND;
    }
    if (seen)
        /* This call's number, which st->last keeps (see recall). */
        *seen = rc == PS_OK && !st->disk ? st->calls : 0;
    unlock(st);
    return rc;
}

int ps_prefetch(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen)
{
    ps_where w;
    lock(st);
    /* The scope as this process has it: no catching up with other
     * processes here (ps_get does that), so nothing is read or changed. */
    ps_scope *sc = ps_scope_find(st, scope, slen, &w);
    if (sc) {
        ps_table_prefetch(&sc->table, ps_hash(&st->hasher, key, klen));
        /* Where an update that outgrows its item (a counter that gains a
         * digit, an append) writes the new one. */
        ps_arena_prefetch(&sc->table.arena, 256);
        remember(st, &w, NULL, 0); /* saves the ps_get that follows the scope's lookup */
    }
    unlock(st);
    return PS_OK;
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
    ps_scope *sc = scope_for_read(st, scope, slen, &w, &rc);
    if (rc) {
        unlock(st);
        return rc;
    }
    const ps_table *t = sc ? &sc->table : NULL;
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

static void put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

int ps_items(ps_store *st, const char *scope, size_t slen, uint32_t *pos,
             size_t max, const ps_sink *out, size_t *count)
{
    int rc = 0;
    ps_where w;
    *count = 0;
    lock(st);
    ps_scope *sc = scope_for_read(st, scope, slen, &w, &rc);
    if (rc) {
        unlock(st);
        return rc;
    }
    const ps_table *t = sc ? &sc->table : NULL;
    uint32_t end = t ? t->n_entries : 0;
    uint32_t i = *pos < end ? *pos : end, j = i;
    size_t size = 0, n = 0;
    /* First pass sizes the page, second copies it: one allocation, made
     * while the scope cannot change. */
    for (; j < end && (!max || n < max); j++) {
        const unsigned char *it = t->entries[j];
        if (!it)
            continue;
        size += 8 + (size_t)ps_item_klen(it) + ps_item_vlen(it);
        n++;
    }
    unsigned char *buf = out->alloc(out->ctx, size);
    if (!buf) {
        rc = ENOMEM;
    } else {
        for (; i < j; i++) {
            const unsigned char *it = t->entries[i];
            if (!it)
                continue;
            uint32_t kl = ps_item_klen(it), vl = ps_item_vlen(it);
            put_le32(buf, kl);
            memcpy(buf + 4, ps_item_key(it), kl);
            put_le32(buf + 4 + kl, vl);
            memcpy(buf + 8 + kl, ps_item_value(it), vl);
            buf += 8 + (size_t)kl + vl;
        }
        *pos = j;
        *count = n;
    }
    unlock(st);
    return rc;
}

/* Pack [u32 len][bytes] for each of n names; p has room for them all. */
static unsigned char *pack_name(unsigned char *p, const unsigned char *name, uint32_t n)
{
    put_le32(p, n);
    memcpy(p + 4, name, n);
    return p + 4 + n;
}

int ps_keys(ps_store *st, const char *scope, size_t slen, const ps_sink *out, size_t *count)
{
    int rc = 0;
    ps_where w;
    *count = 0;
    lock(st);
    ps_scope *sc = scope_for_read(st, scope, slen, &w, &rc);
    if (rc) {
        unlock(st);
        return rc;
    }
    const ps_table *t = sc ? &sc->table : NULL;
    uint32_t end = t ? t->n_entries : 0;
    size_t size = 0, n = 0;
    for (uint32_t i = 0; i < end; i++) {
        const unsigned char *it = t->entries[i];
        if (it) {
            size += 4 + (size_t)ps_item_klen(it);
            n++;
        }
    }
    unsigned char *buf = out->alloc(out->ctx, size);
    if (!buf) {
        rc = ENOMEM;
    } else {
        for (uint32_t i = 0; i < end; i++) {
            const unsigned char *it = t->entries[i];
            if (it)
                buf = pack_name(buf, ps_item_key(it), ps_item_klen(it));
        }
        *count = n;
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
    lock(st);
    int rc = st->disk ? ps_disk_follow_all(st) : 0;
    if (rc) {
        unlock(st);
        return rc;
    }
    ps_table *s = &st->scopes;
    size_t k = 0, total = 0;
    name_ref *names = NULL;
    if (s->n_live) {
        names = ps_mem_alloc(&st->mem, s->n_live * sizeof *names);
        if (!names) {
            unlock(st);
            return ENOMEM;
        }
    }
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it || ps_scope_of(it)->table.n_live == 0)
            continue; /* a file-based scope whose keys are all deleted */
        names[k].p = ps_item_key(it);
        names[k].n = ps_item_klen(it);
        total += 4 + names[k].n;
        k++;
    }
    if (k > 1)
        qsort(names, k, sizeof *names, cmp_names);
    unsigned char *buf = out->alloc(out->ctx, total);
    if (!buf) {
        rc = ENOMEM;
    } else {
        unsigned char *p = buf;
        for (size_t i = 0; i < k; i++)
            p = pack_name(p, names[i].p, names[i].n);
        if (count)
            *count = k;
    }
    ps_mem_free(&st->mem, names, s->n_live * sizeof *names);
    unlock(st);
    return rc;
}

/* ---- writes -------------------------------------------------------------- */

/* Store value at key in sc, logging it first in a file-based store.
 * it/kw: the key's lookup in sc. */
static int put_locked(ps_store *st, ps_scope *sc, const char *scope, size_t slen,
                      const unsigned char *it, ps_where *kw, const char *key, size_t klen,
                      const char *value, size_t vlen, ps_commit *c)
{
    ps_table *t = &sc->table;
    ps_pending p;
    size_t old_vlen = it ? ps_item_vlen(it) : 0;
    int rc = it ? ps_table_prepare_replace(t, &st->mem, kw, value, vlen, &p)
                : ps_table_prepare_insert(t, &st->mem, &st->hasher, kw, key, klen, value, vlen, &p);
    if (rc)
        return rc;
    if (st->disk) {
        rc = ps_disk_append(st, sc, scope, slen, PS_REC_PUT, key, klen, value, vlen, c);
        if (rc) {
            ps_table_abort(t, &st->mem, &p);
            return rc;
        }
        if (it)
            ps_disk_superseded(sc, klen, old_vlen);
    }
    if (it)
        ps_table_commit_replace(t, &st->mem, kw, &p, value, vlen);
    else
        ps_table_commit_insert(t, kw, &p);
    if (st->disk)
        ps_disk_maybe_compact(st, sc, scope, slen);
    return 0;
}

/* Find or create the scope (creation cannot leave an empty scope behind
 * in memory: a failed write drops it again). */
static ps_scope *scope_for_write(ps_store *st, const char *scope, size_t slen, ps_where *sw,
                                 int *created)
{
    ps_scope *sc = ps_scope_find(st, scope, slen, sw);
    *created = 0;
    if (!sc && st->disk) {
        int err = 0;
        sc = ps_disk_discover(st, scope, slen, sw, &err);
    }
    if (!sc) {
        sc = ps_scope_add(st, sw, scope, slen);
        if (sc) {
            *created = 1;
            (void)ps_scope_find(st, scope, slen, sw); /* the add moved things */
        }
    }
    return sc;
}

/* With st locked, take (sc) for a change: found or made, and, file-based,
 * locked against other processes and up to date. NULL with *rc set on
 * failure, and st then unlocked. */
static ps_scope *begin_write(ps_store *st, const char *scope, size_t slen, ps_where *sw,
                             int *created, int *rc)
{
    ps_scope *sc = scope_for_write(st, scope, slen, sw, created);
    *rc = sc ? 0 : ENOMEM;
    if (sc && st->disk)
        *rc = ps_disk_write_begin(st, sc, scope, slen);
    if (*rc) {
        unlock(st);
        return NULL;
    }
    return sc;
}

int ps_put(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
           const char *value, size_t vlen, const ps_sink *old, int *existed)
{
    if (st->read_only)
        return PS_READONLY;
    if (too_long(st, slen, klen, vlen))
        return PS_TOOBIG;
    int rc, created;
    ps_where sw, kw;
    ps_commit c = {NULL, 0, 0, -1};
    lock(st);
    ps_scope *sc = begin_write(st, scope, slen, &sw, &created, &rc);
    if (!sc)
        return rc;
    const unsigned char *it =
        ps_table_find(&sc->table, key, klen, ps_hash(&st->hasher, key, klen), &kw);
    rc = (it && old) ? deliver(old, ps_item_value(it), ps_item_vlen(it)) : 0;
    if (rc == 0)
        rc = put_locked(st, sc, scope, slen, it, &kw, key, klen, value, vlen, &c);
    if (st->disk)
        ps_disk_write_end(st, sc);
    if (rc && created)
        drop_if_empty(st, sc, &sw);
    unlock(st);
    if (rc == 0 && existed)
        *existed = it != NULL;
    if (rc == 0)
        rc = ps_disk_commit_wait(st, &c);
    return rc;
}

int ps_put_if(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
              const char *value, size_t vlen, const char *expect, size_t elen)
{
    if (st->read_only)
        return PS_READONLY;
    if (too_long(st, slen, klen, vlen))
        return PS_TOOBIG;
    int rc, created = 0;
    ps_where sw, kw;
    ps_commit c = {NULL, 0, 0, -1};
    lock(st);
    /* Nearly always the key the caller has just read (see recall). */
    ps_scope *sc = recall_scope(st, scope, slen);
    const unsigned char *it = sc ? recall_key(st, sc, key, klen, &kw) : NULL;
    const int recalled = it != NULL;
    if (!recalled) {
        sc = begin_write(st, scope, slen, &sw, &created, &rc);
        if (!sc)
            return rc;
        it = ps_table_find(&sc->table, key, klen, ps_hash(&st->hasher, key, klen), &kw);
    }
    if (!it) {
        rc = expect ? PS_CONFLICT : 0;
    } else if (!expect || ps_item_vlen(it) != elen ||
               (elen && memcmp(ps_item_value(it), expect, elen) != 0)) {
        rc = PS_CONFLICT;
    } else {
        rc = 0;
    }
    if (rc == 0)
        rc = put_locked(st, sc, scope, slen, it, &kw, key, klen, value, vlen, &c);
    if (rc == 0 && it)
        remember(st, recalled ? NULL : &sw, &kw, 1); /* a replace moves nothing */
    if (st->disk)
        ps_disk_write_end(st, sc);
    if (rc && created)
        drop_if_empty(st, sc, &sw);
    unlock(st);
    if (rc == 0)
        rc = ps_disk_commit_wait(st, &c);
    return rc;
}

int ps_put_seen(ps_store *st, uint64_t seen, const char *value, size_t vlen)
{
    if (st->read_only)
        return PS_READONLY;
    if (vlen > PS_MAX_LEN)
        return PS_TOOBIG;
    int rc = PS_CONFLICT;
    lock(st);
    /* The read was the last call, so st->last is its lookup, and nothing
     * has changed since: in memory every change is a call. */
    if (seen && seen == st->last.calls && seen + 1 == st->calls && st->last.found && !st->disk) {
        ps_where kw = st->last.key;
        rc = ps_table_replace(&ps_scope_of(st->last.scope)->table, &st->mem, &kw, value, vlen);
        if (rc == 0)
            remember(st, NULL, &kw, 1); /* a replace moves nothing */
    }
    unlock(st);
    return rc;
}

int ps_del(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen,
           const ps_sink *old)
{
    if (st->read_only)
        return PS_READONLY;
    int rc = 0;
    ps_where sw, kw;
    ps_commit c = {NULL, 0, 0, -1};
    lock(st);
    ps_scope *sc = ps_scope_find(st, scope, slen, &sw);
    if (!sc && st->disk)
        sc = ps_disk_discover(st, scope, slen, &sw, &rc);
    if (sc && st->disk && (rc = ps_disk_write_begin(st, sc, scope, slen)) != 0) {
        unlock(st);
        return rc;
    }
    if (rc == 0 && !sc)
        rc = PS_NOTFOUND;
    if (sc && rc == 0) {
        const unsigned char *it =
            ps_table_find(&sc->table, key, klen, ps_hash(&st->hasher, key, klen), &kw);
        rc = PS_NOTFOUND;
        if (it) {
            rc = old ? deliver(old, ps_item_value(it), ps_item_vlen(it)) : 0;
            if (rc == 0 && st->disk) {
                size_t vlen = ps_item_vlen(it);
                rc = ps_disk_append(st, sc, scope, slen, PS_REC_DEL, key, klen, NULL, 0, &c);
                if (rc == 0)
                    ps_disk_superseded(sc, klen, vlen);
            }
            if (rc == 0) {
                ps_table_remove(&sc->table, &st->mem, &st->hasher, &kw);
                if (st->disk)
                    ps_disk_maybe_compact(st, sc, scope, slen);
                drop_if_empty(st, sc, &sw);
            }
        }
        if (st->disk)
            ps_disk_write_end(st, sc);
    }
    unlock(st);
    if (rc == 0)
        rc = ps_disk_commit_wait(st, &c);
    return rc;
}

/* ---- stats ------------------------------------------------------------------ */

void ps_stats_get(ps_store *st, ps_stats *out)
{
    memset(out, 0, sizeof *out);
    lock(st);
    if (st->disk)
        (void)ps_disk_follow_all(st); /* (counters: what could be read) */
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        if (!s->entries[i])
            continue;
        const ps_table *t = &ps_scope_of(s->entries[i])->table;
        out->scopes += t->n_live > 0;
        out->keys += t->n_live;
        out->key_bytes += t->key_bytes;
        out->value_bytes += t->value_bytes;
        out->dead_bytes += t->arena.dead;
    }
    out->heap_bytes = st->mem.bytes;
    unlock(st);
    if (st->disk)
        ps_disk_stats(st, out);
}
