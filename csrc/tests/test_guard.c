/*
 * test_guard.c - unit tests of ps_guard.h: every call through the guard,
 * values delivered into bufs, PSG_CLOSED after close, and threads calling
 * while another closes (under ASan a call reaching a freed store fails).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "ps_guard.h"

static psg *open_guard(void)
{
    ps_options o;
    memset(&o, 0, sizeof o);
    o.hash_seed = 3;
    psg *g = NULL;
    return psg_open(&g, &o, NULL) == PS_OK ? g : NULL;
}

static int buf_is(const psg_buf *b, const char *want)
{
    return b->len == strlen(want) && memcmp(b->data, want, b->len) == 0;
}

TEST(calls_go_through_and_values_land_in_bufs)
{
    psg *g = open_guard();
    REQUIRE(g);
    psg_buf b = {0};
    int existed = -1;
    CHECK_RC(psg_put(g, S("s"), S("k"), S("1"), &b, &existed), PS_OK);
    CHECK(existed == 0 && !b.filled);
    CHECK_RC(psg_put(g, S("s"), S("k"), S("[2]"), &b, &existed), PS_OK);
    CHECK(existed == 1 && b.filled && buf_is(&b, "1"));
    /* A filled buf is refilled by the next call without leaking: kept
     * while big enough, replaced when not. */
    CHECK_RC(psg_get(g, S("s"), S("k"), &b), PS_OK);
    CHECK(b.filled && buf_is(&b, "[2]") && b.cap >= 3);
    char *kept = b.data;
    CHECK_RC(psg_put(g, S("s"), S("one"), S("1"), NULL, NULL), PS_OK);
    CHECK_RC(psg_get(g, S("s"), S("one"), &b), PS_OK);
    CHECK(buf_is(&b, "1") && b.data == kept);
    CHECK_RC(psg_del(g, S("s"), S("one"), NULL), PS_OK);
    CHECK_RC(psg_get(g, S("s"), S("nope"), &b), PS_NOTFOUND);
    CHECK(!b.filled && b.len == 0);
    CHECK_RC(psg_put_if(g, S("s"), S("k"), S("3"), S("[9]")), PS_CONFLICT);
    CHECK_RC(psg_put_if(g, S("s"), S("k"), S("3"), S("[2]")), PS_OK);
    CHECK_RC(psg_put_if(g, S("s"), S("new"), S("4"), NULL, 0), PS_OK);
    CHECK_RC(psg_put(g, S("t"), S("k"), S("5"), NULL, NULL), PS_OK);

    size_t count = 0;
    CHECK_RC(psg_groups(g, &b, &count), PS_OK);
    CHECK(count == 2 && b.len == 10 && memcmp(b.data + 4, "s", 1) == 0);

    uint32_t pos = 0;
    CHECK_RC(psg_items(g, S("s"), &pos, 0, &b, &count), PS_OK);
    CHECK(count == 2 && pos == 2);

    psg_bufs arrays = {0};
    CHECK_RC(psg_list(g, S("s"), 0, &arrays), PS_OK);
    CHECK(arrays.count == 1 && buf_is(&arrays.items[0], "[3,4]"));
    psg_bufs_free(&arrays);
    /* A tiny batch gives one array per value. */
    CHECK_RC(psg_list(g, S("s"), 1, &arrays), PS_OK);
    CHECK(arrays.count == 2 && buf_is(&arrays.items[1], "[4]"));
    psg_bufs_free(&arrays);
    CHECK(arrays.items == NULL && arrays.count == 0);

    ps_stats st;
    CHECK_RC(psg_stats(g, &st), PS_OK);
    CHECK(st.keys == 3 && st.scopes == 2);
    ps_report rep;
    CHECK_RC(psg_recovery(g, &rep), PS_OK);
    CHECK_RC(psg_scope_stats(g, &b, &count), PS_OK);
    CHECK(count == 2);
    CHECK_RC(psg_sync(g), PS_OK);
    CHECK_RC(psg_compact(g, NULL, 0), PS_OK);
    CHECK_RC(psg_check(g, &rep), PS_OK);

    CHECK_RC(psg_del(g, S("s"), S("k"), &b), PS_OK);
    CHECK(buf_is(&b, "3"));
    CHECK_RC(psg_del(g, S("s"), S("k"), &b), PS_NOTFOUND);
    CHECK_RC(psg_del(g, S("s"), S("new"), NULL), PS_OK);
    psg_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0 && !b.filled);
    psg_buf_free(&b); /* twice is fine */
    psg_free(g);
}

