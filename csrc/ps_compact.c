/*
 * ps_compact.c - compaction: a log replaced by one that holds only its
 * scope's current values, so that a log grows with what its scope holds,
 * not with how often it was written. Asked for by the write path, done by
 * the maintenance thread (ps_sync.c), by ps_compact, and by recovery to
 * write what it salvaged.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ps_disk_impl.h"

#define WRITE_BUFFER (1u << 20)
#define SNAPSHOT_COPY_MAX ((size_t)256 << 20)

static void hook(ps_disk *d, int point)
{
    if (d->hook)
        d->hook(d->hook_ctx, point);
}

/* ---- writing a fresh log -------------------------------------------------------- */

/* A buffered writer for rewriting a log. */
typedef struct writer {
    int fd;
    uint64_t off;
    unsigned char *buf;
    size_t used, cap;
    int err;
} writer;

static void w_flush(writer *w)
{
    if (!w->err && w->used) {
        w->err = ps_file_append(w->fd, w->buf, w->used, w->off);
        w->off += w->used;
    }
    w->used = 0;
}

/* Room for n contiguous bytes, or NULL after an error. */
static unsigned char *w_room(writer *w, size_t n)
{
    if (w->err)
        return NULL;
    if (w->cap - w->used < n)
        w_flush(w);
    if (w->err || n > w->cap)
        return NULL;
    unsigned char *p = w->buf + w->used;
    w->used += n;
    return p;
}

/* The live items of a scope, walked either in the table itself (with
 * st->mu held throughout) or in a copy of them (with no lock at all). */
typedef struct item_iter {
    const ps_table *t;
    uint32_t i;
    const unsigned char *p, *end;
} item_iter;

static const unsigned char *next_item(item_iter *it)
{
    if (it->t) {
        while (it->i < it->t->n_entries && !it->t->entries[it->i])
            it->i++;
        return it->i < it->t->n_entries ? it->t->entries[it->i++] : NULL;
    }
    if (it->p >= it->end)
        return NULL;
    const unsigned char *item = it->p;
    it->p += ps_item_size(item);
    return item;
}

/* Write a fresh log, salted `salt`, to the new temporary file fd (named
 * tmp): the scope's header, then its items as records numbered from 1,
 * with the end hint set; not synced. `buf` (`cap` bytes) is the write
 * buffer. Makes no allocation, so it may run without st->mu. Returns 0
 * and the file's size and next seq, or an errno (the file is then closed
 * and removed). */
static int write_snapshot(ps_disk *d, const ps_logf *l, item_iter *items, unsigned char *buf,
                          size_t cap, uint64_t salt, int fd, const char *tmp, uint64_t *size,
                          uint64_t *next_seq)
{
    writer w = {fd, 0, buf, 0, cap, 0};
    size_t hsize = ps_log_header_size(l->scope_len);
    if (hsize <= w.cap) {
        ps_log_header_encode(w_room(&w, hsize), l->scope_name, l->scope_len, salt);
    } else {
        /* A scope name longer than the buffer: its header goes in parts. */
        unsigned char fixed[PS_LOG_FIXED_HEADER];
        ps_log_header_encode_fixed(fixed, l->scope_name, l->scope_len, salt);
        w.err = ps_pwrite_all(fd, fixed, PS_LOG_FIXED_HEADER, 0);
        if (!w.err)
            w.err = ps_pwrite_all(fd, l->scope_name, l->scope_len, PS_LOG_FIXED_HEADER);
        w.off = hsize;
    }
    uint64_t seq = 1;
    const unsigned char *it;
    while (!w.err && (it = next_item(items)) != NULL) {
        size_t klen = ps_item_klen(it), vlen = ps_item_vlen(it);
        size_t n = ps_rec_size(klen, vlen);
        unsigned char *p = n <= w.cap ? w_room(&w, n) : NULL;
        if (p) {
            ps_rec_encode(p, salt, PS_REC_PUT, seq++, ps_item_key(it), klen, ps_item_value(it), vlen);
            continue;
        }
        if (w.err)
            break;
        /* Bigger than the buffer: head, key and value written in place. */
        w_flush(&w);
        unsigned char head[PS_REC_HEADER + 10];
        size_t hn = ps_rec_encode_head(head, salt, PS_REC_PUT, seq++, ps_item_key(it), klen,
                                       ps_item_value(it), vlen);
        if (!w.err)
            w.err = ps_pwrite_all(fd, head, hn, w.off);
        if (!w.err)
            w.err = ps_pwrite_all(fd, ps_item_key(it), klen, w.off + hn);
        if (!w.err)
            w.err = ps_pwrite_all(fd, ps_item_value(it), vlen, w.off + hn + klen);
        w.off += n;
    }
    w_flush(&w);
    if (!w.err)
        w.err = ps_write_end_hint(fd, d->sync_mode == PS_SYNC_ALWAYS ? PS_LOG_NO_PREALLOC : w.off, salt);
    if (w.err) {
        close(fd);
        unlinkat(d->dirfd, tmp, 0);
        return w.err;
    }
    *size = w.off;
    *next_seq = seq;
    return 0;
}

