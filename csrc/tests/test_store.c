/*
 * test_store.c - unit tests of the public API (pystate.h): every call,
 * every return code, refusing sinks, injected allocation failures, and a
 * long random run checked against a simple model.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "pystate.h"

static ps_store *open_store_with(const ps_allocator *a, int serialized)
{
    ps_options o;
    memset(&o, 0, sizeof o);
    o.allocator = a;
    o.hash_seed = 7;
    o.serialized = serialized;
    ps_store *st = NULL;
    if (ps_store_open(&st, &o, NULL) != PS_OK)
        return NULL;
    return st;
}

static ps_store *open_store(const ps_allocator *a)
{
    return open_store_with(a, 0);
}

static int get_str(ps_store *st, const char *scope, const char *key, buf_sink *b)
{
    ps_sink s = sink_of(b);
    return ps_get(st, scope, strlen(scope), key, strlen(key), &s);
}

static int put_str(ps_store *st, const char *scope, const char *key, const char *v)
{
    return ps_put(st, scope, strlen(scope), key, strlen(key), v, strlen(v), NULL, NULL);
}

TEST(put_get_delete)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    buf_sink b = {0};
    CHECK_RC(get_str(st, "s", "k", &b), PS_NOTFOUND);
    CHECK(b.calls == 0);

    int existed = -1;
    ps_sink old = sink_of(&b);
    CHECK_RC(ps_put(st, S("s"), S("k"), S("\"v1\""), &old, &existed), PS_OK);
    CHECK(existed == 0);
    CHECK(b.calls == 0); /* nothing to hand back on a create */
    CHECK_RC(ps_put(st, S("s"), S("k"), S("\"v2\""), &old, &existed), PS_OK);
    CHECK(existed == 1);
    CHECK(b.len == 4 && memcmp(b.data, "\"v1\"", 4) == 0);

    buf_reset(&b);
    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    CHECK(strcmp(b.data, "\"v2\"") == 0);

    buf_reset(&b);
    ps_sink del_old = sink_of(&b);
    CHECK_RC(ps_del(st, S("s"), S("k"), &del_old), PS_OK);
    CHECK(strcmp(b.data, "\"v2\"") == 0);
    CHECK_RC(ps_del(st, S("s"), S("k"), &del_old), PS_NOTFOUND);
    CHECK_RC(ps_del(st, S("nope"), S("k"), NULL), PS_NOTFOUND);
    buf_reset(&b);
    ps_store_close(st);
}

TEST(put_without_old_sink_or_existed)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    CHECK_RC(put_str(st, "s", "k", "1"), PS_OK);
    CHECK_RC(put_str(st, "s", "k", "2"), PS_OK);
    buf_sink b = {0};
    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    CHECK(strcmp(b.data, "2") == 0);
    buf_reset(&b);
    ps_store_close(st);
}

TEST(put_if_compares_exact_bytes)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    /* expect absent */
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("1"), NULL, 0), PS_OK);
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("2"), NULL, 0), PS_CONFLICT);
    /* expect a value */
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("2"), S("0")), PS_CONFLICT);
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("2"), S("1 ")), PS_CONFLICT);
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("2"), S("1")), PS_OK);
    CHECK_RC(ps_put_if(st, S("s"), S("other"), S("2"), S("1")), PS_CONFLICT);
    CHECK_RC(ps_put_if(st, S("no-scope"), S("k"), S("2"), S("1")), PS_CONFLICT);
    buf_sink b = {0};
    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    CHECK(strcmp(b.data, "2") == 0);
    buf_reset(&b);
    ps_store_close(st);
}

