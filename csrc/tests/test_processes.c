/*
 * test_processes.c - several processes on one store directory (ps_shm.h):
 * compare-and-set across processes, a child of fork() going on with its
 * parent's store, and a process that dies holding a scope's lock.
 */
#include <signal.h>
#include <sys/wait.h>

#include "disk_util.h"

/* n compare-and-set increments of (s, c), retrying on conflict. */
static int increment(ps_store *st, int n)
{
    for (int i = 0; i < n; i++) {
        for (;;) {
            const char *v = get_s(st, "s", "c");
            char old[32], now[32];
            snprintf(old, sizeof old, "%s", v);
            snprintf(now, sizeof now, "%ld", strtol(old, NULL, 10) + 1);
            int rc = ps_put_if(st, "s", 1, "c", 1, now, strlen(now), old, strlen(old));
            if (rc == PS_OK)
                break;
            if (rc != PS_CONFLICT)
                return rc;
        }
    }
    return 0;
}

static int wait_all(pid_t *pids, int n)
{
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int status = 0;
        waitpid(pids[i], &status, 0);
        bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    return bad;
}

TEST(four_processes_compare_and_set_one_key_to_exactly_their_sum)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "cas");
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    CHECK_RC(put_s(st, "s", "c", "0"), PS_OK);
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        pids[i] = fork();
        REQUIRE(pids[i] >= 0);
        if (pids[i] == 0) {
            /* Two go on with the store inherited, two open their own. */
            ps_store *mine = i % 2 ? open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL) : st;
            int rc = mine ? increment(mine, 300) : -1;
            if (mine)
                ps_store_close(mine);
            if (i % 2)
                ps_store_close(st);
            CHILD_EXIT(rc == 0 ? 0 : 1);
        }
    }
    CHECK_RC(increment(st, 300), PS_OK);
    CHECK(wait_all(pids, 4) == 0);
    CHECK(strcmp(get_s(st, "s", "c"), "1500") == 0);
    ps_store_close(st);
    st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    CHECK(strcmp(get_s(st, "s", "c"), "1500") == 0);
    ps_store_close(st);
}

TEST(a_forked_child_writes_through_its_parents_store_in_every_sync_mode)
{
    int modes[] = {PS_SYNC_INTERVAL, PS_SYNC_NEVER, PS_SYNC_ALWAYS};
    for (int m = 0; m < 3; m++) {
        char dir[512];
        fresh_dir(dir, sizeof dir, "fork");
        ps_store *st = open_dir(dir, modes[m], 0, NULL, NULL);
        REQUIRE(st);
        CHECK_RC(put_s(st, "s", "before", "0"), PS_OK);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            int bad = 0;
            for (int i = 0; i < 50; i++) {
                char k[16];
                snprintf(k, sizeof k, "c%d", i);
                bad += put_s(st, "s", k, "1") != PS_OK;
            }
            bad += ps_store_close(st) != PS_OK;
            CHILD_EXIT(bad ? 1 : 0);
        }
        for (int i = 0; i < 50; i++) {
            char k[16];
            snprintf(k, sizeof k, "p%d", i);
            CHECK_RC(put_s(st, "s", k, "2"), PS_OK);
        }
        CHECK(wait_all(&pid, 1) == 0);
        CHECK(strcmp(get_s(st, "s", "c49"), "1") == 0);
        CHECK_RC(ps_store_close(st), PS_OK);
        st = open_dir(dir, modes[m], 0, NULL, NULL);
        REQUIRE(st);
        ps_stats s;
        ps_stats_get(st, &s);
        CHECK(s.keys == 101);
        ps_store_close(st);
    }
}

/* Holding the scope's lock, its file half changed: tell the parent, which
 * kills us (from outside, as the kernel would: nothing runs after). */
static void stop_at_rename(void *ctx, int point)
{
    if (point == PS_HOOK_COMPACT_RENAMED) {
        if (write(*(int *)ctx, "!", 1) != 1)
            _exit(3);
        for (;;)
            pause();
    }
}

TEST(a_process_that_dies_holding_a_scopes_lock_blocks_nobody)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "dead");
    ps_store *st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i % 10);
        CHECK_RC(put_s(st, "s", k, "\"some value to make dead space\""), PS_OK);
    }
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ps_options o;
        memset(&o, 0, sizeof o);
        o.path = dir;
        o.sync = PS_SYNC_NEVER;
        o.hook = stop_at_rename;
        o.hook_ctx = &fds[1];
        ps_store *other = NULL;
        if (ps_store_open(&other, &o, NULL) != PS_OK)
            CHILD_EXIT(1);
        (void)get_s(other, "s", "k0");
        ps_compact(other, "s", 1);
        CHILD_EXIT(2); /* not reached */
    }
    char c;
    CHECK(read(fds[0], &c, 1) == 1);
    kill(pid, SIGKILL);
    close(fds[0]);
    close(fds[1]);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK_RC(put_s(st, "s", "k0", "\"after\""), PS_OK);
    CHECK(strcmp(get_s(st, "s", "k0"), "\"after\"") == 0);
    CHECK(strcmp(get_s(st, "s", "k9"), "\"some value to make dead space\"") == 0);
    ps_report rep;
    CHECK_RC(ps_check(st, &rep), PS_OK);
    ps_store_close(st);
    st = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(st);
    ps_stats s;
    ps_stats_get(st, &s);
    CHECK(s.keys == 10);
    CHECK(strcmp(get_s(st, "s", "k0"), "\"after\"") == 0);
    ps_store_close(st);
}

