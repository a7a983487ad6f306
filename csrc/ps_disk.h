/*
 * ps_disk.h - the file-based store as ps_store.c calls it, private to the
 * C core; every function is called with st->mu held unless said otherwise.
 * Its parts, and what they share with each other only: ps_disk_impl.h.
 */
#ifndef PS_DISK_H
#define PS_DISK_H

#include <stdint.h>

#include "ps_scope.h"
#include "pystate.h"

/* What a logged write must wait for before it may return (sync=always). */
typedef struct ps_commit {
    ps_logf *log; /* NULL: nothing to wait for */
    uint64_t gen;
    uint64_t end;
    int fd; /* a private descriptor of the log, or -1 */
} ps_commit;

/* Claim the directory (ps_dir.h), replay every log into st->scopes and,
 * unless o->read_only, apply what recovery found and start the background
 * thread. Called without st->mu, before the store is shared. */
int ps_disk_open(ps_store *st, const ps_options *o, ps_report *rep);

/* Sync everything, stop the background thread, close and free. Called
 * without st->mu, after the store stopped being shared. */
int ps_disk_close(ps_store *st);

/* Append one record for a change to `sc` (creating its log on first use).
 * Returns 0 or an errno; on failure the log is as it was. */
int ps_disk_append(ps_store *st, ps_scope *sc, const void *scope, size_t slen, int kind,
                   const void *key, size_t klen, const void *value, size_t vlen, ps_commit *c);

/* Account a record that stopped being current (its key was overwritten or
 * deleted): klen and vlen of the value it held. */
void ps_disk_superseded(ps_scope *sc, size_t klen, size_t vlen);

/* Compact sc's log if its dead space has grown past the threshold.
 * Failures are not reported: the log stays as it was, and the write that
 * triggered it has succeeded already. */
void ps_disk_maybe_compact(ps_store *st, ps_scope *sc, const void *scope, size_t slen);

/* Called WITHOUT st->mu: wait until the record of c is durable, as the
 * sync mode demands. Returns 0 or the errno of a failed sync. */
int ps_disk_commit_wait(ps_store *st, ps_commit *c);

/* ---- several processes (no-ops for a store that shares nothing) ---- */

/* Bring sc up to date with what other processes wrote to its log.
 * Returns 0, PS_CORRUPT or an errno. */
int ps_disk_follow(ps_store *st, ps_scope *sc);

/* Learn of every scope other processes made, and follow each. */
int ps_disk_follow_all(ps_store *st);

/* A scope this process does not know, made by another: added to the
 * registry at *w (which stays valid) and read. NULL: there is none (or
 * *err says why it could not be read). */
ps_scope *ps_disk_discover(ps_store *st, const void *name, size_t nlen, ps_where *w, int *err);

/* Around a change of sc: take its cross-process lock and follow its log
 * (begin; nothing held on failure), then publish what was appended and
 * let go (end). */
int ps_disk_write_begin(ps_store *st, ps_scope *sc, const void *scope, size_t slen);
void ps_disk_write_end(ps_store *st, ps_scope *sc);

/* In a child after fork(), with st->mu and sync_mu made anew: take the
 * directory's lock through a description of its own and forget the
 * parent's thread. ps_disk_resume then starts the child's own, when the
 * child first uses the store. */
void ps_disk_after_fork(ps_store *st);
void ps_disk_resume(ps_store *st);
void ps_disk_lock_sync(ps_store *st);
void ps_disk_unlock_sync(ps_store *st);

/* Was the store opened while other processes had it (nothing recovered)? */
int ps_disk_joined(ps_store *st);

/* Add the file-based counters to *out. Takes st->mu itself. */
void ps_disk_stats(ps_store *st, ps_stats *out);

#endif /* PS_DISK_H */
