/*
 * ps_mem.c - the default allocator (the C library's).
 */
#include "ps_mem.h"

#include <stdlib.h>

static void *libc_malloc(void *ctx, size_t n)
{
    (void)ctx;
    return malloc(n);
}

static void *libc_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    return realloc(p, n);
}

static void libc_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

const ps_allocator ps_libc_allocator = {libc_malloc, libc_realloc, libc_free, NULL};
