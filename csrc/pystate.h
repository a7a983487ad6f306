/*
 * pystate.h - the C core of pystate: a store of JSON values addressed by
 * (scope, key).
 *
 * This header is the whole contract. Everything else in csrc/ is private.
 *
 * Model
 * -----
 * A store holds scopes; a scope holds keys; a key holds one value. Scopes,
 * keys and values are byte strings given as (pointer, length) pairs and may
 * contain any byte, NUL included. The store never parses values: pystate's
 * binding stores JSON texts, and ps_list() relies on that (it joins values
 * into JSON arrays). A scope exists exactly while it holds a key.
 *
 * Keys of a scope keep their insertion order: overwriting a key keeps its
 * place, deleting a key keeps the order of the others, and a key inserted
 * again after a delete goes to the end.
 *
 * Ownership
 * ---------
 * The store copies every buffer it is given; the caller keeps its own.
 * The store never hands out pointers into itself. Every value it returns is
 * copied, while the store is locked, into a buffer the caller supplies
 * through a ps_sink, so it stays valid for as long as the caller wants.
 *
 * Threads
 * -------
 * All functions taking a ps_store may be called from any thread at the same
 * time: each one locks the store for its duration. In memory that is short
 * and never waits on I/O; in a file-based store a write holds the lock for
 * its append (one pwrite), while fdatasync runs outside it, shared by
 * concurrent writers (group commit). ps_store_close() must not race with
 * any other call on the same store. A sink's alloc function is called with
 * the store locked: it must not call back into the store.
 *
 * Processes
 * ---------
 * Any number of processes may open one store directory at once (on one
 * machine). Each keeps its own tables and, before every call that reads
 * or writes a scope, applies what others appended to its log since; a
 * write holds the scope's cross-process lock, so a call sees every write
 * that returned anywhere before it began, and ps_put_if compares against
 * the latest value. The first process to open a directory nobody else
 * has open recovers it; the others read each scope when first used. A
 * process may die at any moment (the kernel releases what it held; the
 * next one repairs what it left half done). A child of fork() goes on
 * using its parent's open stores. Writers must agree on the sync mode.
 * The LOCK file is what they share (docs/format.md).
 *
 * Durability
 * ----------
 * A file-based store writes every change to the scope's log before it
 * changes memory, and returns only once the write has reached the
 * operating system: a killed process loses nothing acknowledged. What
 * survives a machine crash depends on the sync mode (ps_sync_mode).
 *
 * Return codes
 * ------------
 * Every function that can fail returns an int: PS_OK (0) on success, a
 * positive errno value passed through unchanged (ENOMEM, EINVAL, ...), or
 * one of the negative PS_* codes below. ps_strerror() describes them all.
 */
#ifndef PYSTATE_H
#define PYSTATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PS_VERSION_MAJOR 0
#define PS_VERSION_MINOR 1
#define PS_VERSION_PATCH 0

/* Status codes. Negative, in a reserved block, so errno values (positive)
 * pass through unchanged. Numbers never change once released. */
enum ps_rc {
    PS_OK = 0,
    PS_NOTFOUND = -30800, /* the scope or key does not exist */
    PS_CONFLICT = -30799, /* ps_put_if: the current value is not the expected one */
    PS_TOOBIG = -30798,   /* a scope, key or value is longer than PS_MAX_LEN */
    PS_CORRUPT = -30797,  /* a log is damaged before its end (see ps_store_open) */
    PS_LOCKED = -30796,   /* the directory is written by a process in another sync mode,
                             or held by an earlier version that does not share */
    PS_BADVERSION = -30795, /* a log or store was written in an unknown format version */
    PS_NOTSTORE = -30794, /* the directory is not a pystate store (and not empty) */
    PS_READONLY = -30793, /* a write to a store opened read-only */
    PS_RANGE = -30792,    /* JSON text holds an integer outside the 64-bit range */
    PS_RC_END = -30791    /* sentinel: one past the last code */
};

/* When a file-based store makes its writes durable (see ps_options.sync). */
enum ps_sync_mode {
    PS_SYNC_INTERVAL = 0, /* a background fdatasync every sync_interval_ms */
    PS_SYNC_NEVER = 1,    /* never: the operating system writes back when it likes */
    PS_SYNC_ALWAYS = 2    /* fdatasync before every write returns (group commit) */
};

