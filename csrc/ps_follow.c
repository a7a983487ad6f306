/*
 * ps_follow.c - several processes, one store: following the logs others
 * append to, and their changes kept as events (ps_events).
 *
 * Each process keeps its own tables and follows the logs: a scope's slot
 * (ps_shm.h) says where its log ends and which file it is, and whenever
 * that differs from what the table reflects (l->seen), the records in
 * between are read and applied, or, when the file changed, the scope is
 * read afresh. Reads do this without any cross-process lock (published
 * bytes never change); writes hold the slot's lock, so they append at
 * the true end and compare against the latest value.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ps_disk_impl.h"

/* ---- the slot, the file and the table ------------------------------------------- */

void ps_mark_known(ps_disk *d, const ps_shm_slot *slot)
{
    uint32_t i = ps_shm_slot_index(&d->shm, slot);
    d->known[i / 8] |= (unsigned char)(1u << (i % 8));
}

static int is_known(const ps_disk *d, const ps_shm_slot *slot)
{
    uint32_t i = ps_shm_slot_index(&d->shm, slot);
    return (d->known[i / 8] >> (i % 8)) & 1;
}

static void slot_name(char *out, const ps_shm_slot *slot)
{
    if (slot->twin)
        snprintf(out, NAME_MAX_LEN, "%016llx-%u.log", (unsigned long long)slot->fhash, slot->twin);
    else
        snprintf(out, NAME_MAX_LEN, "%016llx.log", (unsigned long long)slot->fhash);
}

/* Forget a scope's keys (its file was replaced or removed). */
static void reset_scope(ps_store *st, ps_scope *sc)
{
    ps_table_free(&sc->table, &st->mem);
    ps_table_init(&sc->table);
    ps_logf *l = sc->log;
    ps_logf_close_fd(st->disk, l);
    l->present = 0;
    l->size = l->hsize = l->live = 0;
    l->next_seq = 1;
    atomic_store(&l->appended, 0);
    ps_disk *d = st->disk;
    pthread_mutex_lock(&d->sync_mu);
    l->gen++;
    l->durable_gen = l->gen;
    l->durable = 0;
    l->broken = 0;
    pthread_cond_broadcast(&d->sync_cv);
    pthread_mutex_unlock(&d->sync_mu);
}

/* Read n bytes at off of l's file into scratch. */
static int read_at(ps_store *st, ps_logf *l, uint64_t off, size_t n)
{
    int rc = ps_ensure_scratch(st, n ? n : 1);
    if (rc == 0)
        rc = ps_logf_fd(st->disk, l); /* (another log may have taken its descriptor) */
    if (rc)
        return rc;
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(l->fd, st->disk->scratch + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? errno : PS_CORRUPT; /* published bytes are missing */
        got += (size_t)r;
    }
    return 0;
}

/* Open the file the slot names (state w) as sc's log, header checked. */
static int reopen(ps_store *st, ps_scope *sc, uint64_t w)
{
    ps_disk *d = st->disk;
    ps_logf *l = sc->log;
    reset_scope(st, sc);
    if (ps_shm_end(w) == 0)
        return 0; /* the scope has no log */
    slot_name(l->name, l->slot);
    int rc = ps_logf_fd(d, l);
    if (rc)
        return rc == ENOENT ? EAGAIN : rc;
    /* The name was read between two loads of the same state: a file put
     * under it since would have changed the state first. */
    if (atomic_load_explicit(&l->slot->state, memory_order_acquire) != w) {
        ps_logf_close_fd(d, l);
        return EAGAIN;
    }
    size_t hsize = ps_log_header_size(l->scope_len);
    if (ps_shm_end(w) < hsize || (rc = read_at(st, l, 0, hsize)) != 0)
        return rc ? rc : PS_CORRUPT;
    ps_loghdr h;
    if (ps_log_header_parse(d->scratch, hsize, &h) != PS_OK || h.nlen != l->scope_len ||
        memcmp(h.name, l->scope_name, h.nlen) != 0) {
        ps_logf_close_fd(d, l);
        return PS_CORRUPT;
    }
    uint64_t hint;
    l->no_prealloc = ps_log_end_hint(d->scratch, h.salt, &hint) && hint == PS_LOG_NO_PREALLOC;
    ps_trim_scratch(st);
    l->salt = h.salt;
    l->present = 1;
    l->hsize = l->size = hsize;
    l->next_seq = 1;
    return 0;
}