TEST(a_write_after_a_read_of_another_name_writes_the_name_it_is_given)
{
    /* Each call may take over the lookup the call before made (the read
     * of an update, then its write): never for other names, even ones of
     * the same length. */
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    CHECK_RC(put_str(st, "s1", "ka", "1"), PS_OK);
    CHECK_RC(put_str(st, "s1", "kb", "2"), PS_OK);
    CHECK_RC(put_str(st, "s2", "ka", "3"), PS_OK);
    buf_sink b = {0};
    CHECK_RC(get_str(st, "s1", "ka", &b), PS_OK);
    CHECK_RC(ps_put_if(st, S("s1"), S("kb"), S("20"), S("1")), PS_CONFLICT);
    CHECK_RC(get_str(st, "s1", "ka", &b), PS_OK);
    CHECK_RC(ps_put_if(st, S("s1"), S("kb"), S("20"), S("2")), PS_OK);
    CHECK_RC(get_str(st, "s1", "ka", &b), PS_OK);
    CHECK_RC(ps_put_if(st, S("s2"), S("ka"), S("30"), S("1")), PS_CONFLICT);
    CHECK_RC(get_str(st, "s1", "ka", &b), PS_OK);
    CHECK_RC(ps_put_if(st, S("s2"), S("ka"), S("30"), S("3")), PS_OK);
    CHECK_RC(ps_prefetch(st, S("s1"), S("ka")), PS_OK);
    CHECK_RC(get_str(st, "s2", "ka", &b), PS_OK);
    CHECK(strcmp(b.data, "30") == 0);
    CHECK_RC(ps_prefetch(st, S("s2"), S("ka")), PS_OK);
    CHECK_RC(get_str(st, "s1", "kb", &b), PS_OK);
    CHECK(strcmp(b.data, "20") == 0);
    CHECK_RC(get_str(st, "s1", "ka", &b), PS_OK);
    CHECK(strcmp(b.data, "1") == 0);
    CHECK(ps_check(st, NULL) == PS_OK);
    buf_reset(&b);
    ps_store_close(st);
}

TEST(a_write_after_a_read_sees_what_changed_in_between)
{
    /* Between an update's read and its write another call may change the
     * key, move the table or free the scope: the write then compares with
     * what is there now. (Under ASan, a lookup kept too long is a read of
     * freed memory.) */
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    buf_sink b = {0};
    CHECK_RC(put_str(st, "s", "k", "1"), PS_OK);
    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    CHECK_RC(ps_del(st, S("s"), S("k"), NULL), PS_OK); /* the scope goes with it */
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("2"), S("1")), PS_CONFLICT);
    CHECK_RC(get_str(st, "s", "k", &b), PS_NOTFOUND);

    CHECK_RC(put_str(st, "s", "k", "1"), PS_OK);
    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    for (int i = 0; i < 1000; i++) { /* the index grows and is rebuilt */
        char k[16];
        snprintf(k, sizeof k, "other%d", i);
        CHECK_RC(put_str(st, "s", k, "0"), PS_OK);
    }
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("2"), S("1")), PS_OK);
    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    CHECK(strcmp(b.data, "2") == 0);

    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    CHECK_RC(put_str(st, "s", "k", "3"), PS_OK);
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("4"), S("2")), PS_CONFLICT);
    /* One write after another on the same key still compares the bytes. */
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("4"), S("3")), PS_OK);
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("5"), S("3")), PS_CONFLICT);
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("a longer value than before"), S("4")), PS_OK);
    CHECK_RC(ps_put_if(st, S("s"), S("k"), S("6"), S("a longer value than before")), PS_OK);
    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    CHECK(strcmp(b.data, "6") == 0);
    CHECK(ps_check(st, NULL) == PS_OK);
    buf_reset(&b);
    ps_store_close(st);
}

static uint64_t seen_of(ps_store *st, const char *scope, const char *key)
{
    uint64_t seen = 99;
    int rc = ps_get_seen(st, scope, strlen(scope), key, strlen(key), NULL, &seen);
    CHECK(rc == PS_OK || (rc == PS_NOTFOUND && seen == 0));
    return seen;
}

