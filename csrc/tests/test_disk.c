/*
 * test_disk.c - unit tests of file-based stores: the log format, replay,
 * torn tails, corruption and repair, compaction, the directory lock, sync
 * modes, failed appends (a real EFBIG from RLIMIT_FSIZE) and many scopes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "ps_log.h"
#include "pystate.h"

static char root[256];
static void free_statics(void);

static void make_root(void)
{
    if (root[0])
        return;
    atexit(free_statics);
    snprintf(root, sizeof root, "/tmp/pystate-test-disk-XXXXXX");
    if (!mkdtemp(root))
        abort();
}

static void fresh_dir(char *out, size_t cap, const char *name)
{
    make_root();
    snprintf(out, cap, "%s/%s", root, name);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", out);
    if (system(cmd) != 0)
        abort();
}

static ps_store *open_dir(const char *path, int sync, int repair, ps_report *rep, int *rc_out)
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

static int put_s(ps_store *st, const char *scope, const char *key, const char *v)
{
    return ps_put(st, scope, strlen(scope), key, strlen(key), v, strlen(v), NULL, NULL);
}

static int del_s(ps_store *st, const char *scope, const char *key)
{
    return ps_del(st, scope, strlen(scope), key, strlen(key), NULL);
}

static buf_sink get_buf, list_buf;

/* Give back the helpers' buffers (before any exit: leak checkers count them). */
static void free_statics(void)
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
static const char *get_s(ps_store *st, const char *scope, const char *key)
{
    buf_sink *bp = &get_buf;
#define b (*bp)
    buf_reset(&b);
    ps_sink s = sink_of(&b);
    int rc = ps_get(st, scope, strlen(scope), key, strlen(key), &s);
    return rc == PS_OK ? b.data : "-";
#undef b
}

static const char *list_s(ps_store *st, const char *scope)
{
    buf_reset(&list_buf);
    ps_sink s = sink_of(&list_buf);
    if (ps_list(st, scope, strlen(scope), 0, &s) != PS_OK)
        return "?";
    return list_buf.data;
}

/* The only *.log file in dir (name into out). */
static int the_log(const char *dir, char *out, size_t cap)
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

static long file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static unsigned char *slurp(const char *path, size_t *n)
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

static void spit(const char *path, const unsigned char *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    if (n && fwrite(p, 1, n, f) != n)
        abort();
    fclose(f);
}

/* ---- format --------------------------------------------------------------------------- */

TEST(records_round_trip_and_reject_damage)
{
    unsigned char buf[512];
    size_t n = ps_rec_size(3, 5);
    ps_rec_encode(buf, PS_REC_PUT, 42, "key", 3, "value", 5);
    ps_rec r;
    REQUIRE(ps_rec_parse(buf, n, &r));
    CHECK(r.kind == PS_REC_PUT && r.seq == 42 && r.size == n);
    CHECK(r.klen == 3 && memcmp(r.key, "key", 3) == 0);
    CHECK(r.vlen == 5 && memcmp(r.value, "value", 5) == 0);
    CHECK(!ps_rec_parse(buf, n - 1, &r)); /* incomplete */
    for (size_t i = 0; i < n; i++) {      /* any flipped byte is caught */
        buf[i] ^= 0x20;
        CHECK(!ps_rec_parse(buf, n, &r));
        buf[i] ^= 0x20;
    }
    memset(buf, 0, sizeof buf);
    CHECK(!ps_rec_parse(buf, sizeof buf, &r)); /* zero fill is never a record */
    n = ps_rec_size(300, 0);
    char key[300];
    memset(key, 'k', sizeof key);
    ps_rec_encode(buf, PS_REC_DEL, 1, key, 300, NULL, 0);
    REQUIRE(ps_rec_parse(buf, n, &r)); /* two-byte varint */
    CHECK(r.kind == PS_REC_DEL && r.klen == 300 && r.vlen == 0);
}

TEST(header_round_trips_any_name)
{
    const char name[] = {'a', 0, '/', '.', '.'};
    unsigned char buf[64];
    ps_log_header_encode(buf, name, sizeof name);
    const unsigned char *got;
    size_t nlen, hsize;
    CHECK_RC(ps_log_header_parse(buf, ps_log_header_size(sizeof name), &got, &nlen, &hsize), PS_OK);
    CHECK(nlen == sizeof name && memcmp(got, name, nlen) == 0);
    buf[8] = 2; /* another version, check fixed up below */
    CHECK(ps_log_header_parse(buf, hsize, &got, &nlen, &hsize) != PS_OK);
}

