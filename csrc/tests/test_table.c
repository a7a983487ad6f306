/*
 * test_table.c - unit tests of the ordered hash table and its arena
 * (ps_table.c, ps_arena.c), including allocation failures.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "ps_hash.h"
#include "ps_mem.h"
#include "ps_table.h"

static ps_hasher hasher;

static void setup_hasher(void)
{
    ps_hasher_init(&hasher, 12345);
}

static const unsigned char *find(ps_table *t, const char *k, ps_where *w)
{
    return ps_table_find(t, k, strlen(k), ps_hash(&hasher, k, strlen(k)), w);
}

static int put(ps_table *t, ps_mem *m, const char *k, const char *v)
{
    ps_where w;
    if (find(t, k, &w))
        return ps_table_replace(t, m, &w, v, strlen(v));
    return ps_table_insert(t, m, &hasher, &w, k, strlen(k), v, strlen(v));
}

static int del(ps_table *t, ps_mem *m, const char *k)
{
    ps_where w;
    if (!find(t, k, &w))
        return PS_NOTFOUND;
    ps_table_remove(t, m, &hasher, &w);
    return 0;
}

/* The keys in iteration order, joined with spaces. */
static void order(const ps_table *t, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = 0;
    for (uint32_t i = 0; i < t->n_entries; i++) {
        const unsigned char *it = t->entries[i];
        if (!it)
            continue;
        n += (size_t)snprintf(out + n, cap - n, "%s%.*s", n ? " " : "",
                              (int)ps_item_klen(it), (const char *)ps_item_key(it));
    }
}

static int value_is(ps_table *t, const char *k, const char *v)
{
    ps_where w;
    const unsigned char *it = find(t, k, &w);
    return it && ps_item_vlen(it) == strlen(v) && memcmp(ps_item_value(it), v, strlen(v)) == 0;
}

TEST(insert_find_replace_remove)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    ps_where w;
    CHECK(find(&t, "a", &w) == NULL);
    CHECK_RC(put(&t, &m, "a", "1"), 0);
    CHECK_RC(put(&t, &m, "b", "22"), 0);
    CHECK(value_is(&t, "a", "1"));
    CHECK(value_is(&t, "b", "22"));
    CHECK_RC(put(&t, &m, "a", "333"), 0);
    CHECK(value_is(&t, "a", "333"));
    CHECK(t.n_live == 2);
    CHECK(t.key_bytes == 2 && t.value_bytes == 5);
    CHECK_RC(del(&t, &m, "a"), 0);
    CHECK(find(&t, "a", &w) == NULL);
    CHECK_RC(del(&t, &m, "a"), PS_NOTFOUND);
    CHECK(t.n_live == 1);
    CHECK(ps_table_check(&t, &hasher) == 0);
    ps_table_free(&t, &m);
    CHECK(m.bytes == 0);
}

TEST(keys_and_values_may_hold_any_byte)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    const char k1[] = {'a', 0, 'b'}, k2[] = {'a', 0, 'c'}, v[] = {0, 1, 0};
    ps_where w;
    (void)ps_table_find(&t, k1, 3, ps_hash(&hasher, k1, 3), &w);
    CHECK_RC(ps_table_insert(&t, &m, &hasher, &w, k1, 3, v, 3), 0);
    CHECK(ps_table_find(&t, k2, 3, ps_hash(&hasher, k2, 3), &w) == NULL);
    const unsigned char *it = ps_table_find(&t, k1, 3, ps_hash(&hasher, k1, 3), &w);
    REQUIRE(it);
    CHECK(memcmp(ps_item_value(it), v, 3) == 0);
    /* The empty key is a key like any other. */
    (void)ps_table_find(&t, "", 0, ps_hash(&hasher, "", 0), &w);
    CHECK_RC(ps_table_insert(&t, &m, &hasher, &w, "", 0, "", 0), 0);
    CHECK(ps_table_find(&t, "", 0, ps_hash(&hasher, "", 0), &w) != NULL);
    ps_table_free(&t, &m);
}

TEST(order_is_insertion_order_and_survives_overwrite_and_delete)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char buf[256];
    put(&t, &m, "c", "1");
    put(&t, &m, "a", "1");
    put(&t, &m, "b", "1");
    order(&t, buf, sizeof buf);
    CHECK(strcmp(buf, "c a b") == 0);
    put(&t, &m, "c", "a much longer value than before"); /* overwrite keeps place */
    order(&t, buf, sizeof buf);
    CHECK(strcmp(buf, "c a b") == 0);
    del(&t, &m, "a"); /* others keep their order */
    order(&t, buf, sizeof buf);
    CHECK(strcmp(buf, "c b") == 0);
    put(&t, &m, "a", "2"); /* re-insert goes to the end */
    order(&t, buf, sizeof buf);
    CHECK(strcmp(buf, "c b a") == 0);
    ps_table_free(&t, &m);
}

