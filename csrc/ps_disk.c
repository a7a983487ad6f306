/*
 * ps_disk.c - a scope's log file: its descriptor, its creation, appends to
 * it, and replaying its records (how the parts of the file-based store fit
 * together: ps_disk_impl.h).
 *
 * Appends
 *   A log grows in preallocated steps (posix_fallocate, so a full disk
 *   shows up as ENOSPC there rather than as SIGBUS later) and is mapped
 *   shared: appending a record is a memcpy into the page cache, with no
 *   system call, and the header's end hint is updated after it. That
 *   makes the write visible to the operating system as soon as the copy
 *   is done. On close the unused preallocation is truncated away; after a
 *   crash, recovery tells it from lost records by the end hint (ps_log.h).
 *   With sync=always, where an fdatasync per write dwarfs everything,
 *   records and the hint are pwrite()n instead and files never hold
 *   preallocated space.
 *
 * Descriptors
 *   At most max_open logs keep a descriptor (an LRU); every other
 *   descriptor the store opens is held for one step at a time (a sync, a
 *   check, a load), so any number of scopes works within the budget.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ps_disk_impl.h"

/* ---- small helpers -------------------------------------------------------------- */

int ps_fsync_dir(ps_disk *d)
{
    return ps_dir_fsync(d->dirfd);
}

