/*
 * ps_scope.h - the store and its registry of scopes, private to the C core.
 * Apart from ps_store.c (the API) so that the file-based store, which the
 * API calls, can find and add scopes without calling back into the API.
 */
#ifndef PS_SCOPE_H
#define PS_SCOPE_H

#include <pthread.h>
#include <stdint.h>

#include "ps_hash.h"
#include "ps_mem.h"
#include "ps_table.h"
#include "pystate.h"

typedef struct ps_disk ps_disk;
typedef struct ps_logf ps_logf;

/* One scope: its keys, and in a file-based store its log. */
typedef struct ps_scope {
    ps_table table;
    ps_logf *log; /* NULL in memory, and until a file-based scope's first write */
} ps_scope;

struct ps_store {
    pthread_mutex_t mu; /* guards everything below and everything they point to */
    ps_mem mem;
    ps_hasher hasher;
    ps_table scopes; /* scope name -> (ps_scope *) */
    ps_disk *disk;   /* NULL for an in-memory store */
    int read_only;   /* writes refused with PS_READONLY */
    int nolock;      /* ps_options.serialized, in memory: lock() leaves mu alone */
    /* every open store is on one list, for fork (ps_store.c) */
    ps_store *prev_open, *next_open;
    unsigned long forks; /* ps_forks when this store last resumed */
    /* The lookup the last call made (ps_store.c: recall), and how many
     * times mu has been taken through lock(), so that a call can tell
     * whether anyone else came in between. */
    uint64_t calls;
    struct {
        uint64_t calls;              /* st->calls when it was made; 0: none */
        const unsigned char *scope;  /* the scope's item in `scopes` */
        ps_where key;                /* the key's lookup in that scope ... */
        int found;                   /* ... when it found the key */
    } last;
};

/* The scope stored as an item's value in st->scopes. */
static inline ps_scope *ps_scope_of(const unsigned char *item)
{
    ps_scope *sc;
    memcpy(&sc, ps_item_value(item), sizeof sc);
    return sc;
}

/* Find a scope by name, or NULL (w says where it would go). */
ps_scope *ps_scope_find(ps_store *st, const void *name, size_t nlen, ps_where *w);

/* Add an empty scope at *w (from a failed ps_scope_find). Returns it, or
 * NULL when out of memory (nothing changed). */
ps_scope *ps_scope_add(ps_store *st, const ps_where *w, const void *name, size_t nlen);

/* Free a scope's table and the scope; its log, if any, is the file store's
 * to free. */
void ps_scope_free(ps_store *st, ps_scope *sc);

#endif /* PS_SCOPE_H */
