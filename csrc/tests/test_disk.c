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
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "disk_util.h"

/* ---- format --------------------------------------------------------------------------- */

TEST(records_round_trip_and_reject_damage)
{
    unsigned char buf[512];
    const uint64_t salt = 0x0123456789abcdefu;
    size_t n = ps_rec_size(3, 5);
    ps_rec_encode(buf, salt, PS_REC_PUT, 42, "key", 3, "value", 5);
    ps_rec r;
    REQUIRE(ps_rec_parse(buf, n, salt, &r));
    CHECK(r.kind == PS_REC_PUT && r.seq == 42 && r.size == n);
    CHECK(r.klen == 3 && memcmp(r.key, "key", 3) == 0);
    CHECK(r.vlen == 5 && memcmp(r.value, "value", 5) == 0);
    CHECK(!ps_rec_parse(buf, n - 1, salt, &r)); /* incomplete */
    for (size_t i = 0; i < n; i++) {            /* any flipped byte is caught */
        buf[i] ^= 0x20;
        CHECK(!ps_rec_parse(buf, n, salt, &r));
        buf[i] ^= 0x20;
    }
    /* A record is a record of one log only: any other salt refuses it. */
    CHECK(!ps_rec_parse(buf, n, 0, &r));
    CHECK(!ps_rec_parse(buf, n, salt ^ 1, &r));
    memset(buf, 0, sizeof buf);
    CHECK(!ps_rec_parse(buf, sizeof buf, salt, &r)); /* zero fill is never a record */
    n = ps_rec_size(300, 0);
    char key[300];
    memset(key, 'k', sizeof key);
    ps_rec_encode(buf, salt, PS_REC_DEL, 1, key, 300, NULL, 0);
    REQUIRE(ps_rec_parse(buf, n, salt, &r)); /* two-byte varint */
    CHECK(r.kind == PS_REC_DEL && r.klen == 300 && r.vlen == 0);
}

TEST(header_round_trips_any_name)
{
    const char name[] = {'a', 0, '/', '.', '.'};
    unsigned char buf[PS_LOG_FIXED_HEADER + sizeof name];
    ps_log_header_encode(buf, name, sizeof name, 77);
    ps_loghdr h;
    CHECK_RC(ps_log_header_parse(buf, sizeof buf, &h), PS_OK);
    CHECK(h.nlen == sizeof name && memcmp(h.name, name, h.nlen) == 0);
    CHECK(h.salt == 77 && h.size == sizeof buf && !h.copy_damaged);
    CHECK_RC(ps_log_header_parse(buf, sizeof buf - 1, &h), PS_CORRUPT); /* cut short */
    CHECK(h.block_ok);
}

