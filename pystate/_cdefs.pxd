# Mirror of csrc/pystate.h, one declaration per C declaration. Functions are
# marked nogil because the C library never touches Python; the binding
# keeps the GIL for in-memory calls, which are too short to be worth
# releasing it, and releases it around calls that do file I/O.
from libc.stdint cimport uint32_t, uint64_t


cdef extern from "pystate.h" nogil:
    enum:
        PS_OK
        PS_NOTFOUND
        PS_CONFLICT
        PS_TOOBIG
        PS_CORRUPT
        PS_LOCKED
        PS_BADVERSION
        PS_NOTSTORE
        PS_READONLY
        PS_RANGE
        PS_RC_END
        PS_VERSION_MAJOR
        PS_VERSION_MINOR
        PS_VERSION_PATCH

    enum:
        PS_SYNC_INTERVAL
        PS_SYNC_NEVER
        PS_SYNC_ALWAYS

    enum:
        PS_HOOK_COMPACT_WRITTEN
        PS_HOOK_COMPACT_SYNCED
        PS_HOOK_COMPACT_RENAMED
        PS_HOOK_COMPACT_DONE

    ctypedef struct ps_store:
        pass

    ctypedef struct ps_allocator:
        void *(*malloc)(void *ctx, size_t size)
        void *(*realloc)(void *ctx, void *ptr, size_t size)
        void (*free)(void *ctx, void *ptr)
        void *ctx

    ctypedef struct ps_options:
        const ps_allocator *allocator
        uint64_t hash_seed
        const char *path
        int sync
        uint32_t sync_interval_ms
        int repair
        uint32_t max_open_files
        int read_only
        uint64_t compact_min_dead
        void (*hook)(void *ctx, int point) noexcept
        void *hook_ctx
        int serialized

    ctypedef struct ps_report:
        uint64_t logs
        uint64_t records
        uint64_t torn_tails
        uint64_t bytes_cut
        uint64_t repaired
        uint64_t records_lost
        uint64_t logs_lost
        uint64_t stray_files
        char message[1024]

    # The sink's alloc is declared without nogil: the binding's GIL-held
    # sinks build Python bytes objects, which is legal because it only
    # passes them to calls made with the GIL held.
    ctypedef struct ps_sink:
        void *(*alloc)(void *ctx, size_t n) noexcept
        void *ctx

    ctypedef struct ps_stats:
        uint64_t scopes
        uint64_t keys
        uint64_t key_bytes
        uint64_t value_bytes
        uint64_t dead_bytes
        uint64_t heap_bytes
        uint64_t log_bytes
        uint64_t log_dead_bytes
        uint64_t compactions
        uint64_t sync_errors

    int ps_store_open(ps_store **out, const ps_options *opts, ps_report *report)
    int ps_store_close(ps_store *st)
    int ps_store_inspect(const ps_options *opts, ps_report *report)

    int ps_get(ps_store *st, const char *scope, size_t slen, const char *key,
               size_t klen, const ps_sink *value)
    int ps_get_seen(ps_store *st, const char *scope, size_t slen, const char *key,
                    size_t klen, const ps_sink *value, uint64_t *seen)
    int ps_prefetch(ps_store *st, const char *scope, size_t slen, const char *key, size_t klen)
    int ps_list(ps_store *st, const char *scope, size_t slen, size_t batch,
                const ps_sink *out)
    int ps_groups(ps_store *st, const ps_sink *out, size_t *count)
    int ps_events(ps_store *st, const ps_sink *out, size_t *count)
    int ps_keys(ps_store *st, const char *scope, size_t slen, const ps_sink *out,
                size_t *count)
    int ps_items(ps_store *st, const char *scope, size_t slen, uint32_t *pos,
                 size_t max, const ps_sink *out, size_t *count)
    void ps_stats_get(ps_store *st, ps_stats *out)

    int ps_put(ps_store *st, const char *scope, size_t slen, const char *key,
               size_t klen, const char *value, size_t vlen, const ps_sink *old,
               int *existed)
    int ps_put_if(ps_store *st, const char *scope, size_t slen, const char *key,
                  size_t klen, const char *value, size_t vlen, const char *expect,
                  size_t elen)
    int ps_put_seen(ps_store *st, uint64_t seen, const char *value, size_t vlen)
    int ps_del(ps_store *st, const char *scope, size_t slen, const char *key,
               size_t klen, const ps_sink *old)

    int ps_sync(ps_store *st)
    int ps_compact(ps_store *st, const char *scope, size_t slen)
    int ps_check(ps_store *st, ps_report *report)
    void ps_recovery_get(ps_store *st, ps_report *out)
    int ps_scope_stats(ps_store *st, const ps_sink *out, size_t *count)

    const char *ps_strerror(int rc)
    int ps_json_check_ints(const char *text, size_t len, size_t *at, size_t *n)
    void ps_version(int *major, int *minor, int *patch)