/* ---- replay ----------------------------------------------------------------------------- */

TEST(writes_survive_close_and_reopen_in_order)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "reopen");
    for (int mode = PS_SYNC_INTERVAL; mode <= PS_SYNC_ALWAYS; mode++) {
        fresh_dir(dir, sizeof dir, "reopen");
        ps_store *st = open_dir(dir, mode, 0, NULL, NULL);
        REQUIRE(st);
        put_s(st, "s", "c", "1");
        put_s(st, "s", "a", "2");
        put_s(st, "s", "b", "3");
        put_s(st, "s", "c", "4"); /* keeps its place */
        del_s(st, "s", "a");
        put_s(st, "s", "a", "5"); /* goes to the end */
        put_s(st, "t", "x", "\"y\"");
        put_s(st, "gone", "k", "1");
        del_s(st, "gone", "k");
        CHECK_RC(ps_store_close(st), PS_OK);
        ps_report rep;
        st = open_dir(dir, mode, 0, &rep, NULL);
        REQUIRE(st);
        CHECK(strcmp(list_s(st, "s"), "[4,3,5]") == 0);
        CHECK(strcmp(get_s(st, "t", "x"), "\"y\"") == 0);
        CHECK(strcmp(get_s(st, "gone", "k"), "-") == 0);
        CHECK(rep.torn_tails == 0);
        ps_stats s;
        ps_stats_get(st, &s);
        CHECK(s.scopes == 2 && s.keys == 4);
        ps_store_close(st);
    }
}

TEST(any_scope_name_gets_a_safe_file)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "names");
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    static char longname[10001];
    memset(longname, 'n', 10000);
    const char *names[] = {"", "/", "..", "a/../../b", "Users", "users", "\xc3\xa9", longname};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        CHECK_RC(ps_put(st, names[i], strlen(names[i]), "k", 1, "1", 1, NULL, NULL), PS_OK);
    CHECK_RC(ps_put(st, "a\0b", 3, "k", 1, "2", 1, NULL, NULL), PS_OK);
    ps_store_close(st);
    st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        CHECK(strcmp(get_s(st, names[i], "k"), "1") == 0);
    buf_sink b = {0};
    ps_sink s = sink_of(&b);
    CHECK_RC(ps_get(st, "a\0b", 3, "k", 1, &s), PS_OK);
    CHECK(b.len == 1 && b.data[0] == '2');
    buf_reset(&b);
    size_t count;
    CHECK_RC(ps_groups(st, &s, &count), PS_OK);
    CHECK(count == 9);
    buf_reset(&b);
    ps_store_close(st);
    /* Nothing was written outside the store directory. */
    char up[600];
    snprintf(up, sizeof up, "%s/b", root);
    CHECK(file_size(up) < 0);
}

/* ---- damage ------------------------------------------------------------------------------ */

/* A log with n records of "k<i>" = "<i>" in scope s. */
static void write_log(const char *dir, int n, char *logpath, size_t cap)
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