/* Append the records the old log received from `from` on to the new log
 * (fd, at *size), renumbered from *next_seq. Called with st->mu held. */
static int copy_tail(ps_store *st, ps_logf *l, uint64_t from, int fd, uint64_t salt,
                     uint64_t *size, uint64_t *next_seq)
{
    size_t n = (size_t)(l->size - from);
    if (!n)
        return 0;
    unsigned char *src = NULL, *buf = NULL, *out = NULL;
    int rc = 0;
    if (l->map && l->size <= l->map_cap) {
        src = l->map + from;
    } else {
        /* sync=always logs are written, not mapped: read the tail back. */
        buf = ps_mem_alloc(&st->mem, n);
        if (!buf)
            return ENOMEM;
        ssize_t got = pread(l->fd, buf, n, (off_t)from);
        if (got != (ssize_t)n)
            rc = got < 0 ? errno : EIO;
        src = buf;
    }
    /* Renumbering changes no sizes: the copy is as long as the tail. */
    if (!rc && !(out = ps_mem_alloc(&st->mem, n)))
        rc = ENOMEM;
    size_t off = 0;
    ps_rec r;
    while (!rc && off < n) {
        if (!ps_rec_parse(src + off, n - off, l->salt, &r)) {
            rc = EIO; /* our own records: cannot happen unless the disk lies */
            break;
        }
        ps_rec_encode(out + off, salt, r.kind, (*next_seq)++, r.key, r.klen, r.value, r.vlen);
        off += r.size;
    }
    if (!rc)
        rc = ps_file_append(fd, out, n, *size);
    if (!rc) {
        *size += n;
        if (st->disk->sync_mode != PS_SYNC_ALWAYS)
            rc = ps_write_end_hint(fd, *size, salt);
    }
    ps_mem_free(&st->mem, out, n);
    ps_mem_free(&st->mem, buf, n);
    return rc;
}

/* Bytes of log records that hold sc's current values. */
static uint64_t live_bytes(const ps_scope *sc)
{
    uint64_t live = 0;
    const ps_table *t = &sc->table;
    for (uint32_t i = 0; i < t->n_entries; i++)
        if (t->entries[i])
            live += ps_rec_size(ps_item_klen(t->entries[i]), ps_item_vlen(t->entries[i]));
    return live;
}

/* ---- compaction ----------------------------------------------------------------- */

/* Remove the log of a scope that holds no key. st->mu held. */
static int remove_log(ps_store *st, ps_logf *l)
{
    ps_disk *d = st->disk;
    ps_logf_close_fd(d, l);
    ps_begin_file_change(l);
    if (unlinkat(d->dirfd, l->name, 0) != 0 && errno != ENOENT) {
        int e = errno;
        ps_end_file_change(l); /* (the same file: others read it afresh) */
        return e;
    }
    l->present = 0;
    l->size = l->hsize = l->live = 0;
    atomic_store(&l->appended, 0);
    ps_end_file_change(l);
    pthread_mutex_lock(&d->sync_mu);
    l->gen++;
    l->durable_gen = l->gen;
    l->durable = 0;
    if (d->sync_mode != PS_SYNC_ALWAYS)
        d->dir_dirty = 1;
    pthread_cond_broadcast(&d->sync_cv);
    pthread_mutex_unlock(&d->sync_mu);
    d->compactions++;
    return d->sync_mode == PS_SYNC_ALWAYS ? ps_fsync_dir(d) : 0;
}

/* Replace sc's log by one holding only its live records (or remove it
 * when sc holds no key). Called WITHOUT st->mu: the bulk of the work,
 * writing and syncing the new file, runs without it, so writers carry on;
 * what they append meanwhile is copied over at the end, with the lock.
 *
 * Crash-safe at every step: until the rename the old log is untouched,
 * and the new one is complete and synced before the rename. */
