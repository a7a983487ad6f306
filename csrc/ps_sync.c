/*
 * ps_sync.c - making writes durable: the group commit of sync=always, the
 * maintenance thread (periodic syncs, queued compactions and prefaults),
 * and both around fork.
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
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "ps_disk_impl.h"

/* ---- a write waiting for its sync (sync=always) --------------------------------- */

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
        int err = gen == c->gen ? ps_datasync(c->fd) : 0;
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

/* ---- syncing everything --------------------------------------------------------- */

/* fdatasync every log with writes not yet durable, and the directory if
 * it changed. One log at a time, each through a descriptor held only for
 * its sync, so it needs one descriptor whatever the number of scopes.
 * A log that cannot be synced stays not durable, so the next sync tries
 * it again. Called without st->mu. Returns the first error. */
int ps_sync_all(ps_store *st)
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
        int err = ps_fsync_dir(d);
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
        int fd = dirty ? ps_private_fd(d, l) : -1;
        int err = dirty && fd < 0 ? errno : 0;
        pthread_mutex_unlock(&st->mu);
        if (fd >= 0) {
            err = ps_datasync(fd);
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

int ps_sync(ps_store *st)
{
    return st->disk && !st->disk->read_only ? ps_sync_all(st) : 0;
}

/* ---- the maintenance thread ----------------------------------------------------- */

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
        (void)ps_compact_scope(st, want[i]);
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

/* Once asked to prefault, the thread looks for more requests every
 * POLL_MS for POLL_ROUNDS rounds, and writers meanwhile only leave them
 * (want_prefault, ps_disk.c): a writer filling the logs asks without a
 * futex wake-up each time (2 to 4% of a file update on a 2-CPU VM).
 * POLL_MS is under the time a writer takes to fill the half window left
 * when it asks: 128 KiB is some 500 updates of ~250 bytes, over a
 * millisecond even when they all go to one log. A store that stops
 * asking goes back to sleeping after POLL_ROUNDS * POLL_MS = 50 ms. */
#define POLL_MS 1
#define POLL_ROUNDS 50

/* The maintenance thread: prefaults and compactions the write path asked
 * for, and the periodic fdatasync of sync=interval. Work that writers
 * should not wait for. */
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
        if (!due && !d->compact_pending && !d->fault_pending) {
            if (d->polling) {
                d->polling--;
                struct timespec soon = now;
                add_ms(&soon, POLL_MS);
                pthread_cond_timedwait(&d->sync_cv, &d->sync_mu,
                                       periodic && before(&next, &soon) ? &next : &soon);
            } else if (periodic) {
                pthread_cond_timedwait(&d->sync_cv, &d->sync_mu, &next);
            } else {
                pthread_cond_wait(&d->sync_cv, &d->sync_mu);
            }
            continue;
        }
        int compact = d->compact_pending, fault = d->fault_pending;
        d->compact_pending = d->fault_pending = 0;
        if (fault)
            d->polling = POLL_ROUNDS;
        pthread_mutex_unlock(&d->sync_mu);
        if (fault)
            ps_disk_prefault(st);
        if (compact)
            run_wanted_compactions(st);
        if (due && ps_sync_all(st) != 0) {
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

int ps_start_thread(ps_store *st)
{
    ps_disk *d = st->disk;
    if (d->read_only)
        return 0;
    if (pthread_create(&d->thread, NULL, maintenance_thread, st) != 0)
        return EAGAIN;
    d->thread_running = 1;
    return 0;
}

/* ---- fork ----------------------------------------------------------------------- */

void ps_disk_after_fork(ps_store *st)
{
    ps_disk *d = st->disk;
    pthread_mutex_init(&d->sync_mu, NULL);
    pthread_mutex_init(&d->map_mu, NULL);
    pthread_cond_init(&d->sync_cv, NULL);
    /* The parent's thread did not come along; a sync it was running is
     * not ours to wait for. */
    d->thread_running = 0;
    d->stopping = 0;
    d->polling = 0; /* (the child's thread, once started, sleeps until asked) */
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