/* ---- other processes' changes, as events (ps_events) ---------------------------- */

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Keep one change: kind (PS_REC_PUT or PS_REC_DEL), the old value (NULL:
 * none) and the new one (NULL for a delete). */
static int keep_event(ps_store *st, const ps_logf *l, int kind, const void *key, size_t klen,
                      const void *old, size_t olen, const void *now, size_t nlen)
{
    ps_disk *d = st->disk;
    size_t need = 1 + 4 + l->scope_len + 4 + klen + 4 + olen + 4 + nlen;
    if (ps_grow_buf(st, &d->ev, &d->ev_cap, d->ev_len + need) != 0)
        return ENOMEM;
    unsigned char *p = d->ev + d->ev_len;
    *p++ = (unsigned char)kind;
    put_u32(p, (uint32_t)l->scope_len);
    memcpy(p + 4, l->scope_name, l->scope_len);
    p += 4 + l->scope_len;
    put_u32(p, (uint32_t)klen);
    memcpy(p + 4, key, klen);
    p += 4 + klen;
    /* (lengths + 1, so that 0 says "none") */
    put_u32(p, old ? (uint32_t)olen + 1 : 0);
    if (old && olen)
        memcpy(p + 4, old, olen);
    p += 4 + olen;
    put_u32(p, now ? (uint32_t)nlen + 1 : 0);
    if (now && nlen)
        memcpy(p + 4, now, nlen);
    d->ev_len += need;
    d->ev_count++;
    return 0;
}

/* The change a record read from another process makes, before it is applied. */
static int event_of(ps_store *st, ps_scope *sc, const ps_rec *r)
{
    ps_where w;
    const unsigned char *it =
        ps_table_find(&sc->table, r->key, r->klen, ps_hash(&st->hasher, r->key, r->klen), &w);
    if (r->kind == PS_REC_DEL && !it)
        return 0;
    return keep_event(st, sc->log, r->kind, r->key, r->klen, it ? ps_item_value(it) : NULL,
                      it ? ps_item_vlen(it) : 0, r->kind == PS_REC_PUT ? r->value : NULL, r->vlen);
}

/* A scope read afresh (its file replaced by another process's compaction,
 * or removed): the changes from `old`, what the table held, to now. The
 * records in between are gone, so each key changed gives one event. */
static int events_of_diff(ps_store *st, ps_scope *sc, const ps_table *old)
{
    const ps_table *t = &sc->table;
    int rc = 0;
    for (uint32_t i = 0; i < t->n_entries && rc == 0; i++) {
        const unsigned char *it = t->entries[i];
        if (!it)
            continue;
        ps_where w;
        const unsigned char *was = ps_table_find(old, ps_item_key(it), ps_item_klen(it),
                                                 ps_hash(&st->hasher, ps_item_key(it), ps_item_klen(it)), &w);
        if (was && ps_item_vlen(was) == ps_item_vlen(it) &&
            memcmp(ps_item_value(was), ps_item_value(it), ps_item_vlen(it)) == 0)
            continue;
        rc = keep_event(st, sc->log, PS_REC_PUT, ps_item_key(it), ps_item_klen(it),
                        was ? ps_item_value(was) : NULL, was ? ps_item_vlen(was) : 0,
                        ps_item_value(it), ps_item_vlen(it));
    }
    for (uint32_t i = 0; i < old->n_entries && rc == 0; i++) {
        const unsigned char *was = old->entries[i];
        if (!was)
            continue;
        ps_where w;
        if (!ps_table_find(t, ps_item_key(was), ps_item_klen(was),
                           ps_hash(&st->hasher, ps_item_key(was), ps_item_klen(was)), &w))
            rc = keep_event(st, sc->log, PS_REC_DEL, ps_item_key(was), ps_item_klen(was),
                            ps_item_value(was), ps_item_vlen(was), NULL, 0);
    }
    return rc;
}

/* ---- catching up with a log, and writing to it ---------------------------------- */

/* Apply the records of l's file from l->size to end (keeping each as an
 * event when `emit`). */
