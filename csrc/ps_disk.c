/*
 * ps_disk.c - the file-based store: one append-only log per scope
 * (format in ps_log.h), replayed at open, appended before every change,
 * synced by policy, compacted when mostly dead.
 *
 * Directory
 *   The store directory, its marker and lock, and which names in it are
 *   the store's: ps_dir.h. A log is `<16 hex>[-<n>].log`, the hex being
 *   XXH3-64 of the scope name, so any scope (empty, "/", "..", NUL, 10,000
 *   characters, case twins) gives a safe name; the real name is inside
 *   the file. Nothing else in the directory is read, changed or removed,
 *   and no link is ever followed: every file is opened with O_NOFOLLOW,
 *   every file the store makes is created exclusively under a fresh
 *   random name and renamed into place.
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
 * Durability
 *   A write reaches the operating system before memory changes and before
 *   the call returns, so a killed process loses nothing acknowledged. fdatasync
 *   then follows the sync mode: after every write (sync=always; concurrent
 *   writers wait for one leader's sync, a group commit), from a background
 *   thread every interval (sync=interval), or never. In every mode a new
 *   log's header is synced, and its name (a rename) made durable with the
 *   directory, before its first record; a compaction's rename too, before
 *   the next write: so no write ever lands in a file whose name may not
 *   survive a crash.
 *
 * Recovery
 *   Open reads every log before changing anything. A log whose damage has
 *   no valid record after it has a torn tail, which is cut off and
 *   reported, and so are records the end hint says were there but that
 *   read as zeros or are missing. Damage with valid records after it, and
 *   any damaged header, is corruption: open fails (nothing on disk
 *   changed) or, with repair, salvages every valid record and moves the
 *   damaged file aside.
 *
 * Descriptors
 *   At most max_open logs keep a descriptor (an LRU); every other
 *   descriptor the store opens is held for one step at a time (a sync, a
 *   check, a load), so any number of scopes works within the budget.
 *
 * Locks
 *   st->mu guards logs' metadata and appends; disk->sync_mu guards what
 *   is known durable. fdatasync never runs under st->mu: the thread doing
 *   it works on a private descriptor (dup, or a fresh open by name), so a
 *   log's own descriptor can be closed or replaced meanwhile.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ps_dir.h"
#include "ps_log.h"
#include "ps_disk.h"
#include "ps_shm.h"

#define NAME_MAX_LEN PS_DIR_NAME_MAX
#define DEFAULT_INTERVAL_MS 5000
#define DEFAULT_MAX_OPEN 256
#define DEFAULT_COMPACT_MIN_DEAD (1u << 20)
#define WRITE_BUFFER (1u << 20)
#define SNAPSHOT_COPY_MAX ((size_t)256 << 20)

struct ps_logf {
    char name[NAME_MAX_LEN]; /* file name in the directory */
    uint64_t salt;           /* of the file now under that name */
    int fd;                  /* -1 while not open */
    unsigned char *map;      /* the file mapped for appends, or NULL */
    uint64_t map_cap;        /* bytes mapped: the file's size, preallocation included */
    uint64_t hsize;          /* header bytes */
    uint64_t size;           /* header plus whole records */
    uint64_t next_seq;
    uint64_t live;           /* record bytes holding current values */
    uint64_t gen;            /* bumped when compaction replaces the file */
    _Atomic uint64_t appended; /* size, readable without st->mu */
    /* under disk->sync_mu */
    uint64_t durable;        /* bytes of generation durable_gen known durable */
    uint64_t durable_gen;
    int syncing;
    int broken;              /* errno of a failed fdatasync: writes refused */
    int present;             /* the file exists (an emptied scope's log is removed) */
    int no_prealloc;         /* its end hint is PS_LOG_NO_PREALLOC (ps_log.h) */
    int compacting;          /* a compaction of this log is under way */
    int want_compact;        /* queued for the maintenance thread */
    unsigned char *scope_name; /* for headers of rewritten logs */
    size_t scope_len;
    /* shared (see "Several processes"): the scope's slot, NULL until
     * first needed, and the slot state that the table reflects */
    ps_shm_slot *slot;
    uint64_t seen;
    /* LRU of open descriptors, most recent first, under st->mu */
    ps_logf *prev, *next;
};

struct ps_disk {
    char *path;
    size_t path_cap;
    int dirfd;
    int lockfd;
    int sync_mode;
    uint32_t interval_ms;
    uint32_t max_open;
    uint32_t n_open;
    uint64_t compact_min_dead;
    ps_logf *lru_head, *lru_tail;
    unsigned char *scratch;
    size_t scratch_cap;
    ps_report recovery;
    uint64_t compactions;
    void (*hook)(void *, int);
    void *hook_ctx;
    int repair;
    int read_only;
    uint64_t sync_errors; /* under sync_mu: failed background syncs */
    /* durability */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    int dir_dirty; /* under sync_mu: entries created or renamed, dir not synced */
    /* background sync thread (sync=interval) */
    pthread_t thread;
    int thread_running;
    int stopping;        /* under sync_mu */
    int compact_pending; /* under sync_mu: some log wants compacting */
    /* several processes */
    ps_shm shm;          /* LOCK mapped; shm.map NULL: this store shares nothing */
    int may_trim;        /* alone: preallocated space may be cut (nobody else maps it) */
    unsigned char *known;/* a bit per slot: a scope of ours holds it */
    int joined;          /* opened while others had it: nothing was recovered */
    /* ps_events: other processes' changes, kept once asked for (under st->mu) */
    int events_on;
    int events_quiet; /* reading what is there when events were first asked for */
    unsigned char *ev;
    size_t ev_len, ev_cap, ev_count;
};

/* ---- small helpers -------------------------------------------------------------- */

static void report(ps_report *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void report(ps_report *rep, const char *fmt, ...)
{
    if (!rep)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->message, sizeof rep->message, fmt, ap);
    va_end(ap);
}

/* A printable, bounded rendering of a scope name for messages. */
static void printable(char *out, size_t cap, const void *name, size_t n)
{
    const unsigned char *p = name;
    size_t j = 0;
    for (size_t i = 0; i < n && j + 5 < cap; i++) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != 0x7f && c != '\\' && c != '\'')
            out[j++] = (char)c;
        else
            j += (size_t)snprintf(out + j, cap - j, "\\x%02x", c);
    }
    out[j] = 0;
}

static int fsync_dir(ps_disk *d)
{
    return ps_dir_fsync(d->dirfd);
}

static int datasync(int fd)
{
    while (fdatasync(fd) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

/* Write all of buf at off, over what is there. Returns 0 or an errno. */
static int pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
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

static int write_end_hint(int fd, uint64_t end, uint64_t salt)
{
    unsigned char b[8];
    ps_log_end_hint_bytes(b, end, salt);
    return pwrite_all(fd, b, 8, PS_LOG_END_OFFSET);
}

static void hook(ps_disk *d, int point)
{
    if (d->hook)
        d->hook(d->hook_ctx, point);
}

/* Make *buf (of *cap bytes, doubling from 4 KiB) hold at least n. */
static int grow_buf(ps_store *st, unsigned char **buf, size_t *cap, size_t n)
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

static int ensure_scratch(ps_store *st, size_t n)
{
    return grow_buf(st, &st->disk->scratch, &st->disk->scratch_cap, n);
}

/* Give back a scratch buffer that a huge value grew. */
static void trim_scratch(ps_store *st)
{
    ps_disk *d = st->disk;
    if (d->scratch_cap > (4u << 20)) {
        ps_mem_free(&st->mem, d->scratch, d->scratch_cap);
        d->scratch = NULL;
        d->scratch_cap = 0;
    }
}

/* ---- descriptors: at most max_open logs keep one open -------------------------- */

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

static void lru_push(ps_disk *d, ps_logf *l)
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
    munmap(l->map, l->map_cap);
    l->map = NULL;
    /* Give back the preallocated tail: a closed log ends at its last
     * record. (If this fails the zeros stay, and are skipped at open.)
     * Only with the directory to ourselves: another process may have the
     * file mapped, and a store past the end of a file is a SIGBUS. */
    if (l->map_cap > l->size && d->may_trim)
        while (ftruncate(l->fd, (off_t)l->size) != 0 && errno == EINTR)
            ;
    l->map_cap = 0;
}

static void log_close_fd(ps_disk *d, ps_logf *l)
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
static int log_reserve(ps_logf *l, size_t n)
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
    void *m = l->map ? mremap(l->map, l->map_cap, cap, MREMAP_MAYMOVE)
                     : mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, l->fd, 0);
    if (m == MAP_FAILED)
        return errno; /* a failed mremap leaves the old mapping in place */
    l->map = m;
    l->map_cap = cap;
    return 0;
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
    log_close_fd(d, victim);
    return 1;
}