TEST(grows_and_shrinks_keeping_order)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char k[32];
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        REQUIRE(put(&t, &m, k, k) == 0);
    }
    unsigned big = t.bits;
    CHECK(t.n_live == N);
    CHECK(ps_table_check(&t, &hasher) == 0);
    for (int i = 0; i < N - 10; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        REQUIRE(del(&t, &m, k) == 0);
    }
    CHECK(t.bits < big);
    CHECK(t.n_live == 10);
    CHECK(ps_table_check(&t, &hasher) == 0);
    /* The survivors are still in insertion order. */
    int expect = N - 10;
    for (uint32_t i = 0; i < t.n_entries; i++) {
        if (!t.entries[i])
            continue;
        snprintf(k, sizeof k, "key-%d", expect++);
        CHECK(ps_item_klen(t.entries[i]) == strlen(k));
        CHECK(memcmp(ps_item_key(t.entries[i]), k, strlen(k)) == 0);
    }
    /* Deleting everything gives all memory back. */
    for (int i = N - 10; i < N; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        REQUIRE(del(&t, &m, k) == 0);
    }
    CHECK(t.n_live == 0);
    CHECK(m.bytes == 0);
    ps_table_free(&t, &m);
}

TEST(overwrites_are_reclaimed_by_compaction)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char k[32], v[64];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "k%d", i);
        put(&t, &m, k, "initial value of some length");
    }
    uint64_t steady = m.bytes;
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 100; i++) {
            snprintf(k, sizeof k, "k%d", i);
            snprintf(v, sizeof v, "round %d value %d", round, i);
            REQUIRE(put(&t, &m, k, v) == 0);
        }
    }
    /* Dead space is bounded: compaction keeps memory near live data. */
    CHECK(t.arena.dead <= (t.arena.live >> 1) + 1024);
    CHECK(m.bytes < steady * 3);
    CHECK(ps_table_check(&t, &hasher) == 0);
    CHECK(value_is(&t, "k7", "round 199 value 7"));
    ps_table_free(&t, &m);
}

TEST(values_that_fit_are_overwritten_in_place)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    put(&t, &m, "k", "0123456789");
    ps_where w;
    const unsigned char *first = find(&t, "k", &w);
    uint64_t heap = m.bytes;
    CHECK_RC(put(&t, &m, "k", "abcdefghij"), 0); /* same size */
    CHECK(find(&t, "k", &w) == first);
    CHECK_RC(put(&t, &m, "k", "xyz"), 0); /* shorter */
    CHECK(find(&t, "k", &w) == first);
    CHECK(value_is(&t, "k", "xyz"));
    CHECK(m.bytes == heap);
    CHECK(t.value_bytes == 3 && t.arena.dead == 7);
    CHECK(ps_table_check(&t, &hasher) == 0);
    CHECK_RC(put(&t, &m, "k", "longer than before"), 0); /* needs a new item */
    CHECK(value_is(&t, "k", "longer than before"));
    CHECK(ps_table_check(&t, &hasher) == 0);
    ps_table_free(&t, &m);
}

TEST(deleting_oldest_first_frees_whole_chunks_without_copying)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char k[32];
    char v[200];
    memset(v, 'v', sizeof v - 1);
    v[sizeof v - 1] = 0;
    enum { N = 5000 };
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key-%05d", i);
        REQUIRE(put(&t, &m, k, v) == 0);
    }
    uint64_t peak = m.bytes;
    uint64_t most_dead = 0;
    for (int i = 0; i < N - 1; i++) {
        snprintf(k, sizeof k, "key-%05d", i);
        REQUIRE(del(&t, &m, k) == 0);
        if (t.arena.dead > most_dead)
            most_dead = t.arena.dead;
        if (i % 500 == 0)
            CHECK(ps_table_check(&t, &hasher) == 0);
    }
    /* Released space never piled up beyond about one chunk: chunks went
     * back as soon as they emptied, so compaction had nothing to do. */
    CHECK(most_dead <= 64 * 1024 + 256);
    CHECK(m.bytes < peak / 20);
    ps_table_free(&t, &m);
}

TEST(values_bigger_than_the_first_chunk_still_share_chunks)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char k[32], v[901];
    memset(v, 'v', sizeof v - 1);
    v[sizeof v - 1] = 0;
    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key-%05d", i);
        REQUIRE(put(&t, &m, k, v) == 0);
    }
    /* Chunks grow to 64 KiB whatever the item size: about 70 items each,
     * not one chunk (and one malloc) per item. */
    CHECK(t.arena.n_chunks < 30);
    CHECK(ps_table_check(&t, &hasher) == 0);
    ps_table_free(&t, &m);
}

TEST(an_emptied_head_chunk_is_freed_when_a_bigger_item_needs_a_new_one)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char big[2001];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = 0;
    put(&t, &m, "a", "a small value");
    big[300] = 0;
    put(&t, &m, "b", big); /* outgrows the first chunk: a new head */
    big[300] = 'b';
    uint32_t chunks = t.arena.n_chunks;
    CHECK_RC(del(&t, &m, "b"), 0); /* the head is empty again */
    CHECK_RC(put(&t, &m, "c", big), 0); /* outgrows it: it must go */
    CHECK(t.arena.n_chunks == chunks);
    CHECK(ps_table_check(&t, &hasher) == 0);
    ps_table_free(&t, &m);
}