/* Longest scope, key or value the store accepts, in bytes. */
#define PS_MAX_LEN ((size_t)UINT32_MAX)

/* An opaque store handle. */
typedef struct ps_store ps_store;

/* A memory allocator the store uses for all its own memory. Each function
 * receives `ctx` first. malloc and realloc return NULL on failure; free
 * accepts NULL. Lets tests fail allocations on purpose and count them. */
typedef struct ps_allocator {
    void *(*malloc)(void *ctx, size_t size);
    void *(*realloc)(void *ctx, void *ptr, size_t size);
    void (*free)(void *ctx, void *ptr);
    void *ctx;
} ps_allocator;

/* Options for ps_store_open(). Zero-initialise, then set what you need. */
typedef struct ps_options {
    /* NULL: the C library's malloc, realloc and free. The allocator must
     * outlive the store. */
    const ps_allocator *allocator;
    /* Secret mixed into every hash. 0: a random one from the OS, so that
     * hostile keys cannot be chosen to collide. Tests set it to get
     * repeatable layouts. */
    uint64_t hash_seed;

    /* ---- file-based stores ---- */
    /* NULL: an in-memory store. Else a store directory holding one
     * append-only log per scope and a PYSTATE marker; a missing or empty
     * directory (its parent must exist) becomes a new store, a non-empty
     * one without the marker is refused (PS_NOTSTORE). The string is
     * copied. */
    const char *path;
    int sync;                  /* a ps_sync_mode */
    uint32_t sync_interval_ms; /* PS_SYNC_INTERVAL's period; 0: 5000 */
    /* Damage followed by valid records, or a damaged header, makes open
     * fail with PS_CORRUPT. Non-zero: salvage every valid record instead,
     * keeping the damaged file beside the store as <file>.corrupt-<n>
     * (a log whose scope cannot be read is kept aside whole). */
    int repair;
    /* Log descriptors kept open at once; 0: 256. Everything else the
     * store needs open at a time is a handful more (directory, lock, one
     * sync or check at a time), whatever the number of scopes. */
    uint32_t max_open_files;
    /* Non-zero: open an existing store to read it. Nothing on disk is
     * created or changed (a torn tail is reported, not cut; nothing is
     * removed; the LOCK file's shared memory is where it waits for
     * writers, see "Processes"), writes and compactions return
     * PS_READONLY, and a sync has nothing to do. */
    int read_only;
    /* Compact a log once its dead bytes exceed both twice its live bytes
     * (so a rewrite costs at most a third of what was appended since the
     * last) and this many bytes; 0: 1 MiB. */
    uint64_t compact_min_dead;
    /* Testing aid: called at each step of a compaction (PS_HOOK_*), with
     * the store locked. NULL: no calls. */
    void (*hook)(void *ctx, int point);
    void *hook_ctx;

    /* ---- in-memory stores ---- */
    /* Non-zero: the caller promises that no two calls on this store ever
     * overlap, and that no other thread forks while one runs (a Python
     * binding whose calls all hold the interpreter's lock keeps both).
     * The store then takes no lock of its own (like LMDB's MDB_NOLOCK):
     * an update (prefetch, read, write) saves three lock/unlock pairs. A
     * file-based store ignores it: its sync thread shares the store. */
    int serialized;
} ps_options;

/* Points at which ps_options.hook is called during a compaction. */
enum ps_hook_point {
    PS_HOOK_COMPACT_WRITTEN = 1, /* new log written, not yet synced */
    PS_HOOK_COMPACT_SYNCED = 2,  /* new log synced, not yet renamed */
    PS_HOOK_COMPACT_RENAMED = 3, /* renamed over the old log, directory not synced */
    PS_HOOK_COMPACT_DONE = 4     /* directory synced */
};