TEST(a_log_cut_at_any_byte_recovers_the_whole_records_before_the_cut)
{
    char dir[512], logpath[600];
    snprintf(dir, sizeof dir, "%s", "");
    make_root();
    snprintf(dir, sizeof dir, "%s/torn", root);
    write_log(dir, 6, logpath, sizeof logpath);
    size_t n;
    unsigned char *orig = slurp(logpath, &n);
    REQUIRE(orig);
    /* Record boundaries, to know how many whole records a cut keeps. */
    size_t bounds[16], nb = 0, off = ps_log_header_size(1);
    ps_rec r;
    while (off < n && ps_rec_parse(orig + off, n - off, &r)) {
        off += r.size;
        bounds[nb++] = off;
    }
    REQUIRE(nb == 6);
    /* Every offset; under valgrind (PS_TEST_QUICK) every 13th, which is
     * still all the kinds of cut and keeps the run short. */
    size_t stride = getenv("PS_TEST_QUICK") ? 13 : 1;
    for (size_t cut = ps_log_header_size(1); cut < n; cut += stride) {
        spit(logpath, orig, cut);
        ps_report rep;
        int rc;
        ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
        REQUIRE(st);
        size_t whole = 0;
        while (whole < nb && bounds[whole] <= cut)
            whole++;
        ps_stats s;
        ps_stats_get(st, &s);
        CHECK(s.keys == whole);
        int torn = whole == 0 ? cut > ps_log_header_size(1) : bounds[whole - 1] != cut;
        CHECK(rep.torn_tails == (uint64_t)torn);
        CHECK(rep.bytes_cut == (torn ? cut - (whole ? bounds[whole - 1] : ps_log_header_size(1)) : 0));
        /* The cut is made on disk, so the store is clean again. */
        if (whole)
            CHECK(file_size(logpath) == (long)bounds[whole - 1]);
        ps_store_close(st);
    }
    /* Cut inside the header: a log that never held a record goes. */
    for (size_t cut = 0; cut < ps_log_header_size(1); cut++) {
        spit(logpath, orig, cut);
        ps_report rep;
        ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, NULL);
        REQUIRE(st);
        CHECK(rep.torn_tails == 1);
        CHECK(file_size(logpath) == -1);
        ps_store_close(st);
    }
    free(orig);
}

static void set_end_hint(unsigned char *p, uint64_t end)
{
    for (int i = 0; i < 8; i++)
        p[PS_LOG_END_OFFSET + i] = (unsigned char)(end >> (8 * i));
}

/* Append `tail` to the log (with the header's end hint set to `hint`),
 * reopen, and check what recovery reports. */
static void tail_case(const char *dir, const char *logpath, const unsigned char *tail,
                      size_t tlen, uint64_t hint, int torn)
{
    size_t n;
    unsigned char *orig = slurp(logpath, &n);
    unsigned char *buf = malloc(n + tlen);
    memcpy(buf, orig, n);
    memcpy(buf + n, tail, tlen);
    set_end_hint(buf, hint);
    spit(logpath, buf, n + tlen);
    ps_report rep;
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, NULL);
    if (!st)
        abort();
    CHECK(rep.torn_tails == (uint64_t)torn);
    CHECK(rep.bytes_cut == (torn ? tlen : 0));
    CHECK(strcmp(list_s(st, "s"), "[0,1,2]") == 0);
    CHECK(file_size(logpath) == (long)(torn ? n : n + tlen));
    /* And appends continue cleanly after it. */
    CHECK_RC(put_s(st, "s", "k3", "3"), PS_OK);
    ps_store_close(st);
    st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, NULL);
    if (!st)
        abort();
    CHECK(strcmp(list_s(st, "s"), "[0,1,2,3]") == 0);
    CHECK(rep.torn_tails == 0);
    CHECK_RC(del_s(st, "s", "k3"), PS_OK);
    CHECK_RC(ps_compact(st, NULL, 0), PS_OK);
    ps_store_close(st);
    free(orig);
    free(buf);
}

TEST(garbage_at_the_end_is_a_torn_tail)
{
    char dir[512], logpath[600];
    make_root();
    snprintf(dir, sizeof dir, "%s/tail", root);
    write_log(dir, 3, logpath, sizeof logpath);
    unsigned char garbage[4096];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (unsigned char)(i * 131 + 7);
    size_t n;
    free(slurp(logpath, &n));
    tail_case(dir, logpath, garbage, sizeof garbage, n, 1);
}

TEST(zeros_past_the_end_hint_are_free_space_and_zeros_before_it_are_torn)
{
    char dir[512], logpath[600];
    make_root();
    snprintf(dir, sizeof dir, "%s/zeros", root);
    write_log(dir, 3, logpath, sizeof logpath);
    static const unsigned char zeros[4096];
    size_t n;
    free(slurp(logpath, &n));
    /* As a killed process leaves its preallocated space: not damage. */
    tail_case(dir, logpath, zeros, sizeof zeros, n, 0);
    /* The hint says records went past the zeros: they were lost. */
    free(slurp(logpath, &n));
    tail_case(dir, logpath, zeros, sizeof zeros, n + 100, 1);
}