int ps_compact_scope(ps_store *st, ps_scope *sc)
{
    ps_disk *d = st->disk;
    pthread_mutex_lock(&st->mu);
    ps_logf *l = sc->log;
    if (l)
        l->want_compact = 0; /* a later write queues it again if still wanted */
    int shared = l && l->slot && d->shm.map;
    int rc0 = shared ? ps_slot_lock(st, sc) : 0;
    if (rc0 == 0 && shared && (rc0 = ps_follow(st, sc, 1)) != 0)
        ps_shm_unlock(l->slot);
    if (rc0 || !l || !l->present || l->compacting) {
        if (shared && !rc0)
            ps_shm_unlock(l->slot);
        pthread_mutex_unlock(&st->mu);
        return rc0;
    }
    if (sc->table.n_live == 0) {
        /* Nothing to keep: the log goes, which is what its deletes meant. */
        int rc = remove_log(st, l);
        if (shared)
            ps_shm_unlock(l->slot);
        pthread_mutex_unlock(&st->mu);
        return rc;
    }
    /* Others may write while the snapshot is written: what they append
     * is copied over at the end, under the lock again. */
    if (shared)
        ps_shm_unlock(l->slot);
    char tmp[NAME_MAX_LEN];
    uint64_t salt = ps_random_u64(); /* a new file, a new salt */
    int fd = -1;
    uint64_t size = 0, next_seq = 0;
    /* A consistent snapshot needs the lock, but only for a memcpy of the
     * items: encoding and writing them happen after it is released. (A
     * scope too big to copy is written with the lock held instead.) */
    size_t copy_len = (size_t)sc->table.arena.live;
    unsigned char *copy = copy_len <= SNAPSHOT_COPY_MAX ? ps_mem_alloc(&st->mem, copy_len) : NULL;
    unsigned char *wbuf = ps_mem_alloc(&st->mem, WRITE_BUFFER);
    int rc = wbuf ? 0 : ENOMEM;
    if (!rc && (fd = ps_create_temp(d, l->name, tmp)) < 0)
        rc = errno;
    item_iter items = {&sc->table, 0, NULL, NULL};
    if (!rc && copy) {
        unsigned char *q = copy;
        const unsigned char *it;
        while ((it = next_item(&items)) != NULL) {
            size_t n = ps_item_size(it);
            memcpy(q, it, n);
            q += n;
        }
        items = (item_iter){NULL, 0, copy, q};
    } else if (!rc) {
        rc = write_snapshot(d, l, &items, wbuf, WRITE_BUFFER, salt, fd, tmp, &size, &next_seq);
    }
    uint64_t from = l->size, gen = l->gen;
    if (!rc)
        l->compacting = 1;
    pthread_mutex_unlock(&st->mu);
    if (!rc && copy)
        rc = write_snapshot(d, l, &items, wbuf, WRITE_BUFFER, salt, fd, tmp, &size, &next_seq);
    if (rc) {
        pthread_mutex_lock(&st->mu);
        l->compacting = 0;
        ps_mem_free(&st->mem, copy, copy_len);
        ps_mem_free(&st->mem, wbuf, WRITE_BUFFER);
        pthread_mutex_unlock(&st->mu);
        return rc;
    }

    hook(d, PS_HOOK_COMPACT_WRITTEN);
    rc = ps_datasync(fd);
    hook(d, PS_HOOK_COMPACT_SYNCED);

    pthread_mutex_lock(&st->mu);
    l->compacting = 0;
    ps_mem_free(&st->mem, copy, copy_len);
    ps_mem_free(&st->mem, wbuf, WRITE_BUFFER);
    int slocked = 0;
    if (!rc && shared) {
        rc = ps_slot_lock(st, sc);
        slocked = rc == 0;
        if (!rc)
            rc = ps_follow(st, sc, 1);
    }
    if (!rc && (l->gen != gen || !l->present))
        rc = EAGAIN; /* the log was replaced meanwhile: this copy is stale */
    uint64_t synced_size = size;
    if (!rc && l->size != from) {
        rc = ps_logf_fd(d, l); /* the tail is read through it */
        if (!rc)
            rc = copy_tail(st, l, from, fd, salt, &size, &next_seq);
        /* With sync=always those records were synced in the old log by the
         * writers that wrote them: they must be in the new one before it
         * takes the old one's place. Otherwise they were not promised yet,
         * and the next periodic sync takes care of them. */
        if (!rc && d->sync_mode == PS_SYNC_ALWAYS) {
            rc = ps_datasync(fd);
            synced_size = size;
        }
    }
    if (!rc) {
        ps_begin_file_change(l);
        if (renameat(d->dirfd, tmp, d->dirfd, l->name) != 0) {
            rc = errno;
            ps_end_file_change(l); /* the old file stays: others read it afresh */
        }
    }
    if (rc) {
        close(fd);
        unlinkat(d->dirfd, tmp, 0);
        if (slocked)
            ps_shm_unlock(l->slot);
        pthread_mutex_unlock(&st->mu);
        return rc == EAGAIN ? 0 : rc;
    }
    hook(d, PS_HOOK_COMPACT_RENAMED);
    /* The old file is gone from the directory either way; a crash before
     * the directory is synced shows the old or the new log, both complete.
     * Synced now, in every mode, before any write can go into the new
     * file: a write must never land in a file whose name may not last. */
    int dir_rc = ps_fsync_dir(d);
    hook(d, PS_HOOK_COMPACT_DONE);
    ps_logf_close_fd(d, l);
    while (d->n_open >= d->max_open && d->lru_tail)
        ps_logf_close_fd(d, d->lru_tail);
    l->fd = fd;
    ps_lru_push(d, l);
    d->n_open++;
    l->hsize = ps_log_header_size(l->scope_len);
    l->salt = salt;
    l->no_prealloc = d->sync_mode == PS_SYNC_ALWAYS;
    l->size = size;
    l->live = live_bytes(sc);
    l->next_seq = next_seq;
    pthread_mutex_lock(&d->sync_mu);
    l->gen++;
    l->durable_gen = l->gen;
    l->durable = synced_size;
    /* Everything is in a fresh file, synced up to synced_size. But a
     * rename not known durable means later writes could be lost with it:
     * refused, as after a failed fdatasync, until a compaction or reopen. */
    l->broken = dir_rc;
    if (dir_rc)
        d->dir_dirty = 1;
    pthread_cond_broadcast(&d->sync_cv);
    pthread_mutex_unlock(&d->sync_mu);
    atomic_store(&l->appended, size);
    ps_end_file_change(l);
    if (slocked)
        ps_shm_unlock(l->slot);
    d->compactions++;
    pthread_mutex_unlock(&st->mu);
    return dir_rc;
}