TEST(a_reader_follows_a_writer_and_a_compaction)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "follow");
    ps_store *w = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(w);
    CHECK_RC(put_s(w, "s", "k", "1"), PS_OK);
    ps_options o;
    memset(&o, 0, sizeof o);
    o.path = dir;
    o.read_only = 1;
    ps_store *r = NULL;
    REQUIRE(ps_store_open(&r, &o, NULL) == PS_OK);
    CHECK(strcmp(get_s(r, "s", "k"), "1") == 0);
    CHECK_RC(put_s(w, "s", "k", "2"), PS_OK);
    CHECK_RC(put_s(w, "s", "j", "3"), PS_OK);
    CHECK(strcmp(get_s(r, "s", "k"), "2") == 0);
    CHECK_RC(ps_compact(w, NULL, 0), PS_OK);
    CHECK_RC(put_s(w, "s", "k", "4"), PS_OK);
    CHECK(strcmp(list_s(r, "s"), "[4,3]") == 0);
    CHECK_RC(del_s(w, "s", "k"), PS_OK);
    CHECK_RC(del_s(w, "s", "j"), PS_OK);
    CHECK_RC(ps_compact(w, NULL, 0), PS_OK); /* the log goes */
    CHECK(strcmp(get_s(r, "s", "j"), "-") == 0);
    size_t n = 0;
    ps_sink s = sink_of(&list_buf);
    CHECK_RC(ps_groups(r, &s, &n), PS_OK);
    CHECK(n == 0);
    ps_store_close(r);
    ps_store_close(w);
}

/* ps_events' changes as text: "put s k old>new;" or "del s k old;". */
static const char *events_s(ps_store *st, size_t *count)
{
    static char text[4096];
    buf_reset(&list_buf);
    ps_sink sink = sink_of(&list_buf);
    if (ps_events(st, &sink, count) != PS_OK)
        return "error";
    const unsigned char *p = (const unsigned char *)list_buf.data, *end = p + list_buf.len;
    size_t at = 0;
    text[0] = 0;
    while (p < end && at < sizeof text - 200) {
        int kind = *p++;
        char parts[4][128];
        for (int i = 0; i < 4; i++) {
            uint32_t n = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
            p += 4;
            if (i >= 2 && n == 0) {
                snprintf(parts[i], sizeof parts[i], "-");
                continue;
            }
            if (i >= 2)
                n--;
            snprintf(parts[i], sizeof parts[i], "%.*s", (int)n, (const char *)p);
            p += n;
        }
        at += (size_t)snprintf(text + at, sizeof text - at, "%s %s %s %s>%s;", kind == 1 ? "put" : "del",
                               parts[0], parts[1], parts[2], parts[3]);
    }
    return text;
}

TEST(events_say_what_another_process_changed_in_its_order)
{
    char dir[512];
    fresh_dir(dir, sizeof dir, "events");
    ps_store *a = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(a);
    CHECK_RC(put_s(a, "s", "old", "0"), PS_OK);
    ps_store *b = open_dir(dir, PS_SYNC_NEVER, 0, NULL, NULL);
    REQUIRE(b);
    size_t n = 9;
    CHECK(strcmp(events_s(b, &n), "") == 0 && n == 0); /* what was there is no change */
    CHECK_RC(put_s(a, "s", "k", "1"), PS_OK);
    CHECK_RC(put_s(a, "s", "k", "2"), PS_OK);
    CHECK_RC(del_s(a, "s", "old"), PS_OK);
    CHECK_RC(put_s(a, "t", "x", "3"), PS_OK); /* a scope made since */
    CHECK_RC(put_s(b, "s", "mine", "4"), PS_OK); /* b's own: not an event for b */
    CHECK(strcmp(events_s(b, &n), "put s k ->1;put s k 1>2;del s old 0>-;put t x ->3;") == 0);
    CHECK(n == 4);
    CHECK(strcmp(events_s(b, &n), "") == 0 && n == 0);
    /* A compaction by a: b reads the new file and says what changed. */
    CHECK_RC(put_s(a, "s", "k", "5"), PS_OK);
    CHECK_RC(ps_compact(a, "s", 1), PS_OK);
    CHECK_RC(put_s(a, "s", "k", "6"), PS_OK);
    CHECK(strcmp(events_s(b, &n), "put s k 2>6;") == 0);
    ps_store_close(b);
    ps_store_close(a);
}

RUN_TESTS()