TEST(damage_in_the_middle_refuses_to_open_and_changes_nothing)
{
    char dir[512], logpath[600];
    make_root();
    snprintf(dir, sizeof dir, "%s/mid", root);
    write_log(dir, 5, logpath, sizeof logpath);
    size_t n;
    unsigned char *orig = slurp(logpath, &n);
    size_t at = ps_log_header_size(1) + 25; /* inside the second record */
    orig[at] ^= 0xff;
    spit(logpath, orig, n);
    ps_report rep;
    int rc;
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    CHECK(st == NULL);
    CHECK(rc == PS_CORRUPT);
    CHECK(strstr(rep.message, "corrupt at offset") != NULL);
    CHECK(strstr(rep.message, strrchr(logpath, '/') + 1) != NULL);
    size_t n2;
    unsigned char *after = slurp(logpath, &n2);
    CHECK(n2 == n && memcmp(after, orig, n) == 0); /* untouched */
    free(after);

    /* repair keeps every valid record and the damaged file beside it */
    st = open_dir(dir, PS_SYNC_NEVER, 1, &rep, &rc);
    REQUIRE(st);
    CHECK(rep.repaired == 1);
    CHECK(strcmp(list_s(st, "s"), "[0,2,3,4]") == 0);
    char aside[700];
    snprintf(aside, sizeof aside, "%s.corrupt-1", logpath);
    after = slurp(aside, &n2);
    REQUIRE(after);
    CHECK(n2 == n && memcmp(after, orig, n) == 0); /* byte for byte */
    free(after);
    ps_store_close(st);
    /* and the store is clean from then on */
    st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    REQUIRE(st);
    CHECK(strcmp(list_s(st, "s"), "[0,2,3,4]") == 0);
    ps_report chk;
    CHECK_RC(ps_check(st, &chk), PS_OK);
    ps_store_close(st);
    free(orig);
}

static int inspect_dir(const char *path, int repair, ps_report *rep)
{
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.repair = repair;
    return ps_store_inspect(&o, rep);
}

TEST(inspect_reports_what_open_would_fix_and_changes_nothing)
{
    char dir[512], logpath[600];
    make_root();
    snprintf(dir, sizeof dir, "%s/inspect", root);
    write_log(dir, 5, logpath, sizeof logpath);
    size_t n;
    unsigned char *orig = slurp(logpath, &n);
    ps_report rep;
    CHECK_RC(inspect_dir(dir, 0, &rep), PS_OK); /* a healthy store */
    CHECK(rep.records == 5 && rep.torn_tails == 0);

    /* a torn tail: reported, not cut */
    unsigned char *torn = malloc(n + 7);
    REQUIRE(torn);
    memcpy(torn, orig, n);
    memcpy(torn + n, "garbage", 7);
    spit(logpath, torn, n + 7);
    CHECK_RC(inspect_dir(dir, 0, &rep), PS_OK);
    CHECK(rep.torn_tails == 1 && rep.bytes_cut == 7 && rep.records == 5);
    CHECK(file_size(logpath) == (long)(n + 7));
    free(torn);

    /* damage in the middle: PS_CORRUPT without repair, a salvage report
     * with it, and no file written or moved either way */
    unsigned char *bad = malloc(n);
    REQUIRE(bad);
    memcpy(bad, orig, n);
    bad[ps_log_header_size(1) + 25] ^= 0xff;
    spit(logpath, bad, n);
    CHECK_RC(inspect_dir(dir, 0, &rep), PS_CORRUPT);
    CHECK(strstr(rep.message, "corrupt at offset") != NULL);
    CHECK_RC(inspect_dir(dir, 1, &rep), PS_OK);
    CHECK(rep.repaired == 1);
    size_t n2;
    unsigned char *after = slurp(logpath, &n2);
    CHECK(n2 == n && memcmp(after, bad, n) == 0);
    free(after);
    char aside[700];
    snprintf(aside, sizeof aside, "%s.corrupt-1", logpath);
    CHECK(file_size(aside) < 0);

    /* a store in use is refused, and no path is EINVAL */
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 1, NULL, NULL);
    REQUIRE(st);
    CHECK_RC(inspect_dir(dir, 0, &rep), PS_LOCKED);
    ps_store_close(st);
    ps_options none;
    memset(&none, 0, sizeof none);
    CHECK_RC(ps_store_inspect(&none, &rep), EINVAL);
    free(bad);
    free(orig);
}