TEST(an_inline_get_copies_small_values_in_place_and_spills_long_ones)
{
    psg *g = open_guard();
    REQUIRE(g);
    static psg_inline in;
    psg_buf spill = {0};
    static char big[PSG_INLINE + 3];
    memset(big, '7', sizeof big);
    CHECK_RC(psg_put(g, S("s"), S("small"), S("[1]"), NULL, NULL), PS_OK);
    CHECK_RC(psg_put(g, S("s"), S("edge"), big, PSG_INLINE, NULL, NULL), PS_OK);
    CHECK_RC(psg_put(g, S("s"), S("big"), big, sizeof big, NULL, NULL), PS_OK);
    CHECK_RC(psg_get_inline(g, S("s"), S("small"), &in, &spill), PS_OK);
    CHECK(in.len == 3 && memcmp(in.data, "[1]", 3) == 0 && !spill.filled);
    CHECK_RC(psg_get_inline(g, S("s"), S("edge"), &in, &spill), PS_OK);
    CHECK(in.len == PSG_INLINE && memcmp(in.data, big, PSG_INLINE) == 0 && !spill.filled);
    CHECK_RC(psg_get_inline(g, S("s"), S("big"), &in, &spill), PS_OK);
    CHECK(in.len == sizeof big && spill.filled && spill.len == sizeof big &&
          memcmp(spill.data, big, sizeof big) == 0);
    /* A miss delivers nothing, and says so by its status alone. */
    CHECK_RC(psg_get_inline(g, S("s"), S("nope"), &in, &spill), PS_NOTFOUND);
    CHECK(!spill.filled);
    CHECK_RC(psg_close(g), PS_OK);
    CHECK_RC(psg_get_inline(g, S("s"), S("small"), &in, &spill), PSG_CLOSED);
    psg_buf_free(&spill);
    psg_free(g);
}

TEST(calls_after_close_return_closed)
{
    psg *g = open_guard();
    REQUIRE(g);
    psg_buf b = {0};
    CHECK_RC(psg_put(g, S("s"), S("k"), S("1"), NULL, NULL), PS_OK);
    CHECK_RC(psg_close(g), PS_OK);
    CHECK_RC(psg_close(g), PSG_CLOSED);
    b.filled = 1;
    CHECK_RC(psg_get(g, S("s"), S("k"), &b), PSG_CLOSED);
    CHECK(!b.filled);
    CHECK_RC(psg_put(g, S("s"), S("k"), S("2"), NULL, NULL), PSG_CLOSED);
    CHECK_RC(psg_del(g, S("s"), S("k"), NULL), PSG_CLOSED);
    ps_stats st;
    CHECK_RC(psg_stats(g, &st), PSG_CLOSED);
    CHECK_RC(psg_sync(g), PSG_CLOSED);
    psg_free(g); /* after close: frees the handle only */
    psg_free(NULL);
}

TEST(strerror_knows_closed)
{
    const char *msg = ps_strerror(PSG_CLOSED);
    CHECK(msg && strcmp(msg, "unknown pystate error code") != 0);
    CHECK(strstr(msg, "closed") != NULL);
}

struct caller {
    psg *g;
    atomic_int *started;
    long ok, closed, other;
};

static void *call_until_closed(void *arg)
{
    struct caller *c = arg;
    psg_buf b = {0};
    char key[16];
    atomic_fetch_add(c->started, 1);
    /* Until closed; the cap turns a scheduler that starves the closing
     * thread into a failed CHECK instead of a hang. */
    for (long i = 0; i < 50000000; i++) {
        snprintf(key, sizeof key, "k%ld", i % 64);
        int rc = (i & 1) ? psg_put(c->g, S("s"), key, strlen(key), S("{\"v\":1}"), &b, NULL)
                         : psg_get(c->g, S("s"), key, strlen(key), &b);
        if (rc == PSG_CLOSED) {
            c->closed++;
            break;
        }
        if (rc == PS_OK || rc == PS_NOTFOUND)
            c->ok++;
        else
            c->other++;
    }
    psg_buf_free(&b);
    return NULL;
}

TEST(close_waits_for_calls_in_flight)
{
    enum { N = 4 };
    int rounds = getenv("PS_TEST_QUICK") ? 3 : 20; /* valgrind is slow */
    for (int round = 0; round < rounds; round++) {
        psg *g = open_guard();
        REQUIRE(g);
        atomic_int started;
        atomic_init(&started, 0);
        struct caller c[N];
        pthread_t th[N];
        for (int i = 0; i < N; i++) {
            c[i] = (struct caller){g, &started, 0, 0, 0};
            pthread_create(&th[i], NULL, call_until_closed, &c[i]);
        }
        while (atomic_load(&started) < N)
            sched_yield();
        CHECK_RC(psg_close(g), PS_OK);
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            CHECK(c[i].closed == 1 && c[i].other == 0);
        }
        psg_free(g);
    }
}

RUN_TESTS()