int ps_datasync(int fd)
{
    while (fdatasync(fd) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

/* Write all of buf at off, over what is there. Returns 0 or an errno. */
int ps_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const unsigned char *b = buf;
    while (n) {
        ssize_t w = pwrite(fd, b, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int ps_write_end_hint(int fd, uint64_t end, uint64_t salt)
{
    unsigned char b[8];
    ps_log_end_hint_bytes(b, end, salt);
    return ps_pwrite_all(fd, b, 8, PS_LOG_END_OFFSET);
}

/* Make *buf (of *cap bytes, doubling from 4 KiB) hold at least n. */
int ps_grow_buf(ps_store *st, unsigned char **buf, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < n)
        c *= 2;
    unsigned char *p = ps_mem_realloc(&st->mem, *buf, *cap, c);
    if (!p)
        return ENOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

int ps_ensure_scratch(ps_store *st, size_t n)
{
    return ps_grow_buf(st, &st->disk->scratch, &st->disk->scratch_cap, n);
}

/* Give back a scratch buffer that a huge value grew. */
void ps_trim_scratch(ps_store *st)
{
    ps_disk *d = st->disk;
    if (d->scratch_cap > (4u << 20)) {
        ps_mem_free(&st->mem, d->scratch, d->scratch_cap);
        d->scratch = NULL;
        d->scratch_cap = 0;
    }
}

/* ---- descriptors: at most max_open logs keep one open --------------------------- */

static void lru_unlink(ps_disk *d, ps_logf *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        d->lru_head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    else
        d->lru_tail = l->prev;
    l->prev = l->next = NULL;
}

void ps_lru_push(ps_disk *d, ps_logf *l)
{
    l->prev = NULL;
    l->next = d->lru_head;
    if (d->lru_head)
        d->lru_head->prev = l;
    d->lru_head = l;
    if (!d->lru_tail)
        d->lru_tail = l;
}

static void log_unmap(ps_disk *d, ps_logf *l)
{
    if (!l->map)
        return;
    pthread_mutex_lock(&d->map_mu);
    munmap(l->map, l->map_cap);
    l->map = NULL;
    l->faulted = 0;
    pthread_mutex_unlock(&d->map_mu);
    /* Give back the preallocated tail: a closed log ends at its last
     * record. (If this fails the zeros stay, and are skipped at open.)
     * Only with the directory to ourselves: another process may have the
     * file mapped, and a store past the end of a file is a SIGBUS. */
    if (l->map_cap > l->size && d->may_trim)
        while (ftruncate(l->fd, (off_t)l->size) != 0 && errno == EINTR)
            ;
    l->map_cap = 0;
}

void ps_logf_close_fd(ps_disk *d, ps_logf *l)
{
    if (l->fd < 0)
        return;
    log_unmap(d, l);
    lru_unlink(d, l);
    close(l->fd);
    l->fd = -1;
    d->n_open--;
}

#define GROW_MIN (64u << 10)

#define GROW_MAX (64u << 20)

/* Make room for n more bytes in l's mapping: extend the file by a
 * preallocated step (just n when a step does not fit) and map it.
 * Returns 0 or an errno (ENOSPC, EFBIG...); the log is then unchanged. */
static int log_reserve(ps_disk *d, ps_logf *l, size_t n)
{
    uint64_t need = l->size + n;
    if (l->map && need <= l->map_cap)
        return 0;
    struct stat sb;
    if (!l->map) {
        if (fstat(l->fd, &sb) != 0)
            return errno;
        l->map_cap = (uint64_t)sb.st_size < l->size ? l->size : (uint64_t)sb.st_size;
    }
    uint64_t step = l->size / 4;
    step = step < GROW_MIN ? GROW_MIN : step > GROW_MAX ? GROW_MAX : step;
    uint64_t cap = l->map_cap;
    if (need > cap) {
        cap = need + step;
        int rc = posix_fallocate(l->fd, (off_t)l->map_cap, (off_t)(cap - l->map_cap));
        if (rc) {
            cap = need; /* near a limit: just this record */
            rc = posix_fallocate(l->fd, (off_t)l->map_cap, (off_t)(cap - l->map_cap));
        }
        if (rc)
            return rc;
    }
    pthread_mutex_lock(&d->map_mu);
    /* (A moved mapping keeps its pages: what was prefaulted stays so.) */
    void *m = l->map ? mremap(l->map, l->map_cap, cap, MREMAP_MAYMOVE)
                     : mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
    int rc = m == MAP_FAILED ? errno : 0; /* a failed mremap leaves the old mapping in place */
    if (!rc) {
        l->map = m; /* (a fresh map: log_unmap left faulted at 0) */
        l->map_cap = cap;
    }
    pthread_mutex_unlock(&d->map_mu);
    return rc;
}

/* ---- prefaulting appends -------------------------------------------------------- */

/* The first write to each page of a mapping is a page fault: the kernel
 * finds or makes the page-cache page, zeroes it and marks it dirty, some
 * microseconds each, one per 4 KiB of records. The maintenance thread
 * takes that off the writers by faulting the pages just ahead of a log's
 * end in (MADV_POPULATE_WRITE, which writes nothing), AHEAD bytes at a
 * time, asked for when less than half of that is left. Within the
 * preallocated space only, so no page beyond the file is touched. */
#define FAULT_AHEAD (256u << 10)

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL */
#endif

/* Under st->mu, after an append to l's mapping. */
static void want_prefault(ps_disk *d, ps_logf *l)
{
    /* (Not for a small log: its pages would mostly stay zeros.) */
    if (l->want_fault || d->no_populate || l->size < FAULT_AHEAD ||
        l->faulted >= l->size + FAULT_AHEAD / 2 || l->faulted >= l->map_cap)
        return;
    l->want_fault = 1;
    pthread_mutex_lock(&d->sync_mu);
    d->fault_pending = 1;
    /* A polling thread finds the request by itself: no futex wake-up,
     * which costs a busy writer more than the faults it saves. */
    if (!d->polling)
        pthread_cond_broadcast(&d->sync_cv);
    pthread_mutex_unlock(&d->sync_mu);
}

void ps_disk_prefault(ps_store *st)
{
    ps_disk *d = st->disk;
    long page = sysconf(_SC_PAGESIZE);
    uint64_t pg = page > 0 ? (uint64_t)page : 4096;
    pthread_mutex_lock(&st->mu);
    size_t n = st->scopes.n_live, k = 0;
    ps_logf **want = n ? ps_mem_alloc(&st->mem, n * sizeof *want) : NULL;
    for (uint32_t i = 0; i < st->scopes.n_entries; i++) {
        const unsigned char *it = st->scopes.entries[i];
        ps_logf *l = it ? ps_scope_of(it)->log : NULL;
        if (l && l->want_fault) {
            l->want_fault = 0; /* (out of memory: the next append asks again) */
            if (want)
                want[k++] = l;
        }
    }
    /* A ps_logf lives until the store closes, and this thread stops before. */
    for (size_t i = 0; i < k && !d->no_populate; i++) {
        ps_logf *l = want[i];
        if (!l->map)
            continue;
        /* Whole pages, from the one the log ends in (written to already,
         * so it faults in for nothing) to AHEAD past the end. */
        uint64_t from = (l->faulted > l->size ? l->faulted : l->size) / pg * pg;
        uint64_t to = l->size + FAULT_AHEAD;
        to = (to < l->map_cap ? to : l->map_cap) / pg * pg;
        if (to <= from)
            continue;
        unsigned char *map = l->map;
        /* The mapping stays put under map_mu; writers go on meanwhile. */
        pthread_mutex_lock(&d->map_mu);
        pthread_mutex_unlock(&st->mu);
        int err = madvise(map + from, to - from, MADV_POPULATE_WRITE) != 0 ? errno : 0;
        pthread_mutex_unlock(&d->map_mu);
        pthread_mutex_lock(&st->mu);
        if (err == EINVAL || err == ENOSYS)
            d->no_populate = 1;
        else if (!err && l->map == map && to > l->faulted)
            l->faulted = to;
    }
    ps_mem_free(&st->mem, want, n * sizeof *want);
    pthread_mutex_unlock(&st->mu);
}

/* A full descriptor table (ours or the process's): give back the least
 * recently used log descriptor, other than `keep`'s, and say whether one
 * was. */
static int evict_one(ps_disk *d, const ps_logf *keep)
{
    ps_logf *victim = d->lru_tail;
    if (victim == keep)
        victim = victim ? victim->prev : NULL;
    if (!victim)
        return 0;
    ps_logf_close_fd(d, victim);
    return 1;
}

/* Open a file of the store (no link followed), making room in the
 * descriptor table if it is full. Under st->mu. -1 and errno on failure. */
int ps_open_in_store(ps_disk *d, const ps_logf *keep, const char *name, int flags)
{
    for (;;) {
        int fd = ps_dir_open_file(d->dirfd, name, flags);
        if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !evict_one(d, keep))
            return fd;
    }
}

/* A new temporary file `<base>.tmp-<hex>` (its name into tmp), making
 * room in the descriptor table if it is full. Under st->mu. */
int ps_create_temp(ps_disk *d, const char *base, char *tmp)
{
    for (;;) {
        int fd = ps_dir_create_temp(d->dirfd, base, tmp);
        if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !evict_one(d, NULL))
            return fd;
    }
}

/* Make l's descriptor open and most recently used. */
int ps_logf_fd(ps_disk *d, ps_logf *l)
{
    if (l->fd >= 0) {
        if (d->lru_head != l) {
            lru_unlink(d, l);
            ps_lru_push(d, l);
        }
        return 0;
    }
    while (d->n_open >= d->max_open && d->lru_tail)
        ps_logf_close_fd(d, d->lru_tail);
    int fd = ps_open_in_store(d, NULL, l->name, d->read_only ? O_RDONLY : O_RDWR);
    if (fd < 0)
        return errno;
    l->fd = fd;
    ps_lru_push(d, l);
    d->n_open++;
    return 0;
}

/* A descriptor of l's file for a thread working outside st->mu. Under
 * st->mu. -1 and errno on failure. */
int ps_private_fd(ps_disk *d, ps_logf *l)
{
    for (;;) {
        int fd = l->fd >= 0 ? fcntl(l->fd, F_DUPFD_CLOEXEC, 0)
                            : ps_dir_open_file(d->dirfd, l->name, O_RDONLY);
        if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !evict_one(d, l))
            return fd;
    }
}

ps_logf *ps_logf_new(ps_store *st, const char *name, const void *scope, size_t slen)
{
    ps_logf *l = ps_mem_alloc(&st->mem, sizeof *l);
    if (!l)
        return NULL;
    memset(l, 0, sizeof *l);
    l->scope_name = ps_mem_alloc(&st->mem, slen);
    if (!l->scope_name) {
        ps_mem_free(&st->mem, l, sizeof *l);
        return NULL;
    }
    if (slen)
        memcpy(l->scope_name, scope, slen);
    l->scope_len = slen;
    snprintf(l->name, sizeof l->name, "%s", name);
    l->fd = -1;
    l->next_seq = 1;
    return l;
}

/* ---- a log's file changing, as other processes see it --------------------------- */

/* Mark the slot's file as changing (before a create, rename or remove). */
void ps_begin_file_change(ps_logf *l)
{
    if (!l->slot)
        return;
    l->seen = ps_shm_word(ps_shm_gen(l->seen) + 1, ps_shm_end(l->seen));
    atomic_store_explicit(&l->slot->state, l->seen, memory_order_release);
}

/* ... and done: the file is l's now (or none, when !l->present). */
void ps_end_file_change(ps_logf *l)
{
    if (!l->slot)
        return;
    l->seen = ps_shm_word(ps_shm_gen(l->seen) + 1, l->present ? l->size : 0);
    atomic_store_explicit(&l->slot->state, l->seen, memory_order_release);
}

/* ---- creating a scope's log ----------------------------------------------------- */

/* A log first appears under a temporary name, holding its header, which
 * is synced before the file is renamed to a free log name (never over an
 * existing one): so a file under a log's name always has a whole header,
 * and a damaged one is damage, never a log still being created. */
static int create_log(ps_store *st, ps_scope *sc, const void *scope, size_t slen)
{
    ps_disk *d = st->disk;
    char base[NAME_MAX_LEN], name[NAME_MAX_LEN], tmp[NAME_MAX_LEN];
    unsigned long long h = (unsigned long long)XXH3_64bits(scope, slen);
    snprintf(base, sizeof base, "%016llx.log", h);
    size_t hsize = ps_log_header_size(slen);
    uint64_t salt = ps_random_u64();
    int rc = ps_ensure_scratch(st, hsize);
    if (rc)
        return rc;
    while (d->n_open >= d->max_open && d->lru_tail)
        ps_logf_close_fd(d, d->lru_tail);
    int fd = ps_create_temp(d, base, tmp);
    if (fd < 0)
        return errno;
    ps_log_header_encode(d->scratch, scope, slen, salt);
    int no_prealloc = d->sync_mode == PS_SYNC_ALWAYS;
    if (no_prealloc)
        ps_log_set_end_hint(d->scratch, PS_LOG_NO_PREALLOC, salt);
    rc = ps_file_append(fd, d->scratch, hsize, 0);
    if (rc == 0)
        rc = ps_datasync(fd);
    int renamed = 0;
    unsigned twin = 0;
    if (rc == 0 && sc->log)
        ps_begin_file_change(sc->log);
    for (unsigned n = 0; rc == 0 && !renamed; n++) {
        if (n == 0)
            snprintf(name, sizeof name, "%s", base);
        else
            snprintf(name, sizeof name, "%016llx-%u.log", h, n);
        rc = ps_dir_rename_noreplace(d->dirfd, tmp, name);
        renamed = rc == 0;
        twin = n;
        if (rc == EEXIST)
            rc = 0; /* a hash twin (or someone else's file) has that name: next */
    }
    /* The name must be durable before any record goes into the file, in
     * every mode: else a crash could leave records under the temporary
     * name only. */
    if (rc == 0)
        rc = ps_fsync_dir(d);
    /* A scope whose log was removed (all its keys deleted, then compacted)
     * gets its struct back: pointers to it may still be held by syncing
     * threads, so a log struct lives as long as the store. */
    ps_logf *l = rc ? NULL : sc->log ? sc->log : ps_logf_new(st, name, scope, slen);
    if (!l) {
        close(fd);
        /* Whichever name the file has now, it is ours and holds no record. */
        (void)unlinkat(d->dirfd, renamed ? name : tmp, 0);
        if (sc->log)
            ps_end_file_change(sc->log); /* still no log */
        return rc ? rc : ENOMEM;
    }
    snprintf(l->name, sizeof l->name, "%s", name);
    l->salt = salt;
    l->no_prealloc = no_prealloc;
    l->present = 1;
    l->next_seq = 1;
    l->live = 0;
    l->fd = fd;
    ps_lru_push(d, l);
    d->n_open++;
    l->hsize = l->size = hsize;
    atomic_store(&l->appended, hsize);
    pthread_mutex_lock(&d->sync_mu);
    l->gen++;
    l->durable_gen = l->gen;
    l->durable = hsize;
    l->broken = 0;
    pthread_mutex_unlock(&d->sync_mu);
    sc->log = l;
    if (l->slot)
        l->slot->twin = twin;
    ps_end_file_change(l);
    ps_trim_scratch(st);
    return 0;
}

/* ---- the write path ------------------------------------------------------------- */

int ps_disk_append(ps_store *st, ps_scope *sc, const void *scope, size_t slen, int kind,
                   const void *key, size_t klen, const void *value, size_t vlen, ps_commit *c)
{
    ps_disk *d = st->disk;
    int rc;
    if ((!sc->log || !sc->log->present) && (rc = create_log(st, sc, scope, slen)) != 0)
        return rc;
    ps_logf *l = sc->log;
    if (l->broken)
        return EIO; /* a failed fdatasync may have lost earlier writes */
    size_t n = ps_rec_size(klen, vlen);
    if ((rc = ps_logf_fd(d, l)) != 0)
        return rc;
    if (d->sync_mode == PS_SYNC_ALWAYS) {
        /* The descriptor the commit will sync, taken before anything is
         * written: once the record is in the log the write must go on. */
        c->fd = ps_private_fd(d, l);
        if (c->fd < 0)
            return errno;
        /* An fdatasync follows anyway: plain writes cost nothing extra
         * and keep the file exactly as long as its records. Once per log
         * and open, whatever preallocated space an earlier open in
         * another mode left goes, and the header says none follows: so
         * acknowledged records that later read as zeros are known lost. */
        rc = l->no_prealloc ? 0 : ftruncate(l->fd, (off_t)l->size) != 0 ? errno : 0;
        if (rc == 0 && !l->no_prealloc && (rc = ps_write_end_hint(l->fd, PS_LOG_NO_PREALLOC, l->salt)) == 0)
            l->no_prealloc = 1;
        if (rc == 0)
            rc = ps_ensure_scratch(st, n);
        if (rc == 0) {
            ps_rec_encode(d->scratch, l->salt, kind, l->next_seq, key, klen, value, vlen);
            rc = ps_file_append(l->fd, d->scratch, n, l->size);
        }
        ps_trim_scratch(st);
        if (rc) {
            close(c->fd);
            c->fd = -1;
            return rc;
        }
    } else {
        /* Preallocated zeros are about to follow: the hint must say where
         * the records end before they can. */
        if (l->no_prealloc) {
            /* Synced: space preallocated next must not outlive a hint that
             * says none follows (it would read as lost records). Once per
             * log that changes mode. */
            if ((rc = ps_write_end_hint(l->fd, l->size, l->salt)) != 0 || (rc = ps_datasync(l->fd)) != 0)
                return rc;
            l->no_prealloc = 0;
        }
        if ((rc = log_reserve(d, l, n)) != 0)
            return rc;
        ps_rec_encode(l->map + l->size, l->salt, kind, l->next_seq, key, klen, value, vlen);
        ps_log_set_end_hint(l->map, l->size + n, l->salt);
    }
    l->size += n;
    if (d->sync_mode != PS_SYNC_ALWAYS)
        want_prefault(d, l);
    l->next_seq++;
    atomic_store_explicit(&l->appended, l->size, memory_order_release);
    if (kind == PS_REC_PUT)
        l->live += n;
    if (d->sync_mode == PS_SYNC_ALWAYS) {
        c->log = l;
        c->gen = l->gen;
        c->end = l->size;
    }
    return 0;
}

void ps_disk_superseded(ps_scope *sc, size_t klen, size_t vlen)
{
    sc->log->live -= ps_rec_size(klen, vlen);
}

/* ---- replaying records into a table --------------------------------------------- */

/* Apply one record to a scope's table, keeping the log's accounting. */
int ps_replay_record(void *ctx, const ps_rec *r)
{
    ps_replay *rp = ctx;
    ps_store *st = rp->st;
    ps_table *t = &rp->sc->table;
    ps_logf *l = rp->sc->log;
    ps_where w;
    const unsigned char *it = ps_table_find(t, r->key, r->klen, ps_hash(&st->hasher, r->key, r->klen), &w);
    if (it && l)
        l->live -= ps_rec_size(ps_item_klen(it), ps_item_vlen(it));
    if (r->kind == PS_REC_PUT) {
        int rc = it ? ps_table_replace(t, &st->mem, &w, r->value, r->vlen)
                    : ps_table_insert(t, &st->mem, &st->hasher, &w, r->key, r->klen, r->value, r->vlen);
        if (rc)
            return rc;
        if (l)
            l->live += r->size;
    } else if (it) {
        ps_table_remove(t, &st->mem, &st->hasher, &w);
    }
    return 0;
}

/* ---- counters ------------------------------------------------------------------- */

void ps_disk_stats(ps_store *st, ps_stats *out)
{
    pthread_mutex_lock(&st->mu);
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        ps_logf *l = it ? ps_scope_of(it)->log : NULL;
        if (!l || !l->present)
            continue;
        out->log_bytes += l->size;
        out->log_dead_bytes += l->size - l->hsize - l->live;
    }
    out->compactions = st->disk->compactions;
    pthread_mutex_lock(&st->disk->sync_mu);
    out->sync_errors = st->disk->sync_errors;
    pthread_mutex_unlock(&st->disk->sync_mu);
    pthread_mutex_unlock(&st->mu);
}