/* ---- compaction -------------------------------------------------------------------------- */

static void hook_count(void *ctx, int point)
{
    int *seen = ctx;
    seen[point]++;
}

TEST(compaction_keeps_only_live_records_and_reopens_identically)
{
    char dir[512], logpath[600];
    fresh_dir(dir, sizeof dir, "compact");
    int seen[8] = {0};
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.sync = PS_SYNC_NEVER;
    o.hook = hook_count;
    o.hook_ctx = seen;
    o.compact_min_dead = 1 << 30; /* only explicit compactions */
    ps_store *st = NULL;
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    char k[16], v[64];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 100; i++) {
            snprintf(k, sizeof k, "k%03d", i);
            snprintf(v, sizeof v, "\"round %d\"", round);
            put_s(st, "s", k, v);
        }
    }
    for (int i = 0; i < 100; i += 2) {
        snprintf(k, sizeof k, "k%03d", i);
        del_s(st, "s", k);
    }
    REQUIRE(the_log(dir, logpath, sizeof logpath) == 1);
    long before = file_size(logpath);
    CHECK_RC(ps_compact(st, NULL, 0), PS_OK);
    long after = file_size(logpath);
    size_t live = ps_log_header_size(1) + 50 * ps_rec_size(4, strlen("\"round 19\""));
    CHECK(after == (long)live);
    CHECK(after < before / 10);
    for (int p = PS_HOOK_COMPACT_WRITTEN; p <= PS_HOOK_COMPACT_DONE; p++)
        CHECK(seen[p] == 1);
    ps_stats s;
    ps_stats_get(st, &s);
    CHECK(s.log_dead_bytes == 0 && s.compactions == 1);
    /* writes after compaction go on the new file */
    put_s(st, "s", "k001", "\"after\"");
    ps_store_close(st);
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    CHECK(strcmp(get_s(st, "s", "k001"), "\"after\"") == 0);
    CHECK(strcmp(get_s(st, "s", "k003"), "\"round 19\"") == 0);
    CHECK(strcmp(get_s(st, "s", "k000"), "-") == 0);
    ps_stats_get(st, &s);
    CHECK(s.keys == 50);
    ps_report chk;
    CHECK_RC(ps_check(st, &chk), PS_OK);
    ps_store_close(st);
}

TEST(dead_space_triggers_compaction_automatically)
{
    char dir[512], logpath[600];
    fresh_dir(dir, sizeof dir, "autocompact");
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.sync = PS_SYNC_NEVER;
    o.compact_min_dead = 64 * 1024;
    ps_store *st = NULL;
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    char v[200];
    memset(v, 'x', sizeof v - 1);
    v[sizeof v - 1] = 0;
    for (int i = 0; i < 5000; i++)
        put_s(st, "s", "same-key", v);
    /* The maintenance thread compacts, not the writer: wait for it. */
    ps_stats s;
    for (int tries = 0; tries < 3000; tries++) {
        ps_stats_get(st, &s);
        if (s.compactions > 0 && s.log_bytes < 200 * 1024)
            break;
        usleep(10000);
    }
    CHECK(s.compactions > 0);
    CHECK(s.log_bytes < 200 * 1024);
    REQUIRE(the_log(dir, logpath, sizeof logpath) == 1);
    ps_report chk;
    CHECK_RC(ps_check(st, &chk), PS_OK);
    ps_store_close(st);
}

typedef struct racer {
    ps_store *st;
    int stop;
    int max_writes;
} racer;

static void *race_writer(void *p)
{
    racer *r = p;
    char k[32], v[64];
    /* Bounded in count too: a scheduler that starves the compacting thread
     * (valgrind runs one thread at a time) must not make this run forever. */
    for (int i = 0; i < r->max_writes && !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
        snprintf(k, sizeof k, "k%d", i % 300);
        snprintf(v, sizeof v, "\"%d\"", i);
        if (ps_put(r->st, "s", 1, k, strlen(k), v, strlen(v), NULL, NULL) != PS_OK)
            return (void *)1;
        if (i % 7 == 0)
            ps_del(r->st, "s", 1, k, strlen(k), NULL);
    }
    return NULL;
}