TEST(a_damaged_header_copy_is_told_from_a_damaged_header)
{
    const char name[] = "users";
    unsigned char buf[PS_LOG_FIXED_HEADER + 5];
    ps_log_header_encode(buf, name, 5, 99);
    ps_loghdr h;
    /* Any byte of either copy of the block: the other copy still reads. */
    for (size_t i = 0; i < 2 * PS_LOG_BLOCK; i++) {
        buf[i] ^= 0x04;
        CHECK_RC(ps_log_header_parse(buf, sizeof buf, &h), PS_OK);
        CHECK(h.copy_damaged && h.salt == 99 && h.nlen == 5);
        buf[i] ^= 0x04;
    }
    /* The same byte of both (name_len here, as one bit flip in each): the
     * header is unreadable, and says so rather than guessing a size. */
    buf[12] ^= 0x01;
    buf[12 + PS_LOG_BLOCK] ^= 0x01;
    CHECK_RC(ps_log_header_parse(buf, sizeof buf, &h), PS_CORRUPT);
    CHECK(!h.block_ok);
    buf[12] ^= 0x01;
    buf[12 + PS_LOG_BLOCK] ^= 0x01;
    /* A damaged name: the block is fine (salt known), the name is not. */
    buf[PS_LOG_FIXED_HEADER + 1] ^= 0x40;
    CHECK_RC(ps_log_header_parse(buf, sizeof buf, &h), PS_CORRUPT);
    CHECK(h.block_ok && h.salt == 99);
    buf[PS_LOG_FIXED_HEADER + 1] ^= 0x40;
    /* The end hint is in neither copy's check: it may change freely, and
     * has a salted check of its own. */
    ps_log_set_end_hint(buf, 12345, 99);
    CHECK_RC(ps_log_header_parse(buf, sizeof buf, &h), PS_OK);
    uint64_t e;
    CHECK(!h.copy_damaged && ps_log_end_hint(buf, 99, &e) && e == 12345);
    CHECK(!ps_log_end_hint(buf, 98, &e));
    for (int bit = 0; bit < 64; bit++) { /* any flipped bit reads as damaged */
        buf[PS_LOG_END_OFFSET + bit / 8] ^= (unsigned char)(1u << (bit % 8));
        CHECK(!ps_log_end_hint(buf, 99, &e));
        buf[PS_LOG_END_OFFSET + bit / 8] ^= (unsigned char)(1u << (bit % 8));
    }
    /* Version 1 files (no copy, no salt) are another format, when their
     * own check says so; a later version is refused as such. */
    unsigned char v1[40] = "PSLOG\r\n\x1a\x01\x00";
    CHECK_RC(ps_log_header_parse(v1, sizeof v1, &h), PS_CORRUPT); /* its check is wrong */
    uint32_t c1 = (uint32_t)XXH3_64bits(v1, 16); /* name_len 0 */
    for (int i = 0; i < 4; i++)
        v1[16 + i] = (unsigned char)(c1 >> (8 * i));
    CHECK_RC(ps_log_header_parse(v1, sizeof v1, &h), PS_BADVERSION);
    unsigned char v3[40] = "PSLOG\r\n\x1a\x03\x00";
    CHECK_RC(ps_log_header_parse(v3, sizeof v3, &h), PS_BADVERSION);
    unsigned char zeros[128] = {0};
    CHECK_RC(ps_log_header_parse(zeros, sizeof zeros, &h), PS_CORRUPT);
    CHECK_RC(ps_log_header_parse(NULL, 0, &h), PS_CORRUPT);
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
        /* Other processes write a file store: no read vouches for a key. */
        uint64_t seen = 99;
        CHECK_RC(ps_get_seen(st, "s", 1, "c", 1, NULL, &seen), PS_OK);
        CHECK(seen == 0);
        CHECK_RC(ps_put_seen(st, seen, "6", 1), PS_CONFLICT);
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
    uint64_t salt = salt_of(orig, n);
    while (off < n && ps_rec_parse(orig + off, n - off, salt, &r)) {
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
        /* The end hint says where the records ended, so even a cut on a
         * record boundary is known to have lost records, and says so. */
        size_t kept = whole ? bounds[whole - 1] : ps_log_header_size(1);
        CHECK(rep.torn_tails == 1);
        CHECK(rep.bytes_cut == n - kept);
        CHECK(strstr(rep.message, strrchr(logpath, '/') + 1) != NULL);
        /* The cut is made on disk, so the store is clean again (a log left
         * with no record is removed: it holds nothing). */
        CHECK(file_size(logpath) == (whole ? (long)kept : -1));
        ps_store_close(st);
    }
    /* Cut inside the header: a log only appears under its name with its
     * header whole, so this is damage, never a log still being made. It is
     * refused and left as it is; repair keeps it aside whole. */
    char aside[700];
    snprintf(aside, sizeof aside, "%s.corrupt-1", logpath);
    for (size_t cut = 0; cut < ps_log_header_size(1); cut++) {
        spit(logpath, orig, cut);
        ps_report rep;
        int rc;
        ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
        CHECK(st == NULL && rc == PS_CORRUPT);
        CHECK(strstr(rep.message, strrchr(logpath, '/') + 1) != NULL);
        CHECK(file_size(logpath) == (long)cut);
        if (cut % 24 != 0)
            continue;
        st = open_dir(dir, PS_SYNC_NEVER, 1, &rep, &rc);
        REQUIRE(st);
        CHECK(rep.logs_lost == 1 && rep.repaired == 1);
        CHECK(file_size(logpath) == -1 && file_size(aside) == (long)cut);
        ps_store_close(st);
        unlink(aside);
    }
    free(orig);
}