static void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

int ps_scope_stats(ps_store *st, const ps_sink *out, size_t *count)
{
    pthread_mutex_lock(&st->mu);
    ps_table *s = &st->scopes;
    size_t total = 0, k = 0;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it)
            continue;
        ps_scope *sc = ps_scope_of(it);
        if (!sc->table.n_live && !(sc->log && sc->log->present))
            continue;
        total += 4 + ps_item_klen(it) + 32;
        k++;
    }
    unsigned char *buf = out->alloc(out->ctx, total);
    if (!buf) {
        pthread_mutex_unlock(&st->mu);
        return ENOMEM;
    }
    unsigned char *p = buf;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it)
            continue;
        ps_scope *sc = ps_scope_of(it);
        ps_logf *l = sc->log && sc->log->present ? sc->log : NULL;
        if (!sc->table.n_live && !l)
            continue;
        uint32_t n = ps_item_klen(it);
        put_le(p, n, 4);
        memcpy(p + 4, ps_item_key(it), n);
        p += 4 + n;
        put_le(p, sc->table.n_live, 8);
        put_le(p + 8, l ? l->live : 0, 8);
        put_le(p + 16, l ? l->size - l->hsize - l->live : 0, 8);
        put_le(p + 24, l ? l->size : 0, 8);
        p += 32;
    }
    if (count)
        *count = k;
    pthread_mutex_unlock(&st->mu);
    return 0;
}