TEST(writes_during_compactions_all_survive)
{
    /* Compactions copy what was appended while they wrote their snapshot:
     * hammer one scope while compacting it over and over, then compare
     * memory with a replay of the files. */
    char dir[512];
    fresh_dir(dir, sizeof dir, "racing");
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.sync = PS_SYNC_NEVER;
    o.compact_min_dead = 4096;
    ps_store *st = NULL;
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    racer r = {st, 0, getenv("PS_TEST_QUICK") ? 20000 : 2000000};
    pthread_t th;
    pthread_create(&th, NULL, race_writer, &r);
    for (int i = 0; i < 40; i++) {
        CHECK_RC(ps_compact(st, "s", 1), PS_OK);
        usleep(2000);
    }
    __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
    void *res;
    pthread_join(th, &res);
    CHECK(res == NULL);
    ps_report chk;
    CHECK_RC(ps_check(st, &chk), PS_OK);
    char before[65536];
    snprintf(before, sizeof before, "%s", list_s(st, "s"));
    ps_stats s;
    ps_stats_get(st, &s);
    CHECK(s.compactions >= 5); /* some calls find one already under way */
    ps_store_close(st);
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    CHECK(strcmp(list_s(st, "s"), before) == 0);
    ps_store_close(st);
}

TEST(an_interrupted_compaction_leaves_nothing_that_breaks_open)
{
    char dir[512], logpath[600], stray[700];
    make_root();
    snprintf(dir, sizeof dir, "%s/stray", root);
    write_log(dir, 4, logpath, sizeof logpath);
    snprintf(stray, sizeof stray, "%s.compact", logpath);
    spit(stray, (const unsigned char *)"half a log", 10);
    ps_report rep;
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, NULL);
    REQUIRE(st);
    CHECK(rep.stray_files == 1);
    CHECK(file_size(stray) == -1);
    CHECK(strcmp(list_s(st, "s"), "[0,1,2,3]") == 0);
    ps_store_close(st);
}

TEST(deleting_every_key_then_compacting_removes_the_log)
{
    char dir[512], logpath[600];
    make_root();
    snprintf(dir, sizeof dir, "%s/empty", root);
    write_log(dir, 3, logpath, sizeof logpath);
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    del_s(st, "s", "k0");
    del_s(st, "s", "k1");
    del_s(st, "s", "k2");
    CHECK_RC(ps_compact(st, "s", 1), PS_OK);
    CHECK(the_log(dir, logpath, sizeof logpath) == 0);
    put_s(st, "s", "again", "1"); /* the scope comes back with a new log */
    CHECK(the_log(dir, logpath, sizeof logpath) == 1);
    ps_store_close(st);
    st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    CHECK(strcmp(list_s(st, "s"), "[1]") == 0);
    ps_store_close(st);
}

/* ---- locking, sync, failures, many files -------------------------------------------------- */

TEST(a_second_open_of_the_same_directory_is_refused)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "locked");
    ps_store *a = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(a);
    ps_report rep;
    int rc;
    ps_store *b = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    CHECK(b == NULL && rc == PS_LOCKED);
    CHECK(strstr(rep.message, dir) != NULL);
    ps_store_close(a);
    b = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    CHECK(b != NULL);
    ps_store_close(b);
}

typedef struct writer_arg {
    ps_store *st;
    int id;
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *a = p;
    char k[32], scope[16];
    snprintf(scope, sizeof scope, "w%d", a->id % 2);
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof k, "t%d-%d", a->id, i);
        if (ps_put(a->st, scope, strlen(scope), k, strlen(k), "1", 1, NULL, NULL) != PS_OK)
            return (void *)1;
    }
    return NULL;
}

TEST(sync_always_with_concurrent_writers)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "always");
    ps_store *st = open_dir(dir, PS_SYNC_ALWAYS, 0, NULL, NULL);
    REQUIRE(st);
    pthread_t th[4];
    writer_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (writer_arg){st, i};
        pthread_create(&th[i], NULL, writer_main, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        CHECK(r == NULL);
    }
    ps_store_close(st);
    st = open_dir(dir, PS_SYNC_ALWAYS, 0, NULL, NULL);
    REQUIRE(st);
    ps_stats s;
    ps_stats_get(st, &s);
    CHECK(s.keys == 800);
    ps_report chk;
    CHECK_RC(ps_check(st, &chk), PS_OK);
    ps_store_close(st);
}