/* Append `tail` to the log (with the header's end hint set to `hint`),
 * reopen, and check what recovery reports. */
static void tail_case(const char *dir, const char *logpath, const unsigned char *tail,
                      size_t tlen, uint64_t hint, uint64_t lost)
{
    size_t n;
    unsigned char *orig = slurp(logpath, &n);
    unsigned char *buf = malloc(n + tlen);
    memcpy(buf, orig, n);
    memcpy(buf + n, tail, tlen);
    set_end_hint(buf, n + tlen, hint);
    spit(logpath, buf, n + tlen);
    ps_report rep;
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, NULL);
    if (!st)
        abort();
    CHECK(rep.torn_tails == (lost ? 1u : 0u));
    CHECK(rep.bytes_cut == lost);
    CHECK(strcmp(list_s(st, "s"), "[0,1,2]") == 0);
    CHECK(file_size(logpath) == (long)(lost ? n : n + tlen));
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
    tail_case(dir, logpath, garbage, sizeof garbage, n, sizeof garbage);
}

TEST(zeros_past_the_end_hint_are_free_space_and_zeros_before_it_are_lost_records)
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
    tail_case(dir, logpath, zeros, sizeof zeros, n + 100, 100);
    /* Garbage then zeros: everything to the last non-zero byte is lost. */
    unsigned char mixed[4096] = {0};
    memset(mixed, 0x5a, 10);
    free(slurp(logpath, &n));
    tail_case(dir, logpath, mixed, sizeof mixed, n, 10);
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

static int refuse_big;
static void *big_malloc(void *ctx, size_t n)
{
    (void)ctx;
    return refuse_big && n == (1u << 20) ? NULL : malloc(n);
}
static void *big_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    return realloc(p, n);
}
static void big_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

TEST(a_repair_that_fails_leaves_the_damaged_log_where_it_was)
{
    /* The salvage is written before the damaged file leaves its name: a
     * repair that fails (here its 1 MiB write buffer is refused) leaves
     * the store as it was, damage and all, never a store without the
     * scope that opens clean. */
    char dir[512], logpath[600];
    make_root();
    snprintf(dir, sizeof dir, "%s/failrepair", root);
    write_log(dir, 5, logpath, sizeof logpath);
    size_t n;
    unsigned char *bad = slurp(logpath, &n);
    REQUIRE(bad);
    bad[ps_log_header_size(1) + 25] ^= 0xff;
    spit(logpath, bad, n);
    ps_allocator a = {big_malloc, big_realloc, big_free, NULL};
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.repair = 1;
    o.sync = PS_SYNC_NEVER;
    o.allocator = &a;
    ps_store *st = NULL;
    ps_report rep;
    refuse_big = 1;
    CHECK_RC(ps_store_open(&st, &o, &rep), ENOMEM);
    refuse_big = 0;
    size_t n2;
    unsigned char *now = slurp(logpath, &n2);
    CHECK(now && n2 == n && memcmp(now, bad, n) == 0);
    free(now);
    int rc;
    CHECK(open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc) == NULL && rc == PS_CORRUPT);
    st = open_dir(dir, PS_SYNC_NEVER, 1, &rep, &rc); /* and repair still works */
    REQUIRE(st);
    CHECK(strcmp(list_s(st, "s"), "[0,2,3,4]") == 0);
    ps_store_close(st);
    free(bad);
}

static int inspect_dir(const char *path, int repair, ps_report *rep)
{
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.repair = repair;
    return ps_store_inspect(&o, rep);
}

