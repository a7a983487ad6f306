/*
 * ps_dir.h - the store directory: what makes a directory a store, which
 * names in it are the store's, and opening, creating and renaming files
 * there without ever following a symbolic link.
 *
 * A store directory identifies itself with a marker file, PYSTATE, written
 * (through a temporary file, synced, then renamed into place) when the
 * store is created in a new or empty directory. A non-empty directory
 * without it is not a store: nothing in it is created, changed or removed.
 *
 * The store's own names, the only ones it ever reads, writes or removes:
 *
 *   PYSTATE                     the marker
 *   LOCK                        the directory lock
 *   <16 hex>[-<n>].log          one log per scope
 *   <log>.tmp-<16 hex>          a log being written (creation, compaction)
 *   <log>.corrupt-<n>           a damaged log kept aside by repair
 *   PYSTATE.tmp-<16 hex>        the marker being written
 *
 * Everything else in the directory is someone else's and is left alone.
 */
#ifndef PS_DIR_H
#define PS_DIR_H

#include <stddef.h>
#include <stdint.h>

#include "pystate.h"

#define PS_DIR_MARKER "PYSTATE"
#define PS_DIR_LOCK "LOCK"
#define PS_DIR_NAME_MAX 64 /* longest name of ours, NUL included */

/* What a name in the directory is. */
enum ps_name_kind {
    PS_NAME_OTHER = 0, /* not one of ours */
    PS_NAME_LOG,
    PS_NAME_TEMP,      /* <log>.tmp-<16 hex> */
    PS_NAME_ASIDE,     /* <log>.corrupt-<n> */
    PS_NAME_MARKER,
    PS_NAME_MARKER_TEMP,
    PS_NAME_LOCK
};

int ps_dir_name_kind(const char *name);

/* Open `name` in dirfd without following a link (O_NOFOLLOW | O_CLOEXEC
 * added to flags) and make sure it is a regular file. Returns a
 * descriptor, or -1 with errno set (ELOOP: a symbolic link; EINVAL:
 * something other than a regular file). */
int ps_dir_open_file(int dirfd, const char *name, int flags);

/* Create a new, empty file `<base>.tmp-<16 random hex>` exclusively (no
 * existing file or link is ever opened). Its name goes to name_out
 * (PS_DIR_NAME_MAX bytes). Returns a descriptor or -1 with errno set. */
int ps_dir_create_temp(int dirfd, const char *base, char *name_out);

/* Rename `from` to `to`, failing with EEXIST rather than replacing an
 * existing `to`. Returns 0 or an errno. */
int ps_dir_rename_noreplace(int dirfd, const char *from, const char *to);

/* fsync(2) a descriptor, retrying on EINTR. Returns 0 or an errno. */
int ps_dir_fsync(int fd);

/* How ps_dir_claim found the directory. */
typedef struct ps_dir_claim_out {
    int dirfd;
    int lockfd; /* -1: read-only open of a store without a LOCK file */
    int created; /* the store was created by this call */
    int alone;   /* no other process has the directory open: the lock is
                    held exclusively until ps_dir_share */
} ps_dir_claim_out;

/* Open the store directory `path`, make sure it is a store and lock it:
 * exclusively when no other process has it open and not read_only
 * (out->alone), else shared (waiting while one that had it alone recovers
 * it). Unless read_only, a missing
 * directory (its parent must exist) or an empty one becomes a new store.
 * Returns PS_OK, PS_NOTSTORE (a directory that is neither a store nor
 * empty, or read_only and no store), PS_LOCKED, PS_BADVERSION (a store
 * of another format), PS_CORRUPT (a damaged marker) or an errno; on
 * failure nothing was created and *out holds no descriptor. msg receives
 * a one-line explanation (cap bytes). */
int ps_dir_claim(const char *path, int read_only, ps_dir_claim_out *out, char *msg, size_t cap);

/* Take the directory to ourselves if no other process has it open (the
 * lock on LOCK's first byte, exclusive). Returns 1 (taken), 0 (others
 * have it) or -errno. An open file description's lock: the kernel drops
 * it with the last descriptor of that description, a dead process's
 * included. */
int ps_dir_try_alone(int lockfd);

/* A writer in sync mode `mode` joins the directory's writers: refused
 * with PS_LOCKED (*other: theirs) while a live writer uses another mode,
 * as preallocated logs and exactly sized ones must not be mixed in one
 * file. Held until lockfd's description is closed. Returns 0 or an
 * errno. */
int ps_dir_join_mode(int lockfd, int mode, int *other);

/* Turn an exclusive hold into a shared one, in one step (no moment
 * without the lock). Returns 0 or an errno. */
int ps_dir_share(int lockfd);

/* In a child made by fork(): the lock descriptor is its parent's open
 * file description, whose lock is the parent's. Open LOCK again, share
 * the directory through the new descriptor and close the inherited one.
 * mode: the writer's sync mode (held again, see ps_dir_join_mode), or -1
 * for a reader. Returns 0 or an errno (*lockfd is then unchanged). */
int ps_dir_reattach(int dirfd, int *lockfd, int mode);

#endif /* PS_DIR_H */