TEST(put_seen_replaces_only_what_the_last_call_read)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    buf_sink b = {0};
    CHECK_RC(put_str(st, "s1", "ka", "1"), PS_OK);
    CHECK_RC(put_str(st, "s1", "kb", "2"), PS_OK);
    CHECK_RC(put_str(st, "s2", "ka", "3"), PS_OK);
    uint64_t seen = seen_of(st, "s1", "ka");
    CHECK(seen != 0);
    CHECK_RC(ps_put_seen(st, seen, S("10")), PS_OK);
    /* The write was a call too: the token is spent. */
    CHECK_RC(ps_put_seen(st, seen, S("11")), PS_CONFLICT);
    /* Any call in between, even a read of another name, voids it. */
    seen = seen_of(st, "s1", "ka");
    CHECK_RC(get_str(st, "s1", "kb", &b), PS_OK);
    CHECK_RC(ps_put_seen(st, seen, S("12")), PS_CONFLICT);
    seen = seen_of(st, "s1", "ka");
    CHECK_RC(ps_prefetch(st, S("s2"), S("ka")), PS_OK);
    CHECK_RC(ps_put_seen(st, seen, S("12")), PS_CONFLICT);
    /* An older read's token, with a newer read of the same key last. */
    uint64_t older = seen_of(st, "s1", "ka");
    uint64_t newer = seen_of(st, "s1", "ka");
    CHECK(older != newer);
    CHECK_RC(ps_put_seen(st, older, S("13")), PS_CONFLICT);
    older = seen_of(st, "s1", "ka");
    newer = seen_of(st, "s1", "ka");
    CHECK_RC(ps_put_seen(st, newer, S("a value longer than the one before")), PS_OK);
    /* No token for a key that is not there, and 0 is never one. */
    CHECK(seen_of(st, "s1", "nobody") == 0);
    CHECK(seen_of(st, "nowhere", "ka") == 0);
    CHECK_RC(ps_put_seen(st, 0, S("14")), PS_CONFLICT);
    /* A key deleted after its read (its scope with it: under ASan, a
     * lookup kept too long is a read of freed memory). */
    CHECK_RC(put_str(st, "s3", "k", "1"), PS_OK);
    seen = seen_of(st, "s3", "k");
    CHECK_RC(ps_del(st, S("s3"), S("k"), NULL), PS_OK);
    CHECK_RC(ps_put_seen(st, seen, S("15")), PS_CONFLICT);
    CHECK_RC(get_str(st, "s3", "k", &b), PS_NOTFOUND);
    seen = seen_of(st, "s2", "ka");
    CHECK_RC(ps_put_seen(st, seen, "x", (size_t)PS_MAX_LEN + 1), PS_TOOBIG);

    CHECK_RC(get_str(st, "s1", "ka", &b), PS_OK);
    CHECK(strcmp(b.data, "a value longer than the one before") == 0);
    CHECK_RC(get_str(st, "s1", "kb", &b), PS_OK);
    CHECK(strcmp(b.data, "2") == 0);
    CHECK_RC(get_str(st, "s2", "ka", &b), PS_OK);
    CHECK(strcmp(b.data, "3") == 0);
    CHECK(ps_check(st, NULL) == PS_OK);
    buf_reset(&b);
    ps_store_close(st);
}

TEST(list_joins_values_in_key_order)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    buf_sink b = {0};
    ps_sink s = sink_of(&b);
    CHECK_RC(ps_list(st, S("s"), 0, &s), PS_OK);
    CHECK(strcmp(b.data, "[]") == 0);
    put_str(st, "s", "b", "{\"x\":1}");
    put_str(st, "s", "a", "2");
    put_str(st, "s", "c", "\"three\"");
    put_str(st, "t", "a", "99");
    put_str(st, "s", "b", "null"); /* overwrite keeps its place */
    CHECK_RC(ps_list(st, S("s"), 0, &s), PS_OK);
    CHECK(strcmp(b.data, "[null,2,\"three\"]") == 0);
    CHECK_RC(ps_del(st, S("s"), S("a"), NULL), PS_OK);
    CHECK_RC(ps_list(st, S("s"), 0, &s), PS_OK);
    CHECK(strcmp(b.data, "[null,\"three\"]") == 0);
    buf_reset(&b);
    ps_store_close(st);
}

static int next_name(const char **p, const char *end, char *out, size_t cap)
{
    if (end - *p < 4)
        return 0;
    const unsigned char *u = (const unsigned char *)*p;
    uint32_t n = u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    if (n >= cap || (size_t)(end - *p) < 4 + n)
        return 0;
    memcpy(out, *p + 4, n);
    out[n] = 0;
    *p += 4 + n;
    return 1;
}

/* A sink that keeps every buffer it hands out, joined with '|'. */
typedef struct multi_sink {
    char text[4096];
    size_t len;
    char *pending[64];
    size_t sizes[64];
    int n;
} multi_sink;