static int read_records(ps_store *st, ps_scope *sc, uint64_t end, int emit)
{
    ps_logf *l = sc->log;
    size_t n = (size_t)(end - l->size);
    int rc = read_at(st, l, l->size, n);
    if (rc)
        return rc;
    const unsigned char *p = st->disk->scratch;
    ps_replay rp = {st, sc};
    size_t off = 0;
    ps_rec r;
    while (off < n) {
        if (!ps_rec_parse(p + off, n - off, l->salt, &r) || r.seq != l->next_seq) {
            rc = PS_CORRUPT;
            break;
        }
        if (emit && (rc = event_of(st, sc, &r)) != 0)
            break;
        if ((rc = ps_replay_record(&rp, &r)) != 0)
            break;
        off += r.size;
        l->size += r.size;
        l->next_seq++;
    }
    atomic_store_explicit(&l->appended, l->size, memory_order_release);
    ps_trim_scratch(st);
    return rc;
}

/* A process died in the middle of changing the slot's file (its state is
 * odd): find what is under the scope's name now and publish it. Called
 * holding the slot's lock. */
static int repair_slot(ps_store *st, ps_scope *sc)
{
    ps_shm_slot *slot = sc->log->slot;
    uint64_t w = atomic_load(&slot->state), gen = ps_shm_gen(w);
    if (!(gen & 1))
        return 0;
    ps_disk *d = st->disk;
    ps_logf *l = sc->log;
    reset_scope(st, sc);
    slot_name(l->name, slot);
    uint64_t end = 0;
    int rc = ps_logf_fd(d, l);
    if (rc == 0) {
        struct stat sb;
        if (fstat(l->fd, &sb) != 0)
            return errno;
        size_t size = (size_t)sb.st_size;
        if ((rc = read_at(st, l, 0, size)) != 0)
            return rc;
        ps_loghdr h;
        if (ps_log_header_parse(d->scratch, size, &h) != PS_OK)
            return PS_CORRUPT;
        ps_scan scan;
        ps_log_scan(d->scratch, size, h.size, 1, h.salt, NULL, NULL, &scan);
        end = scan.end;
        ps_logf_close_fd(d, l);
    } else if (rc != ENOENT) {
        return rc;
    }
    atomic_store_explicit(&slot->state, ps_shm_word(gen + 1, end), memory_order_release);
    return 0;
}

/* Lock sc's slot, repairing it if its last holder died. */
int ps_slot_lock(ps_store *st, ps_scope *sc)
{
    int rc = ps_shm_lock(sc->log->slot);
    if (rc == 1) {
        rc = repair_slot(st, sc);
        ps_shm_mark_consistent(sc->log->slot);
        if (rc) {
            ps_shm_unlock(sc->log->slot);
            return rc;
        }
    }
    return rc;
}

/* Bring sc up to date with its log. st->mu held; `locked`: the slot's
 * lock too. */
int ps_follow(ps_store *st, ps_scope *sc, int locked)
{
    ps_logf *l = sc->log;
    if (!l || !l->slot)
        return 0;
    /* With events kept, a scope read afresh is compared with what it held. */
    ps_table old;
    int diff = 0, rc = 0;
    for (unsigned spins = 0;; spins++) {
        uint64_t w = atomic_load_explicit(&l->slot->state, memory_order_acquire);
        if (w == l->seen)
            break;
        uint64_t gen = ps_shm_gen(w), end = ps_shm_end(w);
        if (gen & 1) {
            /* A file is being changed: wait for it (or, if its changer
             * died, repair it) by taking the lock. */
            if (locked) {
                rc = EIO;
                break;
            }
            if (st->disk->shm.writable) {
                if ((rc = ps_slot_lock(st, sc)) != 0)
                    break;
                ps_shm_unlock(l->slot);
            } else if (spins > 5000) {
                rc = EAGAIN;
                break;
            } else {
                usleep(1000);
            }
            continue;
        }
        if (gen != ps_shm_gen(l->seen) || end < l->size || !l->present) {
            if (st->disk->events_on && l->present && !diff) {
                old = sc->table; /* reset_scope frees the (fresh) table instead */
                ps_table_init(&sc->table);
                diff = 1;
            }
            rc = reopen(st, sc, w);
        }
        if (rc == EAGAIN) {
            rc = 0;
            continue;
        }
        /* Records of a scope this process knew already are changes; a
         * scope read for the first time is what was there (unless it is
         * one made since events were asked for, which follow_all reads
         * then). */
        if (rc == 0 && l->present)
            rc = read_records(st, sc, end, st->disk->events_on && !st->disk->events_quiet && !diff);
        if (rc)
            break;
        l->seen = w;
        break;
    }
    if (diff) {
        if (rc == 0 && !st->disk->events_quiet)
            rc = events_of_diff(st, sc, &old);
        ps_table_free(&old, &st->mem);
    }
    return rc;
}