/* What opening a file-based store found and did. Also what ps_check found. */
typedef struct ps_report {
    uint64_t logs;        /* log files read */
    uint64_t records;     /* valid records replayed (or checked) */
    uint64_t torn_tails;  /* logs whose damaged end was cut off */
    uint64_t bytes_cut;   /* bytes cut off those ends */
    uint64_t repaired;    /* damaged logs salvaged (repair) */
    uint64_t records_lost;/* repair: records that could not be salvaged (0 or more) */
    uint64_t logs_lost;   /* repair: logs whose header is unreadable, kept aside
                             whole (their records cannot be told apart or named) */
    uint64_t stray_files; /* leftovers of interrupted log writes removed */
    /* When a call fails, or ps_check finds a problem: what and where, as
     * one line naming the file and the byte offset. When opening fixed
     * something: the first fix, the same way. Empty otherwise. */
    char message[1024];
} ps_report;

/* Where the store delivers a value it hands out: it calls
 * alloc(ctx, n) once, writes exactly n bytes at the address returned and
 * never touches that memory again. The buffer belongs to the caller from
 * the moment alloc returns it. alloc returns NULL to refuse; the call then
 * fails with ENOMEM and changes nothing. n may be 0. */
typedef struct ps_sink {
    void *(*alloc)(void *ctx, size_t n);
    void *ctx;
} ps_sink;

/* Counters returned by ps_stats_get(). */
typedef struct ps_stats {
    uint64_t scopes;      /* scopes holding at least one key */
    uint64_t keys;        /* keys in all scopes */
    uint64_t key_bytes;   /* sum of key lengths */
    uint64_t value_bytes; /* sum of value lengths */
    uint64_t dead_bytes;  /* space of overwritten/deleted values not yet reclaimed */
    uint64_t heap_bytes;  /* memory the store holds from its allocator */
    uint64_t log_bytes;   /* file-based: bytes in all logs */
    uint64_t log_dead_bytes; /* file-based: log bytes compaction would drop */
    uint64_t compactions; /* file-based: logs rewritten since open */
    uint64_t sync_errors; /* file-based: background syncs that failed (retried) */
} ps_stats;

/* ---- lifecycle ---------------------------------------------------------- */

/* Open a store in *out. opts may be NULL (an in-memory store with
 * defaults). A file-based store replays every log of its directory: a
 * damaged end (a torn tail, or records the log's end hint says it held
 * that are gone) is cut off and counted; damage followed by a valid
 * record, or a damaged header, fails with PS_CORRUPT and changes nothing
 * on disk, unless opts->repair. With opts->read_only nothing on disk
 * changes either way: what would be cut is only counted. report, when not
 * NULL, receives what was found and a message naming the file and offset
 * (of the failure, or else of the first thing fixed).
 * Returns PS_OK, ENOMEM, PS_LOCKED (another process writes to the directory in
 * another sync mode, or an earlier version has it),
 * PS_NOTSTORE (a non-empty directory that is not a store), PS_CORRUPT
 * (also: a link where a log should be), PS_BADVERSION, or an errno from
 * the file system (ELOOP: the marker or lock is a link). On failure *out
 * is left unchanged. */
int ps_store_open(ps_store **out, const ps_options *opts, ps_report *report);

/* Make every write durable (file-based, whatever the sync mode), stop the
 * background thread, free the store. NULL is accepted. Returns PS_OK or
 * the errno of a failed final sync; the store is freed either way. */
int ps_store_close(ps_store *st);

/* Read every log of the file-based store at opts->path as ps_store_open
 * would, and change nothing on disk (a read-only open, then close):
 * *report says what opening would fix (torn_tails and bytes_cut,
 * stray_files, and with opts->repair the logs it would salvage in
 * `repaired`). While other processes have the store open it recovers
 * nothing: it checks every log against what they published (ps_check).
 * Returns PS_OK, PS_CORRUPT (damage that refuses to open without
 * opts->repair; the report names file and offset), PS_LOCKED,
 * PS_NOTSTORE, EINVAL (no path) or another errno. */
int ps_store_inspect(const ps_options *opts, ps_report *report);

/* ---- reads --------------------------------------------------------------- */

/* Copy the value of (scope, key) into `value`; with `value` NULL, only say
 * whether the key exists. Returns PS_OK, PS_NOTFOUND or ENOMEM (the sink
 * refused). */