void ps_disk_maybe_compact(ps_store *st, ps_scope *sc, const void *scope, size_t slen)
{
    (void)scope;
    (void)slen;
    ps_disk *d = st->disk;
    ps_logf *l = sc->log;
    if (!l || !l->present || l->want_compact)
        return;
    uint64_t dead = l->size - l->hsize - l->live;
    if (dead > 2 * l->live && dead > d->compact_min_dead) {
        /* Not here, on the writer's time: the maintenance thread does it. */
        l->want_compact = 1;
        pthread_mutex_lock(&d->sync_mu);
        d->compact_pending = 1;
        pthread_cond_broadcast(&d->sync_cv);
        pthread_mutex_unlock(&d->sync_mu);
    }
}

int ps_compact(ps_store *st, const char *scope, size_t slen)
{
    if (!st->disk)
        return 0;
    if (st->disk->read_only)
        return PS_READONLY;
    pthread_mutex_lock(&st->mu);
    ps_table *s = &st->scopes;
    size_t n = s->n_live, k = 0;
    ps_scope **todo = n ? ps_mem_alloc(&st->mem, n * sizeof *todo) : NULL;
    if (n && !todo) {
        pthread_mutex_unlock(&st->mu);
        return ENOMEM;
    }
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it)
            continue;
        if (scope && (ps_item_klen(it) != slen || memcmp(ps_item_key(it), scope, slen) != 0))
            continue;
        todo[k++] = ps_scope_of(it);
    }
    pthread_mutex_unlock(&st->mu);
    int rc = 0;
    for (size_t i = 0; i < k && rc == 0; i++)
        rc = ps_compact_scope(st, todo[i]);
    pthread_mutex_lock(&st->mu);
    ps_mem_free(&st->mem, todo, n * sizeof *todo);
    pthread_mutex_unlock(&st->mu);
    return rc;
}