static void *multi_alloc(void *ctx, size_t n)
{
    multi_sink *m = ctx;
    m->pending[m->n] = malloc(n + 1);
    m->sizes[m->n] = n;
    return m->pending[m->n++];
}

static const char *multi_join(multi_sink *m)
{
    m->len = 0;
    for (int i = 0; i < m->n; i++) {
        if (i)
            m->text[m->len++] = '|';
        memcpy(m->text + m->len, m->pending[i], m->sizes[i]);
        m->len += m->sizes[i];
        free(m->pending[i]);
    }
    m->text[m->len] = 0;
    m->n = 0;
    return m->text;
}

TEST(list_splits_into_arrays_of_at_most_batch_bytes)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    multi_sink m = {.n = 0};
    ps_sink s = {multi_alloc, &m};
    CHECK_RC(ps_list(st, S("s"), 8, &s), PS_OK);
    CHECK(strcmp(multi_join(&m), "[]") == 0);
    put_str(st, "s", "a", "111");
    put_str(st, "s", "b", "22");
    put_str(st, "s", "c", "3");
    put_str(st, "s", "d", "\"a long value\"");
    put_str(st, "s", "e", "5");
    ps_del(st, S("s"), S("c"), NULL); /* a hole in the middle */
    CHECK_RC(ps_list(st, S("s"), 8, &s), PS_OK);
    /* "[111,22]" is exactly 8 bytes; the long value gets its own array. */
    CHECK(strcmp(multi_join(&m), "[111,22]|[\"a long value\"]|[5]") == 0);
    CHECK_RC(ps_list(st, S("s"), 0, &s), PS_OK);
    CHECK(strcmp(multi_join(&m), "[111,22,\"a long value\",5]") == 0);
    CHECK_RC(ps_list(st, S("s"), 1, &s), PS_OK);
    CHECK(strcmp(multi_join(&m), "[111]|[22]|[\"a long value\"]|[5]") == 0);
    ps_del(st, S("s"), S("e"), NULL);
    CHECK_RC(ps_list(st, S("s"), 8, &s), PS_OK);
    CHECK(strcmp(multi_join(&m), "[111,22]|[\"a long value\"]") == 0);
    ps_store_close(st);
}

/* Reads the page in b as "key=value;" pairs. */
static void items_text(const buf_sink *b, size_t count, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)b->data;
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t kl = p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
        const unsigned char *k = p + 4;
        const unsigned char *v = k + kl + 4;
        uint32_t vl = k[kl] | k[kl + 1] << 8 | k[kl + 2] << 16 | (uint32_t)k[kl + 3] << 24;
        o += (size_t)snprintf(out + o, cap - o, "%.*s=%.*s;", (int)kl, (const char *)k, (int)vl, (const char *)v);
        p = v + vl;
    }
}

TEST(items_pages_keys_and_values_in_key_order)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    buf_sink b = {0};
    ps_sink s = sink_of(&b);
    char text[256];
    uint32_t pos = 0;
    size_t count = 99;
    CHECK_RC(ps_items(st, S("s"), &pos, 0, &s, &count), PS_OK); /* missing scope */
    CHECK(count == 0 && pos == 0 && b.calls == 1);
    put_str(st, "s", "a", "1");
    put_str(st, "s", "b", "22");
    put_str(st, "s", "c", "333");
    put_str(st, "s", "d", "4");
    put_str(st, "t", "x", "0");
    CHECK_RC(ps_del(st, S("s"), S("b"), NULL), PS_OK); /* a hole */
    CHECK_RC(ps_items(st, S("s"), &pos, 2, &s, &count), PS_OK);
    items_text(&b, count, text, sizeof text);
    CHECK(count == 2 && strcmp(text, "a=1;c=333;") == 0);
    CHECK_RC(ps_items(st, S("s"), &pos, 2, &s, &count), PS_OK);
    items_text(&b, count, text, sizeof text);
    CHECK(count == 1 && strcmp(text, "d=4;") == 0);
    CHECK_RC(ps_items(st, S("s"), &pos, 2, &s, &count), PS_OK);
    CHECK(count == 0 && b.len == 0);
    pos = 0;
    CHECK_RC(ps_items(st, S("s"), &pos, 0, &s, &count), PS_OK); /* no limit */
    items_text(&b, count, text, sizeof text);
    CHECK(count == 3 && strcmp(text, "a=1;c=333;d=4;") == 0);
    buf_sink no = {0};
    no.refuse = 1;
    ps_sink r = sink_of(&no);
    pos = 0;
    CHECK_RC(ps_items(st, S("s"), &pos, 0, &r, &count), ENOMEM);
    CHECK(count == 0 && pos == 0); /* the cursor does not move on failure */
    buf_reset(&b);
    ps_store_close(st);
}

