"""Generate the C source of the cffi binding (``pystate._cffi._native``).

CMake runs this at build time (``python build.py OUT.c``) and compiles the
result against the C core, like the Cython modules: cffi's API mode, so
struct layouts and constants come from the real header through the C
compiler, not from this file's declarations.

Only what the binding uses is declared: the store is reached through
ps_guard.h, whose handle makes a call racing with close() safe (cffi
releases the GIL around every C call).
"""

from __future__ import annotations

import sys

import cffi

CDEF = """
static const int PS_OK;
static const int PS_NOTFOUND;
static const int PS_CONFLICT;
static const int PS_TOOBIG;
static const int PS_CORRUPT;
static const int PS_LOCKED;
static const int PS_BADVERSION;
static const int PS_NOTSTORE;
static const int PS_READONLY;
static const int PS_RANGE;
static const int PS_RC_END;
static const int PS_VERSION_MAJOR;
static const int PS_VERSION_MINOR;
static const int PS_VERSION_PATCH;
static const int PS_SYNC_INTERVAL;
static const int PS_SYNC_NEVER;
static const int PS_SYNC_ALWAYS;
static const int PS_HOOK_COMPACT_WRITTEN;
static const int PS_HOOK_COMPACT_SYNCED;
static const int PS_HOOK_COMPACT_RENAMED;
static const int PS_HOOK_COMPACT_DONE;
static const int PSG_CLOSED;

typedef struct ps_allocator ps_allocator;

typedef struct ps_options {
    const ps_allocator *allocator;
    uint64_t hash_seed;
    const char *path;
    int sync;
    uint32_t sync_interval_ms;
    int repair;
    uint32_t max_open_files;
    int read_only;
    uint64_t compact_min_dead;
    void (*hook)(void *ctx, int point);
    void *hook_ctx;
    ...;
} ps_options;

typedef struct ps_report {
    uint64_t logs;
    uint64_t records;
    uint64_t torn_tails;
    uint64_t bytes_cut;
    uint64_t repaired;
    uint64_t records_lost;
    uint64_t logs_lost;
    uint64_t stray_files;
    char message[1024];
    ...;
} ps_report;

typedef struct ps_stats {
    uint64_t scopes;
    uint64_t keys;
    uint64_t key_bytes;
    uint64_t value_bytes;
    uint64_t dead_bytes;
    uint64_t heap_bytes;
    uint64_t log_bytes;
    uint64_t log_dead_bytes;
    uint64_t compactions;
    uint64_t sync_errors;
    ...;
} ps_stats;

typedef struct psg psg;
typedef struct psg_buf { char *data; size_t len; size_t cap; int filled; } psg_buf;
typedef struct psg_bufs { psg_buf *items; size_t count; size_t cap; } psg_bufs;
#define PSG_INLINE ...
typedef struct psg_inline { size_t len; uint64_t seen; char data[...]; ...; } psg_inline;

const char *ps_strerror(int rc);
int ps_json_check_ints(const char *text, size_t len, size_t *at, size_t *n);
void ps_version(int *major, int *minor, int *patch);
int ps_store_inspect(const ps_options *opts, ps_report *report);

int psg_open(psg **out, const ps_options *opts, ps_report *report);
int psg_close(psg *g);
void psg_free(psg *g);
void psg_after_fork(psg *g);
void psg_buf_free(psg_buf *b);
void psg_bufs_free(psg_bufs *b);
int psg_get(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
            psg_buf *value);
int psg_get_inline(psg *g, const char *scope, size_t slen, const char *key, size_t klen,
                   psg_inline *in, psg_buf *spill);
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

extern "Python" void pystate_compact_hook(void *ctx, int point);
"""


def builder() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("pystate._cffi._native", '#include "pystate.h"\n#include "ps_guard.h"\n')
    return ffi


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python build.py OUT.c")
    builder().emit_c_code(sys.argv[1])