/* Publish what this process appended to sc's log. Slot lock held. */
static void publish(ps_scope *sc)
{
    ps_logf *l = sc->log;
    uint64_t w = ps_shm_word(ps_shm_gen(l->seen), l->present ? l->size : 0);
    if (w != l->seen) {
        atomic_store_explicit(&l->slot->state, w, memory_order_release);
        l->seen = w;
    }
}

/* A scope this process has not seen, looked for in the slots: added
 * (at *w, which it moves) and read when it has a log. NULL: none. */
static ps_scope *adopt(ps_store *st, ps_shm_slot *slot, const void *name, size_t nlen,
                       ps_where *w, int *err)
{
    ps_disk *d = st->disk;
    char fname[NAME_MAX_LEN];
    slot_name(fname, slot);
    ps_scope *sc = ps_scope_add(st, w, name, nlen);
    ps_logf *l = sc ? ps_logf_new(st, fname, name, nlen) : NULL;
    if (!l) {
        if (sc) {
            (void)ps_scope_find(st, name, nlen, w);
            ps_table_remove(&st->scopes, &st->mem, &st->hasher, w);
            ps_scope_free(st, sc);
        }
        *err = ENOMEM;
        return NULL;
    }
    sc->log = l;
    l->slot = slot;
    l->seen = 0;
    ps_mark_known(d, slot);
    *err = ps_follow(st, sc, 0);
    return sc;
}

ps_scope *ps_disk_discover(ps_store *st, const void *name, size_t nlen, ps_where *w, int *err)
{
    ps_disk *d = st->disk;
    *err = 0;
    if (!d->shm.map)
        return NULL;
    ps_shm_slot *slot = ps_shm_find(&d->shm, name, nlen);
    if (!slot || atomic_load_explicit(&slot->state, memory_order_acquire) == 0)
        return NULL; /* never had a log */
    ps_scope *sc = adopt(st, slot, name, nlen, w, err);
    if (sc)
        (void)ps_scope_find(st, name, nlen, w);
    return sc;
}

/* The scope name in the header of the log a slot names, into scratch. */
static int slot_scope_name(ps_store *st, ps_shm_slot *slot, const unsigned char **name, size_t *nlen)
{
    ps_disk *d = st->disk;
    char fname[NAME_MAX_LEN];
    slot_name(fname, slot);
    int fd = ps_open_in_store(d, NULL, fname, O_RDONLY);
    if (fd < 0)
        return errno;
    unsigned char fixed[PS_LOG_FIXED_HEADER];
    ps_loghdr h;
    int rc = pread(fd, fixed, sizeof fixed, 0) == (ssize_t)sizeof fixed ? 0 : PS_CORRUPT;
    int parsed = rc ? PS_CORRUPT : ps_log_header_parse(fixed, sizeof fixed, &h);
    if (!rc && parsed == PS_OK) {
        /* an empty scope name: the fixed part is the whole header */
    } else if (!rc && parsed == PS_CORRUPT && h.block_ok) {
        rc = ps_ensure_scratch(st, h.size);
        if (!rc && pread(fd, d->scratch, h.size, 0) != (ssize_t)h.size)
            rc = PS_CORRUPT;
        if (!rc && ps_log_header_parse(d->scratch, h.size, &h) != PS_OK)
            rc = PS_CORRUPT;
    } else if (!rc) {
        rc = PS_CORRUPT;
    }
    close(fd);
    if (!rc && !ps_shm_owns(&d->shm, slot, h.name, h.nlen))
        rc = EAGAIN; /* another file under that name now */
    if (!rc) {
        *name = h.name;
        *nlen = h.nlen;
    }
    return rc;
}