TEST(records_the_drive_zeroed_under_sync_always_are_reported_cut)
{
    /* fdatasync'ed records that read back as zeros from a record boundary
     * on (a zeroed block, a drive that lied about a flush): the end hint,
     * kept in every mode, says they were there. */
    char dir[512], logpath[600];
    fresh_dir(dir, sizeof dir, "zeroed");
    ps_store *st = open_dir(dir, PS_SYNC_ALWAYS, 0, NULL, NULL);
    REQUIRE(st);
    char k[16];
    for (int i = 0; i < 60; i++) {
        snprintf(k, sizeof k, "k%02d", i);
        REQUIRE(put_s(st, "s", k, "\"acknowledged\"") == PS_OK);
    }
    ps_store_close(st);
    REQUIRE(the_log(dir, logpath, sizeof logpath) == 1);
    size_t n;
    unsigned char *p = slurp(logpath, &n);
    REQUIRE(p);
    size_t boundary = ps_log_header_size(1) + 10 * ps_rec_size(3, strlen("\"acknowledged\""));
    memset(p + boundary, 0, n - boundary);
    spit(logpath, p, n);
    ps_report rep;
    CHECK_RC(inspect_dir(dir, 0, &rep), PS_OK);
    CHECK(rep.torn_tails == 1 && rep.bytes_cut == n - boundary && rep.records == 10);
    st = open_dir(dir, PS_SYNC_ALWAYS, 0, &rep, NULL);
    REQUIRE(st);
    CHECK(rep.torn_tails == 1 && rep.bytes_cut == n - boundary);
    CHECK(strstr(rep.message, "are gone") != NULL);
    ps_stats s;
    ps_stats_get(st, &s);
    CHECK(s.keys == 10);
    ps_store_close(st);
    CHECK(file_size(logpath) == (long)boundary);
    free(p);
}

/* Zero everything from the start of record `first` (0-based) on. */
static size_t zero_from_record(const char *logpath, int first)
{
    size_t n;
    unsigned char *p = slurp(logpath, &n);
    ps_loghdr h;
    if (!p || ps_log_header_parse(p, n, &h) != PS_OK)
        abort();
    size_t off = h.size;
    ps_rec r;
    for (int i = 0; i < first && ps_rec_parse(p + off, n - off, h.salt, &r); i++)
        off += r.size;
    memset(p + off, 0, n - off);
    spit(logpath, p, n);
    free(p);
    return n - off;
}

TEST(every_mode_knows_where_its_records_end_across_mode_changes)
{
    /* A store killed in one mode (preallocated zeros left behind) and
     * reopened in another: zeroed records are still told from free space. */
    char dir[512], copy[600], logpath[700], cmd[1400];
    int modes[][2] = {{PS_SYNC_INTERVAL, PS_SYNC_ALWAYS}, {PS_SYNC_ALWAYS, PS_SYNC_NEVER},
                      {PS_SYNC_NEVER, PS_SYNC_NEVER}, {PS_SYNC_ALWAYS, PS_SYNC_ALWAYS}};
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        fresh_dir(dir, sizeof dir, "modes");
        snprintf(copy, sizeof copy, "%s-copy", dir);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", copy);
        REQUIRE(system(cmd) == 0);
        ps_store *st = open_dir(dir, modes[m][0], 0, NULL, NULL);
        REQUIRE(st);
        char k[16];
        for (int i = 0; i < 10; i++) {
            snprintf(k, sizeof k, "a%d", i);
            REQUIRE(put_s(st, "s", k, "\"first session\"") == PS_OK);
        }
        /* As a killed process leaves the files: copied while open. */
        snprintf(cmd, sizeof cmd, "cp -r '%s' '%s'", dir, copy);
        REQUIRE(system(cmd) == 0);
        ps_store_close(st);
        ps_report rep;
        st = open_dir(copy, modes[m][1], 0, &rep, NULL);
        REQUIRE(st);
        CHECK(rep.torn_tails == 0);
        for (int i = 0; i < 10; i++) {
            snprintf(k, sizeof k, "b%d", i);
            REQUIRE(put_s(st, "s", k, "\"second session\"") == PS_OK);
        }
        ps_report chk;
        CHECK_RC(ps_check(st, &chk), PS_OK);
        ps_store_close(st);
        REQUIRE(the_log(copy, logpath, sizeof logpath) == 1);
        size_t zeroed = zero_from_record(logpath, 15);
        st = open_dir(copy, modes[m][1], 0, &rep, NULL);
        REQUIRE(st);
        CHECK(rep.torn_tails == 1 && rep.bytes_cut == zeroed);
        ps_stats s;
        ps_stats_get(st, &s);
        CHECK(s.keys == 15);
        ps_store_close(st);
    }
}