TEST(keys_come_in_key_order_from_one_call)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    buf_sink b = {0};
    ps_sink s = sink_of(&b);
    size_t count = 99;
    CHECK_RC(ps_keys(st, S("s"), &s, &count), PS_OK); /* missing scope */
    CHECK(count == 0 && b.len == 0 && b.calls == 1);
    put_str(st, "s", "c", "1");
    put_str(st, "s", "a", "2");
    put_str(st, "s", "b", "3");
    put_str(st, "t", "x", "0");
    CHECK_RC(ps_del(st, S("s"), S("a"), NULL), PS_OK); /* a hole */
    put_str(st, "s", "a", "4");                          /* goes to the end */
    CHECK_RC(ps_keys(st, S("s"), &s, &count), PS_OK);
    CHECK(count == 3 && b.calls == 2);
    const char *p = b.data, *end = b.data + b.len;
    char name[16];
    const char *want[] = {"c", "b", "a"};
    for (int i = 0; i < 3; i++) {
        REQUIRE(next_name(&p, end, name, sizeof name));
        CHECK(strcmp(name, want[i]) == 0);
    }
    CHECK(p == end);
    buf_sink no = {0};
    no.refuse = 1;
    ps_sink r = sink_of(&no);
    count = 99;
    CHECK_RC(ps_keys(st, S("s"), &r, &count), ENOMEM);
    CHECK(count == 0);
    buf_reset(&b);
    ps_store_close(st);
}

TEST(get_without_a_sink_only_says_whether_the_key_exists)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    put_str(st, "s", "k", "null");
    CHECK_RC(ps_get(st, S("s"), S("k"), NULL), PS_OK);
    CHECK_RC(ps_get(st, S("s"), S("other"), NULL), PS_NOTFOUND);
    CHECK_RC(ps_get(st, S("none"), S("k"), NULL), PS_NOTFOUND);
    ps_store_close(st);
}

TEST(prefetch_is_a_hint_that_changes_nothing)
{
    /* Present, missing key, missing scope, empty store: always PS_OK, and
     * the store reads as before. */
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    CHECK_RC(ps_prefetch(st, S("s"), S("k")), PS_OK);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        put_str(st, "s", k, "1");
    }
    CHECK_RC(ps_prefetch(st, S("s"), S("k7")), PS_OK);
    CHECK_RC(ps_prefetch(st, S("s"), S("absent")), PS_OK);
    CHECK_RC(ps_prefetch(st, S("none"), S("k7")), PS_OK);
    ps_stats stats;
    ps_stats_get(st, &stats);
    CHECK(stats.scopes == 1 && stats.keys == 100);
    CHECK_RC(ps_get(st, S("s"), S("k7"), NULL), PS_OK);
    CHECK_RC(ps_get(st, S("none"), S("k7"), NULL), PS_NOTFOUND);
    CHECK(ps_check(st, NULL) == PS_OK);
    ps_store_close(st);
}

TEST(groups_are_sorted_and_only_non_empty)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    buf_sink b = {0};
    ps_sink s = sink_of(&b);
    size_t count = 99;
    CHECK_RC(ps_groups(st, &s, &count), PS_OK);
    CHECK(count == 0 && b.len == 0);
    put_str(st, "zeta", "k", "1");
    put_str(st, "alpha", "k", "1");
    put_str(st, "alp", "k", "1");
    put_str(st, "\xc3\xa9t\xc3\xa9", "k", "1"); /* "été": sorts after ASCII */
    put_str(st, "gone", "k", "1");
    CHECK_RC(ps_del(st, S("gone"), S("k"), NULL), PS_OK);
    CHECK_RC(ps_groups(st, &s, &count), PS_OK);
    CHECK(count == 4);
    const char *p = b.data, *end = b.data + b.len;
    char name[64];
    const char *want[] = {"alp", "alpha", "zeta", "\xc3\xa9t\xc3\xa9"};
    for (int i = 0; i < 4; i++) {
        REQUIRE(next_name(&p, end, name, sizeof name));
        CHECK(strcmp(name, want[i]) == 0);
    }
    CHECK(p == end);
    buf_reset(&b);
    ps_store_close(st);
}