/* Open a file of the store (no link followed), making room in the
 * descriptor table if it is full. Under st->mu. -1 and errno on failure. */
static int open_in_store(ps_disk *d, const ps_logf *keep, const char *name, int flags)
{
    for (;;) {
        int fd = ps_dir_open_file(d->dirfd, name, flags);
        if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !evict_one(d, keep))
            return fd;
    }
}

/* A new temporary file `<base>.tmp-<hex>` (its name into tmp), making
 * room in the descriptor table if it is full. Under st->mu. */
static int create_temp(ps_disk *d, const char *base, char *tmp)
{
    for (;;) {
        int fd = ps_dir_create_temp(d->dirfd, base, tmp);
        if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !evict_one(d, NULL))
            return fd;
    }
}

/* Make l's descriptor open and most recently used. */
static int log_fd(ps_disk *d, ps_logf *l)
{
    if (l->fd >= 0) {
        if (d->lru_head != l) {
            lru_unlink(d, l);
            lru_push(d, l);
        }
        return 0;
    }
    while (d->n_open >= d->max_open && d->lru_tail)
        log_close_fd(d, d->lru_tail);
    int fd = open_in_store(d, NULL, l->name, d->read_only ? O_RDONLY : O_RDWR);
    if (fd < 0)
        return errno;
    l->fd = fd;
    lru_push(d, l);
    d->n_open++;
    return 0;
}

/* A descriptor of l's file for a thread working outside st->mu. Under
 * st->mu. -1 and errno on failure. */
static int private_fd(ps_disk *d, ps_logf *l)
{
    for (;;) {
        int fd = l->fd >= 0 ? fcntl(l->fd, F_DUPFD_CLOEXEC, 0)
                            : ps_dir_open_file(d->dirfd, l->name, O_RDONLY);
        if (fd >= 0 || (errno != EMFILE && errno != ENFILE) || !evict_one(d, l))
            return fd;
    }
}

static ps_logf *log_new(ps_store *st, const char *name, const void *scope, size_t slen)
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

static void log_free(ps_store *st, ps_logf *l)
{
    log_close_fd(st->disk, l);
    ps_mem_free(&st->mem, l->scope_name, l->scope_len);
    ps_mem_free(&st->mem, l, sizeof *l);
}

static void begin_file_change(ps_logf *l);
static void end_file_change(ps_logf *l);

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
    int rc = ensure_scratch(st, hsize);
    if (rc)
        return rc;
    while (d->n_open >= d->max_open && d->lru_tail)
        log_close_fd(d, d->lru_tail);
    int fd = create_temp(d, base, tmp);
    if (fd < 0)
        return errno;
    ps_log_header_encode(d->scratch, scope, slen, salt);
    int no_prealloc = d->sync_mode == PS_SYNC_ALWAYS;
    if (no_prealloc)
        ps_log_set_end_hint(d->scratch, PS_LOG_NO_PREALLOC, salt);
    rc = ps_file_append(fd, d->scratch, hsize, 0);
    if (rc == 0)
        rc = datasync(fd);
    int renamed = 0;
    unsigned twin = 0;
    if (rc == 0 && sc->log)
        begin_file_change(sc->log);
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
        rc = fsync_dir(d);
    /* A scope whose log was removed (all its keys deleted, then compacted)
     * gets its struct back: pointers to it may still be held by syncing
     * threads, so a log struct lives as long as the store. */
    ps_logf *l = rc ? NULL : sc->log ? sc->log : log_new(st, name, scope, slen);
    if (!l) {
        close(fd);
        /* Whichever name the file has now, it is ours and holds no record. */
        (void)unlinkat(d->dirfd, renamed ? name : tmp, 0);
        if (sc->log)
            end_file_change(sc->log); /* still no log */
        return rc ? rc : ENOMEM;
    }
    snprintf(l->name, sizeof l->name, "%s", name);
    l->salt = salt;
    l->no_prealloc = no_prealloc;
    l->present = 1;
    l->next_seq = 1;
    l->live = 0;
    l->fd = fd;
    lru_push(d, l);
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
    end_file_change(l);
    trim_scratch(st);
    return 0;
}

/* ---- several processes: following logs others append to ------------------------- */

/* Each process keeps its own tables and follows the logs: a scope's slot
 * (ps_shm.h) says where its log ends and which file it is, and whenever
 * that differs from what the table reflects (l->seen), the records in
 * between are read and applied, or, when the file changed, the scope is
 * read afresh. Reads do this without any cross-process lock (published
 * bytes never change); writes hold the slot's lock, so they append at
 * the true end and compare against the latest value. */

static int replay_record(void *ctx, const ps_rec *r);

typedef struct replay {
    ps_store *st;
    ps_scope *sc;
} replay;

static void mark_known(ps_disk *d, const ps_shm_slot *slot)
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
    log_close_fd(st->disk, l);
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
    int rc = ensure_scratch(st, n ? n : 1);
    if (rc == 0)
        rc = log_fd(st->disk, l); /* (another log may have taken its descriptor) */
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
    int rc = log_fd(d, l);
    if (rc)
        return rc == ENOENT ? EAGAIN : rc;
    /* The name was read between two loads of the same state: a file put
     * under it since would have changed the state first. */
    if (atomic_load_explicit(&l->slot->state, memory_order_acquire) != w) {
        log_close_fd(d, l);
        return EAGAIN;
    }
    size_t hsize = ps_log_header_size(l->scope_len);
    if (ps_shm_end(w) < hsize || (rc = read_at(st, l, 0, hsize)) != 0)
        return rc ? rc : PS_CORRUPT;
    ps_loghdr h;
    if (ps_log_header_parse(d->scratch, hsize, &h) != PS_OK || h.nlen != l->scope_len ||
        memcmp(h.name, l->scope_name, h.nlen) != 0) {
        log_close_fd(d, l);
        return PS_CORRUPT;
    }
    uint64_t hint;
    l->no_prealloc = ps_log_end_hint(d->scratch, h.salt, &hint) && hint == PS_LOG_NO_PREALLOC;
    trim_scratch(st);
    l->salt = h.salt;
    l->present = 1;
    l->hsize = l->size = hsize;
    l->next_seq = 1;
    return 0;
}

/* ---- other processes' changes, as events (ps_events) ---- */

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
    if (grow_buf(st, &d->ev, &d->ev_cap, d->ev_len + need) != 0)
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
    replay rp = {st, sc};
    size_t off = 0;
    ps_rec r;
    while (off < n) {
        if (!ps_rec_parse(p + off, n - off, l->salt, &r) || r.seq != l->next_seq) {
            rc = PS_CORRUPT;
            break;
        }
        if (emit && (rc = event_of(st, sc, &r)) != 0)
            break;
        if ((rc = replay_record(&rp, &r)) != 0)
            break;
        off += r.size;
        l->size += r.size;
        l->next_seq++;
    }
    atomic_store_explicit(&l->appended, l->size, memory_order_release);
    trim_scratch(st);
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
    int rc = log_fd(d, l);
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
        log_close_fd(d, l);
    } else if (rc != ENOENT) {
        return rc;
    }
    atomic_store_explicit(&slot->state, ps_shm_word(gen + 1, end), memory_order_release);
    return 0;
}

/* Lock sc's slot, repairing it if its last holder died. */
static int slot_lock(ps_store *st, ps_scope *sc)
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
static int follow(ps_store *st, ps_scope *sc, int locked)
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
                if ((rc = slot_lock(st, sc)) != 0)
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

/* Mark the slot's file as changing (before a create, rename or remove). */
static void begin_file_change(ps_logf *l)
{
    if (!l->slot)
        return;
    l->seen = ps_shm_word(ps_shm_gen(l->seen) + 1, ps_shm_end(l->seen));
    atomic_store_explicit(&l->slot->state, l->seen, memory_order_release);
}