TEST(a_temporary_that_holds_a_scopes_only_records_is_never_removed)
{
    char dir[512], logpath[600], orphan[700];
    make_root();
    snprintf(dir, sizeof dir, "%s/orphan", root);
    write_log(dir, 3, logpath, sizeof logpath);
    snprintf(orphan, sizeof orphan, "%s.tmp-00000000000000ab", logpath);
    REQUIRE(rename(logpath, orphan) == 0); /* as a crash that lost the rename */
    ps_report rep;
    int rc;
    CHECK(open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc) == NULL && rc == PS_CORRUPT);
    CHECK(strstr(rep.message, "no log holds") != NULL && file_size(orphan) > 0);
    CHECK_RC(inspect_dir(dir, 0, &rep), PS_CORRUPT);
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 1, &rep, &rc);
    REQUIRE(st);
    CHECK(rep.repaired == 1 && strcmp(list_s(st, "s"), "[0,1,2]") == 0);
    ps_store_close(st);
    CHECK(file_size(orphan) < 0 && file_size(logpath) > 0);
    st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    REQUIRE(st);
    CHECK(rep.repaired == 0 && strcmp(list_s(st, "s"), "[0,1,2]") == 0);
    ps_store_close(st);
}

TEST(repair_counts_the_tail_it_could_not_salvage)
{
    char dir[512], logpath[600];
    fresh_dir(dir, sizeof dir, "salvagetail");
    ps_store *st = open_dir(dir, PS_SYNC_ALWAYS, 0, NULL, NULL);
    REQUIRE(st);
    char k[8];
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof k, "k%d", i);
        REQUIRE(put_s(st, "s", k, "1") == PS_OK);
    }
    ps_store_close(st);
    REQUIRE(the_log(dir, logpath, sizeof logpath) == 1);
    size_t zeroed = zero_from_record(logpath, 7);
    size_t n;
    unsigned char *p = slurp(logpath, &n);
    p[ps_log_header_size(1) + 2 * ps_rec_size(2, 1) + 22] ^= 0x10; /* record 3 */
    spit(logpath, p, n);
    free(p);
    ps_report rep;
    st = open_dir(dir, PS_SYNC_ALWAYS, 1, &rep, NULL);
    REQUIRE(st);
    CHECK(rep.repaired == 1 && rep.records_lost == 1);
    CHECK(rep.torn_tails == 1 && rep.bytes_cut == zeroed);
    ps_stats s;
    ps_stats_get(st, &s);
    CHECK(s.keys == 6);
    ps_store_close(st);
}

