/*
 * ps_disk_impl.h - what the parts of the file-based store share, and only
 * they: ps_store.c sees ps_disk.h, to which struct ps_disk stays opaque.
 *
 * The file-based store: one append-only log per scope (format in
 * ps_log.h), replayed at open, appended before every change, synced by
 * policy, compacted when mostly dead. Its parts, each calling only into
 * the ones listed before it, so that no two of them call each other:
 *   ps_disk.c     a log file: its descriptor, its creation, appends (and
 *                 prefaulting them), replay
 *   ps_follow.c   following the logs other processes append to; ps_events
 *   ps_compact.c  rewriting a log with its live records only
 *   ps_sync.c     durability: the group commit, the maintenance thread, fork
 *   ps_recover.c  opening (recovery) and closing a store; ps_check
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
 * Locks
 *   st->mu guards logs' metadata and appends; disk->sync_mu guards what
 *   is known durable; disk->map_mu, taken after st->mu or alone, keeps a
 *   log's mapping in place while the maintenance thread prefaults it. fdatasync never runs under st->mu: the thread doing
 *   it works on a private descriptor (dup, or a fresh open by name), so a
 *   log's own descriptor can be closed or replaced meanwhile.
 */
#ifndef PS_DISK_IMPL_H
#define PS_DISK_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "ps_dir.h"
#include "ps_disk.h"
#include "ps_log.h"
#include "ps_scope.h"
#include "ps_shm.h"
#include "pystate.h"

#define NAME_MAX_LEN PS_DIR_NAME_MAX

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
    int want_fault;          /* queued for prefaulting (ps_disk_prefault) */
    uint64_t faulted;        /* bytes of the mapping prefaulted; map changes reset it */
    unsigned char *scope_name; /* for headers of rewritten logs */
    size_t scope_len;
    /* shared (ps_follow.c): the scope's slot, NULL until first needed,
     * and the slot state that the table reflects */
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
    /* Taken around every change of a log's mapping (under st->mu) and by
     * the maintenance thread prefaulting one (without st->mu): a mapping
     * is never unmapped or moved while its pages are being faulted in. */
    pthread_mutex_t map_mu;
    int fault_pending; /* under sync_mu: some log wants prefaulting */
    int polling;       /* under sync_mu: short sleeps the thread has left (ps_sync.c) */
    int no_populate;   /* the kernel has no MADV_POPULATE_WRITE */
    int dir_dirty; /* under sync_mu: entries created or renamed, dir not synced */
    /* the maintenance thread (ps_sync.c) */
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

/* ps_replay_record's ctx: the scope whose table a log's records rebuild. */
typedef struct ps_replay {
    ps_store *st;
    ps_scope *sc;
} ps_replay;

/* ---- ps_disk.c ----------------------------------------------------------- */

int ps_fsync_dir(ps_disk *d);
int ps_datasync(int fd);
int ps_pwrite_all(int fd, const void *buf, size_t n, uint64_t off);
int ps_write_end_hint(int fd, uint64_t end, uint64_t salt);
int ps_grow_buf(ps_store *st, unsigned char **buf, size_t *cap, size_t n);
int ps_ensure_scratch(ps_store *st, size_t n);
void ps_trim_scratch(ps_store *st);
void ps_lru_push(ps_disk *d, ps_logf *l);
void ps_logf_close_fd(ps_disk *d, ps_logf *l);
int ps_open_in_store(ps_disk *d, const ps_logf *keep, const char *name, int flags);
int ps_create_temp(ps_disk *d, const char *base, char *tmp);
int ps_logf_fd(ps_disk *d, ps_logf *l);
int ps_private_fd(ps_disk *d, ps_logf *l);
ps_logf *ps_logf_new(ps_store *st, const char *name, const void *scope, size_t slen);
void ps_begin_file_change(ps_logf *l);
void ps_end_file_change(ps_logf *l);
int ps_replay_record(void *ctx, const ps_rec *r);
void ps_disk_prefault(ps_store *st);

/* ---- ps_follow.c --------------------------------------------------------- */

void ps_mark_known(ps_disk *d, const ps_shm_slot *slot);
int ps_slot_lock(ps_store *st, ps_scope *sc);
int ps_follow(ps_store *st, ps_scope *sc, int locked);

/* ---- ps_compact.c -------------------------------------------------------- */

int ps_compact_scope(ps_store *st, ps_scope *sc);

/* ---- ps_sync.c ----------------------------------------------------------- */

int ps_sync_all(ps_store *st);
int ps_start_thread(ps_store *st);

#endif /* PS_DISK_IMPL_H */