/* ... and done: the file is l's now (or none, when !l->present). */
static void end_file_change(ps_logf *l)
{
    if (!l->slot)
        return;
    l->seen = ps_shm_word(ps_shm_gen(l->seen) + 1, l->present ? l->size : 0);
    atomic_store_explicit(&l->slot->state, l->seen, memory_order_release);
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
    ps_logf *l = sc ? log_new(st, fname, name, nlen) : NULL;
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
    mark_known(d, slot);
    *err = follow(st, sc, 0);
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
    int fd = open_in_store(d, NULL, fname, O_RDONLY);
    if (fd < 0)
        return errno;
    unsigned char fixed[PS_LOG_FIXED_HEADER];
    ps_loghdr h;
    int rc = pread(fd, fixed, sizeof fixed, 0) == (ssize_t)sizeof fixed ? 0 : PS_CORRUPT;
    int parsed = rc ? PS_CORRUPT : ps_log_header_parse(fixed, sizeof fixed, &h);
    if (!rc && parsed == PS_OK) {
        /* an empty scope name: the fixed part is the whole header */
    } else if (!rc && parsed == PS_CORRUPT && h.block_ok) {
        rc = ensure_scratch(st, h.size);
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
            rc = follow(st, ps_scope_of(s->entries[i]), 0);
    return rc;
}

int ps_disk_follow(ps_store *st, ps_scope *sc)
{
    return follow(st, sc, 0);
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
        if (!(l = log_new(st, fname, scope, slen)))
            return ENOMEM;
        sc->log = l;
    }
    if (!l->slot) {
        int err = 0;
        l->slot = ps_shm_claim(&d->shm, scope, slen, XXH3_64bits(scope, slen), &err);
        if (!l->slot)
            return err;
        l->seen = 0;
        mark_known(d, l->slot);
    }
    int rc = slot_lock(st, sc);
    if (rc)
        return rc;
    rc = follow(st, sc, 1);
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
    if ((rc = log_fd(d, l)) != 0)
        return rc;
    if (d->sync_mode == PS_SYNC_ALWAYS) {
        /* The descriptor the commit will sync, taken before anything is
         * written: once the record is in the log the write must go on. */
        c->fd = private_fd(d, l);
        if (c->fd < 0)
            return errno;
        /* An fdatasync follows anyway: plain writes cost nothing extra
         * and keep the file exactly as long as its records. Once per log
         * and open, whatever preallocated space an earlier open in
         * another mode left goes, and the header says none follows: so
         * acknowledged records that later read as zeros are known lost. */
        rc = l->no_prealloc ? 0 : ftruncate(l->fd, (off_t)l->size) != 0 ? errno : 0;
        if (rc == 0 && !l->no_prealloc && (rc = write_end_hint(l->fd, PS_LOG_NO_PREALLOC, l->salt)) == 0)
            l->no_prealloc = 1;
        if (rc == 0)
            rc = ensure_scratch(st, n);
        if (rc == 0) {
            ps_rec_encode(d->scratch, l->salt, kind, l->next_seq, key, klen, value, vlen);
            rc = ps_file_append(l->fd, d->scratch, n, l->size);
        }
        trim_scratch(st);
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
            if ((rc = write_end_hint(l->fd, l->size, l->salt)) != 0 || (rc = datasync(l->fd)) != 0)
                return rc;
            l->no_prealloc = 0;
        }
        if ((rc = log_reserve(l, n)) != 0)
            return rc;
        ps_rec_encode(l->map + l->size, l->salt, kind, l->next_seq, key, klen, value, vlen);
        ps_log_set_end_hint(l->map, l->size + n, l->salt);
    }
    l->size += n;
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

/* Is everything of c durable? Under sync_mu. */
static int committed(const ps_logf *l, const ps_commit *c)
{
    return l->durable_gen > c->gen || (l->durable_gen == c->gen && l->durable >= c->end);
}

int ps_disk_commit_wait(ps_store *st, ps_commit *c)
{
    if (!c->log)
        return 0;
    ps_disk *d = st->disk;
    ps_logf *l = c->log;
    int rc = 0;
    pthread_mutex_lock(&d->sync_mu);
    while (!committed(l, c) && !l->broken) {
        if (l->syncing) {
            pthread_cond_wait(&d->sync_cv, &d->sync_mu);
            continue;
        }
        /* Lead: one fdatasync covers every write appended before it starts,
         * so writers that arrive meanwhile share the next one. */
        l->syncing = 1;
        uint64_t gen = l->gen, upto = atomic_load_explicit(&l->appended, memory_order_acquire);
        pthread_mutex_unlock(&d->sync_mu);
        int err = gen == c->gen ? datasync(c->fd) : 0;
        pthread_mutex_lock(&d->sync_mu);
        l->syncing = 0;
        if (err && gen == l->gen)
            l->broken = err; /* (a replaced file's failure is not the new file's) */
        else if (gen == l->durable_gen && upto > l->durable)
            l->durable = upto;
        pthread_cond_broadcast(&d->sync_cv);
    }
    if (!committed(l, c))
        rc = l->broken ? l->broken : EIO;
    pthread_mutex_unlock(&d->sync_mu);
    close(c->fd);
    c->fd = -1;
    c->log = NULL;
    return rc;
}

/* ---- compaction --------------------------------------------------------------------- */

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
        w.err = pwrite_all(fd, fixed, PS_LOG_FIXED_HEADER, 0);
        if (!w.err)
            w.err = pwrite_all(fd, l->scope_name, l->scope_len, PS_LOG_FIXED_HEADER);
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
            w.err = pwrite_all(fd, head, hn, w.off);
        if (!w.err)
            w.err = pwrite_all(fd, ps_item_key(it), klen, w.off + hn);
        if (!w.err)
            w.err = pwrite_all(fd, ps_item_value(it), vlen, w.off + hn + klen);
        w.off += n;
    }
    w_flush(&w);
    if (!w.err)
        w.err = write_end_hint(fd, d->sync_mode == PS_SYNC_ALWAYS ? PS_LOG_NO_PREALLOC : w.off, salt);
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
            rc = write_end_hint(fd, *size, salt);
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

/* Remove the log of a scope that holds no key. st->mu held. */
static int remove_log(ps_store *st, ps_logf *l)
{
    ps_disk *d = st->disk;
    log_close_fd(d, l);
    begin_file_change(l);
    if (unlinkat(d->dirfd, l->name, 0) != 0 && errno != ENOENT) {
        int e = errno;
        end_file_change(l); /* (the same file: others read it afresh) */
        return e;
    }
    l->present = 0;
    l->size = l->hsize = l->live = 0;
    atomic_store(&l->appended, 0);
    end_file_change(l);
    pthread_mutex_lock(&d->sync_mu);
    l->gen++;
    l->durable_gen = l->gen;
    l->durable = 0;
    if (d->sync_mode != PS_SYNC_ALWAYS)
        d->dir_dirty = 1;
    pthread_cond_broadcast(&d->sync_cv);
    pthread_mutex_unlock(&d->sync_mu);
    d->compactions++;
    return d->sync_mode == PS_SYNC_ALWAYS ? fsync_dir(d) : 0;
}

/* Replace sc's log by one holding only its live records (or remove it
 * when sc holds no key). Called WITHOUT st->mu: the bulk of the work,
 * writing and syncing the new file, runs without it, so writers carry on;
 * what they append meanwhile is copied over at the end, with the lock.
 *
 * Crash-safe at every step: until the rename the old log is untouched,
 * and the new one is complete and synced before the rename. */
