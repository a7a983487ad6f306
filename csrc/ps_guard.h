/*
 * ps_guard.h - a store handle that many threads may call and one may close
 * at any moment, for bindings that cannot hold a lock of their own across
 * each call (the cffi binding: cffi releases the GIL around every C call,
 * so a Python-level "is it open?" check would race with close()).
 *
 * A psg wraps a ps_store. Every call counts itself in on entry and out on
 * return; psg_close() makes new calls fail with PSG_CLOSED, waits for the
 * calls in flight, then closes the store. The handle itself stays valid
 * until psg_free(), so a late call gets PSG_CLOSED, never freed memory.
 *
 * Values the store hands out arrive in a psg_buf: memory from malloc that
 * belongs to the caller and is reused by the next call given the same buf
 * (free it with psg_buf_free, which may be called on an empty buf). This
 * saves bindings a callback into the interpreter, and an allocation, for
 * every value. psg_get_inline copies a short value into the caller's
 * psg_inline instead, for bindings to which each struct field read costs.
 *
 * Every function returns what the ps_* function it wraps returns (see
 * pystate.h), or PSG_CLOSED.
 */
#ifndef PS_GUARD_H
#define PS_GUARD_H

#include <stddef.h>
#include <stdint.h>

#include "pystate.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The handle was closed: nothing was done. Outside pystate.h's block on
 * purpose: no ps_* function returns it. */
#define PSG_CLOSED (-30700)

typedef struct psg psg;

/* One value handed out. Owner: the caller. A call sets `filled` to say
 * whether it delivered a value (then in data[0..len)); the memory is kept
 * from call to call and reused while big enough, so a binding can keep one
 * buf per thread and pay no allocation per call. psg_buf_free releases it.
 * Zero-initialise before first use. */
typedef struct psg_buf {
    char *data;
    size_t len;
    size_t cap;
    int filled;
} psg_buf;

/* A value handed out in place: a value of up to PSG_INLINE bytes is copied
 * into data, a longer one goes to a psg_buf; len says which. seen is the
 * read's token for psg_put_seen (see ps_get_seen). Owner: the caller. */
#define PSG_INLINE 4096
typedef struct psg_inline {
    size_t len;
    uint64_t seen;
    char data[PSG_INLINE];
} psg_inline;

/* Several values handed out (ps_list's arrays). Owner: the caller. */
typedef struct psg_bufs {
    psg_buf *items;
    size_t count;
    size_t cap;
} psg_bufs;

/* Open a store as ps_store_open does; *out receives the handle. */
int psg_open(psg **out, const ps_options *opts, ps_report *report);

/* Refuse new calls, wait for the calls in flight, close the store.
 * Returns ps_store_close's code, or PSG_CLOSED when already closed. */
int psg_close(psg *g);

/* In a child made by fork(), which has one thread: forget the calls
 * other threads of the parent had in flight (they are not coming back). */
void psg_after_fork(psg *g);

/* Close if still open, then free the handle. No call may be in flight or
 * follow. NULL is accepted. */
void psg_free(psg *g);

/* Free what a buf or bufs holds and empty it; the struct itself is the
 * caller's. */
void psg_buf_free(psg_buf *b);
void psg_bufs_free(psg_bufs *b);

/* The calls of pystate.h, with values delivered into bufs. */
int psg_get(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
            psg_buf *value);
/* psg_get for bindings whose every read of a struct field costs (cffi): a
 * value of up to PSG_INLINE bytes lands in `in`, a longer one in `spill`;
 * in->len is its length either way. */
int psg_get_inline(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
                   psg_inline *in, psg_buf *spill);
/* PS_OK if (scope, key) exists, else PS_NOTFOUND. */
int psg_has(psg *g, const char *scope, size_t slen, const char *key, size_t klen);
int psg_put(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
            const char *value, size_t vlen, psg_buf *old, int *existed);
int psg_put_if(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
               const char *value, size_t vlen, const char *expect, size_t elen);
int psg_put_seen(psg *g, uint64_t seen, const char *value, size_t vlen);
int psg_del(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
            psg_buf *old);
int psg_list(psg *g, const char *scope, size_t slen, size_t batch, psg_bufs *out);
int psg_items(psg *g, const char *scope, size_t slen, uint32_t *pos, size_t max,
              psg_buf *out, size_t *count);
int psg_keys(psg *g, const char *scope, size_t slen, psg_buf *out, size_t *count);
int psg_groups(psg *g, psg_buf *out, size_t *count);
int psg_events(psg *g, psg_buf *out, size_t *count);
int psg_scope_stats(psg *g, psg_buf *out, size_t *count);
int psg_stats(psg *g, ps_stats *out);
int psg_recovery(psg *g, ps_report *out);
int psg_sync(psg *g);
int psg_compact(psg *g, const char *scope, size_t slen);
int psg_check(psg *g, ps_report *report);

#ifdef __cplusplus
}
#endif

#endif /* PS_GUARD_H */