int ps_get(ps_store *st, const char *scope, size_t slen, const char *key,
           size_t klen, const ps_sink *value);

/* ps_get, and in *seen (the caller's) a token for ps_put_seen: nonzero
 * when the value was found in an in-memory store, else 0. */
int ps_get_seen(ps_store *st, const char *scope, size_t slen, const char *key,
                size_t klen, const ps_sink *value, uint64_t *seen);

/* A hint that (scope, key) is about to be read: starts the first memory
 * load of its lookup (the index slot, a cache miss in a big table), so
 * that work the caller does before its ps_get overlaps the wait. Reads
 * nothing from disk and changes nothing. Returns PS_OK. */
int ps_prefetch(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen);

/* Deliver all values of `scope`, in key order, as JSON array texts
 * "[v1,v2,...]" through `out`: one call per array, each array at most
 * `batch` bytes long (a single longer value gets an array of its own;
 * batch 0 puts everything in one array). An empty or missing scope gives
 * one "[]". All arrays come from one consistent state of the scope.
 * Returns PS_OK or ENOMEM (what was delivered is then meaningless). */
int ps_list(ps_store *st, const char *scope, size_t slen, size_t batch,
            const ps_sink *out);

/* Deliver a page of the keys and values of `scope`, in key order, starting
 * at entry position *pos (0 to begin): at most `max` entries (0: no
 * limit), packed as repeated [u32 klen][key][u32 vlen][value] with
 * little-endian lengths, in one call of `out` (made even for none).
 * *count receives the number of entries delivered, *pos where the next
 * page starts; a page of 0 entries means the scope is exhausted (a missing
 * scope gives one at once). Each page is consistent; positions hold while
 * the scope is not written, so a scope written between pages may be seen
 * with keys missed or repeated. Returns PS_OK or ENOMEM. */
int ps_items(ps_store *st, const char *scope, size_t slen, uint32_t *pos,
             size_t max, const ps_sink *out, size_t *count);

/* Deliver the keys of `scope`, in key order (the order of ps_list and
 * ps_items), packed as repeated [u32 length, little-endian][bytes], in one
 * call of `out` (made even for none), all from one consistent state of the
 * scope. *count receives the number of keys. Returns PS_OK or ENOMEM. */
int ps_keys(ps_store *st, const char *scope, size_t slen, const ps_sink *out, size_t *count);

/* Deliver the names of all scopes, sorted bytewise (which is code point
 * order for UTF-8), packed as repeated [u32 length, little-endian][bytes].
 * *count receives the number of names. Returns PS_OK or ENOMEM. */
int ps_groups(ps_store *st, const ps_sink *out, size_t *count);

/* Fill *out with the store's counters. Never fails. */
void ps_stats_get(ps_store *st, ps_stats *out);

/* ---- writes --------------------------------------------------------------- */

/* Store `value` at (scope, key), creating the scope if needed.
 * If the key existed, *existed is set to 1 and, when `old` is not NULL,
 * the previous value is delivered through it; otherwise *existed is 0.
 * existed may be NULL. Returns PS_OK, PS_TOOBIG, ENOMEM, PS_READONLY, or
 * for a file-based store the errno of a failed write or sync (ENOSPC,
 * EIO...).
 * On failure the store is unchanged (a failed sync excepted: the write
 * was made but is not known durable), and whatever `old` received is
 * meaningless. */
int ps_put(ps_store *st, const char *scope, size_t slen, const char *key,
           size_t klen, const char *value, size_t vlen, const ps_sink *old,
           int *existed);

/* Compare and set: store `value` at (scope, key) only if the current value
 * equals the elen bytes at `expect`, or, when expect is NULL, only if the key
 * does not exist. Returns PS_OK, PS_CONFLICT (nothing changed), PS_TOOBIG,
 * PS_READONLY or ENOMEM. Lets a caller read, compute outside the store, and
 * write back without holding any lock in between. */
int ps_put_if(ps_store *st, const char *scope, size_t slen, const char *key,
              size_t klen, const char *value, size_t vlen, const char *expect,
              size_t elen);