TEST(stats_count_scopes_keys_and_bytes)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    ps_stats s;
    ps_stats_get(st, &s);
    CHECK(s.scopes == 0 && s.keys == 0 && s.heap_bytes == 0);
    put_str(st, "s1", "ab", "123");
    put_str(st, "s1", "c", "4");
    put_str(st, "s2", "d", "56");
    ps_stats_get(st, &s);
    CHECK(s.scopes == 2);
    CHECK(s.keys == 3);
    CHECK(s.key_bytes == 4);
    CHECK(s.value_bytes == 6);
    CHECK(s.heap_bytes > 0);
    put_str(st, "s1", "ab", "7");
    ps_stats_get(st, &s);
    CHECK(s.value_bytes == 4);
    CHECK(s.dead_bytes > 0);
    ps_del(st, S("s1"), S("ab"), NULL);
    ps_del(st, S("s1"), S("c"), NULL);
    ps_del(st, S("s2"), S("d"), NULL);
    ps_stats_get(st, &s);
    CHECK(s.scopes == 0 && s.keys == 0 && s.value_bytes == 0);
    CHECK(s.heap_bytes == 0); /* everything given back */
    ps_store_close(st);
}

TEST(refusing_sink_changes_nothing)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    put_str(st, "s", "k", "old");
    buf_sink no = {0};
    no.refuse = 1;
    ps_sink s = sink_of(&no);
    CHECK_RC(ps_get(st, S("s"), S("k"), &s), ENOMEM);
    CHECK_RC(ps_put(st, S("s"), S("k"), S("new"), &s, NULL), ENOMEM);
    CHECK_RC(ps_del(st, S("s"), S("k"), &s), ENOMEM);
    CHECK_RC(ps_list(st, S("s"), 0, &s), ENOMEM);
    size_t count;
    CHECK_RC(ps_groups(st, &s, &count), ENOMEM);
    buf_sink b = {0};
    CHECK_RC(get_str(st, "s", "k", &b), PS_OK);
    CHECK(strcmp(b.data, "old") == 0);
    buf_reset(&b);
    ps_store_close(st);
}

TEST(lengths_beyond_the_format_are_refused_before_reading)
{
    ps_store *st = open_store(NULL);
    REQUIRE(st);
    size_t huge = (size_t)UINT32_MAX + 1;
    /* The pointers are never read: the length check comes first. */
    CHECK_RC(ps_put(st, "s", huge, S("k"), S("1"), NULL, NULL), PS_TOOBIG);
    CHECK_RC(ps_put(st, S("s"), "k", huge, S("1"), NULL, NULL), PS_TOOBIG);
    CHECK_RC(ps_put(st, S("s"), S("k"), "1", huge, NULL, NULL), PS_TOOBIG);
    CHECK_RC(ps_put_if(st, S("s"), S("k"), "1", huge, NULL, 0), PS_TOOBIG);
    ps_stats s;
    ps_stats_get(st, &s);
    CHECK(s.keys == 0);
    ps_store_close(st);
}

TEST(strerror_covers_every_code)
{
    for (int rc = PS_NOTFOUND; rc < PS_RC_END; rc++) {
        const char *msg = ps_strerror(rc);
        CHECK(msg && strcmp(msg, "unknown pystate error code") != 0);
    }
    CHECK(strcmp(ps_strerror(PS_OK), "success") == 0);
    CHECK(strlen(ps_strerror(ENOMEM)) > 0);
    CHECK(strcmp(ps_strerror(PS_RC_END), "unknown pystate error code") == 0);
    int a = -1, b = -1, c = -1;
    ps_version(&a, &b, &c);
    CHECK(a == PS_VERSION_MAJOR && b == PS_VERSION_MINOR && c == PS_VERSION_PATCH);
    ps_version(NULL, NULL, NULL);
    ps_store_close(NULL);
}

/* ---- injected allocation failures ----------------------------------------- */

