/*
 * disk_util.h - helpers shared by the file-store tests: a scratch root,
 * opening stores, string-valued reads and writes, and reading, writing and
 * damaging log files by hand.
 */
#ifndef PS_TEST_DISK_UTIL_H
#define PS_TEST_DISK_UTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "ps_log.h"
#include "pystate.h"

static char root[256];
static void free_statics(void);

static inline void make_root(void)
{
    if (root[0])
        return;
    atexit(free_statics);
    snprintf(root, sizeof root, "/tmp/pystate-test-disk-XXXXXX");
    if (!mkdtemp(root))
        abort();
}

static inline void fresh_dir(char *out, size_t cap, const char *name)
{
    make_root();
    snprintf(out, cap, "%s/%s", root, name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    if (system(cmd) != 0)
        abort();
}

static inline ps_store *open_dir(const char *path, int sync, int repair, ps_report *rep, int *rc_out)
{
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.sync = sync;
    o.repair = repair;
    o.hash_seed = 3;
    ps_store *st = NULL;
    int rc = ps_store_open(&st, &o, rep);
    if (rc_out)
        *rc_out = rc;
    return rc == PS_OK ? st : NULL;
}

static inline int put_s(ps_store *st, const char *scope, const char *key, const char *v)
{
    return ps_put(st, scope, strlen(scope), key, strlen(key), v, strlen(v), NULL, NULL);
}

static inline int del_s(ps_store *st, const char *scope, const char *key)
{
    return ps_del(st, scope, strlen(scope), key, strlen(key), NULL);
}

static buf_sink get_buf, list_buf;

/* Give back the helpers' buffers (before any exit: leak checkers count them). */
static inline void free_statics(void)
{
    buf_reset(&get_buf);
    buf_reset(&list_buf);
}

#define CHILD_EXIT(n)    \
    do {                 \
        free_statics();  \
        _exit(n);        \
    } while (0)

/* The value of (scope, key) as a string, or "-" when missing. */
static inline const char *get_s(ps_store *st, const char *scope, const char *key)
{
    buf_sink *bp = &get_buf;
#define b (*bp)
    buf_reset(&b);
    ps_sink s = sink_of(&b);
    int rc = ps_get(st, scope, strlen(scope), key, strlen(key), &s);
    return rc == PS_OK ? b.data : "-";
#undef b
}

static inline const char *list_s(ps_store *st, const char *scope)
{
    buf_reset(&list_buf);
    ps_sink s = sink_of(&list_buf);
    if (ps_list(st, scope, strlen(scope), 0, &s) != PS_OK)
        return "?";
    return list_buf.data;
}

/* The only *.log file in dir (name into out). */
static inline int the_log(const char *dir, char *out, size_t cap)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 4 && strcmp(e->d_name + len - 4, ".log") == 0) {
            snprintf(out, cap, "%s/%s", dir, e->d_name);
            n++;
        }
    }
    if (d)
        closedir(d);
    return n;
}

static inline long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static inline unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    *n = fread(p, 1, (size_t)len, f);
    fclose(f);
    return p;
}

/* The salt of a log image (its records' checks need it). */
static inline uint64_t salt_of(const unsigned char *p, size_t n)
{
    ps_loghdr h;
    if (ps_log_header_parse(p, n, &h) != PS_OK)
        abort();
    return h.salt;
}

static inline void spit(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (n && fwrite(p, 1, n, f) != n)
        abort();
    fclose(f);
}

/* A log with n records of "k<i>" = "<i>" in scope s. */
static inline void write_log(const char *dir, int n, char *logpath, size_t cap)
{
    fresh_dir((char *)dir, 512, strrchr(dir, '/') + 1);
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    char k[16], v[16];
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof k, "k%d", i);
        snprintf(v, sizeof v, "%d", i);
        put_s(st, "s", k, v);
    }
    ps_store_close(st);
    if (the_log(dir, logpath, cap) != 1)
        abort();
}

/* Set the end hint of a log image (p: the whole file, n bytes). */
static inline void set_end_hint(unsigned char *p, size_t n, uint64_t end)
{
    ps_log_set_end_hint(p, end, salt_of(p, n));
}

#endif /* PS_TEST_DISK_UTIL_H */