TEST(abort_after_prepare_leaves_the_table_as_it_was)
{
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char k[32], v[5001], before[8192], after[8192];
    memset(v, 'v', sizeof v - 1);
    v[sizeof v - 1] = 0;
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "k%d", i);
        v[900] = 0;
        REQUIRE(put(&t, &m, k, v) == 0);
        v[900] = 'v';
    }
    order(&t, before, sizeof before);
    uint64_t heap = m.bytes;
    for (int round = 0; round < 3; round++) {
        ps_where w;
        ps_pending p;
        /* A bigger value for an existing key, then a new key. */
        REQUIRE(find(&t, "k0", &w) != NULL);
        CHECK_RC(ps_table_prepare_replace(&t, &m, &w, v, 5000, &p), 0);
        ps_table_abort(&t, &m, &p);
        CHECK(ps_table_check(&t, &hasher) == 0);
        REQUIRE(find(&t, "new", &w) == NULL);
        CHECK_RC(ps_table_prepare_insert(&t, &m, &hasher, &w, "new", 3, v, 5000, &p), 0);
        ps_table_abort(&t, &m, &p);
        CHECK(ps_table_check(&t, &hasher) == 0);
    }
    order(&t, after, sizeof after);
    CHECK(strcmp(before, after) == 0);
    ps_where w;
    const unsigned char *k0 = find(&t, "k0", &w);
    CHECK(k0 && ps_item_vlen(k0) == 900 && find(&t, "new", &w) == NULL);
    /* What remains is at most an empty head chunk and room for one more
     * key in the index, not a chunk per aborted attempt. */
    CHECK(m.bytes <= heap + 64 * 1024 + 4096);
    ps_table_free(&t, &m);
}

TEST(many_deletes_and_reinserts_never_fill_the_index_with_dummies)
{
    /* Insert/delete churn on a small table: dummies must be recycled by
     * rebuilds, or probing would never find an empty slot. */
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char k[32];
    put(&t, &m, "anchor", "x");
    for (int i = 0; i < 100000; i++) {
        snprintf(k, sizeof k, "churn-%d", i);
        REQUIRE(put(&t, &m, k, "v") == 0);
        REQUIRE(del(&t, &m, k) == 0);
    }
    CHECK(t.n_live == 1);
    CHECK(t.bits <= 4);
    CHECK(ps_table_check(&t, &hasher) == 0);
    ps_table_free(&t, &m);
}

TEST(allocation_failure_leaves_the_table_unchanged)
{
    setup_hasher();
    char k[32], buf[4096], before[4096];
    for (long fail_at = 1; fail_at < 200; fail_at++) {
        test_alloc ta = {0, 0, 0};
        ps_allocator a = ta_allocator(&ta);
        ps_mem m = {&a, 0};
        ps_table t;
        ps_table_init(&t);
        for (int i = 0; i < 40; i++) {
            snprintf(k, sizeof k, "k%d", i);
            REQUIRE(put(&t, &m, k, "value") == 0);
        }
        order(&t, before, sizeof before);
        ta.calls = 0;
        ta.fail_at = fail_at;
        int rc = 0;
        int i;
        /* Inserts and overwrites until the injected failure hits. */
        for (i = 40; i < 80 && rc == 0; i++) {
            snprintf(k, sizeof k, "k%d", i % 50);
            order(&t, before, sizeof before);
            rc = put(&t, &m, k, "another value");
        }
        if (rc) {
            CHECK(rc == ENOMEM);
            order(&t, buf, sizeof buf);
            CHECK(strcmp(buf, before) == 0);
        }
        CHECK(ps_table_check(&t, &hasher) == 0);
        ta.fail_at = 0;
        /* And the table keeps working. */
        CHECK_RC(put(&t, &m, "after", "ok"), 0);
        CHECK(value_is(&t, "after", "ok"));
        ps_table_free(&t, &m);
        CHECK(ta.live == 0);
        CHECK(m.bytes == 0);
    }
}

TEST(adversarial_keys_with_a_known_seed_stay_fast)
{
    /* Keys that share long prefixes and differ in one byte: a weak hash
     * would cluster them. Every probe sequence must stay short. */
    setup_hasher();
    ps_mem m = {&ps_libc_allocator, 0};
    ps_table t;
    ps_table_init(&t);
    char k[300];
    memset(k, 'x', sizeof k);
    for (int i = 0; i < 50000; i++) {
        memcpy(k + 280, &i, sizeof i);
        ps_where w;
        uint64_t h = ps_hash(&hasher, k, sizeof k);
        REQUIRE(ps_table_find(&t, k, sizeof k, h, &w) == NULL);
        REQUIRE(ps_table_insert(&t, &m, &hasher, &w, k, sizeof k, "v", 1) == 0);
    }
    /* Longest run of occupied slots: short for a good hash at load <= 2/3. */
    size_t run = 0, longest = 0, slots = (size_t)1 << t.bits;
    for (size_t i = 0; i < slots; i++) {
        run = t.index[i] ? run + 1 : 0;
        if (run > longest)
            longest = run;
    }
    CHECK(longest < 200);
    ps_table_free(&t, &m);
}

RUN_TESTS()