TEST(sync_interval_thread_and_explicit_sync)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "interval");
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.sync = PS_SYNC_INTERVAL;
    o.sync_interval_ms = 20;
    ps_store *st = NULL;
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    for (int i = 0; i < 50; i++) {
        put_s(st, "a", "k", "1");
        usleep(1000);
    }
    CHECK_RC(ps_sync(st), PS_OK);
    CHECK_RC(ps_store_close(st), PS_OK);
}

TEST(a_failed_append_changes_nothing_and_the_store_recovers)
{
    /* In a child: a real EFBIG from the kernel once the log would pass
     * RLIMIT_FSIZE, then the limit is lifted, as space coming back. */
    char dir[512];
    fresh_dir(dir, sizeof dir, "efbig");
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
        if (!st || put_s(st, "s", "k0", "\"first\"") != PS_OK)
            CHILD_EXIT(10);
        struct rlimit rl;
        getrlimit(RLIMIT_FSIZE, &rl);
        struct rlimit tight = {4096, rl.rlim_max};
        setrlimit(RLIMIT_FSIZE, &tight);
        char v[1000];
        memset(v, 'v', sizeof v);
        v[0] = '"';
        v[sizeof v - 2] = '"';
        v[sizeof v - 1] = 0;
        int rc = 0, ok = 0;
        for (int i = 1; i < 100 && rc == 0; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%d", i);
            rc = put_s(st, "s", k, v);
            ok += rc == 0;
        }
        if (rc != EFBIG)
            CHILD_EXIT(11);
        /* The failed key is not there; the earlier ones are. */
        char k[16];
        snprintf(k, sizeof k, "k%d", ok + 1);
        if (strcmp(get_s(st, "s", k), "-") != 0 || strcmp(get_s(st, "s", "k0"), "\"first\"") != 0)
            CHILD_EXIT(12);
        setrlimit(RLIMIT_FSIZE, &rl);
        if (put_s(st, "s", k, "\"later\"") != PS_OK)
            CHILD_EXIT(13);
        ps_store_close(st);
        st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
        ps_report chk;
        if (!st || ps_check(st, &chk) != PS_OK || strcmp(get_s(st, "s", k), "\"later\"") != 0)
            CHILD_EXIT(14);
        ps_stats s;
        ps_stats_get(st, &s);
        if (s.keys != (uint64_t)ok + 2)
            CHILD_EXIT(15);
        ps_store_close(st);
        CHILD_EXIT(0);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    if (WEXITSTATUS(status))
        fprintf(stderr, "child exit %d\n", WEXITSTATUS(status));
}

TEST(more_scopes_than_open_files)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "many");
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.sync = PS_SYNC_ALWAYS;
    o.max_open_files = 8;
    ps_store *st = NULL;
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    char scope[32];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 60; i++) {
            snprintf(scope, sizeof scope, "scope-%d", i);
            char v[16];
            snprintf(v, sizeof v, "%d", round);
            REQUIRE(put_s(st, scope, "k", v) == PS_OK);
        }
    }
    CHECK_RC(ps_compact(st, NULL, 0), PS_OK);
    ps_store_close(st);
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    for (int i = 0; i < 60; i++) {
        snprintf(scope, sizeof scope, "scope-%d", i);
        CHECK(strcmp(get_s(st, scope, "k"), "2") == 0);
    }
    ps_store_close(st);
}

TEST(check_finds_a_log_changed_behind_the_stores_back)
{
    char dir[512], logpath[600];
    make_root();
    snprintf(dir, sizeof dir, "%s/check", root);
    write_log(dir, 3, logpath, sizeof logpath);
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    ps_report rep;
    CHECK_RC(ps_check(st, &rep), PS_OK);
    CHECK(rep.records == 3);
    size_t n;
    unsigned char *p = slurp(logpath, &n);
    p[n - 1] ^= 1;
    spit(logpath, p, n);
    free(p);
    CHECK_RC(ps_check(st, &rep), PS_CORRUPT);
    CHECK(strstr(rep.message, "corrupt at offset") != NULL);
    ps_store_close(st);
}

RUN_TESTS()