static int compact_scope(ps_store *st, ps_scope *sc)
{
    ps_disk *d = st->disk;
    pthread_mutex_lock(&st->mu);
    ps_logf *l = sc->log;
    if (l)
        l->want_compact = 0; /* a later write queues it again if still wanted */
    int shared = l && l->slot && d->shm.map;
    int rc0 = shared ? slot_lock(st, sc) : 0;
    if (rc0 == 0 && shared && (rc0 = follow(st, sc, 1)) != 0)
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
    if (!rc && (fd = create_temp(d, l->name, tmp)) < 0)
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
    rc = datasync(fd);
    hook(d, PS_HOOK_COMPACT_SYNCED);

    pthread_mutex_lock(&st->mu);
    l->compacting = 0;
    ps_mem_free(&st->mem, copy, copy_len);
    ps_mem_free(&st->mem, wbuf, WRITE_BUFFER);
    int slocked = 0;
    if (!rc && shared) {
        rc = slot_lock(st, sc);
        slocked = rc == 0;
        if (!rc)
            rc = follow(st, sc, 1);
    }
    if (!rc && (l->gen != gen || !l->present))
        rc = EAGAIN; /* the log was replaced meanwhile: this copy is stale */
    uint64_t synced_size = size;
    if (!rc && l->size != from) {
        rc = log_fd(d, l); /* the tail is read through it */
        if (!rc)
            rc = copy_tail(st, l, from, fd, salt, &size, &next_seq);
        /* With sync=always those records were synced in the old log by the
         * writers that wrote them: they must be in the new one before it
         * takes the old one's place. Otherwise they were not promised yet,
         * and the next periodic sync takes care of them. */
        if (!rc && d->sync_mode == PS_SYNC_ALWAYS) {
            rc = datasync(fd);
            synced_size = size;
        }
    }
    if (!rc) {
        begin_file_change(l);
        if (renameat(d->dirfd, tmp, d->dirfd, l->name) != 0) {
            rc = errno;
            end_file_change(l); /* the old file stays: others read it afresh */
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
    int dir_rc = fsync_dir(d);
    hook(d, PS_HOOK_COMPACT_DONE);
    log_close_fd(d, l);
    while (d->n_open >= d->max_open && d->lru_tail)
        log_close_fd(d, d->lru_tail);
    l->fd = fd;
    lru_push(d, l);
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
    end_file_change(l);
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

/* ---- syncing everything ----------------------------------------------------------- */

/* fdatasync every log with writes not yet durable, and the directory if
 * it changed. One log at a time, each through a descriptor held only for
 * its sync, so it needs one descriptor whatever the number of scopes.
 * A log that cannot be synced stays not durable, so the next sync tries
 * it again. Called without st->mu. Returns the first error. */
static int sync_all(ps_store *st)
{
    ps_disk *d = st->disk;
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    size_t n = st->scopes.n_live, k = 0;
    ps_logf **logs = n ? ps_mem_alloc(&st->mem, n * sizeof *logs) : NULL;
    if (n && !logs) {
        pthread_mutex_unlock(&st->mu);
        return ENOMEM;
    }
    pthread_mutex_lock(&d->sync_mu);
    for (uint32_t i = 0; i < st->scopes.n_entries; i++) {
        const unsigned char *it = st->scopes.entries[i];
        ps_logf *l = it ? ps_scope_of(it)->log : NULL;
        if (l && l->present && !(l->durable_gen == l->gen && l->durable >= l->size))
            logs[k++] = l;
    }
    int dir = d->dir_dirty;
    d->dir_dirty = 0;
    pthread_mutex_unlock(&d->sync_mu);
    pthread_mutex_unlock(&st->mu);

    if (dir) {
        int err = fsync_dir(d);
        if (err) {
            rc = err;
            pthread_mutex_lock(&d->sync_mu);
            d->dir_dirty = 1;
            pthread_mutex_unlock(&d->sync_mu);
        }
    }
    /* The logs are still valid here: a ps_logf, once made, lives until
     * the store closes (an emptied scope's log loses its file, not its
     * struct). */
    for (size_t i = 0; i < k; i++) {
        ps_logf *l = logs[i];
        pthread_mutex_lock(&st->mu);
        pthread_mutex_lock(&d->sync_mu);
        int dirty = l->present && !(l->durable_gen == l->gen && l->durable >= l->size);
        uint64_t gen = l->gen, upto = l->size;
        pthread_mutex_unlock(&d->sync_mu);
        int fd = dirty ? private_fd(d, l) : -1;
        int err = dirty && fd < 0 ? errno : 0;
        pthread_mutex_unlock(&st->mu);
        if (fd >= 0) {
            err = datasync(fd);
            close(fd);
            pthread_mutex_lock(&d->sync_mu);
            if (err && l->gen == gen)
                l->broken = err; /* the kernel may have dropped those pages */
            else if (l->durable_gen == gen && upto > l->durable)
                l->durable = upto;
            pthread_cond_broadcast(&d->sync_cv);
            pthread_mutex_unlock(&d->sync_mu);
        }
        if (err && !rc)
            rc = err;
    }
    pthread_mutex_lock(&st->mu);
    ps_mem_free(&st->mem, logs, n * sizeof *logs);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Compact every log the write path queued. Called without st->mu. */
static void run_wanted_compactions(ps_store *st)
{
    pthread_mutex_lock(&st->mu);
    size_t n = st->scopes.n_live, k = 0;
    ps_scope **want = n ? ps_mem_alloc(&st->mem, n * sizeof *want) : NULL;
    for (uint32_t i = 0; i < st->scopes.n_entries; i++) {
        const unsigned char *it = st->scopes.entries[i];
        ps_scope *sc = it ? ps_scope_of(it) : NULL;
        if (sc && sc->log && sc->log->want_compact) {
            if (want)
                want[k++] = sc;
            else
                sc->log->want_compact = 0; /* out of memory: later writes queue it again */
        }
    }
    pthread_mutex_unlock(&st->mu);
    /* Scopes of a file-based store live until it closes, and this thread
     * is stopped before that. A failed compaction leaves the old log. */
    for (size_t i = 0; i < k; i++)
        (void)compact_scope(st, want[i]);
    pthread_mutex_lock(&st->mu);
    ps_mem_free(&st->mem, want, n * sizeof *want);
    pthread_mutex_unlock(&st->mu);
}

static void add_ms(struct timespec *t, uint32_t ms)
{
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

static int before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* The maintenance thread: compactions the write path asked for, and the
 * periodic fdatasync of sync=interval. Work that writers should not wait
 * for. */
static void *maintenance_thread(void *arg)
{
    ps_store *st = arg;
    ps_disk *d = st->disk;
    int periodic = d->sync_mode == PS_SYNC_INTERVAL;
    struct timespec next;
    clock_gettime(CLOCK_REALTIME, &next);
    add_ms(&next, d->interval_ms);
    pthread_mutex_lock(&d->sync_mu);
    while (!d->stopping) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        int due = periodic && !before(&now, &next);
        if (!due && !d->compact_pending) {
            if (periodic)
                pthread_cond_timedwait(&d->sync_cv, &d->sync_mu, &next);
            else
                pthread_cond_wait(&d->sync_cv, &d->sync_mu);
            continue;
        }
        int compact = d->compact_pending;
        d->compact_pending = 0;
        pthread_mutex_unlock(&d->sync_mu);
        if (compact)
            run_wanted_compactions(st);
        if (due && sync_all(st) != 0) {
            /* Not ignored: a failed fdatasync marks its log broken (its
             * writes fail from now on); a log that could not even be
             * opened stays not durable, so the next interval, flush() and
             * close() try it again and report what still fails. */
            pthread_mutex_lock(&d->sync_mu);
            d->sync_errors++;
            pthread_mutex_unlock(&d->sync_mu);
        }
        if (due) {
            clock_gettime(CLOCK_REALTIME, &next);
            add_ms(&next, d->interval_ms);
        }
        pthread_mutex_lock(&d->sync_mu);
    }
    pthread_mutex_unlock(&d->sync_mu);
    return NULL;
}

/* ---- opening: recovery -------------------------------------------------------------- */

/* Work found while reading logs, done only once every log has been read
 * and none is corrupt, so a failed open changes nothing on disk; a
 * read-only open does none of it. */
enum fix_kind {
    FIX_CUT,    /* cut a log back to its last whole record */
    FIX_UNLINK, /* remove a file of ours that holds nothing needed */
    FIX_REPAIR, /* keep a damaged log aside, write what was salvaged */
    FIX_ASIDE,  /* keep an unreadable log aside, whole */
    FIX_ADOPT   /* give a temporary holding a scope's only copy a log's name */
};

typedef struct fix {
    int kind;
    char name[NAME_MAX_LEN];
    uint64_t size;  /* FIX_CUT: the length to keep */
    ps_scope *sc;   /* FIX_REPAIR, FIX_CUT, FIX_ADOPT */
} fix;

typedef struct opener {
    ps_store *st;
    ps_report *rep;
    fix *fixes;
    size_t n_fixes, cap_fixes;
    char first_fix[512]; /* what note() said first */
} opener;

static int add_fix(opener *o, int kind, const char *name, uint64_t size, ps_scope *sc)
{
    if (o->n_fixes == o->cap_fixes) {
        size_t cap = o->cap_fixes ? o->cap_fixes * 2 : 16;
        fix *f = ps_mem_realloc(&o->st->mem, o->fixes, o->cap_fixes * sizeof *f, cap * sizeof *f);
        if (!f)
            return ENOMEM;
        o->fixes = f;
        o->cap_fixes = cap;
    }
    fix *f = &o->fixes[o->n_fixes++];
    f->kind = kind;
    snprintf(f->name, sizeof f->name, "%s", name);
    f->size = size;
    f->sc = sc;
    return 0;
}

/* Describe the first thing opening fixes (or would fix), so a warning can
 * say which file and where; it becomes the report's message if the open
 * succeeds. */
static void note(opener *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(opener *o, const char *fmt, ...)
{
    if (o->first_fix[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(o->first_fix, sizeof o->first_fix, fmt, ap);
    va_end(ap);
}

/* Apply one record to a scope's table, keeping the log's accounting. */
static int replay_record(void *ctx, const ps_rec *r)
{
    replay *rp = ctx;
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

/* One past the last non-zero byte of p[from, n), or `from` when none. */
static size_t data_end(const unsigned char *p, size_t from, size_t n)
{
    while (n > from && p[n - 1] == 0)
        n--;
    return n;
}

/* A log whose header cannot be read: the scope it belongs to is unknown,
 * so none of its records can be put back. Without repair, that refuses
 * the open; with it, the file is kept aside whole and counted lost. */
static int unreadable_log(opener *o, const char *fname, const unsigned char *map, size_t size,
                          const ps_loghdr *h, const char *why)
{
    ps_disk *d = o->st->disk;
    ps_report *rep = o->rep;
    if (!d->repair) {
        report(rep,
               "log %s/%s is corrupt at offset 0: %s; the scope it holds cannot be told, so none "
               "of its records can be salvaged; open with repair to keep it aside as "
               "%s.corrupt-<n> and open the rest",
               d->path, fname, why, fname);
        return PS_CORRUPT;
    }
    uint64_t lost = 0;
    if (h->block_ok) { /* the salt is known: its records can at least be counted */
        size_t off = h->size;
        ps_rec r;
        while (off < size && (off = ps_log_find_record(map, size, off, h->salt)) != 0 &&
               ps_rec_parse(map + off, size - off, h->salt, &r)) {
            lost++;
            off += r.size;
        }
    }
    rep->repaired++;
    rep->logs_lost++;
    rep->records_lost += lost;
    note(o, "log %s/%s: %s; kept aside whole as %s.corrupt-<n> (%llu record(s) in it could "
         "not be salvaged)", d->path, fname, why, fname, (unsigned long long)lost);
    return add_fix(o, FIX_ASIDE, fname, 0, NULL);
}

/* Read one log into memory (its scope into *added, when not NULL).
 * Returns 0, or an error that makes open fail (with o->rep->message set). */
static int load_log(opener *o, const char *fname, ps_scope **added)
{
    ps_store *st = o->st;
    ps_disk *d = st->disk;
    ps_report *rep = o->rep;
    while (d->n_open >= d->max_open && d->lru_tail)
        log_close_fd(d, d->lru_tail);
    int fd = open_in_store(d, NULL, fname, d->read_only ? O_RDONLY : O_RDWR);
    if (fd < 0) {
        int e = errno;
        if (e == ELOOP || e == EINVAL || e == EISDIR) {
            report(rep, "%s/%s is not a regular file (a symbolic link?) where a log should be: "
                   "pystate never creates one and does not follow links; remove it",
                   d->path, fname);
            return PS_CORRUPT;
        }
        report(rep, "cannot open log %s/%s: %s", d->path, fname, strerror(e));
        return e;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return e;
    }
    size_t size = (size_t)sb.st_size;
    rep->logs++;
    const unsigned char *map = NULL;
    if (size) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            report(rep, "cannot read log %s/%s: %s", d->path, fname, strerror(e));
            return e;
        }
    }
    ps_loghdr h;
    int rc = ps_log_header_parse(map, size, &h);
    if (rc != PS_OK) {
        if (rc == PS_BADVERSION)
            report(rep, "log %s/%s was written in another format version (this version reads %d): "
                   "it is neither read nor rewritten", d->path, fname, PS_LOG_VERSION);
        else
            rc = unreadable_log(o, fname, map, size, &h,
                                size == 0 ? "it is empty (a log always starts with a header)"
                                : data_end(map, 0, size) == 0
                                    ? "it holds only zeros (its header and records are gone)"
                                : h.block_ok ? "the scope name in its header is damaged"
                                             : "its header is damaged (both copies)");
        if (map)
            munmap((void *)map, size);
        close(fd);
        return rc;
    }
    char shown[128];
    printable(shown, sizeof shown, h.name, h.nlen);
    if (h.copy_damaged && !d->repair) {
        munmap((void *)map, size);
        close(fd);
        report(rep, "log %s/%s (scope '%s') is corrupt at offset 0: one of the two copies of its "
               "header is damaged (the other is intact); open with repair to rewrite it",
               d->path, fname, shown);
        return PS_CORRUPT;
    }
    ps_where w;
    ps_scope *sc = ps_scope_find(st, h.name, h.nlen, &w);
    if (sc) {
        munmap((void *)map, size);
        close(fd);
        report(rep, "logs %s and %s in %s both hold scope '%s'", sc->log ? sc->log->name : "?",
               fname, d->path, shown);
        return PS_CORRUPT;
    }
    sc = ps_scope_add(st, &w, h.name, h.nlen);
    ps_logf *l = sc ? log_new(st, fname, h.name, h.nlen) : NULL;
    if (!l) {
        munmap((void *)map, size);
        close(fd);
        return ENOMEM;
    }
    sc->log = l;
    if (added)
        *added = sc;
    l->present = 1;
    l->salt = h.salt;
    l->hsize = h.size;
    l->fd = fd;
    lru_push(d, l);
    d->n_open++;

    replay rp = {st, sc};
    ps_scan scan;
    rc = ps_log_scan(map, size, h.size, 1, h.salt, replay_record, &rp, &scan);
    rep->records += scan.records;
    size_t end = scan.end;
    uint64_t next_seq = scan.next_seq;
    int salvaged = 0;
    if (rc == 0 && scan.damaged && scan.resume) {
        if (!d->repair) {
            report(rep,
                   "log %s/%s (scope '%s') is corrupt at offset %zu: damaged bytes are followed "
                   "by valid records (the first at offset %zu); open with repair to salvage them",
                   d->path, fname, shown, scan.end, scan.resume);
            rc = PS_CORRUPT;
        } else {
            /* Salvage: every valid record after the damage too, in order.
             * Sequence numbers say how many records each gap swallowed. */
            while (rc == 0 && scan.damaged && scan.resume) {
                ps_rec r;
                size_t at = scan.resume;
                (void)ps_rec_parse(map + at, size - at, h.salt, &r);
                if (r.seq > scan.next_seq)
                    rep->records_lost += r.seq - scan.next_seq;
                rc = ps_log_scan(map, size, at, r.seq, h.salt, replay_record, &rp, &scan);
                rep->records += scan.records;
            }
            salvaged = 1;
            note(o, "log %s/%s (scope '%s'): damaged at offset %zu; every valid record salvaged "
                 "into a new log, the damaged file kept as %s.corrupt-<n>", d->path, fname, shown,
                 end, fname);
        }
    }
    if (rc == 0) {
        /* What follows the last whole record (of the last run of them,
         * after a salvage)? Zeros from the end hint on are preallocated
         * space that was never written (the process stopped before
         * truncating it): not damage, and appends reuse it. Anything else
         * there, or a hint past the last record (what it points to reads
         * as zeros, or the file stops short of it), is records lost: cut,
         * and said so. A damaged hint cannot tell: all of it counts lost. */
        size_t tail_at = scan.end;
        uint64_t hint;
        int hint_ok = ps_log_end_hint(map, h.salt, &hint);
        size_t last = data_end(map, tail_at, size);
        if (!hint_ok || hint == PS_LOG_NO_PREALLOC) {
            l->no_prealloc = hint_ok;
            hint = size; /* nothing but records was (or is known to be) there */
        }
        if (last > tail_at || hint > tail_at) {
            uint64_t lost_to = last > hint ? last : hint;
            rep->torn_tails++;
            rep->bytes_cut += lost_to - tail_at;
            if (!hint_ok)
                note(o, "log %s/%s (scope '%s'): its end hint is damaged, so the %llu bytes after "
                     "its last record, at offset %zu, are counted lost and cut", d->path, fname,
                     shown, (unsigned long long)(lost_to - tail_at), tail_at);
            else if (last > tail_at)
                note(o, "log %s/%s (scope '%s'): torn tail of %llu bytes cut at offset %zu",
                     d->path, fname, shown, (unsigned long long)(lost_to - tail_at), tail_at);
            else
                note(o, "log %s/%s (scope '%s'): the records from offset %zu to %llu, where the "
                     "log says its records end, are gone (zeros or cut off); cut at offset %zu",
                     d->path, fname, shown, tail_at, (unsigned long long)lost_to, tail_at);
            /* A log being rewritten by repair keeps its damaged file aside
             * byte for byte: the rewrite drops the tail, not a cut. */
            if (!salvaged && !h.copy_damaged)
                rc = add_fix(o, FIX_CUT, fname, end, sc);
        }
    }
    if (rc == 0 && h.copy_damaged && !salvaged) {
        salvaged = 1;
        note(o, "log %s/%s (scope '%s'): one copy of its header was damaged; rewritten, the "
             "damaged file kept as %s.corrupt-<n>", d->path, fname, shown, fname);
    }
    if (rc == 0 && salvaged) {
        rep->repaired++;
        rc = add_fix(o, FIX_REPAIR, fname, 0, sc);
    }
    munmap((void *)map, size);
    l->size = end;
    l->next_seq = next_seq;
    atomic_store(&l->appended, end);
    l->durable = end; /* what was on disk at open is as durable as it gets */
    return rc;
}

/* A temporary file of ours (an interrupted log creation or compaction),
 * looked at once every log is loaded. Its content must show it is ours
 * (an intact header block, the start of one, or only zeros); anything
 * else under such a name, a link included, is left alone. Whatever it
 * holds is normally also in a log (a log's name is made durable before
 * any record goes into it), so it is removed; but if it holds records of
 * a scope that no log holds, it is the only copy of them (a crash lost
 * the rename): that refuses the open, and repair puts it back as the
 * scope's log. */
static int consider_temp(opener *o, const char *fname)
{
    ps_store *st = o->st;
    ps_disk *d = st->disk;
    int fd = ps_dir_open_file(d->dirfd, fname, O_RDONLY);
    if (fd < 0)
        return 0;
    struct stat sb;
    int ours = 0, orphan = 0;
    size_t records = 0;
    char shown[128] = "";
    if (fstat(fd, &sb) == 0) {
        size_t size = (size_t)sb.st_size;
        const unsigned char *map = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
        if (map == MAP_FAILED) {
            map = NULL;
        } else {
            ps_loghdr h;
            size_t m = size < 8 ? size : 8;
            int hrc = ps_log_header_parse(map, size, &h);
            ours = size == 0 || data_end(map, 0, size) == 0 ||
                   (size < PS_LOG_FIXED_HEADER && memcmp(map, PS_LOG_MAGIC, m) == 0) || h.block_ok;
            if (hrc == PS_OK) {
                ps_scan scan;
                (void)ps_log_scan(map, size, h.size, 1, h.salt, NULL, NULL, &scan);
                records = scan.records;
                ps_where w;
                orphan = records && !ps_scope_find(st, h.name, h.nlen, &w);
                printable(shown, sizeof shown, h.name, h.nlen);
            }
        }
        if (map)
            munmap((void *)map, size);
    }
    close(fd);
    if (!ours)
        return 0;
    if (!orphan) {
        o->rep->stray_files++;
        note(o, "%s/%s: the leftover of an interrupted log write, removed", d->path, fname);
        return add_fix(o, FIX_UNLINK, fname, 0, NULL);
    }
    if (!d->repair) {
        report(o->rep, "%s/%s holds %zu record(s) of scope '%s' that no log holds (a crash lost the "
               "log's name); open with repair to put it back", d->path, fname, records, shown);
        return PS_CORRUPT;
    }
    ps_scope *sc = NULL;
    int rc = load_log(o, fname, &sc);
    if (rc)
        return rc;
    o->rep->repaired++;
    note(o, "%s/%s: the only copy of scope '%s' (%zu record(s)), put back as its log", d->path,
         fname, shown, records);
    return add_fix(o, FIX_ADOPT, fname, 0, sc);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names of the logs and temporary files of ours in the store directory. */
static int list_dir(ps_store *st, char ***names_out, size_t *n_out)
{
    ps_disk *d = st->disk;
    int fd = openat(d->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = errno;
        close(fd);
        return e;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        int kind = ps_dir_name_kind(e->d_name);
        if (kind != PS_NAME_LOG && kind != PS_NAME_TEMP)
            continue;
        if (n == cap) {
            size_t c = cap ? cap * 2 : 64;
            char **v = ps_mem_realloc(&st->mem, names, cap * sizeof *v, c * sizeof *v);
            if (!v) {
                rc = ENOMEM;
                break;
            }
            names = v;
            cap = c;
        }
        size_t len = strlen(e->d_name) + 1;
        names[n] = ps_mem_alloc(&st->mem, len);
        if (!names[n]) {
            rc = ENOMEM;
            break;
        }
        memcpy(names[n++], e->d_name, len);
    }
    closedir(dir);
    if (n > 1)
        qsort(names, n, sizeof *names, cmp_str);
    *names_out = names;
    *n_out = n;
    return rc;
}

static void free_names(ps_store *st, char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ps_mem_free(&st->mem, names[i], strlen(names[i]) + 1);
    ps_mem_free(&st->mem, names, n * sizeof *names);
}

/* Keep a damaged log as the first free <name>.corrupt-<n>. With *link
 * set, as a second name for the same file (the log's name is then
 * replaced by its salvage, so at no moment is the damaged file under
 * neither name); else, or where hard links are not supported (*link is
 * then cleared), by a rename. Returns 0 or an errno. */
static int set_aside(ps_disk *d, const char *name, int *link)
{
    char aside[NAME_MAX_LEN];
    for (unsigned n = 1;; n++) {
        snprintf(aside, sizeof aside, "%s.corrupt-%u", name, n);
        int rc = 0;
        if (*link && linkat(d->dirfd, name, d->dirfd, aside, 0) != 0)
            rc = errno;
        if (rc == EPERM || rc == ENOTSUP || rc == EOPNOTSUPP || rc == EMLINK || rc == ENOSYS) {
            *link = 0;
            rc = 0;
        }
        if (!*link)
            rc = ps_dir_rename_noreplace(d->dirfd, name, aside);
        if (rc != EEXIST)
            return rc;
    }
}

/* Carry out the fixes found while reading. Open has succeeded by now;
 * a fix that fails makes it fail after all. */
static int apply_fixes(opener *o)
{
    ps_store *st = o->st;
    ps_disk *d = st->disk;
    int dir_changed = 0;
    for (size_t i = 0; i < o->n_fixes; i++) {
        fix *f = &o->fixes[i];
        if (f->kind == FIX_UNLINK) {
            if (unlinkat(d->dirfd, f->name, 0) != 0 && errno != ENOENT)
                return errno;
            dir_changed = 1;
        } else if (f->kind == FIX_CUT) {
            ps_logf *l = f->sc->log;
            if (f->sc->table.n_live == 0)
                continue; /* the whole log goes (FIX_UNLINK below) */
            int rc = log_fd(d, l);
            if (rc)
                return rc;
            if (ftruncate(l->fd, (off_t)f->size) != 0)
                return errno;
            /* The hint may point into what was cut: it must not outlive it. */
            rc = write_end_hint(l->fd, l->no_prealloc ? PS_LOG_NO_PREALLOC : f->size, l->salt);
            if (rc)
                return rc;
            rc = datasync(l->fd);
            if (rc)
                return rc;
        } else if (f->kind == FIX_ADOPT) {
            ps_logf *l = f->sc->log;
            log_close_fd(d, l);
            if (f->sc->table.n_live) {
                /* Written afresh under a free log name, like any compaction. */
                unsigned long long h = (unsigned long long)XXH3_64bits(l->scope_name, l->scope_len);
                struct stat sb;
                for (unsigned n = 0;; n++) {
                    if (n == 0)
                        snprintf(l->name, sizeof l->name, "%016llx.log", h);
                    else
                        snprintf(l->name, sizeof l->name, "%016llx-%u.log", h, n);
                    if (fstatat(d->dirfd, l->name, &sb, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT)
                        break;
                }
                int rc = compact_scope(st, f->sc);
                if (rc)
                    return rc;
            } else {
                l->present = 0;
            }
            if (unlinkat(d->dirfd, f->name, 0) != 0 && errno != ENOENT)
                return errno;
            dir_changed = 1;
        } else if (f->kind == FIX_ASIDE) {
            int link = 0;
            int rc = set_aside(d, f->name, &link);
            if (rc)
                return rc;
            dir_changed = 1;
        } else { /* FIX_REPAIR: keep the damaged file aside, write the salvage */
            ps_logf *l = f->sc->log;
            log_close_fd(d, l);
            int live = f->sc->table.n_live != 0, link = live;
            int rc = set_aside(d, f->name, &link);
            if (rc)
                return rc;
            dir_changed = 1;
            if (live) {
                /* Write the salvaged state over the damaged file's name,
                 * the way compaction writes any log: new file, sync,
                 * rename. Until that rename the damaged file is still
                 * there, so a failure here leaves the store as it was
                 * (and a copy aside). Where links are not supported it
                 * was renamed away instead, as before. */
                rc = compact_scope(st, f->sc);
                if (rc)
                    return rc;
            } else {
                l->present = 0;
            }
        }
    }
    if (dir_changed)
        return fsync_dir(d);
    return 0;
}

/* Drop scopes that hold no key (their logs were removed by apply_fixes).
 * Only at open, before any other thread can hold a log. */
static void drop_empty_scopes(ps_store *st)
{
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it || ps_scope_of(it)->table.n_live)
            continue;
        ps_scope *sc = ps_scope_of(it);
        ps_where w;
        (void)ps_scope_find(st, ps_item_key(it), ps_item_klen(it), &w);
        ps_table_remove(s, &st->mem, &st->hasher, &w);
        if (sc->log)
            log_free(st, sc->log);
        ps_scope_free(st, sc);
        i = (uint32_t)-1; /* the registry may have been rebuilt: start over */
        if (!s->n_entries)
            break;
    }
}

static void free_all_scopes(ps_store *st)
{
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (!it)
            continue;
        ps_scope *sc = ps_scope_of(it);
        if (sc->log)
            log_free(st, sc->log);
        ps_scope_free(st, sc);
    }
    ps_table_free(s, &st->mem);
}

static void disk_free(ps_store *st)
{
    ps_disk *d = st->disk;
    if (!d)
        return;
    ps_shm_detach(&d->shm);
    ps_mem_free(&st->mem, d->ev, d->ev_cap);
    if (d->known)
        ps_mem_free(&st->mem, d->known, PS_SHM_SLOTS / 8 + 1);
    if (d->lockfd >= 0)
        close(d->lockfd); /* releases the flock */
    if (d->dirfd >= 0)
        close(d->dirfd);
    ps_mem_free(&st->mem, d->scratch, d->scratch_cap);
    ps_mem_free(&st->mem, d->path, d->path_cap);
    pthread_cond_destroy(&d->sync_cv);
    pthread_mutex_destroy(&d->sync_mu);
    ps_mem_free(&st->mem, d, sizeof *d);
    st->disk = NULL;
}

static int start_thread(ps_store *st)
{
    ps_disk *d = st->disk;
    if (d->read_only)
        return 0;
    if (pthread_create(&d->thread, NULL, maintenance_thread, st) != 0)
        return EAGAIN;
    d->thread_running = 1;
    return 0;
}

/* Alone, recovery done: set the LOCK file up for this session (a writer)
 * or follow the one set up (a reader), then let others in. */
static int start_sharing(ps_store *st)
{
    ps_disk *d = st->disk;
    int rc;
    if (!d->read_only) {
        if ((rc = ps_shm_create(&d->shm, d->lockfd)) != 0)
            return rc;
    } else {
        rc = ps_shm_attach(&d->shm, d->lockfd, 1);
        if (rc == ENOENT)
            return ps_dir_share(d->lockfd); /* nobody shares it: read as it is */
        if (rc)
            return rc;
    }
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        ps_logf *l = it ? ps_scope_of(it)->log : NULL;
        if (!l || !l->present)
            continue;
        const void *name = ps_item_key(it);
        size_t nlen = ps_item_klen(it);
        if (d->read_only) {
            /* The slots say what the last writers published; a scope read
             * differently (records past that) is read again when used. */
            l->slot = ps_shm_find(&d->shm, name, nlen);
            uint64_t w = l->slot ? atomic_load(&l->slot->state) : 0;
            l->seen = !(ps_shm_gen(w) & 1) && ps_shm_end(w) == l->size ? w : 0;
        } else {
            l->slot = ps_shm_claim(&d->shm, name, nlen, XXH3_64bits(name, nlen), &rc);
            if (!l->slot)
                return rc;
            l->slot->twin = l->name[16] == '-' ? (uint32_t)strtoul(l->name + 17, NULL, 10) : 0;
            l->seen = ps_shm_word(2, l->size);
            atomic_store(&l->slot->state, l->seen);
        }
        if (l->slot)
            mark_known(d, l->slot);
    }
    return ps_dir_share(d->lockfd);
}

int ps_disk_open(ps_store *st, const ps_options *o, ps_report *rep)
{
    ps_report scratch_rep;
    if (!rep)
        rep = &scratch_rep;
    memset(rep, 0, sizeof *rep);
    ps_disk *d = ps_mem_alloc(&st->mem, sizeof *d);
    if (!d)
        return ENOMEM;
    memset(d, 0, sizeof *d);
    d->dirfd = d->lockfd = -1;
    pthread_mutex_init(&d->sync_mu, NULL);
    pthread_cond_init(&d->sync_cv, NULL);
    st->disk = d;
    d->path_cap = strlen(o->path) + 1;
    d->path = ps_mem_alloc(&st->mem, d->path_cap);
    if (!d->path) {
        disk_free(st);
        return ENOMEM;
    }
    memcpy(d->path, o->path, d->path_cap);
    d->sync_mode = o->sync;
    d->interval_ms = o->sync_interval_ms ? o->sync_interval_ms : DEFAULT_INTERVAL_MS;
    d->max_open = o->max_open_files ? o->max_open_files : DEFAULT_MAX_OPEN;
    d->compact_min_dead = o->compact_min_dead ? o->compact_min_dead : DEFAULT_COMPACT_MIN_DEAD;
    d->repair = o->repair;
    d->read_only = o->read_only != 0;
    d->hook = o->hook;
    d->hook_ctx = o->hook_ctx;
    if (d->sync_mode < PS_SYNC_INTERVAL || d->sync_mode > PS_SYNC_ALWAYS) {
        report(rep, "unknown sync mode %d", d->sync_mode);
        disk_free(st);
        return EINVAL;
    }

    ps_dir_claim_out claim;
    int rc = ps_dir_claim(d->path, d->read_only, &claim, rep->message, sizeof rep->message);
    if (rc) {
        disk_free(st);
        return rc;
    }
    d->dirfd = claim.dirfd;
    d->lockfd = claim.lockfd;
    if (claim.lockfd >= 0) {
        d->known = ps_mem_alloc(&st->mem, PS_SHM_SLOTS / 8 + 1);
        if (!d->known) {
            disk_free(st);
            return ENOMEM;
        }
        memset(d->known, 0, PS_SHM_SLOTS / 8 + 1);
    }
    if (!d->read_only && claim.lockfd >= 0) {
        int other = 0;
        rc = ps_dir_join_mode(claim.lockfd, d->sync_mode, &other);
        if (rc == PS_LOCKED) {
            static const char *modes[] = {"interval", "never", "always"};
            report(rep, "store directory %s is open in another process with sync=%s; every process "
                   "writing to a store must use the same sync mode", d->path,
                   other >= 0 && other <= 2 ? modes[other] : "?");
        }
        if (rc) {
            disk_free(st);
            return rc;
        }
    }
    if (!claim.alone && claim.lockfd >= 0) {
        /* Others have the directory: join them. Nothing is read now; each
         * scope is read when first used (from its slot), and nothing is
         * recovered: the first of them did that, and a torn record a
         * killed writer left lies past its log's published end. */
        rc = ps_shm_attach(&d->shm, d->lockfd, (fcntl(d->lockfd, F_GETFL) & O_ACCMODE) == O_RDWR);
        if (rc == 0)
            rc = start_thread(st);
        if (rc == 0) {
            d->joined = 1;
            d->recovery = *rep;
            return 0;
        }
        if (rc == ENOENT && !d->read_only) {
            report(rep, "store directory %s is open in another process that does not share it (a "
                   "read-only open of a store no writer of this pystate version has opened yet); "
                   "close that one first", d->path);
            rc = PS_LOCKED;
        }
        if (rc != ENOENT) {
            disk_free(st);
            return rc;
        }
        rc = 0; /* a reader of a store nobody shares: it reads what is there, as it is */
    }

    opener *op = ps_mem_alloc(&st->mem, sizeof *op);
    if (!op) {
        disk_free(st);
        return ENOMEM;
    }
    memset(op, 0, sizeof *op);
    op->st = st;
    op->rep = rep;
    char **names = NULL;
    size_t n = 0;
    rc = list_dir(st, &names, &n);
    /* Logs first, so that a temporary is judged knowing every scope. */
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ps_dir_name_kind(names[i]) == PS_NAME_LOG)
            rc = load_log(op, names[i], NULL);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ps_dir_name_kind(names[i]) == PS_NAME_TEMP)
            rc = consider_temp(op, names[i]);
    free_names(st, names, n);
    if (rc == 0) {
        /* A log whose keys were all deleted is garbage: remove it. */
        ps_table *s = &st->scopes;
        for (uint32_t i = 0; rc == 0 && i < s->n_entries; i++) {
            const unsigned char *it = s->entries[i];
            if (it && ps_scope_of(it)->table.n_live == 0 && ps_scope_of(it)->log)
                rc = add_fix(op, FIX_UNLINK, ps_scope_of(it)->log->name, 0, NULL);
        }
    }
    if (rc == 0 && !d->read_only)
        rc = apply_fixes(op);
    if (rc == 0 && !rep->message[0])
        memcpy(rep->message, op->first_fix, sizeof op->first_fix);
    ps_mem_free(&st->mem, op->fixes, op->cap_fixes * sizeof *op->fixes);
    ps_mem_free(&st->mem, op, sizeof *op);
    if (rc == 0)
        drop_empty_scopes(st);
    if (rc == 0 && claim.alone)
        rc = start_sharing(st);
    if (rc == 0 && !d->read_only) {
        /* Everything read from disk counts as durable. */
        pthread_mutex_lock(&d->sync_mu);
        d->dir_dirty = 0;
        pthread_mutex_unlock(&d->sync_mu);
        rc = start_thread(st);
    }
    if (rc) {
        if (!rep->message[0])
            report(rep, "cannot open store %s: %s", d->path, ps_strerror(rc));
        free_all_scopes(st);
        ps_table_init(&st->scopes);
        disk_free(st);
        return rc;
    }
    d->recovery = *rep;
    return 0;
}

int ps_disk_close(ps_store *st)
{
    ps_disk *d = st->disk;
    if (d->thread_running) {
        pthread_mutex_lock(&d->sync_mu);
        d->stopping = 1;
        pthread_cond_broadcast(&d->sync_cv);
        pthread_mutex_unlock(&d->sync_mu);
        pthread_join(d->thread, NULL);
        d->thread_running = 0;
    }
    int rc = d->sync_mode == PS_SYNC_NEVER || d->read_only ? 0 : sync_all(st);
    /* The last one out gives back preallocated space (nobody maps it). */
    if (!d->read_only && d->lockfd >= 0 && ps_dir_try_alone(d->lockfd) == 1)
        d->may_trim = 1;
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        if (it && ps_scope_of(it)->log) {
            log_free(st, ps_scope_of(it)->log);
            ps_scope_of(it)->log = NULL;
        }
    }
    disk_free(st);
    return rc;
}

/* ---- public calls for file-based stores (no-ops in memory) ------------------------ */

int ps_sync(ps_store *st)
{
    return st->disk && !st->disk->read_only ? sync_all(st) : 0;
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
        rc = compact_scope(st, todo[i]);
    pthread_mutex_lock(&st->mu);
    ps_mem_free(&st->mem, todo, n * sizeof *todo);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void ps_recovery_get(ps_store *st, ps_report *out)
{
    if (st->disk)
        *out = st->disk->recovery;
    else
        memset(out, 0, sizeof *out);
}

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

/* ---- check ------------------------------------------------------------------------- */

typedef struct checker {
    ps_store *st;
    ps_table table; /* the replay */
} checker;

static int check_record(void *ctx, const ps_rec *r)
{
    checker *c = ctx;
    ps_where w;
    ps_table *t = &c->table;
    const unsigned char *it = ps_table_find(t, r->key, r->klen, ps_hash(&c->st->hasher, r->key, r->klen), &w);
    if (r->kind == PS_REC_PUT)
        return it ? ps_table_replace(t, &c->st->mem, &w, r->value, r->vlen)
                  : ps_table_insert(t, &c->st->mem, &c->st->hasher, &w, r->key, r->klen, r->value, r->vlen);
    if (it)
        ps_table_remove(t, &c->st->mem, &c->st->hasher, &w);
    return 0;
}

/* Same keys, values and order? */
static int same_table(const ps_table *a, const ps_table *b)
{
    if (a->n_live != b->n_live)
        return 0;
    uint32_t i = 0, j = 0;
    for (;;) {
        while (i < a->n_entries && !a->entries[i])
            i++;
        while (j < b->n_entries && !b->entries[j])
            j++;
        if (i == a->n_entries || j == b->n_entries)
            return i == a->n_entries && j == b->n_entries;
        const unsigned char *x = a->entries[i++], *y = b->entries[j++];
        if (ps_item_size(x) != ps_item_size(y) || ps_item_klen(x) != ps_item_klen(y) ||
            memcmp(x, y, ps_item_size(x)) != 0)
            return 0;
    }
}

static int check_log(ps_store *st, ps_scope *sc, const unsigned char *name, size_t nlen,
                     ps_report *rep)
{
    ps_disk *d = st->disk;
    ps_logf *l = sc->log;
    char shown[128];
    printable(shown, sizeof shown, name, nlen);
    if (!l || !l->present) {
        if (sc->table.n_live) {
            report(rep, "scope '%s' holds %u keys but has no log in %s", shown, sc->table.n_live, d->path);
            return PS_CORRUPT;
        }
        return 0;
    }
    int fd = open_in_store(d, NULL, l->name, O_RDONLY);
    if (fd < 0) {
        int e = errno;
        report(rep, "cannot open log %s/%s: %s", d->path, l->name, strerror(e));
        return e;
    }
    struct stat sb;
    int rc = fstat(fd, &sb) != 0 ? errno : 0;
    size_t size = rc ? 0 : (size_t)sb.st_size;
    const unsigned char *map = NULL;
    if (!rc && size) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = errno;
            map = NULL;
        }
    }
    close(fd);
    if (rc) {
        report(rep, "cannot read log %s/%s: %s", d->path, l->name, strerror(rc));
        return rc;
    }
    ps_loghdr h;
    rep->logs++;
    if (ps_log_header_parse(map, size, &h) != PS_OK || h.copy_damaged || h.nlen != nlen ||
        memcmp(h.name, name, nlen) != 0 || h.salt != l->salt) {
        report(rep, "log %s/%s (scope '%s') is corrupt at offset 0: bad header", d->path, l->name, shown);
        rc = PS_CORRUPT;
    } else {
        checker c = {st, {0}};
        ps_table_init(&c.table);
        ps_scan scan;
        rc = ps_log_scan(map, size, h.size, 1, h.salt, check_record, &c, &scan);
        rep->records += scan.records;
        /* Past the last record there may be preallocated zeros, nothing
         * else, and the end hint must not point past it. */
        uint64_t hint;
        int hint_ok = ps_log_end_hint(map, h.salt, &hint);
        if (rc == 0 && (scan.end != l->size || !hint_ok || data_end(map, scan.end, size) != scan.end ||
                        (hint == PS_LOG_NO_PREALLOC ? size != scan.end : hint > scan.end))) {
            report(rep, "log %s/%s (scope '%s') is corrupt at offset %zu (file %zu bytes, %llu expected)",
                   d->path, l->name, shown, scan.end, size, (unsigned long long)l->size);
            rc = PS_CORRUPT;
        } else if (rc == 0 && !same_table(&c.table, &sc->table)) {
            report(rep, "log %s/%s (scope '%s') does not replay to the keys in memory",
                   d->path, l->name, shown);
            rc = PS_CORRUPT;
        }
        ps_table_free(&c.table, &st->mem);
    }
    if (map)
        munmap((void *)map, size);
    return rc;
}