/* A fingerprint of the whole store: groups, then each scope's list. */
static void snapshot(ps_store *st, char *out, size_t cap)
{
    buf_sink g = {0}, l = {0};
    ps_sink gs = sink_of(&g), ls = sink_of(&l);
    size_t count = 0, n = 0;
    out[0] = 0;
    if (ps_groups(st, &gs, &count) != PS_OK)
        abort();
    const char *p = g.data, *end = g.data + g.len;
    char name[128];
    while (next_name(&p, end, name, sizeof name)) {
        if (ps_list(st, name, strlen(name), 0, &ls) != PS_OK)
            abort();
        n += (size_t)snprintf(out + n, cap - n, "%s=%s;", name, l.data);
    }
    buf_reset(&g);
    buf_reset(&l);
}

TEST(every_allocation_failure_is_clean)
{
    /* Run a scripted workload with the n-th allocation failing, for every
     * n until the workload completes without hitting the failure. Each
     * failing call must return ENOMEM and leave the store as it was; the
     * store must keep working; nothing may leak. */
    char before[8192], after[8192], key[32], val[64];
    int completed = 0;
    for (long fail_at = 1; !completed && fail_at < 5000; fail_at++) {
        test_alloc ta = {0, 0, 0};
        ps_allocator a = ta_allocator(&ta);
        ps_store *st = open_store(&a);
        REQUIRE(st);
        ta.fail_at = fail_at;
        int failed = 0;
        for (int i = 0; i < 300 && !failed; i++) {
            snprintf(key, sizeof key, "k%d", i % 37);
            snprintf(val, sizeof val, "{\"i\":%d}", i);
            const char *scope = (i % 3 == 0) ? "a" : (i % 3 == 1) ? "b" : "c";
            ta.fail_at = 0; /* the snapshot itself must not fail */
            snapshot(st, before, sizeof before);
            ta.fail_at = fail_at;
            int rc;
            buf_sink b = {0};
            ps_sink s = sink_of(&b);
            if (i % 5 == 4) {
                rc = ps_del(st, scope, 1, key, strlen(key), &s);
            } else if (i % 5 == 3) {
                uint64_t seen = 0;
                rc = ps_get_seen(st, scope, 1, key, strlen(key), NULL, &seen);
                if (rc == PS_OK)
                    rc = ps_put_seen(st, seen, val, strlen(val));
            } else
                rc = ps_put(st, scope, 1, key, strlen(key), val, strlen(val), &s, NULL);
            buf_reset(&b);
            if (rc == ENOMEM) {
                failed = 1;
                ta.fail_at = 0;
                snapshot(st, after, sizeof after);
                CHECK(strcmp(before, after) == 0);
                /* Still usable. */
                CHECK_RC(put_str(st, "z", "after", "1"), PS_OK);
            } else {
                CHECK(rc == PS_OK || rc == PS_NOTFOUND);
            }
        }
        if (!failed)
            completed = 1;
        ps_store_close(st);
        CHECK(ta.live == 0);
    }
    CHECK(completed);
}

TEST(open_fails_cleanly_without_memory)
{
    test_alloc ta = {0, 0, 1};
    ps_allocator a = ta_allocator(&ta);
    ps_options o;
    memset(&o, 0, sizeof o);
    o.allocator = &a;
    ps_store *st = (ps_store *)&ta; /* must stay untouched */
    CHECK_RC(ps_store_open(&st, &o, NULL), ENOMEM);
    CHECK(st == (ps_store *)&ta);
    CHECK(ta.live == 0);
}

/* ---- a long random run against a model ------------------------------------ */

#define MODEL_KEYS 64
#define MODEL_SCOPES 4