int ps_disk_follow_all(ps_store *st)
{
    ps_disk *d = st->disk;
    if (!d || !d->shm.map)
        return 0;
    int rc = 0;
    /* Scopes others made. */
    uint32_t n = ps_shm_slots(&d->shm);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        ps_shm_slot *slot = ps_shm_slot_at(&d->shm, i);
        if (!slot || is_known(d, slot) ||
            ps_shm_end(atomic_load_explicit(&slot->state, memory_order_acquire)) == 0)
            continue;
        const unsigned char *name;
        size_t nlen;
        int e = slot_scope_name(st, slot, &name, &nlen);
        if (e == ENOENT || e == EAGAIN)
            continue; /* removed or replaced meanwhile: a later look finds it */
        if (e) {
            rc = e;
            break;
        }
        /* The name is in scratch, which adopting reuses. */
        unsigned char *copy = ps_mem_alloc(&st->mem, nlen ? nlen : 1);
        if (!copy) {
            rc = ENOMEM;
            break;
        }
        memcpy(copy, name, nlen);
        ps_where w;
        if (!ps_scope_find(st, copy, nlen, &w))
            (void)adopt(st, slot, copy, nlen, &w, &rc);
        ps_mem_free(&st->mem, copy, nlen ? nlen : 1);
    }
    /* And the news of every scope. */
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries && rc == 0; i++)
        if (s->entries[i])
            rc = ps_follow(st, ps_scope_of(s->entries[i]), 0);
    return rc;
}

int ps_disk_follow(ps_store *st, ps_scope *sc)
{
    return ps_follow(st, sc, 0);
}

int ps_disk_write_begin(ps_store *st, ps_scope *sc, const void *scope, size_t slen)
{
    ps_disk *d = st->disk;
    if (!d->shm.map)
        return 0;
    ps_logf *l = sc->log;
    if (!l) {
        char fname[NAME_MAX_LEN];
        snprintf(fname, sizeof fname, "%016llx.log", (unsigned long long)XXH3_64bits(scope, slen));
        if (!(l = ps_logf_new(st, fname, scope, slen)))
            return ENOMEM;
        sc->log = l;
    }
    if (!l->slot) {
        int err = 0;
        l->slot = ps_shm_claim(&d->shm, scope, slen, XXH3_64bits(scope, slen), &err);
        if (!l->slot)
            return err;
        l->seen = 0;
        ps_mark_known(d, l->slot);
    }
    int rc = ps_slot_lock(st, sc);
    if (rc)
        return rc;
    rc = ps_follow(st, sc, 1);
    if (rc)
        ps_shm_unlock(l->slot);
    return rc;
}

void ps_disk_write_end(ps_store *st, ps_scope *sc)
{
    if (!st->disk->shm.map)
        return;
    publish(sc);
    ps_shm_unlock(sc->log->slot);
}

/* ---- ps_events ------------------------------------------------------------------ */

int ps_events(ps_store *st, const ps_sink *out, size_t *count)
{
    *count = 0;
    ps_disk *d = st->disk;
    pthread_mutex_lock(&st->mu);
    int rc = 0;
    if (d && !d->events_on) {
        /* From now on: what is there now is read quietly, changes kept. */
        d->events_on = d->events_quiet = 1;
        rc = ps_disk_follow_all(st);
        d->events_quiet = 0;
    } else if (d) {
        rc = ps_disk_follow_all(st);
    }
    size_t n = d ? d->ev_len : 0;
    unsigned char *buf = rc == 0 ? out->alloc(out->ctx, n) : NULL;
    if (rc == 0 && !buf)
        rc = ENOMEM;
    if (rc == 0) {
        if (n)
            memcpy(buf, d->ev, n);
        *count = d ? d->ev_count : 0;
        if (d) {
            d->ev_len = d->ev_count = 0;
            if (d->ev_cap > (1u << 20)) { /* give back what a burst grew */
                ps_mem_free(&st->mem, d->ev, d->ev_cap);
                d->ev = NULL;
                d->ev_cap = 0;
            }
        }
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}
