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
 * time: each one locks the store for its (short, never blocking on I/O)
 * duration. ps_store_close() must not race with any other call on the same
 * store. A sink's alloc function is called with the store locked: it must
 * not call back into the store.
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
    PS_RC_END = -30797    /* sentinel: one past the last code */
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
} ps_options;

/* Where the store delivers a value it hands out: it calls
 * alloc(ctx, n) once, writes exactly n bytes at the address returned and
 * never touches that memory again. The buffer belongs to the caller from
 * the moment alloc returns it. alloc returns NULL to refuse; the call then
 * fails with ENOMEM and changes nothing. n may be 0. */
typedef struct ps_sink {
    void *(*alloc)(void *ctx, size_t n);
    void *ctx;
} ps_sink;

/* Counters returned by ps_stats(). */
typedef struct ps_stats {
    uint64_t scopes;      /* scopes holding at least one key */
    uint64_t keys;        /* keys in all scopes */
    uint64_t key_bytes;   /* sum of key lengths */
    uint64_t value_bytes; /* sum of value lengths */
    uint64_t dead_bytes;  /* space of overwritten/deleted values not yet reclaimed */
    uint64_t heap_bytes;  /* memory the store holds from its allocator */
} ps_stats;

/* ---- lifecycle ---------------------------------------------------------- */

/* Create an empty in-memory store in *out. opts may be NULL (defaults).
 * Returns PS_OK or ENOMEM. On failure *out is left unchanged. */
int ps_store_open(ps_store **out, const ps_options *opts);

/* Free the store and everything in it. NULL is accepted. */
void ps_store_close(ps_store *st);

/* ---- reads --------------------------------------------------------------- */

/* Copy the value of (scope, key) into `value`.
 * Returns PS_OK, PS_NOTFOUND or ENOMEM (the sink refused). */
int ps_get(ps_store *st, const char *scope, size_t slen, const char *key,
           size_t klen, const ps_sink *value);

/* Deliver all values of `scope`, in key order, as JSON array texts
 * "[v1,v2,...]" through `out`: one call per array, each array at most
 * `batch` bytes long (a single longer value gets an array of its own;
 * batch 0 puts everything in one array). An empty or missing scope gives
 * one "[]". All arrays come from one consistent state of the scope.
 * Returns PS_OK or ENOMEM (what was delivered is then meaningless). */
int ps_list(ps_store *st, const char *scope, size_t slen, size_t batch,
            const ps_sink *out);

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
 * existed may be NULL. Returns PS_OK, PS_TOOBIG or ENOMEM. On failure the
 * store is unchanged, and whatever `old` received is meaningless. */
int ps_put(ps_store *st, const char *scope, size_t slen, const char *key,
           size_t klen, const char *value, size_t vlen, const ps_sink *old,
           int *existed);

/* Compare and set: store `value` at (scope, key) only if the current value
 * equals the elen bytes at `expect`, or, when expect is NULL, only if the key
 * does not exist. Returns PS_OK, PS_CONFLICT (nothing changed), PS_TOOBIG or
 * ENOMEM. Lets a caller read, compute outside the store, and write back
 * without holding any lock in between. */
int ps_put_if(ps_store *st, const char *scope, size_t slen, const char *key,
              size_t klen, const char *value, size_t vlen, const char *expect,
              size_t elen);

/* Delete (scope, key). The old value is delivered through `old` when it is
 * not NULL. Deleting the last key of a scope removes the scope.
 * Returns PS_OK, PS_NOTFOUND or ENOMEM (the sink refused: nothing changed).
 * Cannot otherwise fail. */
int ps_del(ps_store *st, const char *scope, size_t slen, const char *key,
           size_t klen, const ps_sink *old);

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