TEST(a_record_hidden_in_a_key_is_never_taken_for_one)
{
    /* A key carrying the image of a complete record (here the next record
     * of the log, as an unsalted format would accept it), in a record
     * that is then torn: recovery must cut the torn tail, not find the
     * record in the key, and repair must not "salvage" it. */
    char dir[512], logpath[600];
    fresh_dir(dir, sizeof dir, "hidden");
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    REQUIRE(put_s(st, "users", "ada", "{\"role\":\"user\"}") == PS_OK);
    unsigned char forged[128], key[256];
    const char *val = "{\"role\":\"root\"}";
    size_t fn = ps_rec_size(5, strlen(val));
    for (int guess = 0; guess < 2; guess++) {
        /* Guess salts an attacker might: 0, and the record's own key hash. */
        uint64_t salt = guess ? (uint64_t)XXH3_64bits("users", 5) : 0;
        ps_rec_encode(forged, salt, PS_REC_PUT, 3, "admin", 5, val, strlen(val));
        memcpy(key + guess * fn, forged, fn);
    }
    memset(key + 2 * fn, 'x', 40);
    size_t klen = 2 * fn + 40;
    REQUIRE(ps_put(st, "users", 5, (const char *)key, klen, "1", 1, NULL, NULL) == PS_OK);
    ps_store_close(st);
    REQUIRE(the_log(dir, logpath, sizeof logpath) == 1);
    size_t n;
    unsigned char *p = slurp(logpath, &n);
    REQUIRE(p);
    spit(logpath, p, n - 20); /* torn inside the key's padding: the images are whole */
    ps_report rep;
    int rc;
    for (int repair = 0; repair < 2; repair++) {
        st = open_dir(dir, PS_SYNC_NEVER, repair, &rep, &rc);
        REQUIRE(st);
        CHECK(rep.torn_tails == 1 && rep.repaired == 0);
        CHECK(strcmp(get_s(st, "users", "admin"), "-") == 0);
        CHECK(strcmp(get_s(st, "users", "ada"), "{\"role\":\"user\"}") == 0);
        ps_stats s;
        ps_stats_get(st, &s);
        CHECK(s.keys == 1);
        ps_store_close(st);
        spit(logpath, p, n - 20);
    }
    free(p);
}