typedef struct model {
    char val[MODEL_SCOPES][MODEL_KEYS][24];
    int present[MODEL_SCOPES][MODEL_KEYS];
    long order[MODEL_SCOPES][MODEL_KEYS]; /* insertion stamp */
} model;

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* The random run, on a store opened with ps_options.serialized as given. */
static void random_run(int serialized)
{
    static model m;
    memset(&m, 0, sizeof m);
    test_alloc ta = {0, 0, 0};
    ps_allocator a = ta_allocator(&ta);
    ps_store *st = open_store_with(&a, serialized);
    REQUIRE(st);
    char scope[8], key[16], expect[2048], *p;
    long stamp = 0;
    int sc = 0, k = 0;
    buf_sink b = {0};
    ps_sink s = sink_of(&b);
    for (long step = 0; step < 200000; step++) {
        /* Half the time the names of the step before, as an update's read
         * and write are: calls on one key follow each other. */
        if (step == 0 || rnd() % 2) {
            sc = (int)(rnd() % MODEL_SCOPES);
            k = (int)(rnd() % MODEL_KEYS);
        }
        snprintf(scope, sizeof scope, "s%d", sc);
        snprintf(key, sizeof key, "key%d", k);
        uint64_t op = rnd() % 12;
        if (op == 10) {
            /* compare and set: against the model's value, another, or absence */
            char v[24];
            snprintf(v, sizeof v, "%llu", (unsigned long long)(rnd() % 100000));
            uint64_t e = rnd() % 3;
            const char *want = e == 0 && m.present[sc][k] ? m.val[sc][k] : e == 1 ? "wrong" : NULL;
            int ok = want ? m.present[sc][k] && strcmp(want, m.val[sc][k]) == 0 : !m.present[sc][k];
            int rc = ps_put_if(st, scope, strlen(scope), key, strlen(key), v, strlen(v), want,
                               want ? strlen(want) : 0);
            REQUIRE(rc == (ok ? PS_OK : PS_CONFLICT));
            if (ok) {
                if (!m.present[sc][k])
                    m.order[sc][k] = stamp++;
                strcpy(m.val[sc][k], v);
                m.present[sc][k] = 1;
            }
            continue;
        }
        if (op == 11) {
            REQUIRE(ps_prefetch(st, scope, strlen(scope), key, strlen(key)) == PS_OK);
            continue;
        }
        if (op < 5) {
            char v[24];
            snprintf(v, sizeof v, "%llu", (unsigned long long)(rnd() % 100000));
            int existed = -1;
            REQUIRE(ps_put(st, scope, strlen(scope), key, strlen(key), v, strlen(v), &s, &existed) == PS_OK);
            REQUIRE(existed == m.present[sc][k]);
            if (existed)
                REQUIRE(strcmp(b.data, m.val[sc][k]) == 0);
            else
                m.order[sc][k] = stamp++;
            strcpy(m.val[sc][k], v);
            m.present[sc][k] = 1;
        } else if (op < 8) {
            int rc = ps_del(st, scope, strlen(scope), key, strlen(key), &s);
            REQUIRE(rc == (m.present[sc][k] ? PS_OK : PS_NOTFOUND));
            if (rc == PS_OK)
                REQUIRE(strcmp(b.data, m.val[sc][k]) == 0);
            m.present[sc][k] = 0;
        } else if (op < 9) {
            int rc = ps_get(st, scope, strlen(scope), key, strlen(key), &s);
            REQUIRE(rc == (m.present[sc][k] ? PS_OK : PS_NOTFOUND));
            if (rc == PS_OK)
                REQUIRE(strcmp(b.data, m.val[sc][k]) == 0);
        } else {
            /* list must give the model's values in insertion order */
            REQUIRE(ps_list(st, scope, strlen(scope), 0, &s) == PS_OK);
            p = expect;
            *p++ = '[';
            long last = -1;
            for (;;) {
                int best = -1;
                for (int j = 0; j < MODEL_KEYS; j++)
                    if (m.present[sc][j] && m.order[sc][j] > last &&
                        (best < 0 || m.order[sc][j] < m.order[sc][best]))
                        best = j;
                if (best < 0)
                    break;
                if (p != expect + 1)
                    *p++ = ',';
                p += sprintf(p, "%s", m.val[sc][best]);
                last = m.order[sc][best];
            }
            *p++ = ']';
            *p = 0;
            REQUIRE(strcmp(b.data, expect) == 0);
        }
    }
    buf_reset(&b);
    ps_store_close(st);
    CHECK(ta.live == 0);
}

TEST(random_run_matches_model)
{
    random_run(0);
}

/* Without its lock (the caller serializes), the same calls give the same
 * answers: the lookup it keeps between calls still counts them. */
TEST(serialized_store_random_run_matches_model)
{
    random_run(1);
}

RUN_TESTS()