int ps_check(ps_store *st, ps_report *rep)
{
    ps_report scratch_rep;
    if (!rep)
        rep = &scratch_rep;
    memset(rep, 0, sizeof *rep);
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    if (st->disk)
        rc = ps_disk_follow_all(st);
    ps_table *s = &st->scopes;
    if (rc == 0 && ps_table_check(s, &st->hasher) != 0) {
        report(rep, "the scope index is inconsistent");
        rc = PS_CORRUPT;
    }
    for (uint32_t i = 0; i < s->n_entries && rc == 0; i++) {
        const unsigned char *it = s->entries[i];
        if (!it)
            continue;
        ps_scope *sc = ps_scope_of(it);
        if (ps_table_check(&sc->table, &st->hasher) != 0) {
            char shown[128];
            printable(shown, sizeof shown, ps_item_key(it), ps_item_klen(it));
            report(rep, "the index of scope '%s' is inconsistent", shown);
            rc = PS_CORRUPT;
        } else if (st->disk) {
            /* Holding the slot's lock, nobody appends while it is read. */
            int held = 0;
            if (sc->log && sc->log->slot && st->disk->shm.writable) {
                rc = slot_lock(st, sc);
                held = rc == 0;
                if (held)
                    rc = follow(st, sc, 1);
            }
            if (rc == 0)
                rc = check_log(st, sc, ps_item_key(it), ps_item_klen(it), rep);
            if (held)
                ps_shm_unlock(sc->log->slot);
        }
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ---- fork ---------------------------------------------------------------------------- */

void ps_disk_after_fork(ps_store *st)
{
    ps_disk *d = st->disk;
    pthread_mutex_init(&d->sync_mu, NULL);
    pthread_cond_init(&d->sync_cv, NULL);
    /* The parent's thread did not come along; a sync it was running is
     * not ours to wait for. */
    d->thread_running = 0;
    d->stopping = 0;
    ps_table *s = &st->scopes;
    for (uint32_t i = 0; i < s->n_entries; i++) {
        const unsigned char *it = s->entries[i];
        ps_logf *l = it ? ps_scope_of(it)->log : NULL;
        if (l)
            l->syncing = 0;
    }
    if (d->lockfd >= 0 && ps_dir_reattach(d->dirfd, &d->lockfd, d->read_only ? -1 : d->sync_mode) == 0)
        d->shm.fd = d->lockfd;
}

void ps_disk_resume(ps_store *st)
{
    ps_disk *d = st->disk;
    if (d && !d->read_only && !d->thread_running && !d->stopping &&
        pthread_create(&d->thread, NULL, maintenance_thread, st) == 0)
        d->thread_running = 1;
}

void ps_disk_lock_sync(ps_store *st)
{
    pthread_mutex_lock(&st->disk->sync_mu);
}

void ps_disk_unlock_sync(ps_store *st)
{
    pthread_mutex_unlock(&st->disk->sync_mu);
}

int ps_disk_joined(ps_store *st)
{
    return st->disk && st->disk->joined;
}

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