TEST(a_damaged_header_of_a_log_with_records_is_corruption_never_a_cut)
{
    char dir[512], logpath[600], aside[700];
    make_root();
    snprintf(dir, sizeof dir, "%s/hdr", root);
    write_log(dir, 100, logpath, sizeof logpath);
    snprintf(aside, sizeof aside, "%s.corrupt-1", logpath);
    size_t n;
    unsigned char *orig = slurp(logpath, &n);
    REQUIRE(orig);
    struct { size_t at; int both; uint64_t lost_logs, lost_records; } cases[] = {
        {12, 0, 0, 0},                          /* name_len, first copy: salvaged whole */
        {12 + PS_LOG_BLOCK + 3, 0, 0, 0},       /* name_len, second copy */
        {16, 1, 1, 0},                          /* the salt in both: records unreadable */
        {PS_LOG_FIXED_HEADER, 0, 1, 100},       /* the scope name: records counted, not named */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        unsigned char *bad = malloc(n);
        memcpy(bad, orig, n);
        bad[cases[c].at] ^= 0x01;
        if (cases[c].both)
            bad[cases[c].at + PS_LOG_BLOCK] ^= 0x01;
        spit(logpath, bad, n);
        ps_report rep;
        int rc;
        ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
        CHECK(st == NULL && rc == PS_CORRUPT);
        CHECK(strstr(rep.message, "header") != NULL || strstr(rep.message, "name") != NULL);
        size_t n2;
        unsigned char *now = slurp(logpath, &n2);
        CHECK(now && n2 == n && memcmp(now, bad, n) == 0); /* refused, untouched */
        free(now);
        CHECK_RC(inspect_dir(dir, 0, &rep), PS_CORRUPT);
        st = open_dir(dir, PS_SYNC_NEVER, 1, &rep, &rc);
        REQUIRE(st);
        CHECK(rep.repaired == 1 && rep.logs_lost == cases[c].lost_logs);
        CHECK(rep.records_lost == cases[c].lost_records);
        ps_stats s;
        ps_stats_get(st, &s);
        CHECK(s.keys == (cases[c].lost_logs ? 0u : 100u));
        ps_store_close(st);
        now = slurp(aside, &n2); /* kept aside byte for byte */
        CHECK(now && n2 == n && memcmp(now, bad, n) == 0);
        free(now);
        unlink(aside);
        spit(logpath, orig, n);
        free(bad);
    }
    free(orig);
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

    /* a torn tail: reported, not cut, and the whole directory untouched */
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
    CHECK_RC(inspect_dir(dir, 0, &rep), PS_OK); /* it checks what the writer published */
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
    /* Asked of a file store, whose own threads share it, serialized changes
     * nothing: this writer and these compactions still exclude each other. */
    o.serialized = 1;
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

typedef struct grower {
    ps_store *st;
    int writes;
    int keys;
} grower;

/* Value i of the grower: 300 bytes that name i. */
static void grower_value(char *v, size_t cap, int i)
{
    int n = snprintf(v, cap, "\"%d:", i);
    memset(v + n, 'g', cap - (size_t)n - 2);
    v[cap - 2] = '"';
    v[cap - 1] = 0;
}

static void *grow_writer(void *p)
{
    grower *g = p;
    char k[32], v[300];
    for (int i = 0; i < g->writes; i++) {
        snprintf(k, sizeof k, "k%d", i % g->keys);
        grower_value(v, sizeof v, i);
        if (put_s(g->st, "s", k, v) != PS_OK)
            return (void *)1;
    }
    return NULL;
}

TEST(appends_into_prefaulted_space_survive_growth_and_compaction)
{
    /* A log past a few hundred KiB has the pages ahead of its end faulted
     * in by the maintenance thread while its writer appends, grows (the
     * mapping moves) and is compacted (the mapping goes): every write must
     * land, whatever the interleaving. */
    char dir[512];
    fresh_dir(dir, sizeof dir, "prefault");
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.sync = PS_SYNC_NEVER;
    o.compact_min_dead = 1u << 20;
    ps_store *st = NULL;
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    grower g = {st, getenv("PS_TEST_QUICK") ? 12000 : 60000, 1500};
    pthread_t th;
    pthread_create(&th, NULL, grow_writer, &g);
    for (int i = 0; i < 10; i++) {
        usleep(5000);
        CHECK_RC(ps_compact(st, "s", 1), PS_OK);
    }
    void *res;
    pthread_join(th, &res);
    CHECK(res == NULL);
    ps_report chk;
    CHECK_RC(ps_check(st, &chk), PS_OK);
    ps_store_close(st);
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    char k[32], want[300];
    int wrong = 0;
    for (int j = 0; j < g.keys; j++) {
        int last = j + (g.writes - 1 - j) / g.keys * g.keys;
        snprintf(k, sizeof k, "k%d", j);
        grower_value(want, sizeof want, last);
        wrong += strcmp(get_s(st, "s", k), want) != 0;
    }
    CHECK(wrong == 0);
    ps_store_close(st);
}

/* Whether this kernel has MADV_POPULATE_WRITE (Linux 5.14), which the
 * store's prefaulting needs; without it the store just takes the faults. */
static int kernel_populates(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/probe", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, 4096) != 0)
        return 0;
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int ok = m != MAP_FAILED && madvise(m, 4096, 23 /* MADV_POPULATE_WRITE */) == 0;
    if (m != MAP_FAILED)
        munmap(m, 4096);
    close(fd);
    unlink(path);
    return ok;
}

TEST(a_busy_log_is_faulted_in_ahead_of_its_writer)
{
    /* The writer's first request wakes the maintenance thread; the ones
     * after it the thread finds by polling, with no wake-up. Either way the
     * pages ahead of the log's end are in place before the writer gets
     * there, so it meets few page faults of its own. Same-size values over
     * a few keys are written in place in memory: the faults counted are
     * the log's. */
    char dir[512];
    fresh_dir(dir, sizeof dir, "prefault-ahead");
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.sync = PS_SYNC_NEVER;
    o.compact_min_dead = (uint64_t)1 << 40;
    ps_store *st = NULL;
    REQUIRE(ps_store_open(&st, &o, NULL) == PS_OK);
    int quick = getenv("PS_TEST_QUICK") != NULL; /* valgrind: its own faults */
    int writes = quick ? 1024 : 4096;
    char k[32], v[1024];
    memset(v, 'x', sizeof v);
    v[0] = v[sizeof v - 2] = '"';
    v[sizeof v - 1] = 0;
    struct rusage before, after;
    getrusage(RUSAGE_THREAD, &before);
    for (int i = 0; i < writes; i++) {
        snprintf(k, sizeof k, "k%d", i % 16);
        REQUIRE(put_s(st, "s", k, v) == PS_OK);
        if (i % 16 == 15)
            usleep(1000); /* ~16 KiB per millisecond: the thread keeps up */
    }
    getrusage(RUSAGE_THREAD, &after);
    long faults = after.ru_minflt - before.ru_minflt;
    long pages = (long)writes * 1040 / 4096; /* a record is ~1,040 bytes */
    if (!kernel_populates(dir))
        fprintf(stderr, "  (this kernel has no MADV_POPULATE_WRITE: %ld faults "
                        "for %ld pages, not checked)\n", faults, pages);
    else if (!quick)
        CHECK(faults < pages / 4);
    CHECK(strcmp(get_s(st, "s", "k15"), v) == 0);
    ps_store_close(st);
}

TEST(an_interrupted_compaction_leaves_nothing_that_breaks_open)
{
    char dir[512], logpath[600], stray[700], torn[700], foreign[700], old[700];
    make_root();
    snprintf(dir, sizeof dir, "%s/stray", root);
    write_log(dir, 4, logpath, sizeof logpath);
    size_t n;
    unsigned char *log = slurp(logpath, &n);
    /* A temporary log of ours: whole, and one cut inside its header. */
    snprintf(stray, sizeof stray, "%s.tmp-00000000000000aa", logpath);
    spit(stray, log, n);
    snprintf(torn, sizeof torn, "%s.tmp-00000000000000bb", logpath);
    spit(torn, log, 5);
    /* Under our naming but not ours by content, and the old suffix: left. */
    snprintf(foreign, sizeof foreign, "%s.tmp-00000000000000cc", logpath);
    spit(foreign, (const unsigned char *)"someone else's", 14);
    snprintf(old, sizeof old, "%s.compact", logpath);
    spit(old, (const unsigned char *)"half a log", 10);
    ps_report rep;
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, &rep, NULL);
    REQUIRE(st);
    CHECK(rep.stray_files == 2);
    CHECK(file_size(stray) == -1 && file_size(torn) == -1);
    CHECK(file_size(foreign) == 14 && file_size(old) == 10);
    CHECK(strcmp(list_s(st, "s"), "[0,1,2,3]") == 0);
    ps_store_close(st);
    free(log);
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

TEST(a_second_open_of_the_same_directory_shares_it)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "shared");
    ps_store *a = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(a);
    CHECK_RC(put_s(a, "s", "k", "1"), PS_OK);
    ps_report rep;
    int rc;
    ps_store *b = open_dir(dir, PS_SYNC_NEVER, 0, &rep, &rc);
    REQUIRE(b);
    CHECK(strcmp(get_s(b, "s", "k"), "1") == 0);
    CHECK_RC(put_s(b, "s", "k", "2"), PS_OK);
    CHECK_RC(put_s(b, "t", "x", "3"), PS_OK);
    CHECK(strcmp(get_s(a, "s", "k"), "2") == 0);
    CHECK(strcmp(get_s(a, "t", "x"), "3") == 0);
    CHECK_RC(del_s(a, "s", "k"), PS_OK);
    CHECK(strcmp(get_s(b, "s", "k"), "-") == 0);
    /* A writer in another sync mode is refused while these two write. */
    ps_store *c = open_dir(dir, PS_SYNC_ALWAYS, 0, &rep, &rc);
    CHECK(c == NULL && rc == PS_LOCKED && strstr(rep.message, "sync=never") != NULL);
    ps_store_close(a);
    ps_store_close(b);
    c = open_dir(dir, PS_SYNC_ALWAYS, 0, &rep, &rc);
    REQUIRE(c);
    CHECK(strcmp(get_s(c, "s", "k"), "-") == 0);
    CHECK(strcmp(get_s(c, "t", "x"), "3") == 0);
    ps_store_close(c);
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