/* ps_put_if of the value a ps_get_seen read, without the names or the
 * compare: store `value` at the key that read found, when it was the last
 * call on st (nothing can have changed that key since). PS_CONFLICT, with
 * nothing changed, when another call came in between or seen is 0: the
 * key may still hold what was read, so the caller goes on to ps_put_if.
 * Otherwise as ps_put_if. */
int ps_put_seen(ps_store *st, uint64_t seen, const char *value, size_t vlen);

/* Delete (scope, key). The old value is delivered through `old` when it is
 * not NULL. Deleting the last key of a scope removes the scope.
 * Returns PS_OK, PS_NOTFOUND, PS_READONLY or ENOMEM (the sink refused:
 * nothing changed); for a file-based store also the errno of a failed
 * write. */
int ps_del(ps_store *st, const char *scope, size_t slen, const char *key,
           size_t klen, const ps_sink *old);

/* ---- durability (file-based stores; in memory they do nothing) ------------- */

/* fdatasync every log written since its last sync, one at a time (one
 * descriptor however many scopes). A log that cannot be synced stays not
 * durable and is tried again by the next call. Returns PS_OK or the first
 * errno. A read-only store has nothing to sync: PS_OK. */
int ps_sync(ps_store *st);

/* Rewrite the log of `scope` (NULL: of every scope) to hold only its live
 * records, crash-safely: new file, fdatasync, rename over the old one,
 * fsync of the directory. Returns PS_OK, PS_READONLY or an errno (the old
 * log is then kept as it was). */
int ps_compact(ps_store *st, const char *scope, size_t slen);

/* Read every log again and verify each record and that replaying them
 * gives exactly the keys and values in memory. Changes nothing. Returns
 * PS_OK, PS_CORRUPT (report->message says where) or an errno. */
int ps_check(ps_store *st, ps_report *report);

/* What opening the store found (copied into *out). */
void ps_recovery_get(ps_store *st, ps_report *out);

/* Per-scope figures, for every scope holding a key or a log file, packed
 * as repeated [u32 name length][name][u64 keys][u64 live_bytes]
 * [u64 dead_bytes][u64 file_bytes] (little-endian) through `out`. *count
 * receives the number of scopes. live_bytes are the log bytes holding
 * current values; dead_bytes the rest of the records. Returns PS_OK or
 * ENOMEM. */
int ps_scope_stats(ps_store *st, const ps_sink *out, size_t *count);

/* ---- other processes' changes ---------------------------------------------- */

/* Deliver, through `out` (one call, made even for none), the changes other
 * processes sharing this file-based store made since the previous call,
 * in the order each scope's log holds them, and make the store keep them
 * from now on (the first call delivers none: it starts keeping). Each is
 * packed as [u8 kind: 1 put, 2 delete][u32 scope length][scope][u32 key
 * length][key][u32 old length + 1, or 0: no old value][old][u32 new length
 * + 1, or 0: none][new], lengths little-endian; *count receives the number
 * of changes. When another process's compaction replaced a log, its keys'
 * changes since the last look come as one change each. In memory, or
 * unshared: none. Returns PS_OK, ENOMEM (the changes are kept for the next
 * call), PS_CORRUPT or an errno. */
int ps_events(ps_store *st, const ps_sink *out, size_t *count);

/* ---- JSON text -------------------------------------------------------------- */

/* Check that every integer literal in the JSON text [text, text + len)
 * lies in -2^63 .. 2^64-1, the range a value can hold: JSON parsers turn a
 * wider one into a float without a word, which would store a value other
 * than the one sent. Only number tokens outside strings are looked at, so
 * the text need not be valid JSON (the parser judges that). Returns PS_OK,
 * or PS_RANGE with *at and *n (either may be NULL) set to the offset and
 * length of the first wide literal, sign included. The caller owns text. */
int ps_json_check_ints(const char *text, size_t len, size_t *at, size_t *n);

/* ---- misc ----------------------------------------------------------------- */

/* A static, human-readable description of any return code. */
const char *ps_strerror(int rc);

/* The library's version; any pointer may be NULL. Lets a binding check that
 * it runs against the library it was compiled with. */
void ps_version(int *major, int *minor, int *patch);

#ifdef __cplusplus
}
#endif

#endif /* PYSTATE_H */
