/*
 * ps_scope.c - the registry of scopes: a ps_table from a scope's name to
 * its ps_scope (see ps_store.c for why a table).
 */
#include "ps_scope.h"

ps_scope *ps_scope_find(ps_store *st, const void *name, size_t nlen, ps_where *w)
{
    const unsigned char *it =
        ps_table_find(&st->scopes, name, nlen, ps_hash(&st->hasher, name, nlen), w);
    return it ? ps_scope_of(it) : NULL;
}

ps_scope *ps_scope_add(ps_store *st, const ps_where *w, const void *name, size_t nlen)
{
    ps_scope *sc = ps_mem_alloc(&st->mem, sizeof *sc);
    if (!sc)
        return NULL;
    ps_table_init(&sc->table);
    sc->log = NULL;
    if (ps_table_insert(&st->scopes, &st->mem, &st->hasher, w, name, nlen, &sc, sizeof sc) != 0) {
        ps_mem_free(&st->mem, sc, sizeof *sc);
        return NULL;
    }
    return sc;
}

void ps_scope_free(ps_store *st, ps_scope *sc)
{
    ps_table_free(&sc->table, &st->mem);
    ps_mem_free(&st->mem, sc, sizeof *sc);
}
